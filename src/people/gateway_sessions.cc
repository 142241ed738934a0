#include "people/gateway_sessions.h"

#include "core/text.h"

namespace gatehouse {

Authenticator::SessionResolver GatewaySessionResolver(SessionService& sessions,
                                                      MemberService& members,
                                                      AccountService& accounts) {
  return [&sessions, &members, &accounts](const HttpRequest& req, std::string_view token,
                                          AuthSubject* subject) -> Result<Principal> {
    auto refuse = [&](std::string_view reason) {
      if (subject) subject->reason = reason;
    };
    auto session = sessions.Authenticate(token, req.client_ip);
    if (!session) {
      refuse(session.error().code == ErrorCode::kTokenExpired  ? "session_expired"
             : session.error().code == ErrorCode::kUnavailable ? "store_unavailable"
                                                               : "session_invalid");
      return tl::unexpected(session.error());
    }
    if (subject) subject->key_id = session->user_id;
    std::string org;
    if (auto named = req.Header("x-gatehouse-org")) {
      // Any bytes may come; an org id is ASCII, and what the store is asked must be UTF-8.
      org = ValidUtf8(*named, 64);
    } else {
      auto orgs = accounts.OrgsOf(session->user_id);
      if (!orgs) {
        refuse("store_unavailable");
        return tl::unexpected(orgs.error());
      }
      if (orgs->size() != 1) {
        refuse("org_not_chosen");
        return Fail(ErrorCode::kPermissionDenied,
                    orgs->empty() ? "this user belongs to no organization"
                                  : "this user belongs to several organizations: name one in "
                                    "the X-Gatehouse-Org header");
      }
      org = orgs->front().org_id;
    }
    auto principal = members.PrincipalFor(*session, org);
    if (!principal) {
      refuse(principal.error().code == ErrorCode::kOrgMismatch ? "org_mismatch"
                                                               : "store_unavailable");
      return principal;
    }
    if (subject) subject->org_id = principal->org_id;
    return principal;
  };
}

}  // namespace gatehouse

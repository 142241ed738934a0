#include "api/guard.h"

#include "core/crypto.h"
#include "core/text.h"
#include "core/time_format.h"

namespace gatehouse {

HttpResponse Json(int status, const boost::json::value& v) {
  return JsonResponse(status, boost::json::serialize(v));
}

boost::json::value OptTime(const std::optional<UnixMicros>& t) {
  if (!t) return nullptr;
  return boost::json::value(FormatRfc3339(*t));
}

boost::json::array Strings(const std::vector<std::string>& v) {
  boost::json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

void RecordDecision(HttpRequest& req, std::string_view org, std::string_view actor,
                    std::string_view action, std::string resource, std::string_view reason,
                    std::string_view email) {
  std::vector<std::pair<std::string_view, std::string_view>> details;
  if (!reason.empty()) details.emplace_back("reason", reason);
  if (!email.empty()) details.emplace_back("email", email);
  req.audit = DecisionEvent(org, actor, action, std::move(resource),
                            details.empty() ? "{}" : DetailsOf(details));
  if (RefusedAsStale(reason)) {
    req.stale_credential = true;
    req.principal_id = actor;  // the stale key's id (empty for a session): threats count it
  }
}

std::string ApiResource(const HttpRequest& req, bool allowed) {
  std::string path(req.path.substr(0, 256));
  if (!allowed) {
    for (const auto& [name, value] : req.path_params) {
      if (value.empty()) continue;
      auto at = path.find(value);
      if (at != std::string::npos) path.replace(at, value.size(), "{" + std::string(name) + "}");
    }
  }
  return "api:" + std::string(req.method) + " " + path;
}

AuditSource SourceOf(const HttpRequest& req, std::string_view actor) {
  AuditSource s;
  s.actor = std::string(actor);
  s.client_ip = req.client_ip;
  s.user_agent = ValidUtf8(req.Header("user-agent").value_or(""), 256);
  s.request_id = req.request_id;
  s.http = true;
  return s;
}

std::optional<SessionCredential> SessionCredentialOf(const HttpRequest& req) {
  // A request with a key header is read the way keys are (schemes, query refusal); it is a
  // session when what it presents is a session token.
  if (req.Header("authorization") || req.Header("x-api-key")) {
    auto presented = Authenticator::ExtractCredential(req);
    if (presented && SessionService::IsSessionToken(*presented)) {
      return SessionCredential{*presented, false};
    }
    return std::nullopt;
  }
  if (auto cookie = req.Header("cookie")) {
    if (auto token = CookieValue(*cookie, SessionService::kCookieName)) {
      return SessionCredential{*token, true};
    }
  }
  return std::nullopt;
}

Result<void> CheckOrigin(const ControlPlaneDeps& d, const HttpRequest& req) {
  auto refuse = [](std::string why) {
    return Fail(ErrorCode::kPermissionDenied, "cross-site request refused: " + why);
  };
  if (auto origin = req.Header("origin")) {
    const auto& allowed = d.sessions.config().sessions.allowed_origins;
    bool ok = false;
    if (!allowed.empty()) {
      for (const auto& a : allowed) ok = ok || a == *origin;
    } else if (auto host = req.Header("host")) {
      ok = *origin == "https://" + std::string(*host) || *origin == "http://" + std::string(*host);
    }
    if (!ok) return refuse("origin " + std::string(origin->substr(0, 100)) + " is not allowed");
  } else if (auto site = req.Header("sec-fetch-site")) {
    if (*site != "same-origin" && *site != "none")
      return refuse("the request came from another site");
  }
  return {};
}

Result<void> CheckCsrf(const ControlPlaneDeps& d, const HttpRequest& req,
                       const SessionRecord& session) {
  if (req.method == "GET" || req.method == "HEAD" || req.method == "OPTIONS") return {};
  if (auto r = CheckOrigin(d, req); !r) return r;
  auto token = req.Header("x-csrf-token");
  if (!token || !d.sessions.CheckCsrf(session, *token)) {
    return Fail(ErrorCode::kPermissionDenied,
                "cross-site request refused: send the session's X-CSRF-Token header (GET /v1/me "
                "gives it)");
  }
  return {};
}

Result<void> RequireRecentSignIn(const ControlPlaneDeps& d, const Principal& p) {
  if (p.kind != "user") return {};
  UnixMicros window = ToMicros(d.sessions.config().sessions.reauth_window);
  if (d.clock.Now() - p.auth_time <= window) return {};
  return Fail(ErrorCode::kReauthRequired,
              "this operation needs a recent sign-in: confirm your password with POST "
              "/v1/auth/reauth, then try again");
}

std::optional<HttpResponse> RefuseOverControlPlaneLimit(ControlPlaneDeps& d, HttpRequest& req,
                                                        const Principal& p) {
  if (!d.limits) return std::nullopt;
  LimitChecks checks = d.limits->CollectControlPlane(p);
  if (checks.empty()) return std::nullopt;
  // Control-plane handlers run off the network threads, so waiting for Redis is allowed here.
  RateVerdict verdict = d.limits->Decide(checks.span());
  d.limits->Count(verdict, checks.span());
  if (verdict.allowed) return std::nullopt;
  RecordDecision(req, p.org_id, p.id, "auth.api", ApiResource(req, false), "rate_limited");
  HttpResponse res = ErrorResponse(RefusalError(verdict, checks.span()), req.request_id);
  AppendRateLimitHeaders(verdict, checks.span(), res.headers);
  return res;
}

Result<Principal> SessionPrincipal(ControlPlaneDeps& d, HttpRequest& req,
                                   const SessionCredential& cred, SessionRecord* session_out) {
  auto session = d.sessions.Authenticate(cred.token, req.client_ip);
  if (!session) {
    ErrorCode code = session.error().code;
    d.metrics.CountAuthFailure(code == ErrorCode::kTokenExpired ? Metrics::AuthFailure::kExpired
                                                                : Metrics::AuthFailure::kUnknown);
    RecordDecision(req, "", "", "auth.api", ApiResource(req, false),
                   code == ErrorCode::kTokenExpired  ? "session_expired"
                   : code == ErrorCode::kUnavailable ? "store_unavailable"
                                                     : "session_invalid");
    return tl::unexpected(session.error());
  }
  req.principal_id = session->user_id;
  if (cred.cookie) {
    if (auto r = CheckCsrf(d, req, *session); !r) {
      d.metrics.CountAuthFailure(Metrics::AuthFailure::kForbidden);
      RecordDecision(req, "", session->user_id, "auth.api", ApiResource(req, false), "csrf");
      return tl::unexpected(r.error());
    }
  }
  Principal p{"", session->user_id, "user", {}, "live", session->auth_time, {}, {}};
  std::string_view org = req.PathParam("org");
  if (!org.empty()) {
    auto in_org = d.members.PrincipalFor(*session, org);
    if (!in_org) {
      if (in_org.error().code == ErrorCode::kOrgMismatch) {
        d.metrics.CountAuthFailure(Metrics::AuthFailure::kOrgMismatch);
      }
      // Not a member: recorded on the operator's chain, since the addressed org may be anyone's.
      RecordDecision(
          req, "", session->user_id, "auth.api", ApiResource(req, false),
          in_org.error().code == ErrorCode::kOrgMismatch ? "org_mismatch" : "store_unavailable");
      return tl::unexpected(in_org.error());
    }
    p = std::move(*in_org);
  }
  if (session_out) *session_out = std::move(*session);
  return p;
}

}  // namespace gatehouse

// What every control-plane handler does before its own work, shared by the route files
// (control_plane.cc, people_routes.cc): find the caller (an API key or a signed-in user's
// session), check the addressed org and the permission the route names, defend cookie requests
// against cross-site forgery, and record the decision in the audit log.
#pragma once

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <charconv>
#include <optional>
#include <string>

#include "api/control_plane.h"
#include "audit/details.h"
#include "http/cookies.h"

namespace gatehouse {

HttpResponse Json(int status, const boost::json::value& v);
// An RFC 3339 time, or null.
boost::json::value OptTime(const std::optional<UnixMicros>& t);
boost::json::array Strings(const std::vector<std::string>& v);

// A whole-number query parameter in [min, max]; `fallback` when absent.
template <typename Int>
Result<Int> IntParam(const HttpRequest& req, std::string_view name, Int fallback, Int min,
                     Int max) {
  auto text = req.QueryParam(name);
  if (!text) return fallback;
  Int v = 0;
  auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || ptr != text->data() + text->size() || v < min || v > max) {
    return FailField(std::string(name), std::string(name) + " must be an integer " +
                                            std::to_string(min) + "-" + std::to_string(max));
  }
  return v;
}

// The decision to record for `req` (the server completes and writes it before answering).
void RecordDecision(HttpRequest& req, std::string_view org, std::string_view actor,
                    std::string_view action, std::string resource, std::string_view reason,
                    std::string_view email = {});

// The endpoint a decision was about. A refused request is recorded with the route's pattern
// ("/v1/orgs/{org}/keys/{id}"), never the ids it named: those may be another org's, and the
// caller's org reads this record.
std::string ApiResource(const HttpRequest& req, bool allowed);

// The source of the changes a request makes: its caller, address, agent and id.
AuditSource SourceOf(const HttpRequest& req, std::string_view actor);

// A session token presented with the request: `Authorization: Bearer ghs_…`, or the session
// cookie when the request carries no Authorization or X-API-Key header.
struct SessionCredential {
  std::string_view token;
  bool cookie = false;
};
std::optional<SessionCredential> SessionCredentialOf(const HttpRequest& req);

// Cookie requests that change state must come from an allowed origin and carry the session's
// X-CSRF-Token (ASVS 3.5.1): a page on another site can make the browser send the cookie, but
// can neither read the token nor forge the Origin header.
Result<void> CheckCsrf(const ControlPlaneDeps& d, const HttpRequest& req,
                       const SessionRecord& session);
// For requests that carry no session yet (sign-in): an Origin, when sent, must be allowed.
Result<void> CheckOrigin(const ControlPlaneDeps& d, const HttpRequest& req);

// 403 reauth_required when `p` is a user whose last password check is older than the
// configured window. Keys are not signed in, so they always pass.
Result<void> RequireRecentSignIn(const ControlPlaneDeps& d, const Principal& p);

// Authenticates a session credential for a route of `org` (empty: a route of no org) and
// returns the principal, recording refusals. `session_out` receives the session.
Result<Principal> SessionPrincipal(ControlPlaneDeps& d, HttpRequest& req,
                                   const SessionCredential& cred, SessionRecord* session_out);

// 429 rate_limit_exceeded, with Retry-After and the RateLimit headers, when `p` has spent its
// control-plane limit ([rate_limits] control_plane, per key or user); the refusal is recorded.
// Nothing when the call is within the limit.
std::optional<HttpResponse> RefuseOverControlPlaneLimit(ControlPlaneDeps& d, HttpRequest& req,
                                                        const Principal& p);

// Runs `body` for an authenticated principal of the addressed org holding `permission`. Handlers
// then act on the principal's org, never on the org named in the path: the store scopes its
// transaction (and so the database's row level security) to that org, so even a handler that
// skipped this check could not reach another org's rows.
template <typename F>
HttpResponse Guarded(ControlPlaneDeps& d, HttpRequest& req, std::string_view permission, F&& body) {
  Result<Principal> principal = tl::unexpected(Error{});
  if (auto cred = SessionCredentialOf(req)) {
    principal = SessionPrincipal(d, req, *cred, nullptr);
    if (!principal) return ErrorResponse(principal.error(), req.request_id);
  } else {
    AuthSubject subject;
    principal = d.auth.Authenticate(req, &subject);
    if (!principal) {
      RecordDecision(req, subject.org_id, subject.key_id, "auth.api", ApiResource(req, false),
                     subject.reason);
      return ErrorResponse(principal.error(), req.request_id);
    }
    req.principal_id = principal->id;
    std::string_view org = req.PathParam("org");
    if (!org.empty()) {
      if (auto r = RequireOrg(*principal, org); !r) {
        d.metrics.CountAuthFailure(Metrics::AuthFailure::kOrgMismatch);
        // Recorded in the caller's own org: the addressed org learns nothing of it.
        RecordDecision(req, principal->org_id, principal->id, "auth.api", ApiResource(req, false),
                       "org_mismatch");
        return ErrorResponse(r.error(), req.request_id);
      }
    }
  }
  if (auto refused = RefuseOverControlPlaneLimit(d, req, *principal)) return std::move(*refused);
  if (auto r = RequireScopes(*principal, {std::string(permission)}); !r) {
    d.metrics.CountAuthFailure(Metrics::AuthFailure::kForbidden);
    RecordDecision(req, principal->org_id, principal->id, "auth.api", ApiResource(req, false),
                   "forbidden");
    return ErrorResponse(r.error(), req.request_id);
  }
  RecordDecision(req, principal->org_id, principal->id, "auth.api", ApiResource(req, true), "");
  Result<HttpResponse> out = body(*principal);
  if (!out) return ErrorResponse(out.error(), req.request_id);
  return std::move(*out);
}

// Runs `body` for a signed-in user (a session, never an API key): the /v1/me and /v1/auth
// routes that are about the caller's own account.
template <typename F>
HttpResponse SessionGuarded(ControlPlaneDeps& d, HttpRequest& req, F&& body) {
  auto cred = SessionCredentialOf(req);
  if (!cred) {
    RecordDecision(req, "", "", "auth.api", ApiResource(req, false), "no_session");
    return ErrorResponse(Error{ErrorCode::kUnauthenticated,
                               "this endpoint needs a signed-in user: sign in with "
                               "POST /v1/auth/login (API keys are not users)",
                               {},
                               {}},
                         req.request_id);
  }
  SessionRecord session;
  auto principal = SessionPrincipal(d, req, *cred, &session);
  if (!principal) return ErrorResponse(principal.error(), req.request_id);
  if (auto refused = RefuseOverControlPlaneLimit(d, req, *principal)) return std::move(*refused);
  RecordDecision(req, "", principal->id, "auth.api", ApiResource(req, true), "");
  Result<HttpResponse> out = body(session, *principal, cred->cookie);
  if (!out) return ErrorResponse(out.error(), req.request_id);
  return std::move(*out);
}

}  // namespace gatehouse

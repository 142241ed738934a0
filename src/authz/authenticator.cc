#include "authz/authenticator.h"

#include "core/text.h"

namespace gatehouse {

namespace {
tl::unexpected<Error> Unauthorized() {
  return Fail(ErrorCode::kUnauthenticated, "missing or invalid API key");
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}
}  // namespace

Result<std::string_view> Authenticator::ExtractCredential(const HttpRequest& request) {
  for (std::string_view name : {"api_key", "apikey", "key", "access_token", "token"}) {
    if (request.QueryParam(name)) {
      return FailField(std::string(name),
                       "credentials are not accepted in the URL; send an Authorization header");
    }
  }
  if (auto auth = request.Header("authorization")) {
    std::string_view v = Trim(*auth);
    auto space = v.find(' ');
    if (space != std::string_view::npos) {
      std::string_view scheme = v.substr(0, space);
      if (EqualsIgnoreCase(scheme, "bearer") || EqualsIgnoreCase(scheme, "apikey")) {
        return Trim(v.substr(space + 1));
      }
    }
    return Unauthorized();
  }
  if (auto key = request.Header("x-api-key")) return Trim(*key);
  return Unauthorized();
}

Result<Principal> Authenticator::Decide(const KeyVerdict& verdict, const HttpRequest& request,
                                        AuthSubject* subject) {
  auto refuse = [&](Metrics::AuthFailure reason, std::string_view name) {
    metrics_.CountAuthFailure(reason);
    if (subject) {
      subject->reason = name;
      if (verdict.facts) {
        subject->org_id = verdict.facts->org_id;
        subject->key_id = verdict.facts->key_id;
      }
    }
  };
  switch (verdict.status) {
    case KeyStatus::kValid:
      break;
    case KeyStatus::kMalformed:
      refuse(Metrics::AuthFailure::kMalformed, "malformed");
      return Unauthorized();
    case KeyStatus::kNotFound:
      refuse(Metrics::AuthFailure::kUnknown, "unknown");
      return Unauthorized();
    case KeyStatus::kExpired:
      refuse(Metrics::AuthFailure::kExpired, "expired");
      return Unauthorized();
    case KeyStatus::kRevoked:
      refuse(Metrics::AuthFailure::kRevoked, "revoked");
      return Unauthorized();
  }
  const KeyFacts& f = *verdict.facts;
  if (!AllowedBy(f.ip_allowlist, request.client_ip)) {
    if (f.ip_allowlist_shadow) {
      shadow_allowlist_refusals_.fetch_add(1, std::memory_order_relaxed);
    } else {
      refuse(Metrics::AuthFailure::kIpDenied, "ip_not_allowed");
      return Fail(ErrorCode::kIpNotAllowed, "this key may not be used from your address");
    }
  }
  // The verifier read the clock to judge expiry a moment ago: no second read per request.
  const UnixMicros now = verdict.judged_at ? verdict.judged_at : clock_.Now();
  Principal p{f.org_id, f.key_id, "api_key", f.scopes, f.environment, now, {}, {}};
  p.key_rate_limit = f.rate_limit;
  p.key_quota = f.quota;
  p.credits_used = f.credits_used;
  p.credits_period = f.credits_period;
  return p;
}

Result<Principal> Authenticator::ApplyOrgPolicy(Result<Principal> p, AccessPolicyPtr policy,
                                                const HttpRequest& request, AuthSubject* subject) {
  if (!p || !policy) return p;
  if (!AllowedBy(policy->ip_allowlist_cidrs, request.client_ip)) {
    if (policy->allowlist_shadow) {
      shadow_allowlist_refusals_.fetch_add(1, std::memory_order_relaxed);
    } else {
      metrics_.CountAuthFailure(Metrics::AuthFailure::kIpDenied);
      if (subject) {
        subject->reason = "org_ip_not_allowed";
        subject->org_id = p->org_id;
        subject->key_id = p->id;
      }
      return Fail(ErrorCode::kIpNotAllowed, "your organization does not allow your address");
    }
  }
  p->org_policy = std::move(policy);
  return p;
}

Result<Principal> Authenticator::WithOrgPolicy(Result<Principal> p, const HttpRequest& request,
                                               AuthSubject* subject) {
  if (!p || !org_policies_) return p;
  auto policy = org_policies_->Load(p->org_id);
  if (!policy) {
    if (subject) subject->reason = "store_unavailable";
    return Fail(ErrorCode::kUnavailable, "credential store unavailable; try again");
  }
  return ApplyOrgPolicy(std::move(p), std::move(*policy), request, subject);
}

Result<std::string_view> Authenticator::Credential(const HttpRequest& request,
                                                   AuthSubject* subject) {
  auto credential = ExtractCredential(request);
  if (!credential) {
    metrics_.CountAuthFailure(Metrics::AuthFailure::kMissing);
    if (subject) subject->reason = "missing";
  }
  return credential;
}

std::optional<Result<Principal>> Authenticator::TryFast(const HttpRequest& request,
                                                        AuthSubject* subject) {
  auto credential = Credential(request, subject);
  if (!credential) return tl::unexpected(credential.error());
  if (IsSession(*credential)) return std::nullopt;  // sessions live in the store
  auto verdict = verifier_.TryCached(*credential, request.client_ip);
  if (!verdict) return std::nullopt;
  auto principal = Decide(*verdict, request, subject);
  if (!principal || !org_policies_) return principal;
  auto policy = org_policies_->TryGet(principal->org_id);
  if (!policy) return std::nullopt;  // the slow path loads it
  return ApplyOrgPolicy(std::move(principal), std::move(*policy), request, subject);
}

Result<Principal> Authenticator::Authenticate(const HttpRequest& request, AuthSubject* subject) {
  auto credential = Credential(request, subject);
  if (!credential) return tl::unexpected(credential.error());
  if (IsSession(*credential)) {
    auto principal = sessions_(request, *credential, subject);
    if (!principal) {
      ErrorCode c = principal.error().code;
      metrics_.CountAuthFailure(c == ErrorCode::kTokenExpired  ? Metrics::AuthFailure::kExpired
                                : c == ErrorCode::kOrgMismatch ? Metrics::AuthFailure::kOrgMismatch
                                : c == ErrorCode::kPermissionDenied
                                    ? Metrics::AuthFailure::kForbidden
                                    : Metrics::AuthFailure::kUnknown);
    }
    return WithOrgPolicy(std::move(principal), request, subject);
  }
  auto verdict = verifier_.Verify(*credential, request.client_ip);
  if (!verdict) {
    if (subject) subject->reason = "store_unavailable";
    return Fail(ErrorCode::kUnavailable, "credential store unavailable; try again");
  }
  return WithOrgPolicy(Decide(*verdict, request, subject), request, subject);
}

Result<KeyVerdict> Authenticator::VerifyForCaller(std::string_view key,
                                                  std::string_view client_ip) {
  auto verdict = verifier_.Verify(key, client_ip);
  if (!verdict) return Fail(ErrorCode::kUnavailable, "credential store unavailable; try again");
  return verdict;
}

}  // namespace gatehouse

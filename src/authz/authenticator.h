// Stage 4-6 of the request pipeline: find the credential, verify it, apply the key's network
// policy. Attacker-controlled input throughout; every refusal of a key is the same 401 so that
// the answer never says whether a key exists, has expired or was revoked.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string_view>

#include "authz/principal.h"
#include "http/message.h"
#include "keys/key_verifier.h"
#include "limits/org_policy_cache.h"
#include "metrics/metrics.h"

namespace gatehouse {

// Who a refused credential belonged to, for the audit log: the key's org and id when the key
// was found (expired, revoked, wrong address), and why it was refused. Never shown to callers.
struct AuthSubject {
  std::string org_id;  // empty: no org (no credential, malformed or unknown key)
  std::string key_id;
  std::string_view reason;  // "missing", "malformed", "unknown", "expired", "revoked", …
};

// A refusal for a real credential's state (an API key expired or revoked, a session past its
// limits), not for what was sent: the client holds a credential gone stale and guesses nothing.
// Threat detection counts such 401s against the key, never as key enumeration by the address: a
// page left open overnight that polls with its expired session must not block an office's NAT.
inline bool RefusedAsStale(std::string_view reason) {
  return reason == "expired" || reason == "revoked" || reason == "session_expired";
}

class Authenticator {
 public:
  // Turns a session token (ghs_…) into a principal; may block. See people/gateway_sessions.h.
  using SessionResolver = std::function<Result<Principal>(
      const HttpRequest& request, std::string_view token, AuthSubject* subject)>;

  Authenticator(KeyVerifier& verifier, Metrics& metrics, const Clock& clock)
      : verifier_(verifier), metrics_(metrics), clock_(clock) {}

  // Without one, session tokens are refused like any malformed key.
  void SetSessionResolver(SessionResolver resolver) { sessions_ = std::move(resolver); }
  // Orgs' own policies (IP allowlist, rate limit), applied to every principal; without it only
  // keys' own allowlists apply.
  void SetOrgPolicies(OrgPolicyCache* policies) { org_policies_ = policies; }
  // Requests an org's shadow (dry-run) allowlist would have refused; they were admitted.
  std::uint64_t shadow_allowlist_refusals() const {
    return shadow_allowlist_refusals_.load(std::memory_order_relaxed);
  }

  // From `Authorization: Bearer <key>`, `Authorization: ApiKey <key>` or `X-API-Key: <key>`.
  // A credential in the query string is refused outright (it would end up in logs).
  static Result<std::string_view> ExtractCredential(const HttpRequest& request);

  // Never blocks: nullopt when the store must be asked (call Authenticate off the network thread).
  // With `subject`, a refusal says whose key it was (see AuthSubject).
  std::optional<Result<Principal>> TryFast(const HttpRequest& request,
                                           AuthSubject* subject = nullptr);

  // May block on the store. kUnavailable when the store cannot answer: never a guess.
  Result<Principal> Authenticate(const HttpRequest& request, AuthSubject* subject = nullptr);

  // For POST /v1/keys/verify: a verdict about someone else's key, presented in a body. May block.
  Result<KeyVerdict> VerifyForCaller(std::string_view key, std::string_view client_ip);

 private:
  // ExtractCredential, counting a missing or refused credential in the metrics.
  Result<std::string_view> Credential(const HttpRequest& request, AuthSubject* subject);
  Result<Principal> Decide(const KeyVerdict& verdict, const HttpRequest& request,
                           AuthSubject* subject);

  // The org's allowlist against the client's address, and the policy attached to `p`.
  Result<Principal> ApplyOrgPolicy(Result<Principal> p, AccessPolicyPtr policy,
                                   const HttpRequest& request, AuthSubject* subject);
  // The org's policy for a principal established on the slow path (may block).
  Result<Principal> WithOrgPolicy(Result<Principal> p, const HttpRequest& request,
                                  AuthSubject* subject);

  bool IsSession(std::string_view credential) const {
    return sessions_ && credential.starts_with("ghs_");
  }

  KeyVerifier& verifier_;
  Metrics& metrics_;
  const Clock& clock_;
  SessionResolver sessions_;
  OrgPolicyCache* org_policies_ = nullptr;
  std::atomic<std::uint64_t> shadow_allowlist_refusals_{0};
};

}  // namespace gatehouse

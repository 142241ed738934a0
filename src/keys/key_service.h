// The API key lifecycle: create (shown once), list (masked), get, revoke, rotate.
//
// Rules enforced here rather than in HTTP handlers, so that the CLI and the API agree:
//   - scopes come from the deployment's catalogue, and a key never gets a scope its creator
//     lacks (an `admin` creator may grant any catalogue scope);
//   - expiry is in the future and at most 10 years away;
//   - revocation and rotation drop the key from the verifier's cache at once.
//
// Thread-safety: safe for concurrent use; every method may block on the store.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>
#include "audit/details.h"

#include "authz/principal.h"
#include "config/config.h"
#include "keys/key_verifier.h"
#include "store/store.h"

namespace gatehouse {

struct NewKeyParams {
  std::string label;
  std::vector<std::string> scopes;
  std::string environment = "live";
  std::optional<std::string> expires_in;  // "90d"
  std::optional<std::string> expires_at;  // RFC 3339
  std::vector<std::string> ip_allowlist;
};

struct IssuedKey {
  ApiKeyRecord record;
  std::string secret;  // the full key; returned to the creator once and never stored
};

class KeyService {
 public:
  KeyService(Store& store, KeyVerifier& verifier, const Clock& clock,
             std::shared_ptr<const Config> config);

  // Builds a validated record and secret without storing it (used by Create and by bootstrap,
  // which stores the org and its first key in one transaction).
  Result<IssuedKey> Prepare(const Principal& creator, std::string_view org_id,
                            const NewKeyParams& params) const;
  // Changes record their audit event in the same transaction (see Store), from `source`.
  Result<IssuedKey> Create(const Principal& creator, std::string_view org_id,
                           const NewKeyParams& params, AuditSource source = {});
  Result<KeyPage> List(std::string_view org_id, const KeyListQuery& query);
  Result<ApiKeyRecord> Get(std::string_view org_id, std::string_view key_id);
  Result<ApiKeyRecord> Revoke(std::string_view org_id, std::string_view key_id,
                              const AuditSource& source = {});
  // A new key with the old one's settings; the old key stays valid for `grace` (0: ends now).
  Result<IssuedKey> Rotate(const Principal& actor, std::string_view org_id, std::string_view key_id,
                           UnixMicros grace, AuditSource source = {});

  // "active", "expired" or "revoked" at the current time.
  std::string_view State(const ApiKeyRecord& record) const;
  std::string Masked(const ApiKeyRecord& record) const;

  // The principal that bootstrap and the CLI act as: the operator, with every permission.
  static Principal Operator(std::string org_id);

 private:
  Store& store_;
  KeyVerifier& verifier_;
  const Clock& clock_;
  std::shared_ptr<const Config> config_;
};

}  // namespace gatehouse

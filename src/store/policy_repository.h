// Persistence of access policies (issue 6): an org's own rate limit and IP allowlist, and each
// key's rate limit. Written once over Store::RunSql like the people repository; the rows are
// org-owned, behind the database's org isolation, and every change is announced on the key
// invalidation log (by a trigger) so that every process drops what it cached.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keys/key_verifier.h"
#include "limits/access_policy.h"
#include "store/store.h"

namespace gatehouse {

// Credits a key used in a quota period, not yet in the store.
struct CreditsDelta {
  std::string key_id;
  std::int64_t period = 0;
  std::int64_t used = 0;
};

class PolicyRepository {
 public:
  explicit PolicyRepository(Store& store) : store_(store) {}

  // The org's own policy (key_id empty) or a key's; nullopt when none was ever set.
  Result<std::optional<AccessPolicy>> Get(std::string_view org_id, std::string_view key_id);
  // Replaces it, with its audit event, in one transaction.
  Result<void> Put(std::string_view org_id, std::string_view key_id, const AccessPolicy& policy,
                   const AuditEvent& audit);

  // A key's own policy as the key verifier caches it, with the credits used in the quota's
  // current period.
  Result<KeyPolicyLoad> LoadForKey(std::string_view org_id, std::string_view key_id,
                                   UnixMicros now);

  // Credits a key has used in `period` (QuotaPeriod), as flushed by every node so far.
  Result<std::int64_t> CreditsUsed(std::string_view org_id, std::string_view key_id,
                                   std::int64_t period);
  // Adds what this node used since its last flush, in one transaction.
  Result<void> AddCreditsUsed(std::string_view org_id, const std::vector<CreditsDelta>& deltas);

 private:
  Store& store_;
};

}  // namespace gatehouse

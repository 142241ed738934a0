// Persistence of access policies (issue 6): an org's own rate limit and IP allowlist, and each
// key's rate limit. Written once over Store::RunSql like the people repository; the rows are
// org-owned, behind the database's org isolation, and every change is announced on the key
// invalidation log (by a trigger) so that every process drops what it cached.
#pragma once

#include <optional>
#include <string_view>

#include "limits/access_policy.h"
#include "store/store.h"

namespace gatehouse {

class PolicyRepository {
 public:
  explicit PolicyRepository(Store& store) : store_(store) {}

  // The org's own policy (key_id empty) or a key's; nullopt when none was ever set.
  Result<std::optional<AccessPolicy>> Get(std::string_view org_id, std::string_view key_id);
  // Replaces it, with its audit event, in one transaction.
  Result<void> Put(std::string_view org_id, std::string_view key_id, const AccessPolicy& policy,
                   const AuditEvent& audit);

 private:
  Store& store_;
};

}  // namespace gatehouse

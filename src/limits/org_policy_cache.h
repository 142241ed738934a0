// Each org's own access policy (rate limit, IP allowlist), kept in memory so that the request
// path reads it without the store. Entries stay until the policy changes: the change is
// announced on the key invalidation log as "org:<id>" and every process drops its entry.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/error.h"
#include "core/text.h"
#include "limits/access_policy.h"

namespace gatehouse {

class OrgPolicyCache {
 public:
  using Loader = std::function<Result<std::optional<AccessPolicy>>(std::string_view org_id)>;
  explicit OrgPolicyCache(Loader loader, std::size_t capacity = 100'000)
      : loader_(std::move(loader)), capacity_(capacity) {}

  // Never blocks. nullopt: not known yet (Load off the network thread). A null pointer: the org
  // has no policy of its own.
  std::optional<AccessPolicyPtr> TryGet(std::string_view org_id) const;
  // May block on the store.
  Result<AccessPolicyPtr> Load(std::string_view org_id);
  void Invalidate(std::string_view org_id);

 private:
  Loader loader_;
  std::size_t capacity_;
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, AccessPolicyPtr, StringHash, std::equal_to<>> map_;
  std::uint64_t generation_ = 0;  // guarded by mu_; a load that raced an invalidation is dropped
};

}  // namespace gatehouse

#include "limits/org_policy_cache.h"

#include <mutex>

namespace gatehouse {

std::optional<AccessPolicyPtr> OrgPolicyCache::TryGet(std::string_view org_id) const {
  std::shared_lock lock(mu_);
  auto it = map_.find(org_id);
  if (it == map_.end()) return std::nullopt;
  return it->second;
}

Result<AccessPolicyPtr> OrgPolicyCache::Load(std::string_view org_id) {
  if (auto cached = TryGet(org_id)) return *cached;
  std::uint64_t generation;
  {
    std::shared_lock lock(mu_);
    generation = generation_;
  }
  auto loaded = loader_(org_id);
  if (!loaded) return tl::unexpected(loaded.error());
  AccessPolicyPtr policy =
      *loaded ? std::make_shared<const AccessPolicy>(std::move(**loaded)) : nullptr;
  std::unique_lock lock(mu_);
  if (generation == generation_) {
    if (map_.size() >= capacity_) map_.clear();  // orgs are few; a bound matters more than LRU
    map_.insert_or_assign(std::string(org_id), policy);
  }
  return policy;
}

void OrgPolicyCache::Invalidate(std::string_view org_id) {
  std::unique_lock lock(mu_);
  ++generation_;
  if (auto it = map_.find(org_id); it != map_.end()) map_.erase(it);
}

}  // namespace gatehouse

// Which limits apply to a request, and who decides them: this node's GCRA table, or Redis when
// the limits are shared by a cluster. Falls back to local limits scaled to this node's share
// when Redis cannot answer, and says so (log, /metrics, /readyz); it never admits without a
// decision.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "authz/principal.h"
#include "config/config.h"
#include "limits/gcra_table.h"
#include "limits/rate_limiter.h"

namespace gatehouse {

class RedisLimiter;
class Metrics;

struct LimitChecks {
  std::array<LimitCheck, kMaxLimitChecks> items;
  std::size_t count = 0;
  std::span<const LimitCheck> span() const { return {items.data(), count}; }
  bool empty() const { return count == 0; }
};

class LimitService {
 public:
  // `redis_password`: read by the caller from config.redis_password (empty: no AUTH).
  LimitService(const RateLimitsConfig& config, const Clock& clock, std::string redis_password = {});
  ~LimitService();

  // The limits for `principal` on `route` (null: not a proxied route): global, org, key or user,
  // then the route's. Views point into the principal, the route and the config.
  LimitChecks Collect(const Principal& principal, const RouteConfig* route) const;
  // The limit on `principal`'s calls to the control plane (empty when none is configured).
  LimitChecks CollectControlPlane(const Principal& principal) const;

  // Whether decisions go to Redis (then DecideShared is the way to ask).
  bool shared() const { return redis_ != nullptr; }
  // The cluster's Redis connection (null without one), which usage quotas share.
  RedisLimiter* redis() const { return redis_.get(); }
  // Ends the Redis connection's thread, so no callback of it runs after this returns.
  void StopSharing();

  // This node alone, at once (scaled to its share when the cluster's Redis is down).
  RateVerdict DecideHere(std::span<const LimitCheck> checks);
  // Redis's decision, or this node's when Redis cannot answer; `done` may run on another thread.
  void DecideShared(std::span<const LimitCheck> checks, std::function<void(RateVerdict)> done);
  // Either, waiting (for callers off the network threads).
  RateVerdict Decide(std::span<const LimitCheck> checks);

  // Counts a verdict in the metrics (after either path).
  void Count(const RateVerdict& verdict, std::span<const LimitCheck> checks);

  // Periodic: forgets idle local state, and in a cluster beats the heart and counts the nodes.
  void Housekeep();

  // "local", "shared" or "local-fallback" (Redis configured but unreachable).
  std::string_view mode() const;
  void RegisterMetrics(Metrics& metrics);
  GcraTable& table() { return table_; }

 private:
  const RateLimitsConfig& config_;
  const Clock& clock_;
  GcraTable table_;
  std::unique_ptr<RedisLimiter> redis_;
  std::string node_id_;
  std::atomic<std::uint32_t> nodes_{1};
  std::atomic<std::uint64_t> allowed_{0}, refused_{0}, shadow_refused_{0}, fallback_{0};
  std::array<std::atomic<std::uint64_t>, 7> refused_by_dimension_{};
};

}  // namespace gatehouse

#include "limits/limit_service.h"

#include <spdlog/spdlog.h>

#include "core/random.h"
#include "limits/redis_limiter.h"
#include "metrics/metrics.h"

namespace gatehouse {

namespace {

constexpr std::array<std::string_view, 7> kDimensions = {
    "global", "org", "key", "user", "route", "route_principal", "control_plane"};

std::size_t DimensionIndex(std::string_view d) {
  for (std::size_t i = 0; i < kDimensions.size(); ++i) {
    if (kDimensions[i] == d) return i;
  }
  return 0;
}

}  // namespace

LimitService::LimitService(const RateLimitsConfig& config, const Clock& clock,
                           std::string redis_password)
    : config_(config), clock_(clock), table_(config.max_tracked) {
  node_id_ = "node_" + RandomBase62(16);
  if (config.cluster_nodes > 0) nodes_.store(static_cast<std::uint32_t>(config.cluster_nodes));
  if (!config.redis.empty()) {
    auto address = SharedRedisAddress(config);
    if (address) {
      address->password = std::move(redis_password);
      redis_ = std::make_unique<RedisLimiter>(*address, config.redis_timeout);
    }
  }
}

LimitService::~LimitService() = default;

void LimitService::StopSharing() {
  if (redis_) redis_->Stop();
}

LimitChecks LimitService::CollectControlPlane(const Principal& p) const {
  LimitChecks out;
  if (config_.control_plane.enabled()) {
    out.items[out.count++] = LimitCheck{"control_plane", "", p.id, config_.control_plane, 1};
  }
  return out;
}

LimitChecks LimitService::Collect(const Principal& p, const RouteConfig* route) const {
  LimitChecks out;
  auto add = [&](std::string_view dimension, std::string_view scope, std::string_view id,
                 const RatePolicy& policy) {
    if (!policy.enabled() || out.count == out.items.size()) return;
    out.items[out.count++] = LimitCheck{dimension, scope, id, policy, 1};
  };
  add("global", "", "", config_.global);
  const RatePolicy& org = p.org_policy && p.org_policy->rate_limit.enabled()
                              ? p.org_policy->rate_limit
                              : config_.per_org;
  add("org", "", p.org_id, org);
  if (p.kind == "user") {
    add("user", "", p.id, config_.per_user);
  } else {
    add("key", "", p.id, p.key_rate_limit.enabled() ? p.key_rate_limit : config_.per_key);
  }
  if (route) {
    add("route", route->name, "", route->rate_limit);
    add("route_principal", route->name, p.id, route->rate_limit_per_principal);
  }
  return out;
}

RateVerdict LimitService::DecideHere(std::span<const LimitCheck> checks) {
  std::uint32_t share = redis_ ? nodes_.load(std::memory_order_relaxed) : 1;
  RateVerdict v = DecideLocally(table_, checks, clock_.Now(), share);
  v.fallback = redis_ != nullptr;
  return v;
}

void LimitService::DecideShared(std::span<const LimitCheck> checks,
                                std::function<void(RateVerdict)> done) {
  if (!redis_) {
    done(DecideHere(checks));
    return;
  }
  // The fallback needs the checks after this call returns: copy what DecideLocally reads.
  auto copy = std::make_shared<LimitChecks>();
  for (const auto& c : checks) copy->items[copy->count++] = c;
  redis_->Decide(checks, [this, copy, done = std::move(done)](SharedVerdict v) {
    if (v) {
      done(std::move(*v));
      return;
    }
    fallback_.fetch_add(1, std::memory_order_relaxed);
    done(DecideHere(copy->span()));
  });
}

RateVerdict LimitService::Decide(std::span<const LimitCheck> checks) {
  if (!redis_) return DecideHere(checks);
  if (auto v = redis_->DecideBlocking(checks)) return std::move(*v);
  fallback_.fetch_add(1, std::memory_order_relaxed);
  return DecideHere(checks);
}

void LimitService::Count(const RateVerdict& v, std::span<const LimitCheck> checks) {
  if (v.allowed) {
    allowed_.fetch_add(1, std::memory_order_relaxed);
  } else {
    refused_.fetch_add(1, std::memory_order_relaxed);
    if (v.refused_by >= 0 && static_cast<std::size_t>(v.refused_by) < checks.size()) {
      refused_by_dimension_[DimensionIndex(
                                checks[static_cast<std::size_t>(v.refused_by)].dimension)]
          .fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (v.shadow_refusals) shadow_refused_.fetch_add(1, std::memory_order_relaxed);
}

void LimitService::Housekeep() {
  table_.Sweep(clock_.Now());
  if (!redis_) return;
  auto seen = redis_->Heartbeat(node_id_);
  if (seen && config_.cluster_nodes == 0) nodes_.store(std::max<std::uint32_t>(1, *seen));
}

std::string_view LimitService::mode() const {
  if (!redis_) return "local";
  return redis_->up() ? "shared" : "local-fallback";
}

void LimitService::RegisterMetrics(Metrics& m) {
  m.AddReading("gatehouse_ratelimit_allowed_total", "Requests the rate limits admitted.", "counter",
               [this] { return static_cast<double>(allowed_.load()); });
  m.AddReading("gatehouse_ratelimit_refused_total", "Requests refused with 429 by a rate limit.",
               "counter", [this] { return static_cast<double>(refused_.load()); });
  for (std::size_t i = 0; i < kDimensions.size(); ++i) {
    m.AddReading("gatehouse_ratelimit_refused_" + std::string(kDimensions[i]) + "_total",
                 "Requests refused by the " + std::string(kDimensions[i]) + " limit.", "counter",
                 [this, i] { return static_cast<double>(refused_by_dimension_[i].load()); });
  }
  m.AddReading("gatehouse_ratelimit_shadow_refused_total",
               "Requests a shadow (dry-run) limit would have refused; they were admitted.",
               "counter", [this] { return static_cast<double>(shadow_refused_.load()); });
  m.AddReading("gatehouse_ratelimit_tracked_subjects", "Subjects with live local limiter state.",
               "gauge", [this] { return static_cast<double>(table_.size()); });
  m.AddReading("gatehouse_ratelimit_table_bytes", "Memory of the local limiter table.", "gauge",
               [this] { return static_cast<double>(table_.capacity_bytes()); });
  m.AddReading("gatehouse_ratelimit_evictions_total",
               "Live limiter state dropped because the table was at max_tracked.", "counter",
               [this] { return static_cast<double>(table_.evictions()); });
  if (redis_) {
    m.AddReading("gatehouse_ratelimit_shared_up",
                 "1 when Redis decides the cluster's limits, 0 when this node falls back.", "gauge",
                 [this] { return redis_->up() ? 1.0 : 0.0; });
    m.AddReading("gatehouse_ratelimit_fallback_decisions_total",
                 "Decisions made locally (scaled to this node's share) because Redis could not "
                 "answer.",
                 "counter", [this] { return static_cast<double>(fallback_.load()); });
    m.AddReading("gatehouse_ratelimit_cluster_nodes", "Nodes sharing the limits.", "gauge",
                 [this] { return static_cast<double>(nodes_.load()); });
  }
}

}  // namespace gatehouse

#include "limits/quota_service.h"

#include <future>
#include <map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "audit/details.h"
#include "core/time_format.h"
#include "limits/rate_limiter.h"
#include "limits/redis_limiter.h"
#include "store/policy_repository.h"

namespace gatehouse {

QuotaService::Plan QuotaService::Prepare(std::string_view counter_id, std::string_view org_id,
                                         const UsageQuota& quota, std::int64_t used_at_load,
                                         std::int64_t loaded_period) {
  Plan plan;
  plan.now = clock_.Now();
  plan.period = QuotaPeriod(quota, plan.now);
  QuotaOutcome& out = plan.outcome;
  out.applies = true;
  out.credits = quota.credits;
  out.refill_at = QuotaRefillAt(quota, plan.now);
  if (out.refill_at > 0) out.retry_after = std::max(1L, CeilSeconds(out.refill_at - plan.now));
  std::lock_guard lock(mu_);
  auto it = entries_.find(counter_id);
  if (it == entries_.end()) {
    Entry e;
    e.org_id.assign(org_id);
    e.period = plan.period;
    e.base = loaded_period == plan.period ? used_at_load : 0;
    it = entries_.emplace(std::string(counter_id), std::move(e)).first;
  }
  Entry& e = it->second;
  if (e.period != plan.period) {  // refilled: the old period's spend still goes to the store
    if (e.pending > 0) retired_.push_back({e.org_id, std::string(counter_id), e.period, e.pending});
    e.period = plan.period;
    e.base = 0;
    e.pending = 0;
    e.warned = false;
  }
  plan.known_spent = e.base + e.pending;
  return plan;
}

QuotaOutcome QuotaService::Settle(std::string_view counter_id, std::string_view key_id,
                                  std::string_view org_id, const UsageQuota& quota,
                                  const Plan& plan, std::uint32_t cost, std::string_view client_ip,
                                  const std::optional<SharedSpend>& shared) {
  QuotaOutcome out = plan.outcome;
  bool warn = false;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(counter_id);
    if (it == entries_.end() || it->second.period != plan.period) {
      // The period turned while Redis answered: decide afresh on the next request.
      return out;
    }
    Entry& e = it->second;
    std::int64_t spent_after = 0;
    if (shared) {
      out.allowed = shared->allowed;
      if (out.allowed) e.pending += cost;
      // The cluster's count is the truth; this node's view follows it.
      e.base = std::max<std::int64_t>(0, shared->used - e.pending);
      spent_after = shared->used;
    } else {
      const std::int64_t spent = e.base + e.pending;
      out.allowed = spent + cost <= quota.credits || quota.shadow;
      if (out.allowed) e.pending += cost;
      spent_after = out.allowed ? spent + cost : spent;
    }
    out.remaining = std::max<std::int64_t>(0, quota.credits - spent_after);
    if (out.allowed && !e.warned && out.remaining * 10 <= quota.credits) {
      e.warned = true;
      warn = true;
    }
  }
  if (warn) Warn(key_id, org_id, quota, out, plan.now, client_ip);
  return out;
}

void QuotaService::Warn(std::string_view key_id, std::string_view org_id, const UsageQuota& quota,
                        const QuotaOutcome& out, UnixMicros now, std::string_view client_ip) {
  if (!warnings_) return;
  std::string remaining = std::to_string(out.remaining);
  std::string credits = std::to_string(quota.credits);
  std::string refill = out.refill_at ? FormatRfc3339(out.refill_at) : "never";
  AuditEvent e = DecisionEvent(org_id, key_id, "security.usage_low", "key:" + std::string(key_id),
                               DetailsOf({{"remaining", remaining},
                                          {"credits", credits},
                                          {"refill", quota.refill},
                                          {"refills_at", refill},
                                          {"mode", quota.shadow ? "shadow" : "enforce"}}));
  e.at = now;
  e.client_ip.assign(client_ip);
  e.result = "detected";
  spdlog::warn("security: key {} has {} of {} credits left", key_id, remaining, credits);
  warnings_(std::move(e));
}

namespace {
// How long Redis keeps a period's count: past its refill (a day's margin), or a month for
// credits that never refill (then re-read from the store).
std::int64_t CountTtlSeconds(const QuotaOutcome& o, UnixMicros now) {
  constexpr std::int64_t kDay = 86400;
  if (o.refill_at <= 0) return 31 * kDay;
  return CeilSeconds(o.refill_at - now) + kDay;
}
}  // namespace

void QuotaService::SpendAsync(std::string_view key_id, std::string_view org_id,
                              const UsageQuota& quota, std::int64_t used_at_load,
                              std::int64_t loaded_period, std::uint32_t cost,
                              std::string_view client_ip, std::function<void(QuotaOutcome)> done) {
  if (!quota.enabled()) {
    done(QuotaOutcome{});
    return;
  }
  // A rotated key spends its predecessor's credits: both count under the pool's id.
  const std::string_view counter = QuotaCounterId(quota, key_id);
  Plan plan = Prepare(counter, org_id, quota, used_at_load, loaded_period);
  if (!redis_) {
    done(Settle(counter, key_id, org_id, quota, plan, cost, client_ip, std::nullopt));
    return;
  }
  redis_->SpendCredits(counter, plan.period, quota.credits, cost, plan.known_spent, quota.shadow,
                       CountTtlSeconds(plan.outcome, plan.now),
                       [this, counter_id = std::string(counter), key = std::string(key_id),
                        org = std::string(org_id), quota, plan, cost, ip = std::string(client_ip),
                        done = std::move(done)](std::optional<SharedSpend> shared) {
                         done(Settle(counter_id, key, org, quota, plan, cost, ip, shared));
                       });
}

QuotaOutcome QuotaService::Spend(std::string_view key_id, std::string_view org_id,
                                 const UsageQuota& quota, std::int64_t used_at_load,
                                 std::int64_t loaded_period, std::uint32_t cost,
                                 std::string_view client_ip) {
  std::promise<QuotaOutcome> answer;
  auto outcome = answer.get_future();
  SpendAsync(key_id, org_id, quota, used_at_load, loaded_period, cost, client_ip,
             [&answer](QuotaOutcome o) { answer.set_value(o); });
  return outcome.get();
}

Result<void> QuotaService::Flush(PolicyRepository& repository) {
  struct Pending {
    std::string key_id;
    std::int64_t period, used;
  };
  std::map<std::string, std::vector<CreditsDelta>> by_org;
  std::vector<std::pair<std::string, std::string>> active;  // (org, key) to read back
  {
    std::lock_guard lock(mu_);
    for (auto& r : retired_) by_org[r.org_id].push_back({r.key_id, r.period, r.used});
    retired_.clear();
    for (auto& [key, e] : entries_) {
      if (e.pending == 0) continue;
      by_org[e.org_id].push_back({key, e.period, e.pending});
      active.emplace_back(e.org_id, key);
      e.base += e.pending;  // optimistic: the write below makes it so
      e.pending = 0;
    }
  }
  Result<void> result;
  for (auto& [org, deltas] : by_org) {
    if (auto r = repository.AddCreditsUsed(org, deltas); !r) {
      // Not lost: spent again as pending, to be written next time.
      std::lock_guard lock(mu_);
      for (auto& d : deltas) {
        auto it = entries_.find(d.key_id);
        if (it != entries_.end() && it->second.period == d.period) {
          it->second.base -= d.used;
          it->second.pending += d.used;
        } else {
          retired_.push_back({org, d.key_id, d.period, d.used});
        }
      }
      result = r;
    }
  }
  // What every node has spent: the store's total replaces this node's view.
  for (auto& [org, key] : active) {
    std::int64_t period;
    {
      std::lock_guard lock(mu_);
      auto it = entries_.find(key);
      if (it == entries_.end()) continue;
      period = it->second.period;
    }
    auto used = repository.CreditsUsed(org, key, period);
    if (!used) continue;
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end() && it->second.period == period) {
      it->second.base = std::max(it->second.base, *used);
    }
  }
  return result;
}

Error QuotaService::RefusalError(const QuotaOutcome& outcome, const UsageQuota& quota) {
  Error e{
      ErrorCode::kUsageExceeded,
      outcome.refill_at
          ? fmt::format("usage quota exhausted: {} credits per {}, renewed at {}", quota.credits,
                        quota.refill == "daily" ? "day" : "month", FormatRfc3339(outcome.refill_at))
          : fmt::format("usage quota exhausted: all {} credits are spent", quota.credits),
      {},
      {}};
  e.retry_after = outcome.retry_after;
  return e;
}

}  // namespace gatehouse

// Spends keys' credits (usage quotas) on the request path without a store write per request:
// each node counts in memory and adds what it spent to the store every second (Flush), reading
// back what every node has spent so far, so nothing is lost to a restart.
//
// In a cluster with Redis (ShareThrough), Redis keeps each key's count for the period and
// decides every spend atomically, so the nodes together spend exactly the credits. A period
// Redis does not know (new, or Redis restarted) starts from what the store and this node know.
// When Redis cannot answer, the node decides from its own view, as without Redis: the nodes can
// then overspend by about one flush interval of the key's traffic.
//
// When a key's remaining credits fall to a tenth, a security event warns ("security.usage_low",
// once per period); when they run out, requests get 429 usage_exceeded until the refill.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/text.h"
#include "limits/usage_quota.h"
#include "store/records.h"

namespace gatehouse {

class PolicyRepository;
class RedisLimiter;
struct SharedSpend;

struct QuotaOutcome {
  bool applies = false;  // the key has a quota
  bool allowed = true;
  std::int64_t credits = 0;    // per period
  std::int64_t remaining = 0;  // after this request
  UnixMicros refill_at = 0;    // 0: never
  long retry_after = 0;        // seconds until the refill (0: never)
};

class QuotaService {
 public:
  using Sink = std::function<void(AuditEvent)>;
  QuotaService(const Clock& clock, Sink warnings) : clock_(clock), warnings_(std::move(warnings)) {}

  // Spends go through this Redis from now on (null: this node alone). Call before serving.
  void ShareThrough(RedisLimiter* redis) { redis_ = redis; }
  bool shared() const { return redis_ != nullptr; }

  // Spends `cost` credits of the key (nothing when refused). `used_at_load` and `loaded_period`
  // are what the store said when the key was read (KeyFacts). Waits for Redis when shared.
  QuotaOutcome Spend(std::string_view key_id, std::string_view org_id, const UsageQuota& quota,
                     std::int64_t used_at_load, std::int64_t loaded_period, std::uint32_t cost,
                     std::string_view client_ip);
  // The same without waiting: `done` runs once, on the Redis thread or on this one.
  void SpendAsync(std::string_view key_id, std::string_view org_id, const UsageQuota& quota,
                  std::int64_t used_at_load, std::int64_t loaded_period, std::uint32_t cost,
                  std::string_view client_ip, std::function<void(QuotaOutcome)> done);

  // Adds this node's spending to the store and learns the other nodes'. Off the request path.
  Result<void> Flush(PolicyRepository& repository);

  // 429 usage_exceeded for a refused outcome, naming the quota and when it refills.
  static Error RefusalError(const QuotaOutcome& outcome, const UsageQuota& quota);

 private:
  struct Entry {
    std::string org_id;
    std::int64_t period = 0;
    std::int64_t base = 0;     // spent in the period as of the last read from the store
    std::int64_t pending = 0;  // spent here since, not yet in the store
    bool warned = false;
  };
  struct Retired {  // a finished period's pending spend, still to be written
    std::string org_id, key_id;
    std::int64_t period, used;
  };
  // Where a spend stands before it is decided: the key's period, and what this node knows was
  // spent in it.
  struct Plan {
    UnixMicros now = 0;
    std::int64_t period = 0;
    std::int64_t known_spent = 0;
    QuotaOutcome outcome;  // applies, credits, refill_at, retry_after filled in
  };
  // Credits are counted under `counter_id` (QuotaCounterId); events name the key.
  Plan Prepare(std::string_view counter_id, std::string_view org_id, const UsageQuota& quota,
               std::int64_t used_at_load, std::int64_t loaded_period);
  // Decides (from Redis's answer when there is one) and books the spend.
  QuotaOutcome Settle(std::string_view counter_id, std::string_view key_id, std::string_view org_id,
                      const UsageQuota& quota, const Plan& plan, std::uint32_t cost,
                      std::string_view client_ip, const std::optional<SharedSpend>& shared);
  void Warn(std::string_view key_id, std::string_view org_id, const UsageQuota& quota,
            const QuotaOutcome& out, UnixMicros now, std::string_view client_ip);

  const Clock& clock_;
  Sink warnings_;
  RedisLimiter* redis_ = nullptr;
  std::mutex mu_;
  std::unordered_map<std::string, Entry, StringHash, std::equal_to<>>
      entries_;                   // by key id; guarded by mu_
  std::vector<Retired> retired_;  // guarded by mu_
};

}  // namespace gatehouse

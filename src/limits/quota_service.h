// Spends keys' credits (usage quotas) on the request path without a store write per request:
// each node counts in memory and adds what it spent to the store every second (Flush), reading
// back what every node has spent so far. A key's spend is exact on one node; across a cluster
// the nodes together can overspend by about one flush interval of the key's traffic.
//
// When a key's remaining credits fall to a tenth, a security event warns ("security.usage_low",
// once per period); when they run out, requests get 429 usage_exceeded until the refill.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
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

  // Spends `cost` credits of the key (nothing when refused). `used_at_load` and `loaded_period`
  // are what the store said when the key was read (KeyFacts).
  QuotaOutcome Spend(std::string_view key_id, std::string_view org_id, const UsageQuota& quota,
                     std::int64_t used_at_load, std::int64_t loaded_period, std::uint32_t cost,
                     std::string_view client_ip);

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
  const Clock& clock_;
  Sink warnings_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry, StringHash, std::equal_to<>>
      entries_;                   // by key id; guarded by mu_
  std::vector<Retired> retired_;  // guarded by mu_
};

}  // namespace gatehouse

// Usage quotas (issue 6): a key's credits per period. Every request through a route costs the
// route's `cost` (1 by default); when the period's credits are spent the key gets
// 429 usage_exceeded until the next refill (the start of the next UTC day or month), or for
// good with refill "none".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json/object.hpp>

#include "core/clock.h"
#include "core/error.h"

namespace gatehouse {

class JsonObjectReader;

struct UsageQuota {
  std::int64_t credits = 0;     // per period; 0: no quota
  std::string refill = "none";  // "daily", "monthly" or "none" (one allowance, never renewed)
  bool shadow = false;          // dry run: counted and warned about, never refused
  // The key whose credits this one spends: a rotated key's replacement shares its
  // predecessor's, so that rotating never refills. Empty: its own. Never taken from the API.
  std::string pool = {};

  bool enabled() const { return credits > 0; }
  bool operator==(const UsageQuota&) const = default;
};

// {"credits":1000,"refill":"monthly","mode":"enforce"}; field names the JSON path in messages.
Result<UsageQuota> ReadUsageQuota(JsonObjectReader& object, std::string_view field);
boost::json::object UsageQuotaJson(const UsageQuota& q);
std::string StoreUsageQuota(const UsageQuota& q);  // empty: none
Result<UsageQuota> ParseStoredUsageQuota(std::string_view text);

// The id credits are counted under: the pool, or the key itself.
inline std::string_view QuotaCounterId(const UsageQuota& q, std::string_view key_id) {
  return q.pool.empty() ? key_id : std::string_view(q.pool);
}

// The period `now` falls in: 20261123 (daily), 202611 (monthly), 0 (none).
std::int64_t QuotaPeriod(const UsageQuota& q, UnixMicros now);
// When that period ends (the next refill); 0 for "none".
UnixMicros QuotaRefillAt(const UsageQuota& q, UnixMicros now);

}  // namespace gatehouse

// Stage 8 of the request pipeline: every rate limit that applies to a request (its key, user,
// org, route and the global one), decided together so that the strictest wins and a refused
// request consumes nothing from any of them.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "limits/gcra_table.h"
#include "limits/rate_policy.h"

namespace gatehouse {

// One limit that applies to a request: which subject it counts, under which policy.
struct LimitCheck {
  std::string_view dimension;  // "key", "user", "org", "route", "route_principal", "global",
                               // "control_plane"
  std::string_view scope;      // narrows the dimension: the route's name for route limits
  std::string_view id;         // the subject within the dimension ("" for global and route)
  RatePolicy policy;
  std::uint32_t cost = 1;
};

inline constexpr std::size_t kMaxLimitChecks = 8;

struct RateVerdict {
  bool allowed = true;
  int refused_by = -1;                // the enforced check that refused
  UnixMicros retry_after = 0;         // refused: until the request would pass
  int binding = -1;                   // the enforced check with the fewest requests left (headers)
  GcraOutcome binding_outcome;        // its numbers
  std::uint32_t shadow_refusals = 0;  // bit i: shadow check i would have refused
  bool fallback = false;  // decided by this node alone: the shared limiter was unreachable
};

// Decides on this node's table. With nodes > 1 (cluster fallback) every policy is scaled down
// to this node's share.
RateVerdict DecideLocally(GcraTable& table, std::span<const LimitCheck> checks, UnixMicros now,
                          std::uint32_t nodes = 1);

// The rate-limit response fields, from the binding check (none when no enforced check applied):
//   RateLimit-Limit: requests admitted at once (the burst)
//   RateLimit-Remaining: of those, how many are left now
//   RateLimit-Reset: seconds until the full burst is back
//   RateLimit-Policy: <requests>;w=<window seconds>[;burst=<n>]
// Retry-After comes with the refusal's error (RefusalError).
void AppendRateLimitHeaders(const RateVerdict& verdict, std::span<const LimitCheck> checks,
                            std::vector<std::pair<std::string, std::string>>& headers);
// The same as header lines ("Name: value\r\n"), for the proxy's response head.
void AppendRateLimitLines(const RateVerdict& verdict, std::span<const LimitCheck> checks,
                          std::string& out);

// "rate limit exceeded: key policy 100 per 1m" — which limit tripped, never whose.
std::string RefusalMessage(const RateVerdict& verdict, std::span<const LimitCheck> checks);

// 429 rate_limit_exceeded naming the limit, with retry_after set (at least 1 s).
Error RefusalError(const RateVerdict& verdict, std::span<const LimitCheck> checks);

// Whole seconds for headers, rounded up so that a client waiting that long is admitted.
long CeilSeconds(UnixMicros d);

}  // namespace gatehouse

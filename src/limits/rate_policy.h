// A rate limit as operators and API callers write it: `requests` per `window`, with up to
// `burst` requests at once. Enforced with GCRA (the generic cell rate algorithm): one timestamp
// per limited subject, the theoretical arrival time (TAT) of its next request.
//
//   interval  T   = window / requests        (one request's worth of time)
//   tolerance tau = T * (capacity - 1)        (capacity = burst, or requests when burst is 0)
//
// A request at `now` costing c is admitted when max(TAT, now) + c*T - now <= tau + T, and then
// TAT becomes max(TAT, now) + c*T. A subject whose TAT has passed is indistinguishable from one
// never seen, which is what lets idle state be forgotten without changing any decision.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json/object.hpp>

#include "core/clock.h"
#include "core/error.h"

namespace gatehouse {

class JsonObjectReader;

struct RatePolicy {
  std::uint32_t requests = 0;  // 0: no limit
  UnixMicros window = 0;
  std::uint32_t burst = 0;  // 0: `requests` at once
  // Shadow mode (dry run): decisions are counted and recorded, never enforced.
  bool shadow = false;

  bool enabled() const { return requests > 0; }
  UnixMicros interval() const { return window / requests; }
  std::uint32_t capacity() const { return burst > 0 ? burst : requests; }
  UnixMicros tolerance() const { return interval() * (capacity() - 1); }

  // The same policy shared by `nodes` processes that cannot coordinate (Redis unreachable):
  // each admits its share, so that together they admit about what one shared limiter would.
  RatePolicy ScaledDown(std::uint32_t nodes) const;

  bool operator==(const RatePolicy&) const = default;
};

// Bounds: requests 1..1e9 per window of 1 s..366 d, burst 1..1e9, and a window of at least
// one microsecond per request.
Result<RatePolicy> MakeRatePolicy(std::int64_t requests, std::string_view window,
                                  std::int64_t burst, std::string_view mode,
                                  std::string_view field);

// {"requests":100,"window":"1m","burst":20,"mode":"enforce"|"shadow"}; field names the JSON
// path in messages ("rate_limit.window").
Result<RatePolicy> ReadRatePolicy(JsonObjectReader& object, std::string_view field);

// The API's form: {"requests":100,"window":"60s","burst":20,"mode":"enforce"}.
boost::json::object RatePolicyJson(const RatePolicy& p);

// Stored form (compact JSON, the API form); ParseStoredRatePolicy reads it back. Empty text is
// "no policy" (requests 0).
std::string StoreRatePolicy(const RatePolicy& p);
Result<RatePolicy> ParseStoredRatePolicy(std::string_view text);

}  // namespace gatehouse

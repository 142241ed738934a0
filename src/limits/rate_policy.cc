#include "limits/rate_policy.h"

#include <algorithm>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "core/json_input.h"
#include "core/time_format.h"

namespace gatehouse {

namespace {

constexpr std::int64_t kMaxCount = 1'000'000'000;
constexpr UnixMicros kMinWindow = kMicrosPerSecond;
constexpr UnixMicros kMaxWindow = 366LL * 86400 * kMicrosPerSecond;

// The shortest exact spelling ParseDuration reads back: "60s" stays "1m", "90s" stays "90s".
std::string DurationText(UnixMicros d) {
  struct Unit {
    UnixMicros micros;
    const char* suffix;
  };
  static constexpr Unit kUnits[] = {{86400LL * kMicrosPerSecond, "d"},
                                    {3600LL * kMicrosPerSecond, "h"},
                                    {60LL * kMicrosPerSecond, "m"},
                                    {kMicrosPerSecond, "s"},
                                    {1000, "ms"}};
  for (const auto& u : kUnits) {
    if (d % u.micros == 0) return std::to_string(d / u.micros) + u.suffix;
  }
  return std::to_string(d / 1000) + "ms";
}

}  // namespace

RatePolicy RatePolicy::ScaledDown(std::uint32_t nodes) const {
  if (nodes <= 1 || !enabled()) return *this;
  RatePolicy p = *this;
  p.requests = std::max<std::uint32_t>(1, requests / nodes);
  if (burst > 0) p.burst = std::max<std::uint32_t>(1, burst / nodes);
  return p;
}

Result<RatePolicy> MakeRatePolicy(std::int64_t requests, std::string_view window,
                                  std::int64_t burst, std::string_view mode,
                                  std::string_view field) {
  auto bad = [&](std::string_view sub, std::string message) {
    std::string name = std::string(field) + "." + std::string(sub);
    return FailField(name, name + " " + message);
  };
  if (requests < 1 || requests > kMaxCount) return bad("requests", "must be 1 to 1000000000");
  auto w = ParseDuration(window);
  if (!w) return bad("window", "must be a duration such as \"1s\", \"1m\" or \"1h\"");
  if (*w < kMinWindow || *w > kMaxWindow) return bad("window", "must be from 1s to 366d");
  if (*w / requests < 1) return bad("requests", "is more than one per microsecond");
  if (burst < 0 || burst > kMaxCount) return bad("burst", "must be 1 to 1000000000");
  if (mode != "enforce" && mode != "shadow")
    return bad("mode", "must be \"enforce\" or \"shadow\"");
  RatePolicy p;
  p.requests = static_cast<std::uint32_t>(requests);
  p.window = *w;
  p.burst = static_cast<std::uint32_t>(burst);
  p.shadow = mode == "shadow";
  return p;
}

Result<RatePolicy> ReadRatePolicy(JsonObjectReader& o, std::string_view field) {
  auto requests = o.OptInt("requests");
  if (!requests) return tl::unexpected(requests.error());
  auto window = o.OptString("window");
  if (!window) return tl::unexpected(window.error());
  auto burst = o.OptInt("burst");
  if (!burst) return tl::unexpected(burst.error());
  auto mode = o.OptString("mode");
  if (!mode) return tl::unexpected(mode.error());
  if (auto unknown = o.RejectUnknownFields(); !unknown) return tl::unexpected(unknown.error());
  if (!*requests) {
    std::string name = std::string(field) + ".requests";
    return FailField(name, name + " is required");
  }
  if (!*window) {
    std::string name = std::string(field) + ".window";
    return FailField(name, name + " is required");
  }
  return MakeRatePolicy(**requests, **window, burst->value_or(0), mode->value_or("enforce"), field);
}

boost::json::object RatePolicyJson(const RatePolicy& p) {
  boost::json::object o;
  o["requests"] = p.requests;
  o["window"] = DurationText(p.window);
  o["burst"] = p.capacity();
  o["mode"] = p.shadow ? "shadow" : "enforce";
  return o;
}

std::string StoreRatePolicy(const RatePolicy& p) {
  if (!p.enabled()) return {};
  boost::json::object o = RatePolicyJson(p);
  // As given: "burst": 0 means "requests at once" and stays so if requests change later.
  o["burst"] = p.burst;
  return boost::json::serialize(o);
}

Result<RatePolicy> ParseStoredRatePolicy(std::string_view text) {
  if (text.empty()) return RatePolicy{};
  auto o = JsonObjectReader::Parse(text);
  if (!o) return Fail(ErrorCode::kInternal, "stored rate limit is not JSON");
  auto p = ReadRatePolicy(*o, "rate_limit");
  if (!p) return Fail(ErrorCode::kInternal, "stored rate limit is invalid: " + p.error().message);
  return p;
}

}  // namespace gatehouse

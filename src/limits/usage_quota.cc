#include "limits/usage_quota.h"

#include <chrono>

#include <boost/json/serialize.hpp>

#include "core/json_input.h"

namespace gatehouse {

namespace {

std::chrono::year_month_day DayOf(UnixMicros now) {
  return std::chrono::year_month_day(std::chrono::floor<std::chrono::days>(
      std::chrono::sys_time<std::chrono::microseconds>(std::chrono::microseconds(now))));
}

UnixMicros MicrosAt(std::chrono::year_month_day d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::sys_days(d).time_since_epoch())
      .count();
}

}  // namespace

Result<UsageQuota> ReadUsageQuota(JsonObjectReader& o, std::string_view field) {
  auto credits = o.OptInt("credits");
  if (!credits) return tl::unexpected(credits.error());
  auto refill = o.OptString("refill");
  if (!refill) return tl::unexpected(refill.error());
  auto mode = o.OptString("mode");
  if (!mode) return tl::unexpected(mode.error());
  if (auto unknown = o.RejectUnknownFields(); !unknown) return tl::unexpected(unknown.error());
  std::string f(field);
  if (!*credits || **credits < 1 || **credits > 1'000'000'000'000) {
    return FailField(f + ".credits", f + ".credits must be 1 to 1000000000000");
  }
  UsageQuota q;
  q.credits = **credits;
  q.refill = refill->value_or("none");
  if (q.refill != "daily" && q.refill != "monthly" && q.refill != "none") {
    return FailField(f + ".refill", f + ".refill must be \"daily\", \"monthly\" or \"none\"");
  }
  std::string m = mode->value_or("enforce");
  if (m != "enforce" && m != "shadow") {
    return FailField(f + ".mode", f + ".mode must be \"enforce\" or \"shadow\"");
  }
  q.shadow = m == "shadow";
  return q;
}

boost::json::object UsageQuotaJson(const UsageQuota& q) {
  boost::json::object o;
  o["credits"] = q.credits;
  o["refill"] = q.refill;
  o["mode"] = q.shadow ? "shadow" : "enforce";
  return o;
}

std::string StoreUsageQuota(const UsageQuota& q) {
  if (!q.enabled()) return {};
  boost::json::object o = UsageQuotaJson(q);
  if (!q.pool.empty()) o["pool"] = q.pool;
  return boost::json::serialize(o);
}

Result<UsageQuota> ParseStoredUsageQuota(std::string_view text) {
  if (text.empty()) return UsageQuota{};
  auto o = JsonObjectReader::Parse(text);
  if (!o) return Fail(ErrorCode::kInternal, "stored quota is not JSON");
  auto pool = o->OptString("pool");  // stored only, so read before the API's reader
  if (!pool) return Fail(ErrorCode::kInternal, "stored quota pool is invalid");
  auto q = ReadUsageQuota(*o, "quota");
  if (!q) return Fail(ErrorCode::kInternal, "stored quota is invalid: " + q.error().message);
  q->pool = pool->value_or("");
  return q;
}

std::int64_t QuotaPeriod(const UsageQuota& q, UnixMicros now) {
  if (q.refill == "none") return 0;
  auto d = DayOf(now);
  std::int64_t ym = static_cast<int>(d.year()) * 100 + static_cast<unsigned>(d.month());
  if (q.refill == "monthly") return ym;
  return ym * 100 + static_cast<unsigned>(d.day());
}

UnixMicros QuotaRefillAt(const UsageQuota& q, UnixMicros now) {
  if (q.refill == "none") return 0;
  auto d = DayOf(now);
  if (q.refill == "daily") return MicrosAt(std::chrono::sys_days(d) + std::chrono::days(1));
  auto next = std::chrono::year_month(d.year(), d.month()) + std::chrono::months(1);
  return MicrosAt(next / std::chrono::day(1));
}

}  // namespace gatehouse

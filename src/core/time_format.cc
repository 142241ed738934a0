#include "core/time_format.h"

#include <fmt/format.h>
#include <charconv>
#include <chrono>
#include <limits>

namespace gatehouse {

namespace {
constexpr UnixMicros kMaxDuration = 100LL * 365 * 24 * 3600 * kMicrosPerSecond;

bool ParseDigits(std::string_view s, long long& out) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}
}  // namespace

Result<UnixMicros> ParseDuration(std::string_view text) {
  std::size_t split = 0;
  while (split < text.size() && text[split] >= '0' && text[split] <= '9') ++split;
  long long n = 0;
  if (split == 0 || split > 12 || !ParseDigits(text.substr(0, split), n) || n <= 0) {
    return Fail(ErrorCode::kInvalidArgument,
                "duration must be a positive whole number followed by a unit (ms, s, m, h, d, w, "
                "y), e.g. 90d");
  }
  std::string_view unit = text.substr(split);
  long long per = 0;
  if (unit == "ms")
    per = 1000;
  else if (unit == "s")
    per = kMicrosPerSecond;
  else if (unit == "m")
    per = 60 * kMicrosPerSecond;
  else if (unit == "h")
    per = 3600 * kMicrosPerSecond;
  else if (unit == "d")
    per = 86400 * kMicrosPerSecond;
  else if (unit == "w")
    per = 7 * 86400 * kMicrosPerSecond;
  else if (unit == "y")
    per = 365 * 86400 * kMicrosPerSecond;
  else {
    return Fail(ErrorCode::kInvalidArgument, "duration unit must be one of ms, s, m, h, d, w, y");
  }
  if (n > kMaxDuration / per) {
    return Fail(ErrorCode::kInvalidArgument, "duration is longer than 100 years");
  }
  return n * per;
}

Result<UnixMicros> ParseRfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  auto bad = [] {
    return Fail(ErrorCode::kInvalidArgument,
                "timestamp must be RFC 3339, e.g. 2027-01-31T00:00:00Z");
  };
  if (s.size() < 20 || s.size() > 40) return bad();
  long long y, mo, d, h, mi, sec;
  if (s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':')
    return bad();
  if (!ParseDigits(s.substr(0, 4), y) || !ParseDigits(s.substr(5, 2), mo) ||
      !ParseDigits(s.substr(8, 2), d) || !ParseDigits(s.substr(11, 2), h) ||
      !ParseDigits(s.substr(14, 2), mi) || !ParseDigits(s.substr(17, 2), sec))
    return bad();
  std::size_t i = 19;
  long long frac_us = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start || i - start > 9) return bad();
    std::string digits(s.substr(start, i - start));
    digits.resize(6, '0');
    ParseDigits(std::string_view(digits).substr(0, 6), frac_us);
  }
  long long offset_s = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
    long long oh, om;
    if (!ParseDigits(s.substr(i + 1, 2), oh) || !ParseDigits(s.substr(i + 4, 2), om) || oh > 23 ||
        om > 59)
      return bad();
    offset_s = (oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
    i += 6;
  } else {
    return bad();
  }
  if (i != s.size()) return bad();
  using namespace std::chrono;
  year_month_day ymd{year{static_cast<int>(y)}, month{static_cast<unsigned>(mo)},
                     day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 60) return bad();
  long long days = sys_days(ymd).time_since_epoch().count();
  long long total_s = days * 86400 + h * 3600 + mi * 60 + sec - offset_s;
  return total_s * kMicrosPerSecond + frac_us;
}

std::string FormatRfc3339(UnixMicros t) {
  using namespace std::chrono;
  long long secs = t / kMicrosPerSecond;
  if (t < 0 && t % kMicrosPerSecond != 0) --secs;
  sys_days days{floor<std::chrono::days>(sys_seconds{seconds{secs}})};
  year_month_day ymd{days};
  long long rem = secs - days.time_since_epoch().count() * 86400LL;
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", int(ymd.year()), unsigned(ymd.month()),
                     unsigned(ymd.day()), rem / 3600, (rem / 60) % 60, rem % 60);
}

}  // namespace gatehouse

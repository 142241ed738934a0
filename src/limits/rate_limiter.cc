#include "limits/rate_limiter.h"

#include <fmt/format.h>

namespace gatehouse {

long CeilSeconds(UnixMicros d) {
  if (d <= 0) return 0;
  return static_cast<long>((d + kMicrosPerSecond - 1) / kMicrosPerSecond);
}

RateVerdict DecideLocally(GcraTable& table, std::span<const LimitCheck> checks, UnixMicros now,
                          std::uint32_t nodes) {
  RateVerdict v;
  v.fallback = nodes > 1;
  std::array<std::uint64_t, kMaxLimitChecks> subjects{};
  std::array<RatePolicy, kMaxLimitChecks> policies{};
  std::array<bool, kMaxLimitChecks> taken{};
  const std::size_t n = std::min(checks.size(), kMaxLimitChecks);
  for (std::size_t i = 0; i < n; ++i) {
    const LimitCheck& c = checks[i];
    if (!c.policy.enabled()) continue;
    subjects[i] = SubjectHash(c.dimension, c.scope, c.id);
    policies[i] = c.policy.ScaledDown(nodes);
    GcraOutcome o = table.Take(subjects[i], policies[i], now, c.cost);
    taken[i] = o.allowed;
    if (c.policy.shadow) {
      if (!o.allowed) v.shadow_refusals |= 1U << i;
      continue;
    }
    if (!o.allowed) {
      v.allowed = false;
      v.refused_by = static_cast<int>(i);
      v.retry_after = o.retry_after;
      v.binding = static_cast<int>(i);
      v.binding_outcome = o;
      // A refused request consumes nothing: give back what the others admitted.
      for (std::size_t j = 0; j < i; ++j) {
        if (taken[j]) table.Refund(subjects[j], policies[j], checks[j].cost);
      }
      return v;
    }
    if (v.binding < 0 || o.remaining < v.binding_outcome.remaining) {
      v.binding = static_cast<int>(i);
      v.binding_outcome = o;
    }
  }
  return v;
}

namespace {

template <typename Emit>
void EmitHeaders(const RateVerdict& v, std::span<const LimitCheck> checks, Emit emit) {
  if (v.binding < 0 || static_cast<std::size_t>(v.binding) >= checks.size()) return;
  const RatePolicy& p = checks[static_cast<std::size_t>(v.binding)].policy;
  const GcraOutcome& o = v.binding_outcome;
  char buf[64];
  auto put = [&](std::string_view name, auto value) {
    auto end = fmt::format_to_n(buf, sizeof buf, "{}", value).out;
    emit(name, std::string_view(buf, static_cast<std::size_t>(end - buf)));
  };
  put("RateLimit-Limit", p.capacity());
  put("RateLimit-Remaining", o.remaining);
  put("RateLimit-Reset", CeilSeconds(o.reset));
  auto end =
      p.capacity() != p.requests
          ? fmt::format_to_n(buf, sizeof buf, "{};w={};burst={}", p.requests,
                             p.window / kMicrosPerSecond, p.burst)
                .out
          : fmt::format_to_n(buf, sizeof buf, "{};w={}", p.requests, p.window / kMicrosPerSecond)
                .out;
  emit("RateLimit-Policy", std::string_view(buf, static_cast<std::size_t>(end - buf)));
}

}  // namespace

void AppendRateLimitHeaders(const RateVerdict& verdict, std::span<const LimitCheck> checks,
                            std::vector<std::pair<std::string, std::string>>& headers) {
  EmitHeaders(verdict, checks, [&](std::string_view name, std::string_view value) {
    headers.emplace_back(std::string(name), std::string(value));
  });
}

void AppendRateLimitLines(const RateVerdict& verdict, std::span<const LimitCheck> checks,
                          std::string& out) {
  EmitHeaders(verdict, checks, [&](std::string_view name, std::string_view value) {
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  });
}

Error RefusalError(const RateVerdict& v, std::span<const LimitCheck> checks) {
  Error e{ErrorCode::kResourceExhausted, RefusalMessage(v, checks), {}, {}};
  e.retry_after = std::max(1L, CeilSeconds(v.retry_after));
  return e;
}

std::string RefusalMessage(const RateVerdict& v, std::span<const LimitCheck> checks) {
  if (v.refused_by < 0 || static_cast<std::size_t>(v.refused_by) >= checks.size()) {
    return "rate limit exceeded";
  }
  const LimitCheck& c = checks[static_cast<std::size_t>(v.refused_by)];
  return fmt::format("rate limit exceeded: the {} limit of {} requests per {} s", c.dimension,
                     c.policy.requests, c.policy.window / kMicrosPerSecond);
}

}  // namespace gatehouse

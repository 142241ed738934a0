#include "limits/rate_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/json_input.h"
#include "core/time_format.h"
#include "limits/quota_service.h"

namespace gatehouse {
namespace {

constexpr UnixMicros kT0 = 1'700'000'000'000'000;
constexpr UnixMicros kSec = kMicrosPerSecond;

RatePolicy Policy(std::int64_t requests, std::string_view window, std::int64_t burst = 0,
                  std::string_view mode = "enforce") {
  auto p = MakeRatePolicy(requests, window, burst, mode, "rate_limit");
  EXPECT_TRUE(p) << (p ? "" : p.error().message);
  return p.value_or(RatePolicy{});
}

TEST(RatePolicy, ReadsTheApiFormAndNamesBadFields) {
  auto o = JsonObjectReader::Parse(R"({"requests":100,"window":"1m","burst":20})");
  ASSERT_TRUE(o);
  auto p = ReadRatePolicy(*o, "rate_limit");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->requests, 100u);
  EXPECT_EQ(p->window, 60 * kSec);
  EXPECT_EQ(p->capacity(), 20u);
  EXPECT_EQ(p->interval(), 600'000);
  EXPECT_FALSE(p->shadow);

  for (auto [body, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"window":"1m"})", "rate_limit.requests"},
           {R"({"requests":0,"window":"1m"})", "rate_limit.requests"},
           {R"({"requests":10})", "rate_limit.window"},
           {R"({"requests":10,"window":"soon"})", "rate_limit.window"},
           {R"({"requests":10,"window":"500ms"})", "rate_limit.window"},
           {R"({"requests":10,"window":"1m","burst":-1})", "rate_limit.burst"},
           {R"({"requests":10,"window":"1m","mode":"maybe"})", "rate_limit.mode"},
           {R"({"requests":"10","window":"1m"})", "requests"},
           {R"({"requests":2000000,"window":"1s"})", "rate_limit.requests"},
       }) {
    auto r = JsonObjectReader::Parse(body);
    ASSERT_TRUE(r);
    auto bad = ReadRatePolicy(*r, "rate_limit");
    ASSERT_FALSE(bad) << body;
    EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(bad.error().field.find(field), std::string::npos) << body << " " << bad.error().field;
  }
}

TEST(RatePolicy, StoredFormRoundTrips) {
  RatePolicy p = Policy(100, "1m", 20, "shadow");
  auto back = ParseStoredRatePolicy(StoreRatePolicy(p));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, p);
  EXPECT_FALSE(ParseStoredRatePolicy("")->enabled());
}

TEST(Gcra, AdmitsTheBurstThenOnePerInterval) {
  GcraTable table;
  RatePolicy p = Policy(10, "1s", 5);  // 5 at once, then one per 100 ms
  const auto subject = SubjectHash("key", "k1");
  for (int i = 0; i < 5; ++i) {
    auto o = table.Take(subject, p, kT0);
    ASSERT_TRUE(o.allowed) << i;
    EXPECT_EQ(o.remaining, static_cast<std::uint32_t>(4 - i));
  }
  auto refused = table.Take(subject, p, kT0);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after, 100'000);
  EXPECT_FALSE(table.Take(subject, p, kT0 + 99'999).allowed);
  EXPECT_TRUE(table.Take(subject, p, kT0 + 100'000).allowed);
  EXPECT_FALSE(table.Take(subject, p, kT0 + 100'000).allowed);
  // Other subjects are untouched.
  EXPECT_TRUE(table.Take(SubjectHash("key", "k2"), p, kT0).allowed);
  EXPECT_TRUE(table.Take(SubjectHash("org", "k1"), p, kT0).allowed);
}

TEST(Gcra, SustainedRateOverALongRunIsThePolicy) {
  GcraTable table;
  RatePolicy p = Policy(100, "1m", 20);
  const auto subject = SubjectHash("key", "steady");
  int admitted = 0;
  // One attempt every 10 ms for ten minutes.
  for (UnixMicros t = kT0; t < kT0 + 600 * kSec; t += 10'000) {
    admitted += table.Take(subject, p, t).allowed;
  }
  // The burst of 20 plus 100 per minute for ten minutes.
  EXPECT_NEAR(admitted, 20 + 1000, 1);
}

TEST(Gcra, CostCountsAsSeveralRequests) {
  GcraTable table;
  RatePolicy p = Policy(10, "1s");
  const auto s = SubjectHash("key", "cost");
  EXPECT_TRUE(table.Take(s, p, kT0, 7).allowed);
  EXPECT_FALSE(table.Take(s, p, kT0, 4).allowed);
  EXPECT_TRUE(table.Take(s, p, kT0, 3).allowed);
}

TEST(RateLimiter, StrictestWinsAndARefusalConsumesNothing) {
  GcraTable table;
  std::vector<LimitCheck> checks = {
      {"global", "", "", Policy(1000, "1s"), 1},
      {"org", "", "org_a", Policy(100, "1s"), 1},
      {"key", "", "key_1", Policy(3, "1m"), 1},
  };
  for (int i = 0; i < 3; ++i) {
    auto v = DecideLocally(table, checks, kT0);
    ASSERT_TRUE(v.allowed);
    EXPECT_EQ(v.binding, 2);  // the key's limit has the fewest left
    EXPECT_EQ(v.binding_outcome.remaining, static_cast<std::uint32_t>(2 - i));
  }
  auto v = DecideLocally(table, checks, kT0);
  ASSERT_FALSE(v.allowed);
  EXPECT_EQ(v.refused_by, 2);
  EXPECT_EQ(v.retry_after, 20 * kSec);
  Error e = RefusalError(v, checks);
  EXPECT_EQ(e.code, ErrorCode::kResourceExhausted);
  EXPECT_EQ(e.retry_after, 20);
  EXPECT_NE(e.message.find("key limit of 3 requests per 60 s"), std::string::npos) << e.message;

  // The org saw three admitted requests, not four: another key of the org still has 97.
  std::vector<LimitCheck> other = {{"org", "", "org_a", Policy(100, "1s"), 1}};
  auto o = DecideLocally(table, other, kT0);
  EXPECT_EQ(o.binding_outcome.remaining, 96u);
}

TEST(RateLimiter, ShadowPoliciesCountButNeverRefuse) {
  GcraTable table;
  std::vector<LimitCheck> checks = {{"key", "", "k", Policy(2, "1m", 0, "shadow"), 1}};
  for (int i = 0; i < 2; ++i) {
    auto v = DecideLocally(table, checks, kT0);
    EXPECT_TRUE(v.allowed);
    EXPECT_EQ(v.shadow_refusals, 0u);
  }
  auto v = DecideLocally(table, checks, kT0);
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.shadow_refusals, 1u);
  EXPECT_EQ(v.binding, -1);  // a shadow policy sets no headers
}

TEST(RateLimiter, FallbackScalesEveryPolicyToTheNodesShare) {
  GcraTable table;
  std::vector<LimitCheck> checks = {{"key", "", "k", Policy(30, "1m"), 1}};
  int admitted = 0;
  for (int i = 0; i < 30; ++i) admitted += DecideLocally(table, checks, kT0, 3).allowed;
  EXPECT_EQ(admitted, 10);
}

TEST(RateLimiter, HeadersDescribeTheBindingLimit) {
  GcraTable table;
  std::vector<LimitCheck> checks = {{"key", "", "k", Policy(100, "1m", 20), 1}};
  auto v = DecideLocally(table, checks, kT0);
  std::vector<std::pair<std::string, std::string>> h;
  AppendRateLimitHeaders(v, checks, h);
  ASSERT_EQ(h.size(), 4u);
  EXPECT_EQ(h[0], (std::pair<std::string, std::string>{"RateLimit-Limit", "20"}));
  EXPECT_EQ(h[1], (std::pair<std::string, std::string>{"RateLimit-Remaining", "19"}));
  EXPECT_EQ(h[2], (std::pair<std::string, std::string>{"RateLimit-Reset", "1"}));
  EXPECT_EQ(h[3], (std::pair<std::string, std::string>{"RateLimit-Policy", "100;w=60;burst=20"}));
  std::string lines;
  AppendRateLimitLines(v, checks, lines);
  EXPECT_EQ(lines,
            "RateLimit-Limit: 20\r\nRateLimit-Remaining: 19\r\nRateLimit-Reset: 1\r\n"
            "RateLimit-Policy: 100;w=60;burst=20\r\n");
}

TEST(Gcra, ConcurrentTakersNeverExceedThePolicy) {
  GcraTable table;
  RatePolicy p = Policy(1000, "1h");  // nothing refills during the test
  const auto s = SubjectHash("key", "shared");
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) admitted += table.Take(s, p, kT0).allowed;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(admitted.load(), 1000);
}

TEST(Gcra, IdleSubjectsAreForgottenAndMemoryStaysBounded) {
  GcraTable table(10'000);
  RatePolicy p = Policy(10, "1s");
  // 200k distinct subjects within one second: far more than the table may hold.
  for (int i = 0; i < 200'000; ++i) {
    (void)table.Take(SubjectHash("key", std::to_string(i)), p, kT0);
  }
  // 64 shards of at most bit_ceil(2 * 10'000 / 64) = 512 slots of 16 bytes, at most 3/4 used.
  EXPECT_LE(table.capacity_bytes(), 64u * 512 * 16);
  EXPECT_LE(table.size(), 64u * 512 * 3 / 4);
  EXPECT_GT(table.evictions(), 0u);
  // Once they are idle, a sweep forgets them all.
  table.Sweep(kT0 + 2 * kSec);
  EXPECT_EQ(table.size(), 0u);
  // A subject that was forgotten starts afresh with its whole burst.
  EXPECT_EQ(table.Take(SubjectHash("key", "1"), p, kT0 + 2 * kSec).remaining, 9u);
}

TEST(Gcra, ManyLiveSubjectsBelowTheCapKeepTheirState) {
  GcraTable table(100'000);
  RatePolicy p = Policy(1, "1m");
  for (int i = 0; i < 50'000; ++i) {
    ASSERT_TRUE(table.Take(SubjectHash("key", std::to_string(i)), p, kT0).allowed);
  }
  int refused = 0;
  for (int i = 0; i < 50'000; ++i) {
    refused += !table.Take(SubjectHash("key", std::to_string(i)), p, kT0 + 1).allowed;
  }
  EXPECT_EQ(refused, 50'000);
  EXPECT_EQ(table.evictions(), 0u);
}

}  // namespace
}  // namespace gatehouse

namespace gatehouse {
namespace {

TEST(UsageQuota, PeriodsAndRefillsFollowTheUtcCalendar) {
  UsageQuota monthly{1000, "monthly", false, {}};
  UsageQuota daily{10, "daily", false, {}};
  UsageQuota once{5, "none", false, {}};
  auto t = ParseRfc3339("2026-12-31T23:59:59Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(QuotaPeriod(monthly, *t), 202612);
  EXPECT_EQ(QuotaPeriod(daily, *t), 20261231);
  EXPECT_EQ(QuotaPeriod(once, *t), 0);
  EXPECT_EQ(FormatRfc3339(QuotaRefillAt(monthly, *t)), "2027-01-01T00:00:00Z");
  EXPECT_EQ(FormatRfc3339(QuotaRefillAt(daily, *t)), "2027-01-01T00:00:00Z");
  EXPECT_EQ(QuotaRefillAt(once, *t), 0);
  auto feb = ParseRfc3339("2028-02-29T12:00:00Z");
  EXPECT_EQ(FormatRfc3339(QuotaRefillAt(monthly, *feb)), "2028-03-01T00:00:00Z");
  EXPECT_EQ(FormatRfc3339(QuotaRefillAt(daily, *feb)), "2028-03-01T00:00:00Z");
}

TEST(UsageQuota, APoolIsStoredButNeverReadFromTheApi) {
  UsageQuota q{100, "monthly", false, "key_original"};
  auto back = ParseStoredUsageQuota(StoreUsageQuota(q));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, q);
  EXPECT_EQ(QuotaCounterId(*back, "key_replacement"), "key_original");
  EXPECT_EQ(QuotaCounterId(UsageQuota{100, "monthly", false, {}}, "key_own"), "key_own");
  EXPECT_EQ(UsageQuotaJson(q).if_contains("pool"), nullptr);  // the API never shows it
  auto from_api = JsonObjectReader::Parse(R"({"credits":5,"pool":"key_other"})");
  ASSERT_TRUE(from_api);
  EXPECT_FALSE(ReadUsageQuota(*from_api, "quota"));
}

TEST(UsageQuota, SpendingStopsAtTheCreditsAndRefillsWithThePeriod) {
  FakeClock clock(*ParseRfc3339("2026-11-30T23:00:00Z"));
  std::vector<AuditEvent> warnings;
  QuotaService quotas(clock, [&](AuditEvent e) { warnings.push_back(std::move(e)); });
  UsageQuota q{10, "daily", false};
  const std::int64_t loaded = QuotaPeriod(q, clock.Now());
  // The store said 4 were spent already in this period.
  int admitted = 0;
  for (int i = 0; i < 10; ++i)
    admitted += quotas.Spend("key_a", "org_a", q, 4, loaded, 1, "").allowed;
  EXPECT_EQ(admitted, 6);
  ASSERT_EQ(warnings.size(), 1u);  // once, at a tenth left
  EXPECT_EQ(warnings[0].action, "security.usage_low");
  auto refused = quotas.Spend("key_a", "org_a", q, 4, loaded, 1, "");
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(QuotaService::RefusalError(refused, q).code, ErrorCode::kUsageExceeded);
  // A new day: full credits again (the facts' count is from yesterday and no longer applies).
  clock.Advance(std::chrono::hours(2));
  auto next = quotas.Spend("key_a", "org_a", q, 4, loaded, 3, "");
  EXPECT_TRUE(next.allowed);
  EXPECT_EQ(next.remaining, 7);
  // Shadow quotas count and warn, and never refuse.
  UsageQuota shadow{1, "none", true};
  EXPECT_TRUE(quotas.Spend("key_b", "org_a", shadow, 0, 0, 1, "").allowed);
  EXPECT_TRUE(quotas.Spend("key_b", "org_a", shadow, 0, 0, 1, "").allowed);
}

}  // namespace
}  // namespace gatehouse

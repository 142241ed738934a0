#include "core/time_format.h"

#include <gtest/gtest.h>

namespace gatehouse {
namespace {

TEST(ParseDuration, AcceptsEveryUnit) {
  EXPECT_EQ(*ParseDuration("500ms"), 500'000);
  EXPECT_EQ(*ParseDuration("30s"), 30 * kMicrosPerSecond);
  EXPECT_EQ(*ParseDuration("5m"), 300 * kMicrosPerSecond);
  EXPECT_EQ(*ParseDuration("2h"), 7200 * kMicrosPerSecond);
  EXPECT_EQ(*ParseDuration("90d"), 90LL * 86400 * kMicrosPerSecond);
  EXPECT_EQ(*ParseDuration("2w"), 14LL * 86400 * kMicrosPerSecond);
  EXPECT_EQ(*ParseDuration("1y"), 365LL * 86400 * kMicrosPerSecond);
}

TEST(ParseDuration, RefusesGarbageZeroNegativeAndAbsurd) {
  for (const char* bad : {"", "d", "0d", "-1d", "1.5d", "10", "10 d", "10D", "1x",
                          "99999999999999d", "101y", "1dd", " 1d"}) {
    EXPECT_FALSE(ParseDuration(bad)) << bad;
  }
}

TEST(Rfc3339, RoundTripsAndHonoursOffsets) {
  auto t = ParseRfc3339("2027-01-31T12:30:45Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(FormatRfc3339(*t), "2027-01-31T12:30:45Z");
  EXPECT_EQ(*ParseRfc3339("2027-01-31T14:30:45+02:00"), *t);
  EXPECT_EQ(*ParseRfc3339("2027-01-31T12:30:45.250Z"), *t + 250'000);
  EXPECT_EQ(FormatRfc3339(0), "1970-01-01T00:00:00Z");
}

TEST(Rfc3339, RefusesMalformedDates) {
  for (const char* bad : {"2027-02-30T00:00:00Z", "2027-13-01T00:00:00Z", "2027-01-01 00:00:00Z",
                          "2027-01-01T00:00:00", "2027-01-01T25:00:00Z", "yesterday", ""}) {
    EXPECT_FALSE(ParseRfc3339(bad)) << bad;
  }
}

}  // namespace
}  // namespace gatehouse

#include "proxy/resolution.h"

#include <gtest/gtest.h>

namespace gatehouse::proxy {
namespace {

using namespace std::chrono_literals;
using Clock = UpstreamResolution::Clock;

TEST(UpstreamResolution, ANameIsLookedUpFirstThenOnceItsAddressesAreOld) {
  UpstreamResolution r;
  const auto t0 = Clock::time_point{} + 1h;
  EXPECT_TRUE(r.Due(t0, 30s));
  r.Resolved(t0);
  EXPECT_FALSE(r.Due(t0 + 29s, 30s));
  EXPECT_TRUE(r.Due(t0 + 30s, 30s));
  r.Resolved(t0 + 30s);
  EXPECT_FALSE(r.Due(t0 + 31s, 30s));
}

TEST(UpstreamResolution, AFailedConnectionSendsTheNextOneToTheResolverAtOnce) {
  UpstreamResolution r;
  const auto t0 = Clock::time_point{} + 1h;
  r.Resolved(t0);
  r.ConnectFailed();
  EXPECT_TRUE(r.Due(t0 + 1s, 30s));
  r.Resolved(t0 + 1s);
  EXPECT_FALSE(r.Due(t0 + 2s, 30s));
}

TEST(UpstreamResolution, AFailedLookupKeepsTheKnownAddressesUntilTheNextRefresh) {
  UpstreamResolution r;
  const auto t0 = Clock::time_point{} + 1h;
  r.LookupFailed(t0);  // never resolved: nothing to keep, so every new connection asks again
  EXPECT_FALSE(r.known());
  EXPECT_TRUE(r.Due(t0 + 1ms, 30s));
  r.Resolved(t0);
  r.ConnectFailed();
  r.LookupFailed(t0 + 1s);  // DNS down: not asked again on every connection
  EXPECT_TRUE(r.known());
  EXPECT_FALSE(r.Due(t0 + 2s, 30s));
  EXPECT_TRUE(r.Due(t0 + 31s, 30s));
}

TEST(UpstreamResolution, AnAddressIsNeverLookedUpAgain) {
  UpstreamResolution r(true);
  const auto t0 = Clock::time_point{} + 1h;
  EXPECT_TRUE(r.Due(t0, 30s));  // once, to turn it into an endpoint
  r.Resolved(t0);
  r.ConnectFailed();
  EXPECT_FALSE(r.Due(t0 + 1h, 30s));
}

}  // namespace
}  // namespace gatehouse::proxy

// Signing in (issue 5 part 6; NIST SP 800-63B §3.2.2, ASVS 6.1.1, 6.3.1, 6.3.8): the same answer
// for an unknown email and a wrong password, the per-account lock schedule, the 100-failure
// bound, per-address throttling and credential stuffing, and a record of every attempt.
#include <algorithm>

#include "people/people_fixture.h"

namespace gatehouse {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;
using testing::Body;
using testing::Code;
using testing::Header;

class SignInTest : public testing::PeopleTest {
 protected:
  // The response without the parts that differ on every request.
  std::string Shape(const HttpResponse& r) {
    auto b = Body(r);
    b.as_object()["error"].as_object().erase("request_id");
    return std::to_string(r.status) + json::serialize(b);
  }
  int CountAttempts(std::string_view reason = {}) {
    AuditQuery q;
    q.action = "auth.login";
    q.limit = 500;
    auto page = env_.store->ListAudit("system", q);
    int n = 0;
    for (const auto& e : page->events) {
      if (reason.empty() || e.details.find(std::string(reason)) != std::string::npos) ++n;
    }
    return n;
  }
};

TEST_F(SignInTest, UnknownEmailAndWrongPasswordGetTheSameAnswer) {
  auto unknown = LoginCall("nobody@example.com", "some long password here");
  auto wrong = LoginCall("owner@example.com", "some long password here");
  EXPECT_EQ(unknown.status, 401);
  EXPECT_EQ(Shape(unknown), Shape(wrong));
  // Even a malformed email or password gets that answer, not a hint.
  EXPECT_EQ(Shape(LoginCall("not-an-email", "x")), Shape(wrong));
  EXPECT_EQ(LoginCall("owner@example.com", "").status, 400);  // missing is a bad request
  // The operator's log tells them apart.
  EXPECT_EQ(CountAttempts("unknown_email"), 2);
  EXPECT_EQ(CountAttempts("wrong_password"), 1);
}

TEST_F(SignInTest, EmailsAreNormalisedSoOneEmailIsOneUser) {
  Login(" Owner@EXAMPLE.com ", kOwnerPassword);
  auto dup = env_.accounts->CreateUser("OWNER@example.com", kPassword, "", {});
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, ErrorCode::kAlreadyExists);
}

TEST_F(SignInTest, FailuresLockTheAccountForGrowingTimesUpToFifteenMinutes) {
  // From a new address each time, so that only the account's schedule applies.
  int n = 0;
  auto ip = [&n] { return "10.8.0." + std::to_string(++n); };
  for (int i = 1; i <= 5; ++i) {
    EXPECT_EQ(
        LoginCall("owner@example.com", "wrong password number " + std::to_string(i), ip()).status,
        401);
  }
  std::vector<std::string> waits;
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(LoginCall("owner@example.com", "still the wrong password", ip()).status, 401);
    auto locked = LoginCall("owner@example.com", kOwnerPassword, ip());  // even the right one
    ASSERT_EQ(locked.status, 429) << i << locked.body;
    EXPECT_EQ(Code(locked), "rate_limit_exceeded");
    std::string wait = Header(locked, "retry-after");
    waits.push_back(wait);
    Advance(std::chrono::seconds(std::stol(wait)) - 1us);
    EXPECT_EQ(LoginCall("owner@example.com", kOwnerPassword, ip()).status, 429);  // not earlier
    Advance(1us);
  }
  std::vector<std::string> expected = {"1",  "2",   "4",   "8",   "16",  "32",
                                       "64", "128", "256", "512", "900", "900"};
  EXPECT_EQ(waits, expected);
  // The real user waits out the lock and signs in; the count starts again.
  Login("owner@example.com", kOwnerPassword, ip());
  EXPECT_EQ(LoginCall("owner@example.com", "wrong again, once", ip()).status, 401);
  EXPECT_EQ(LoginCall("owner@example.com", kOwnerPassword, ip()).status, 200);
}

TEST_F(SignInTest, UnknownEmailsAreLockedOnTheSameSchedule) {
  for (int i = 0; i < 6; ++i) LoginCall("ghost@example.com", "whatever it is, it is wrong");
  auto locked = LoginCall("ghost@example.com", "whatever it is, it is wrong");
  EXPECT_EQ(locked.status, 429);
  EXPECT_EQ(Header(locked, "retry-after"), "1");
}

TEST_F(SignInTest, AHundredConsecutiveFailuresStopPasswordSignInUntilAnOperatorResetsIt) {
  for (int i = 0; i < 100; ++i) {
    // From many addresses, as a patient attacker would, so that only the account rule applies.
    std::string ip = "10.7." + std::to_string(i / 200) + "." + std::to_string(i % 200 + 1);
    ASSERT_EQ(LoginCall("owner@example.com", "a wrong guess, again", ip).status, 401) << i;
    Advance(16min);
  }
  auto suspended = LoginCall("owner@example.com", kOwnerPassword, "10.9.9.9");
  EXPECT_EQ(suspended.status, 429);
  EXPECT_NE(suspended.body.find("suspended"), std::string::npos);
  Advance(24h);
  EXPECT_EQ(LoginCall("owner@example.com", kOwnerPassword, "10.9.9.9").status, 429);
  std::string fresh = "copper meadow whistle tide";
  ASSERT_TRUE(env_.accounts->SetPassword("owner@example.com", fresh, {}));
  Login("owner@example.com", fresh, "10.9.9.9");
}

TEST_F(SignInTest, ManyAccountsFromOneAddressIsCredentialStuffingAndBlocked) {
  std::string attacker = "203.0.113.7";
  for (int i = 0; i < 5; ++i) {
    LoginCall("victim" + std::to_string(i) + "@example.com", "Summer2024!Summer", attacker);
  }
  // Blocked now, even for an account whose password it has right.
  auto blocked = LoginCall("owner@example.com", kOwnerPassword, attacker);
  EXPECT_EQ(blocked.status, 429);
  EXPECT_FALSE(Header(blocked, "retry-after").empty());
  // Nobody else is affected.
  Login("owner@example.com", kOwnerPassword, "198.51.100.20");
  EXPECT_EQ(CountAttempts("credential_stuffing"), 1);
  EXPECT_EQ(CountAttempts("address_blocked_stuffing"), 1);
  Advance(1h);
  Login("owner@example.com", kOwnerPassword, attacker);
}

TEST_F(SignInTest, AnIpv6HostIsTrackedByItsSlash64) {
  for (int i = 0; i < 5; ++i) {
    LoginCall("victim" + std::to_string(i) + "@example.com", "Summer2024!Summer",
              "2001:db8:1:2::" + std::to_string(i + 1));
  }
  EXPECT_EQ(LoginCall("owner@example.com", kOwnerPassword, "2001:db8:1:2:ffff::9").status, 429);
  Login("owner@example.com", kOwnerPassword, "2001:db8:1:3::1");
}

TEST_F(SignInTest, FailuresFromOneAddressMakeItWaitLongerEachTime) {
  std::string ip = "203.0.113.8";
  const char* accounts[] = {"a@example.com", "b@example.com", "c@example.com"};
  for (int i = 0; i < 10; ++i) {  // free, and too few per account for the accounts' locks
    ASSERT_EQ(LoginCall(accounts[i % 3], "wrong and wrong again", ip).status, 401) << i;
  }
  std::vector<std::string> waits;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(LoginCall(accounts[i % 3], "wrong and wrong again", ip).status, 401);
    auto delayed = LoginCall("owner@example.com", kOwnerPassword, ip);
    ASSERT_EQ(delayed.status, 429);
    EXPECT_NE(delayed.body.find("your address"), std::string::npos);
    waits.push_back(Header(delayed, "retry-after"));
    Advance(std::chrono::seconds(std::stol(waits.back())));
  }
  EXPECT_EQ(waits, (std::vector<std::string>{"1", "2", "4"}));
  Login("owner@example.com", kOwnerPassword, "203.0.113.99");  // other addresses never wait
}

TEST_F(SignInTest, TooManyFailuresFromOneAddressInAWindowBlockIt) {
  std::string ip = "203.0.113.9";
  const char* accounts[] = {"a@example.com", "b@example.com", "c@example.com", "d@example.com"};
  // 30 failures on four accounts inside ten minutes, each delay waited out exactly.
  int failures = 0;
  for (int i = 0; failures < 30 && i < 200; ++i) {
    auto r = LoginCall(accounts[i % 4], "wrong and wrong again", ip);
    if (r.status == 401) {
      ++failures;
      continue;
    }
    ASSERT_EQ(r.status, 429) << r.body;
    Advance(std::chrono::seconds(std::stol(Header(r, "retry-after"))));
  }
  ASSERT_EQ(failures, 30);
  auto blocked = LoginCall("owner@example.com", kOwnerPassword, ip);
  EXPECT_EQ(blocked.status, 429);
  EXPECT_EQ(Header(blocked, "retry-after"), "3600");
  Login("owner@example.com", kOwnerPassword, "203.0.113.10");
}

TEST_F(SignInTest, EveryAttemptIsRecorded) {
  LoginCall("owner@example.com", "wrong password for the log");
  Login("owner@example.com", kOwnerPassword);
  LoginCall("nobody@example.com", "wrong password for the log");
  EXPECT_EQ(CountAttempts(), 3);
  AuditQuery q;
  q.action = "auth.login";
  auto events = env_.store->ListAudit("system", q)->events;
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1].result, "success");
  EXPECT_EQ(events[1].actor, owner_.id);
  EXPECT_EQ(events[2].result, "denied");
  EXPECT_NE(events[2].details.find("owner@example.com"), std::string::npos);
  // Never the password.
  for (const auto& e : events) EXPECT_EQ(e.details.find("password for the log"), std::string::npos);
  // And the sign-in is recorded in the user's org.
  AuditQuery created;
  created.action = "session.create";
  EXPECT_EQ(env_.store->ListAudit(Org(), created)->events.size(), 1u);
}

// A benchmark-style check with a generous bound: the machine is shared and noisy, so it
// compares medians of interleaved samples and only catches a path that skips the hash.
TEST_F(SignInTest, UnknownEmailAndWrongPasswordTakeTheSameTime) {
  std::vector<double> unknown, wrong;
  for (int i = 0; i < 12; ++i) {
    std::string ip_a = "10.50.0." + std::to_string(i + 1);
    std::string ip_b = "10.60.0." + std::to_string(i + 1);
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(LoginCall("ghost" + std::to_string(i) + "@example.com", "a wrong one", ip_a).status,
              401);
    auto t1 = std::chrono::steady_clock::now();
    EXPECT_EQ(LoginCall("owner@example.com", "a wrong one", ip_b).status, 401);
    auto t2 = std::chrono::steady_clock::now();
    unknown.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    wrong.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    Advance(16min);  // so that the account's lock never answers early
  }
  std::sort(unknown.begin(), unknown.end());
  std::sort(wrong.begin(), wrong.end());
  double ratio = unknown[6] / wrong[6];
  EXPECT_GT(ratio, 0.5) << "unknown " << unknown[6] << " ms, wrong " << wrong[6] << " ms";
  EXPECT_LT(ratio, 2.0) << "unknown " << unknown[6] << " ms, wrong " << wrong[6] << " ms";
}

}  // namespace
}  // namespace gatehouse

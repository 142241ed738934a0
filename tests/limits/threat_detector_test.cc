// The threat detector's decisions without sockets: alone, with a cluster that answers, and with
// one that cannot (Redis down), which must leave the node deciding alone rather than blind.
// tests/integration/shared_limits_test.cc runs the same rules on three nodes and a real Redis.
#include "limits/threat_detector.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/clock.h"

namespace gatehouse {
namespace {

class ThreatDetectorTest : public ::testing::Test {
 protected:
  ThreatDetectorTest() {
    config_.key_failures = ThreatRule{5, "record", false};
    config_.address_failures = ThreatRule{0, "record", false};
  }

  std::unique_ptr<ThreatDetector> Make() {
    return std::make_unique<ThreatDetector>(config_, clock_,
                                            [this](AuditEvent e) { events_.push_back(e.action); });
  }
  int Seen(const std::string& action) const {
    return static_cast<int>(std::count(events_.begin(), events_.end(), action));
  }

  // Redis as a cluster of one sees it: counts and sets, answered at once.
  ThreatDetector::Cluster Answering() {
    return ThreatDetector::Cluster{
        [this](std::string key, std::int64_t, auto done) {
          ++increments_;
          done(++counts_[key]);
        },
        [this](std::string key, std::string member, std::int64_t, std::int64_t, auto done) {
          auto& set = sets_[key];
          const auto before = static_cast<std::int64_t>(set.size());
          done(ThreatDetector::Cluster::Remembered{set.insert(member).second, before});
        }};
  }
  // Redis down: every question goes unanswered.
  static ThreatDetector::Cluster Unanswering() {
    return ThreatDetector::Cluster{[](std::string, std::int64_t, auto done) { done(std::nullopt); },
                                   [](std::string, std::string, std::int64_t, std::int64_t,
                                      auto done) { done(std::nullopt); }};
  }

  ThreatsConfig config_;
  FakeClock clock_;
  std::vector<std::string> events_;
  std::map<std::string, std::int64_t> counts_;
  std::map<std::string, std::set<std::string>> sets_;
  int increments_ = 0;
};

TEST_F(ThreatDetectorTest, AloneTheFirstNetworkIsLearnedAndTheNextReported) {
  auto d = Make();
  d->KeyUsed("key_a", "org_a", "198.51.100.7");
  d->KeyUsed("key_a", "org_a", "198.51.100.8");  // same /24
  EXPECT_EQ(Seen("security.new_network"), 0);
  d->KeyUsed("key_a", "org_a", "203.0.113.1");
  EXPECT_EQ(Seen("security.new_network"), 1);
}

TEST_F(ThreatDetectorTest, RepeatedPairsAreSkippedButEachDetectorLearnsForItself) {
  auto first = Make();
  for (int i = 0; i < 3; ++i) first->KeyUsed("key_a", "org_a", "198.51.100.7");
  first->KeyUsed("key_a", "org_a", "203.0.113.1");
  first->KeyUsed("key_a", "org_a", "203.0.113.1");  // known now: reported once
  EXPECT_EQ(Seen("security.new_network"), 1);
  // A second detector on the same thread has learned nothing from the first one's pairs.
  auto second = Make();
  second->KeyUsed("key_a", "org_a", "198.51.100.7");  // its first network: learned
  second->KeyUsed("key_a", "org_a", "192.0.2.1");
  EXPECT_EQ(Seen("security.new_network"), 2);
}

TEST_F(ThreatDetectorTest, TheClusterDecidesWhetherANetworkIsNewToTheKey) {
  auto first = Make(), second = Make();  // two nodes, one cluster
  first->ShareThrough(Answering());
  second->ShareThrough(Answering());
  first->KeyUsed("key_a", "org_a", "198.51.100.7");   // the key's first network: learned
  second->KeyUsed("key_a", "org_a", "198.51.100.9");  // new to this node, not to the key
  EXPECT_EQ(Seen("security.new_network"), 0);
  second->KeyUsed("key_a", "org_a", "203.0.113.1");  // new to the key
  EXPECT_EQ(Seen("security.new_network"), 1);
  first->KeyUsed("key_a", "org_a", "203.0.113.2");  // the cluster knew it already
  EXPECT_EQ(Seen("security.new_network"), 1);
}

TEST_F(ThreatDetectorTest, ACountPastTheThresholdFiresOnceAndStopsTheQuestions) {
  auto a = Make(), b = Make();
  a->ShareThrough(Answering());
  b->ShareThrough(Answering());
  for (int i = 0; i < 3; ++i) a->Observe("198.51.100.7", 429, "key_a", "org_a");
  for (int i = 0; i < 2; ++i) b->Observe("198.51.100.7", 429, "key_a", "org_a");
  EXPECT_EQ(Seen("security.key_failures"), 1);  // 5 in the cluster; neither node saw 5
  const int asked = increments_;
  for (int i = 0; i < 50; ++i) b->Observe("198.51.100.7", 429, "key_a", "org_a");
  EXPECT_EQ(Seen("security.key_failures"), 1);
  // b learned that the rule fired and stops asking: a flood costs no Redis round trips.
  EXPECT_EQ(increments_ - asked, 0);
  // A new window counts afresh, here and in Redis (whose count expired with its window).
  clock_.Advance(std::chrono::minutes(2));
  counts_.clear();
  for (int i = 0; i < 5; ++i) b->Observe("198.51.100.7", 429, "key_a", "org_a");
  EXPECT_EQ(Seen("security.key_failures"), 2);
}

TEST_F(ThreatDetectorTest, OnlyA401ToAPresentedKeyCountsAsAnInvalidKey) {
  config_.invalid_keys = ThreatRule{3, "block", false};
  auto d = Make();
  for (int i = 0; i < 10; ++i) d->Observe("198.51.100.7", 401, "", "", false);
  EXPECT_EQ(d->BlockedFor("198.51.100.7"), 0);  // sent no key: guessed nothing
  EXPECT_EQ(Seen("security.invalid_keys"), 0);
  for (int i = 0; i < 3; ++i) d->Observe("198.51.100.7", 401, "", "", true);
  EXPECT_GT(d->BlockedFor("198.51.100.7"), 0);
  EXPECT_EQ(Seen("security.invalid_keys"), 1);
}

TEST_F(ThreatDetectorTest, WithRedisDownANodeDecidesAlone) {
  auto d = Make();
  d->ShareThrough(Unanswering());
  for (int i = 0; i < 5; ++i) d->Observe("198.51.100.7", 403, "key_a", "org_a");
  EXPECT_EQ(Seen("security.key_failures"), 1);
  d->KeyUsed("key_b", "org_a", "198.51.100.7");  // first here: learned
  EXPECT_EQ(Seen("security.new_network"), 0);
  d->KeyUsed("key_b", "org_a", "203.0.113.1");  // this node knew another: reported
  EXPECT_EQ(Seen("security.new_network"), 1);
}

}  // namespace
}  // namespace gatehouse

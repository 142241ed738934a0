#include "cluster/node_registry.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>

#include "store/sqlite/sqlite_store.h"

namespace gatehouse {
namespace {

// Fingerprints of three peppers: the one in use, the one announced, and one never agreed on.
constexpr char kOld[] = "0a0a0a0a0a0a0a0a";
constexpr char kNew[] = "0b0b0b0b0b0b0b0b";
constexpr char kStray[] = "0c0c0c0c0c0c0c0c";

NodeRecord Node(std::string id, std::string pepper, std::string previous = "",
                std::string next = "") {
  NodeRecord n;
  n.id = std::move(id);
  n.host = "elsewhere.example";
  n.pid = 1;
  n.pepper = std::move(pepper);
  n.previous_pepper = std::move(previous);
  n.next_pepper = std::move(next);
  return n;
}

TEST(PepperConflict, EachNodeMustVerifyWhatTheOtherMakesNow) {
  // Every step of a rolling rotation agrees with the step before and after it.
  const NodeRecord before = Node("a", kOld);
  const NodeRecord announced = Node("b", kOld, "", kNew);
  const NodeRecord switched = Node("c", kNew, kOld);
  const NodeRecord retired = Node("d", kNew);
  EXPECT_FALSE(PepperConflict(before, announced));
  EXPECT_FALSE(PepperConflict(announced, switched));
  EXPECT_FALSE(PepperConflict(switched, retired));
  EXPECT_FALSE(PepperConflict(switched, announced));
  // Switching before a node has the new pepper announced, retiring the old one while a node
  // still makes with it, or a pepper nobody else holds, is refused, from either side.
  EXPECT_TRUE(PepperConflict(switched, before));
  EXPECT_TRUE(PepperConflict(before, switched));
  EXPECT_TRUE(PepperConflict(retired, announced));
  EXPECT_TRUE(PepperConflict(announced, retired));
  EXPECT_TRUE(PepperConflict(Node("e", kStray), before));
  // The reason names fingerprints, which the operator can compare with /metrics.
  auto why = PepperConflict(before, switched);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find(kNew), std::string::npos) << *why;
}

TEST(ConflictBetween, KeyPrefixesMustAgreeAndPeppersToo) {
  NodeRecord sk = Node("a", kOld);
  sk.key_prefix = "sk";
  NodeRecord also_sk = Node("b", kOld, "", kNew);
  also_sk.key_prefix = "sk";
  NodeRecord other = Node("c", kOld);
  other.key_prefix = "aiia_key";
  EXPECT_FALSE(ConflictBetween(sk, also_sk));
  // Each refuses the other's keys as malformed, whichever side looks.
  auto seen_from_sk = ConflictBetween(sk, other);
  ASSERT_TRUE(seen_from_sk);
  EXPECT_NE(seen_from_sk->why.find("\"aiia_key\" where this node makes and accepts \"sk\""),
            std::string::npos)
      << seen_from_sk->why;
  EXPECT_NE(seen_from_sk->fix.find("[keys] prefix"), std::string::npos);
  EXPECT_TRUE(ConflictBetween(other, sk));
  // An entry written before nodes recorded their prefix says nothing about it.
  NodeRecord unknown = Node("d", kOld);
  EXPECT_FALSE(ConflictBetween(sk, unknown));
  EXPECT_FALSE(ConflictBetween(unknown, other));
  // With the prefixes agreeing, the peppers still decide.
  NodeRecord stray = Node("e", kStray);
  stray.key_prefix = "sk";
  auto pepper = ConflictBetween(sk, stray);
  ASSERT_TRUE(pepper);
  EXPECT_NE(pepper->fix.find("Rotating the pepper"), std::string::npos);
}

class NodeRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::move(*SqliteStore::Open(":memory:"));
    nodes_ = std::make_unique<NodeRepository>(*store_);
  }
  NodeRegistry Registry(NodeRecord self) {
    return NodeRegistry(*nodes_, clock_, std::move(self), NodeRegistry::Options{});
  }
  std::set<std::string> Ids() {
    std::set<std::string> ids;
    auto seen = nodes_->SeenSince(0);
    EXPECT_TRUE(seen);
    if (seen) {
      for (const auto& n : *seen) ids.insert(n.id);
    }
    return ids;
  }
  // Another node, entered as it would enter itself, seen now.
  void Enter(NodeRecord n) {
    n.started_at = n.seen_at = clock_.Now();
    ASSERT_TRUE(nodes_->Save(n));
  }

  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<NodeRepository> nodes_;
};

TEST_F(NodeRegistryTest, ANodeWhosePeppersDisagreeIsRefusedUntilTheOtherIsGone) {
  Enter(Node("waiting", kOld, "", kNew));
  auto early = Registry(Node("early", kNew));  // retired the old pepper too soon
  auto refused = early.Join();
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("node waiting (host elsewhere.example"), std::string::npos)
      << refused.error().message;
  EXPECT_NE(refused.error().message.find("Rotating the pepper"), std::string::npos);
  EXPECT_EQ(Ids(), std::set<std::string>{"waiting"});  // it did not stay entered

  auto switched = Registry(Node("switched", kNew, kOld));
  ASSERT_TRUE(switched.Join());
  EXPECT_EQ(Ids(), (std::set<std::string>{"waiting", "switched"}));

  // The waiting node stops beating (killed, or its host lost): once its entry lapses, the
  // node that retired the old pepper may start.
  clock_.Advance(std::chrono::seconds(16));
  switched.Tick();
  EXPECT_TRUE(early.Join());
  // A graceful stop leaves at once.
  early.Leave();
  switched.Leave();
  EXPECT_EQ(Ids(), std::set<std::string>{"waiting"});
}

TEST_F(NodeRegistryTest, ANodeWithAnotherKeyPrefixIsRefusedAndTheEntryKeepsThePrefix) {
  NodeRecord first = Node("first", kOld);
  first.key_prefix = "sk";
  auto serving = Registry(first);
  ASSERT_TRUE(serving.Join());
  auto seen = nodes_->SeenSince(0);
  ASSERT_TRUE(seen);
  ASSERT_EQ(seen->size(), 1u);
  EXPECT_EQ(seen->front().key_prefix, "sk");

  NodeRecord mistyped = Node("mistyped", kOld);
  mistyped.key_prefix = "ks";
  auto refused = Registry(mistyped).Join();
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("node first (host elsewhere.example"), std::string::npos)
      << refused.error().message;
  EXPECT_NE(refused.error().message.find("[keys] prefix"), std::string::npos);
  EXPECT_EQ(Ids(), std::set<std::string>{"first"});
}

TEST_F(NodeRegistryTest, AnEntryOfAProcessNoLongerRunningOnThisHostIsNotWaitedOut) {
  // A child that has exited and been reaped: its pid names no process.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  NodeRecord dead = Node("killed", kOld);
  dead.host = HostName();
  dead.pid_namespace = PidNamespace();
  dead.pid = child;
  Enter(dead);
  // The same pid on another host, or in another pid namespace (a container with this host's
  // name), may well run there: those entries stay (they have the new pepper announced, so they
  // agree).
  NodeRecord remote = Node("remote", kOld, "", kNew);
  remote.pid = child;
  Enter(remote);
  NodeRecord contained = Node("contained", kOld, "", kNew);
  contained.host = HostName();
  contained.pid_namespace = "pid:[1]";
  contained.pid = child;
  Enter(contained);

  auto restarted = Registry([] {
    NodeRecord n = Node("restarted", kNew, kOld);
    n.host = HostName();
    n.pid_namespace = PidNamespace();
    n.pid = ::getpid();
    return n;
  }());
  ASSERT_TRUE(restarted.Join());
  EXPECT_EQ(Ids(), (std::set<std::string>{"contained", "remote", "restarted"}));
}

TEST_F(NodeRegistryTest, ANodeInConflictThatStartedAtTheSameTimeIsCountedAndBeatsGoOn) {
  auto self = Registry(Node("self", kOld));
  ASSERT_TRUE(self.Join());
  // Another node checked before this one was entered, and entered itself after.
  Enter(Node("racer", kStray));
  self.Tick();  // not yet due: one beat per five seconds
  EXPECT_EQ(self.conflicts(), 0);
  clock_.Advance(std::chrono::seconds(5));
  self.Tick();
  EXPECT_EQ(self.conflicts(), 1);
  EXPECT_EQ(nodes_->SeenSince(clock_.Now()).value().size(), 1u);  // its own beat
  // The racer goes; the count follows.
  ASSERT_TRUE(nodes_->Remove("racer"));
  clock_.Advance(std::chrono::seconds(5));
  self.Tick();
  EXPECT_EQ(self.conflicts(), 0);
}

}  // namespace
}  // namespace gatehouse

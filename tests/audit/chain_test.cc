// The audit hash chain: every kind of tampering is found, at the first event it touches.
#include "audit/chain.h"

#include <gtest/gtest.h>

#include <vector>

namespace gatehouse {
namespace {

std::vector<AuditEvent> Chain(int n) {
  std::vector<AuditEvent> out;
  std::int64_t seq = 0;
  std::string hash(kGenesisHash);
  for (int i = 0; i < n; ++i) {
    AuditEvent e;
    e.org_id = "org_a";
    e.at = 1000 + i;
    e.actor = "key_owner";
    e.action = "key.create";
    e.resource = "key:key_" + std::to_string(i);
    e.result = "success";
    e.status = 201;
    e.client_ip = "10.0.0.1";
    e.request_id = "req_" + std::to_string(i);
    e.details = R"({"label":"k)" + std::to_string(i) + R"("})";
    LinkAuditEvent(e, seq, hash);
    seq = e.seq;
    hash = e.hash;
    out.push_back(e);
  }
  return out;
}

std::optional<ChainBreak> Verify(const std::vector<AuditEvent>& events, std::int64_t head_seq,
                                 const std::string& head_hash) {
  AuditChainVerifier v;
  for (const auto& e : events) v.Feed(e);
  v.CheckHead(head_seq, head_hash);
  return v.broken();
}

TEST(AuditChain, AnIntactChainVerifies) {
  auto events = Chain(5);
  EXPECT_EQ(events[0].prev_hash, kGenesisHash);
  EXPECT_EQ(events[4].seq, 5);
  EXPECT_FALSE(Verify(events, 5, events[4].hash));
  AuditChainVerifier from_checkpoint(2, events[1].hash);  // after pruning 1-2
  for (int i = 2; i < 5; ++i) from_checkpoint.Feed(events[i]);
  EXPECT_FALSE(from_checkpoint.broken());
  EXPECT_EQ(from_checkpoint.verified(), 3);
}

TEST(AuditChain, EveryEditIsFoundAtTheEditedEvent) {
  for (int field = 0; field < 11; ++field) {
    auto events = Chain(5);
    AuditEvent& e = events[2];
    switch (field) {
      case 0:
        e.actor = "key_attacker";
        break;
      case 1:
        e.action = "key.revoke";
        break;
      case 2:
        e.resource += "x";
        break;
      case 3:
        e.result = "failure";
        break;
      case 4:
        e.status = 200;
        break;
      case 5:
        e.client_ip = "10.0.0.2";
        break;
      case 6:
        e.user_agent = "x";
        break;
      case 7:
        e.request_id = "req_x";
        break;
      case 8:
        e.details = "{}";
        break;
      case 9:
        e.at += 1;
        break;
      case 10:
        e.org_id = "org_b";
        break;
    }
    auto b = Verify(events, 5, events[4].hash);
    ASSERT_TRUE(b) << field;
    EXPECT_EQ(b->seq, 3) << field;
    EXPECT_NE(b->reason.find("contents were changed"), std::string::npos) << b->reason;
  }
}

TEST(AuditChain, DeletionsReorderingsAndForgeriesAreFound) {
  auto events = Chain(5);
  auto deleted = events;
  deleted.erase(deleted.begin() + 1);
  auto b = Verify(deleted, 5, events[4].hash);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->seq, 2);
  EXPECT_NE(b->reason.find("missing"), std::string::npos);

  auto swapped = events;
  std::swap(swapped[1], swapped[2]);
  EXPECT_EQ(Verify(swapped, 5, events[4].hash)->seq, 2);

  // Renumbered after a deletion, so that seq has no gap: the link to the previous hash breaks.
  auto renumbered = deleted;
  for (std::size_t i = 0; i < renumbered.size(); ++i) renumbered[i].seq = static_cast<int>(i) + 1;
  EXPECT_EQ(Verify(renumbered, 4, renumbered[3].hash)->seq, 2);

  // The tail cut off: only the recorded head can tell.
  auto cut = events;
  cut.pop_back();
  b = Verify(cut, 5, events[4].hash);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->seq, 5);

  // A forged event at the end, re-hashed correctly, but past the head.
  auto forged = events;
  AuditEvent extra = events[4];
  LinkAuditEvent(extra, 5, events[4].hash);
  forged.push_back(extra);
  EXPECT_EQ(Verify(forged, 5, events[4].hash)->seq, 6);
}

TEST(AuditChain, FieldBoundariesCannotBeShifted) {
  AuditEvent a, b;
  a.actor = "ab";
  a.action = "c";
  b.actor = "a";
  b.action = "bc";
  EXPECT_NE(CanonicalAuditBytes(a), CanonicalAuditBytes(b));
  EXPECT_NE(AuditHash(kGenesisHash, a), AuditHash(kGenesisHash, b));
}

// Chains already stored must keep verifying, so the hashed bytes never change: this value was
// computed outside gatehouse (Python's hashlib) from the format chain.h describes.
TEST(AuditChain, TheHashedBytesAreTheDocumentedOnes) {
  AuditEvent e;
  e.org_id = "org_abc";
  e.seq = 7;
  e.at = 1700000000000123;
  e.actor = "key_xyz";
  e.action = "auth.proxy";
  e.resource = "route:/api/echo";
  e.result = "success";
  e.status = 200;
  e.client_ip = "127.0.0.1";
  e.user_agent = "curl/8";
  e.request_id = "req_1";
  e.details = "{}";
  EXPECT_EQ(AuditHash(kGenesisHash, e),
            "7b06cb273ea4d0961c04eb94a584362affb7e564a0f769fa054298e5ae5570d6");
  e.status = -1;
  EXPECT_EQ(AuditHash(kGenesisHash, e),
            "801a6dc0f583062ee148892a4e3fc709ea7ec90a947070b3a5da7645b6bb011c");
  LinkAuditEvent(e, 6, kGenesisHash);
  EXPECT_EQ(e.hash, "801a6dc0f583062ee148892a4e3fc709ea7ec90a947070b3a5da7645b6bb011c");
  EXPECT_EQ(e.prev_hash, kGenesisHash);
}

}  // namespace
}  // namespace gatehouse

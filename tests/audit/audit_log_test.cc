// The audit log through the real SQLite store: changes and their events commit together, the
// writer's group commit, back-pressure, tamper evidence after direct edits, retention with a
// signed checkpoint, filtered reading and key usage.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "audit/audit_service.h"
#include "audit/chain.h"
#include "audit/writer.h"
#include "store/sqlite/sqlite_store.h"

namespace gatehouse {
namespace {

constexpr std::string_view kPepper = "audit-test-pepper-0123456789abcdef0123";

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gh-audit-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "gatehouse.db").string();
    store_ = std::move(*SqliteStore::Open(path_));
    audit_ = std::make_unique<AuditService>(*store_, clock_, kPepper);
    ASSERT_TRUE(store_->InsertOrg({"org_a", "A", 1}, Event("org_a", "org.create")));
    ASSERT_TRUE(store_->InsertOrg({"org_b", "B", 1}, Event("org_b", "org.create")));
  }
  void TearDown() override {
    audit_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  AuditEvent Event(const std::string& org, const std::string& action,
                   const std::string& actor = "key_x", int status = 200) {
    AuditEvent e;
    e.org_id = org;
    e.at = clock_.Now();
    e.actor = actor;
    e.action = action;
    e.resource = "res";
    e.result = "success";
    e.status = status;
    e.client_ip = "10.0.0.1";
    e.user_agent = "test";
    e.request_id = "req_1";
    e.details = "{}";
    return e;
  }

  ApiKeyRecord Key(const std::string& org, const std::string& id) {
    ApiKeyRecord k;
    k.id = id;
    k.org_id = org;
    k.label = "l";
    k.environment = "live";
    k.key_hash = "hash_" + id;
    k.last4 = "abcd";
    k.created_by = "operator";
    k.created_at = 1;
    return k;
  }

  // Runs SQL on the file directly, as someone with access to the database would.
  void Tamper(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    std::string msg = err ? err : "";
    sqlite3_free(err);
    sqlite3_close(db);
    ASSERT_EQ(rc, SQLITE_OK) << msg;
  }

  void AppendMany(const std::string& org, int n) {
    std::vector<AuditEvent> batch;
    for (int i = 0; i < n; ++i) {
      batch.push_back(Event(org, "auth.proxy"));
      clock_.Advance(std::chrono::seconds(1));
    }
    ASSERT_TRUE(store_->AppendAudit(batch, {}, true));
  }

  FakeClock clock_;
  std::filesystem::path dir_;
  std::string path_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<AuditService> audit_;
};

TEST_F(AuditLogTest, AChangeAndItsEventCommitTogether) {
  ASSERT_TRUE(store_->InsertKey(Key("org_a", "key_1"), Event("org_a", "key.create")));
  auto page = store_->ListAudit("org_a", {});
  ASSERT_TRUE(page);
  ASSERT_EQ(page->events.size(), 2u);
  EXPECT_EQ(page->events[0].action, "key.create");
  EXPECT_EQ(page->events[0].seq, 2);
  EXPECT_EQ(page->events[1].action, "org.create");

  // A change that fails leaves no event behind, and an event that cannot be written (another
  // org's) takes its change down with it.
  EXPECT_FALSE(store_->InsertKey(Key("org_a", "key_1"), Event("org_a", "key.create")));
  EXPECT_FALSE(store_->RevokeKey("org_a", "key_missing", 5, Event("org_a", "key.revoke")));
  EXPECT_EQ(store_->ListAudit("org_a", {})->events.size(), 2u);

  auto update = store_->UpdateOrg("org_a", OrgUpdate{"A2", 30}, Event("org_a", "org.update"));
  ASSERT_TRUE(update);
  auto last = store_->ListAudit("org_a", {})->events.front();
  EXPECT_EQ(last.action, "org.update");
  EXPECT_EQ(
      last.details,
      R"({"before":{"name":"A","audit_retention_days":0},"after":{"name":"A2","audit_retention_days":30}})");
  // Org B's chain is its own.
  EXPECT_EQ(store_->ListAudit("org_b", {})->events.size(), 1u);
  EXPECT_TRUE(audit_->Verify("org_a")->intact);
}

TEST_F(AuditLogTest, EditsDeletionsAndReorderingsAreFoundAtTheFirstBrokenLink) {
  AppendMany("org_a", 9);  // seq 2..10 after org.create
  auto ok = audit_->Verify("org_a");
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->intact);
  EXPECT_EQ(ok->verified, 10);

  Tamper("UPDATE audit_events SET actor = 'key_someone_else' WHERE org_id = 'org_a' AND seq = 4");
  auto edited = audit_->Verify("org_a");
  EXPECT_FALSE(edited->intact);
  EXPECT_EQ(*edited->broken_at, 4);
  EXPECT_TRUE(audit_->Verify("org_b")->intact);  // other chains are untouched
}

TEST_F(AuditLogTest, DeletionIsFound) {
  AppendMany("org_a", 9);
  Tamper("DELETE FROM audit_events WHERE org_id = 'org_a' AND seq = 6");
  auto r = audit_->Verify("org_a");
  EXPECT_FALSE(r->intact);
  EXPECT_EQ(*r->broken_at, 6);
  EXPECT_NE(r->reason.find("missing"), std::string::npos) << r->reason;
}

TEST_F(AuditLogTest, DeletingTheNewestEventsIsFoundAgainstTheHead) {
  AppendMany("org_a", 9);
  Tamper("DELETE FROM audit_events WHERE org_id = 'org_a' AND seq >= 9");
  auto r = audit_->Verify("org_a");
  EXPECT_FALSE(r->intact);
  EXPECT_EQ(*r->broken_at, 9);
}

TEST_F(AuditLogTest, ReorderingIsFound) {
  AppendMany("org_a", 9);
  // Swap two events' positions, keeping each row's own hash.
  Tamper(
      "UPDATE audit_events SET seq = -1 WHERE org_id = 'org_a' AND seq = 5;"
      "UPDATE audit_events SET seq = 5 WHERE org_id = 'org_a' AND seq = 6;"
      "UPDATE audit_events SET seq = 6 WHERE org_id = 'org_a' AND seq = -1;");
  auto r = audit_->Verify("org_a");
  EXPECT_FALSE(r->intact);
  EXPECT_EQ(*r->broken_at, 5);
}

TEST_F(AuditLogTest, TheApplicationCannotRewriteOrDeleteEvents) {
  AppendMany("org_a", 2);
  auto update = store_->QueryAsTenant("org_a", "UPDATE tenant_audit_events SET actor = 'x'");
  EXPECT_FALSE(update);
  auto del = store_->QueryAsTenant("org_a", "DELETE FROM tenant_audit_events");
  EXPECT_FALSE(del);
  auto direct = store_->QueryAsTenant("org_a", "SELECT actor FROM audit_events");
  EXPECT_FALSE(direct);
  // Through the view, an org sees its own chain only.
  auto mine = store_->QueryAsTenant("org_b", "SELECT org_id FROM tenant_audit_events");
  ASSERT_TRUE(mine);
  for (const auto& org : *mine) EXPECT_EQ(org, "org_b");
  EXPECT_TRUE(audit_->Verify("org_a")->intact);
}

TEST_F(AuditLogTest, RetentionPrunesOldEventsAndTheRestStillVerifiesFromASignedCheckpoint) {
  AppendMany("org_a", 20);  // one second apart
  ASSERT_TRUE(store_->UpdateOrg("org_a", OrgUpdate{{}, 1}, Event("org_a", "org.update")));
  clock_.Advance(std::chrono::hours(24) - std::chrono::seconds(10));
  auto org = store_->GetOrg("org_a");
  auto removed = audit_->ApplyRetention(*org);
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_GT(*removed, 5);
  auto r = audit_->Verify("org_a");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->intact) << r->reason;
  EXPECT_GT(r->checkpoint_seq, 0);
  EXPECT_EQ(store_->ListAudit("org_a", {})->events.front().action, "audit.prune");
  EXPECT_EQ(*audit_->ApplyRetention(*org), 0);  // nothing more is old enough

  // Someone who deletes more and moves the checkpoint cannot sign it.
  auto head = *store_->GetAuditHead("org_a");
  std::int64_t next = head.checkpoint_seq + 3;
  Tamper(
      "DELETE FROM audit_events WHERE org_id = 'org_a' AND seq <= " + std::to_string(next) +
      "; UPDATE audit_heads SET checkpoint_seq = " + std::to_string(next) +
      ", checkpoint_hash = (SELECT prev_hash FROM audit_events WHERE org_id = 'org_a' AND seq = " +
      std::to_string(next + 1) + ") WHERE org_id = 'org_a'");
  auto forged = audit_->Verify("org_a");
  EXPECT_FALSE(forged->intact);
  EXPECT_NE(forged->reason.find("signature"), std::string::npos) << forged->reason;
}

// What an auditor holding only the JWKS public key checks: the signature over the exact
// statement, then the statement's fields against the chain they hold.
bool VerifiesWith(const Ed25519Signer& signer, const SignedAuditStatement& s) {
  const auto raw = Base64UrlDecode(s.signature);
  Ed25519Signature sig{};
  if (!raw || raw->size() != sig.size() || s.key_id != signer.key_id()) return false;
  std::copy(raw->begin(), raw->end(), sig.begin());
  return VerifyEd25519(signer.public_key(), s.statement, sig);
}

TEST_F(AuditLogTest, CheckpointsAndIntactHeadsAreSignedForWhoeverHoldsThePublicKey) {
  AppendMany("org_a", 20);
  ASSERT_TRUE(store_->UpdateOrg("org_a", OrgUpdate{{}, 1}, Event("org_a", "org.update")));
  clock_.Advance(std::chrono::hours(24) - std::chrono::seconds(10));
  ASSERT_TRUE(audit_->ApplyRetention(*store_->GetOrg("org_a")));
  auto r = audit_->Verify("org_a");
  ASSERT_TRUE(r && r->intact) << (r ? r->reason : r.error().message);
  const AuditHead head = *store_->GetAuditHead("org_a");
  EXPECT_TRUE(head.checkpoint_signature.starts_with("ed25519:" + audit_->signer().key_id() + ":"))
      << head.checkpoint_signature;

  ASSERT_TRUE(r->checkpoint);
  EXPECT_EQ(r->checkpoint->statement,
            "gatehouse-audit-checkpoint-v2\norg_a\n" + std::to_string(head.checkpoint_seq) + "\n" +
                head.checkpoint_hash + "\n" + std::to_string(head.checkpoint_at));
  EXPECT_TRUE(VerifiesWith(audit_->signer(), *r->checkpoint));
  ASSERT_TRUE(r->signed_head);
  EXPECT_TRUE(r->signed_head->statement.starts_with(
      "gatehouse-audit-head-v1\norg_a\n" + std::to_string(head.seq) + "\n" + head.hash + "\n"))
      << r->signed_head->statement;
  EXPECT_TRUE(VerifiesWith(audit_->signer(), *r->signed_head));
  SignedAuditStatement edited = *r->signed_head;
  edited.statement.replace(edited.statement.find(std::to_string(head.seq)),
                           std::to_string(head.seq).size(), std::to_string(head.seq + 1));
  EXPECT_FALSE(VerifiesWith(audit_->signer(), edited));

  // Every node of a deployment derives the same key from the pepper; another pepper, another.
  AuditService same(*store_, clock_, kPepper);
  EXPECT_EQ(same.signer().public_key(), audit_->signer().public_key());
  EXPECT_TRUE(same.Verify("org_a")->intact);
  AuditService other(*store_, clock_, "another-pepper-0123456789abcdef0123456");
  EXPECT_NE(other.signer().key_id(), audit_->signer().key_id());
  auto foreign = other.Verify("org_a");
  EXPECT_FALSE(foreign->intact);
  EXPECT_FALSE(foreign->signed_head);  // a broken chain gets no signed head

  // A checkpoint from before Ed25519 (hex HMAC under the pepper's checkpoint key) still holds.
  std::string legacy = "gatehouse-audit-checkpoint-v1\norg_a\n" +
                       std::to_string(head.checkpoint_seq) + "\n" + head.checkpoint_hash + "\n" +
                       std::to_string(head.checkpoint_at);
  const std::string legacy_mac = HexEncode(
      HmacSha256Key(DeriveSubkey(kPepper, "gatehouse-audit-checkpoint-key-v1")).Mac(legacy));
  Tamper("UPDATE audit_heads SET checkpoint_signature = '" + legacy_mac +
         "' WHERE org_id = 'org_a'");
  auto old = audit_->Verify("org_a");
  EXPECT_TRUE(old->intact) << old->reason;
  EXPECT_FALSE(old->checkpoint);  // nothing an outsider could check
  // Through a pepper rotation, and no further.
  const std::string new_pepper = "a-new-pepper-0123456789abcdef012345";
  EXPECT_TRUE(
      AuditService(*store_, clock_, new_pepper, 30, {{}, {}, kPepper, {}}).Verify("org_a")->intact);
  EXPECT_FALSE(
      AuditService(*store_, clock_, new_pepper, 30, {{}, {}, {}, {}}).Verify("org_a")->intact);
  Tamper("UPDATE audit_heads SET checkpoint_signature = 'ed25519:" + audit_->signer().key_id() +
         ":AAAA' WHERE org_id = 'org_a'");
  EXPECT_FALSE(audit_->Verify("org_a")->intact);
}

TEST_F(AuditLogTest, ARotatedSigningKeyKeepsWhatItSignedVerifiable) {
  AppendMany("org_a", 20);
  ASSERT_TRUE(store_->UpdateOrg("org_a", OrgUpdate{{}, 1}, Event("org_a", "org.update")));
  clock_.Advance(std::chrono::hours(24) - std::chrono::seconds(10));
  ASSERT_TRUE(audit_->ApplyRetention(*store_->GetOrg("org_a")));  // signed with the pepper's key
  auto before = audit_->Verify("org_a");
  ASSERT_TRUE(before && before->intact && before->signed_head);
  const SignedAuditStatement kept = *before->signed_head;  // what an auditor holds
  const std::string secret = "a-signing-secret-of-its-own-0123456789";

  // Rotated with the old key forgotten: its checkpoint breaks the chain, its heads are refused.
  AuditService forgetful(*store_, clock_, kPepper, 30, {secret, {}, {}, {}});
  EXPECT_NE(forgetful.signer().key_id(), audit_->signer().key_id());
  EXPECT_FALSE(forgetful.Verify("org_a")->intact);
  auto refused = forgetful.Verify("org_a", &kept);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);

  // Rotated with the old public key retired: both still verify, and JWKS publishes both keys,
  // the one that signs now first.
  AuditService rotated(*store_, clock_, kPepper, 30,
                       {secret, {audit_->signer().public_key()}, {}, {}});
  auto after = rotated.Verify("org_a", &kept);
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_TRUE(after->intact) << after->reason;
  EXPECT_EQ(after->anchor, "held");
  ASSERT_TRUE(after->signed_head);
  EXPECT_EQ(after->signed_head->key_id, rotated.signer().key_id());
  EXPECT_TRUE(VerifiesWith(rotated.signer(), *after->signed_head));
  EXPECT_EQ(rotated.JwksJson(),
            Ed25519Jwks({rotated.signer().public_key(), audit_->signer().public_key()}));
  EXPECT_NE(rotated.JwksJson().find("\"kid\":\"" + audit_->signer().key_id() + "\""),
            std::string::npos);

  // New checkpoints are signed with the new key, which the old service does not know.
  AppendMany("org_a", 5);
  clock_.Advance(std::chrono::hours(24));
  AppendMany("org_a", 2);
  ASSERT_TRUE(rotated.ApplyRetention(*store_->GetOrg("org_a")));
  EXPECT_TRUE(store_->GetAuditHead("org_a")->checkpoint_signature.starts_with(
      "ed25519:" + rotated.signer().key_id() + ":"));
  EXPECT_TRUE(rotated.Verify("org_a")->intact);
  EXPECT_FALSE(audit_->Verify("org_a")->intact);
}

TEST_F(AuditLogTest, APepperRotationRetiresTheSigningKeyThePreviousPepperDerived) {
  AppendMany("org_a", 5);
  auto before = audit_->Verify("org_a");
  ASSERT_TRUE(before && before->signed_head);
  const SignedAuditStatement kept = *before->signed_head;
  const std::string new_pepper = "a-new-pepper-0123456789abcdef012345";
  // The pepper derives the signing key (no secret of its own): the key the previous pepper
  // derived is retired by itself, so what it signed still anchors a verify.
  AuditService rotated(*store_, clock_, new_pepper, 30, {{}, {}, kPepper, {}});
  EXPECT_NE(rotated.signer().key_id(), audit_->signer().key_id());
  auto after = rotated.Verify("org_a", &kept);
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_EQ(after->anchor, "held");
  EXPECT_EQ(rotated.JwksJson(),
            Ed25519Jwks({rotated.signer().public_key(), audit_->signer().public_key()}));
  // Listed as well, it is published once.
  AuditService listed(*store_, clock_, new_pepper, 30,
                      {{}, {audit_->signer().public_key()}, kPepper, {}});
  EXPECT_EQ(listed.JwksJson(), rotated.JwksJson());
  // With a signing secret of its own, the pepper signed nothing: its rotation retires nothing.
  AuditService own(*store_, clock_, new_pepper, 30,
                   {"a-signing-secret-of-its-own-0123456789", {}, kPepper, {}});
  EXPECT_EQ(own.JwksJson(), Ed25519Jwks({own.signer().public_key()}));
}

TEST_F(AuditLogTest, ANodeNotYetSwitchedVerifiesWhatTheNextPeppersKeySigned) {
  const std::string new_pepper = "a-new-pepper-0123456789abcdef012345";
  // A rolling rotation: one node has switched to the new pepper and signs with its key.
  AuditService switched(*store_, clock_, new_pepper, 30, {{}, {}, kPepper, {}});
  AppendMany("org_a", 5);
  auto signed_there = switched.Verify("org_a");
  ASSERT_TRUE(signed_there && signed_there->signed_head);
  const SignedAuditStatement kept = *signed_there->signed_head;
  // A node with the new pepper announced still signs with its current key, and verifies what
  // the switched node signed; JWKS publishes both.
  AuditService announced(*store_, clock_, kPepper, 30, {{}, {}, {}, new_pepper});
  EXPECT_EQ(announced.signer().key_id(), audit_->signer().key_id());
  auto here = announced.Verify("org_a", &kept);
  ASSERT_TRUE(here) << here.error().message;
  EXPECT_EQ(here->anchor, "held");
  EXPECT_EQ(announced.JwksJson(),
            Ed25519Jwks({audit_->signer().public_key(), switched.signer().public_key()}));
  // Without the announcement, it is a key this deployment never used.
  EXPECT_FALSE(audit_->Verify("org_a", &kept));
}

TEST_F(AuditLogTest, AKeptSignedHeadShowsATailCutTogetherWithTheHead) {
  AppendMany("org_a", 10);
  auto first = audit_->Verify("org_a");
  ASSERT_TRUE(first && first->signed_head);
  const SignedAuditStatement kept = *first->signed_head;
  const std::int64_t kept_seq = first->head_seq;
  AppendMany("org_a", 5);
  auto later = audit_->Verify("org_a", &kept);
  ASSERT_TRUE(later) << later.error().message;
  EXPECT_TRUE(later->intact) << later->reason;
  EXPECT_EQ(later->anchor, "held");

  // Someone cuts the last six events and moves the head back consistently: the chain alone
  // cannot tell, the kept head can.
  const std::int64_t cut = kept_seq - 1;
  Tamper("DELETE FROM audit_events WHERE org_id = 'org_a' AND seq > " + std::to_string(cut) +
         "; UPDATE audit_heads SET seq = " + std::to_string(cut) +
         ", hash = (SELECT hash FROM audit_events WHERE org_id = 'org_a' AND seq = " +
         std::to_string(cut) + ") WHERE org_id = 'org_a'");
  EXPECT_TRUE(audit_->Verify("org_a")->intact);
  auto cut_report = audit_->Verify("org_a", &kept);
  ASSERT_TRUE(cut_report);
  EXPECT_FALSE(cut_report->intact);
  EXPECT_EQ(cut_report->broken_at, kept_seq);
  EXPECT_NE(cut_report->reason.find("tail was cut"), std::string::npos) << cut_report->reason;
  EXPECT_FALSE(cut_report->signed_head);

  // And grows it again with other events: long enough, but not the same chain.
  AppendMany("org_a", 4);
  EXPECT_TRUE(audit_->Verify("org_a")->intact);
  auto rewritten = audit_->Verify("org_a", &kept);
  EXPECT_FALSE(rewritten->intact);
  EXPECT_NE(rewritten->reason.find("another hash"), std::string::npos) << rewritten->reason;

  // What retention removed is not held against the chain.
  ASSERT_TRUE(store_->UpdateOrg("org_a", OrgUpdate{{}, 1}, Event("org_a", "org.update")));
  clock_.Advance(std::chrono::hours(25));
  AppendMany("org_a", 1);
  ASSERT_TRUE(audit_->ApplyRetention(*store_->GetOrg("org_a")));
  auto now = audit_->Verify("org_a");
  ASSERT_TRUE(now->intact && now->signed_head);
  EXPECT_EQ(audit_->Verify("org_a", &kept)->anchor, "pruned");
  EXPECT_EQ(audit_->Verify("org_a", &*now->signed_head)->anchor, "held");

  // An anchor is refused, not judged, when this deployment did not sign it for this org.
  EXPECT_EQ(audit_->Verify("org_b", &kept).error().code, ErrorCode::kInvalidArgument);
  SignedAuditStatement forged = kept;
  forged.statement += "0";
  EXPECT_EQ(audit_->Verify("org_a", &forged).error().code, ErrorCode::kInvalidArgument);
  AuditService other(*store_, clock_, "another-pepper-0123456789abcdef0123456");
  auto foreign = *other.Verify("org_b");
  EXPECT_EQ(audit_->Verify("org_b", &*foreign.signed_head).error().code,
            ErrorCode::kInvalidArgument);
}

TEST(AuditAnchorInput, ReadsTheApiBodyAndTheBareObjectAndNamesWhatIsWrong) {
  EXPECT_FALSE(*ReadAuditAnchor("", false));
  EXPECT_FALSE(*ReadAuditAnchor("{}", false));
  auto body = ReadAuditAnchor(
      R"({"anchor":{"statement":"s","signature":"AA","kid":"k","alg":"EdDSA"}})", false);
  ASSERT_TRUE(body && *body);
  EXPECT_EQ((*body)->statement, "s");
  EXPECT_EQ((*body)->key_id, "k");
  auto bare = ReadAuditAnchor(R"({"statement":"s","signature":"AA","kid":"k"})", true);
  ASSERT_TRUE(bare && *bare);
  EXPECT_EQ(ReadAuditAnchor(R"({"anchor":{"statement":"s","kid":"k"}})", false).error().field,
            "anchor.signature");
  EXPECT_EQ(
      ReadAuditAnchor(R"({"anchor":{"statement":"s","signature":"A","kid":"k","x":1}})", false)
          .error()
          .field,
      "anchor.x");
  EXPECT_EQ(ReadAuditAnchor(R"({"anchor":[]})", false).error().field, "anchor");
  EXPECT_EQ(ReadAuditAnchor(R"({"other":1})", false).error().field, "other");
  EXPECT_EQ(ReadAuditAnchor(R"({"statement":"s","signature":"A","kid":"k","alg":"RS256"})", true)
                .error()
                .field,
            "alg");
}

TEST_F(AuditLogTest, ARefusedBatchOfSeveralOrgsLeavesTheCallersEventsWhole) {
  // The writer offers a refused batch again, then event by event; before, the refused org's
  // events came back emptied and were stored as a chain of org "", the real ones lost.
  Tamper(
      "CREATE TRIGGER refuse_one BEFORE INSERT ON audit_events WHEN NEW.request_id = "
      "'req_bad' BEGIN SELECT RAISE(ABORT, 'refused'); END");
  std::vector<AuditEvent> batch{Event("org_b", "auth.proxy"), Event("org_a", "auth.proxy"),
                                Event("org_a", "auth.proxy"), Event("org_b", "auth.proxy")};
  batch[2].request_id = "req_bad";
  const std::vector<AuditEvent> before = batch;
  ASSERT_FALSE(store_->AppendAudit(batch, {}, true));
  for (std::size_t i = 0; i < batch.size(); ++i) {
    EXPECT_EQ(batch[i].org_id, before[i].org_id) << i;
    EXPECT_EQ(batch[i].action, before[i].action) << i;
    EXPECT_EQ(batch[i].request_id, before[i].request_id) << i;
    EXPECT_EQ(batch[i].user_agent, before[i].user_agent) << i;
  }
  std::vector<AuditEvent> orgless{Event("", "auth.proxy")};
  EXPECT_FALSE(store_->AppendAudit(orgless, {}, true));
  EXPECT_TRUE(store_->AuditChain("", 0, 10)->empty());
}

TEST_F(AuditLogTest, TheSystemChainIsBoundedToo) {
  AppendMany("system", 10);  // refusals of unknown keys, which anyone can cause
  clock_.Advance(std::chrono::hours(24 * 31));
  AppendMany("system", 2);
  AuditService audit(*store_, clock_, kPepper, 30);
  auto removed = audit.ApplyAllRetention();
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_EQ(*removed, 10);
  auto r = audit.Verify("system");
  EXPECT_TRUE(r->intact) << r->reason;
  EXPECT_EQ(r->checkpoint_seq, 10);
  AuditService forever(*store_, clock_, kPepper, 0);
  EXPECT_EQ(*forever.ApplyAllRetention(), 0);
}

TEST_F(AuditLogTest, ListingFiltersAndPagesNewestFirst) {
  for (int i = 0; i < 30; ++i) {
    std::vector<AuditEvent> one{Event("org_a", i % 3 == 0 ? "key.create" : "auth.proxy",
                                      i % 2 ? "key_odd" : "key_even", i % 5 == 0 ? 403 : 200)};
    if (i % 5 == 0) one[0].result = "denied";
    clock_.Advance(std::chrono::seconds(1));
    ASSERT_TRUE(store_->AppendAudit(one, {}, false));
  }
  AuditQuery q;
  q.actor = "key_odd";
  q.action = "auth.proxy";
  q.limit = 4;
  std::vector<std::int64_t> seen;
  for (;;) {
    auto page = audit_->List("org_a", q);
    ASSERT_TRUE(page);
    for (const auto& e : page->events) {
      EXPECT_EQ(e.actor, "key_odd");
      EXPECT_EQ(e.action, "auth.proxy");
      if (!seen.empty()) {
        EXPECT_LT(e.seq, seen.back());
      }
      seen.push_back(e.seq);
    }
    if (page->next_cursor.empty()) break;
    q.before_seq = std::stoll(page->next_cursor);
  }
  EXPECT_EQ(seen.size(), 10u);  // odd i (15) minus those with i % 3 == 0 (5)
  AuditQuery denied;
  denied.result = "denied";
  EXPECT_EQ(audit_->List("org_a", denied)->events.size(), 6u);
  AuditQuery window;
  window.since = clock_.Now() - 5 * kMicrosPerSecond;
  EXPECT_EQ(audit_->List("org_a", window)->events.size(), 5u);  // made before each Advance
  AuditQuery bad;
  bad.limit = 0;
  EXPECT_FALSE(audit_->List("org_a", bad));
}

TEST_F(AuditLogTest, TheWriterGroupCommitsEveryEventFromManyThreads) {
  AuditWriter writer(*store_, {});
  constexpr int kThreads = 4, kEach = 500;
  std::atomic<int> durable{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto e = Event(t % 2 ? "org_a" : "org_b", "auth.proxy", "key_t" + std::to_string(t));
        auto a = writer.Submit(std::move(e), [&](bool ok) { (ok ? durable : failed)++; });
        ASSERT_EQ(a, AuditWriter::Admission::kQueued);
      }
    });
  }
  for (auto& t : threads) t.join();
  writer.Stop();
  EXPECT_EQ(durable.load(), kThreads * kEach);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(writer.written(), static_cast<std::uint64_t>(kThreads * kEach));
  EXPECT_LT(writer.batches(), static_cast<std::uint64_t>(kThreads * kEach));
  EXPECT_TRUE(audit_->Verify("org_a")->intact);
  EXPECT_TRUE(audit_->Verify("org_b")->intact);
  EXPECT_EQ(audit_->Verify("org_a")->head_seq, 1 + 2 * kEach);
  // Usage came from the pipeline: each key's requests, by day and status class.
  ASSERT_TRUE(store_->InsertKey(Key("org_a", "key_t1"), Event("org_a", "key.create")));
  auto usage = audit_->KeyUsage("org_a", "key_t1", 1);
  ASSERT_TRUE(usage) << usage.error().message;
  ASSERT_EQ(usage->days.size(), 1u);
  EXPECT_EQ(usage->days[0].status_2xx, kEach);
}

TEST_F(AuditLogTest, AFullQueueRejectsByDefaultAndDropsWhenConfiguredSo) {
  // Another process holds the database's write lock, so the writer cannot drain.
  sqlite3* blocker = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &blocker), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(blocker, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::atomic<int> durable{0};
  {
    AuditWriterOptions o;
    o.capacity = 8;
    o.retry_for = std::chrono::seconds(20);
    AuditWriter writer(*store_, o);
    int queued = 0, rejected = 0;
    for (int i = 0; i < 40; ++i) {
      auto a = writer.Submit(Event("org_a", "auth.proxy"), [&](bool ok) { durable += ok; });
      if (a == AuditWriter::Admission::kQueued) queued++;
      if (a == AuditWriter::Admission::kRejected) rejected++;
    }
    EXPECT_LE(queued, 16);  // the queue, plus at most one batch taken by the writer
    EXPECT_GE(rejected, 24);
    EXPECT_EQ(writer.rejected(), static_cast<std::uint64_t>(rejected));
    EXPECT_LE(writer.queue_depth(), 8u);
    ASSERT_EQ(sqlite3_exec(blocker, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
    writer.Stop();
    EXPECT_EQ(durable.load(), queued);  // nothing admitted was lost
  }
  {
    ASSERT_EQ(sqlite3_exec(blocker, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
    AuditWriterOptions o;
    o.capacity = 8;
    o.overflow = AuditWriterOptions::Overflow::kDrop;
    o.retry_for = std::chrono::seconds(20);
    AuditWriter writer(*store_, o);
    int dropped = 0;
    for (int i = 0; i < 40; ++i) {
      if (writer.Submit(Event("org_a", "auth.proxy"), nullptr) == AuditWriter::Admission::kDropped)
        dropped++;
    }
    EXPECT_GE(dropped, 24);
    EXPECT_EQ(writer.dropped(), static_cast<std::uint64_t>(dropped));
    ASSERT_EQ(sqlite3_exec(blocker, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  }
  sqlite3_close(blocker);
  EXPECT_TRUE(audit_->Verify("org_a")->intact);
}

TEST_F(AuditLogTest, AStoreThatKeepsFailingFailsTheBatchInsteadOfHangingOrLyingAboutIt) {
  sqlite3* blocker = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &blocker), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(blocker, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  AuditWriterOptions o;
  o.retry_for = std::chrono::milliseconds(100);
  std::atomic<int> outcomes{0}, durable{0};
  {
    AuditWriter writer(*store_, o);
    writer.Submit(Event("org_a", "auth.proxy"), [&](bool ok) {
      outcomes++;
      durable += ok;
    });
    writer.Stop();  // busy_timeout (5 s) is the one wait; then the batch is given up
    EXPECT_EQ(writer.failed(), 1u);
  }
  EXPECT_EQ(outcomes.load(), 1);
  EXPECT_EQ(durable.load(), 0);
  sqlite3_exec(blocker, "COMMIT", nullptr, nullptr, nullptr);
  sqlite3_close(blocker);
}

TEST(KeyUsageCounting, CountsKeyRequestsByDayAndStatusClassOnly) {
  std::vector<AuditEvent> events(5);
  for (auto& e : events) {
    e.org_id = "org_a";
    e.actor = "key_1";
    e.action = "auth.proxy";
    e.at = 1'700'000'000'000'000;  // 2023-11-14
    e.status = 200;
  }
  events[1].status = 503;
  events[2].actor = "operator";                // not a key
  events[3].action = "key.create";             // a change, not a request
  events[4].at += 86400LL * kMicrosPerSecond;  // the next day
  auto counts = CountKeyUsage(events);
  ASSERT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts[0].day, "2023-11-14");
  EXPECT_EQ(counts[0].status_class, 2);
  EXPECT_EQ(counts[0].count, 1);
  EXPECT_EQ(counts[1].status_class, 5);
  EXPECT_EQ(counts[2].day, "2023-11-15");
}

}  // namespace
}  // namespace gatehouse

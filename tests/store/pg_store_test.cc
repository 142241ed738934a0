// The PostgreSQL store against a real throwaway cluster: migrations and the application role,
// the refusal to serve with powers that row level security does not bind, the same behaviour as
// the SQLite store, and tenancy that the database enforces whatever the SQL says.
#include "store/postgres/pg_store.h"
#include "store/people_repository.h"

#include <gtest/gtest.h>

#include "audit/audit_service.h"
#include "audit/writer.h"

#include <atomic>
#include <filesystem>
#include <thread>

#include "support/postgres.h"

namespace gatehouse::testing {
namespace {

// The audit event every change now takes; the audit tests look at these.
AuditEvent Ev(std::string action = "test.change") {
  AuditEvent e;
  e.actor = "operator";
  e.action = std::move(action);
  e.resource = "test";
  e.result = "success";
  e.details = "{}";
  return e;
}

constexpr const char* kAppRole = "gh_app";

class PgStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cluster_ = new PostgresCluster(); }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  // A fresh database per test, migrated, and the store connected as the application role.
  void SetUp() override {
    db_ = "t" + std::to_string(++databases_);
    cluster_->Sql("CREATE DATABASE " + db_);
    auto migrated = PgStore::Migrate(cluster_->Url(PostgresCluster::kSuperuser, db_), kAppRole, "");
    ASSERT_TRUE(migrated) << migrated.error().message;
    auto store = PgStore::Open(cluster_->Url(kAppRole, db_));
    ASSERT_TRUE(store) << store.error().message;
    store_ = std::move(*store);
  }

  ApiKeyRecord Key(const std::string& org, const std::string& id, const std::string& hash) {
    ApiKeyRecord k;
    k.id = id;
    k.org_id = org;
    k.label = "l";
    k.scopes = {"read:findings"};
    k.environment = "live";
    k.key_hash = hash;
    k.last4 = "abcd";
    k.created_by = "operator";
    k.created_at = 1;
    return k;
  }

  std::string AsApp(const std::string& sql, bool* ok) {
    return cluster_->SqlAs(kAppRole, sql, db_, ok);
  }

  static PostgresCluster* cluster_;
  static int databases_;
  std::string db_;
  std::unique_ptr<PgStore> store_;
};

PostgresCluster* PgStoreTest::cluster_ = nullptr;
int PgStoreTest::databases_ = 0;

TEST_F(PgStoreTest, MigrateIsIdempotentAndServingWithPowersRlsDoesNotBindIsRefused) {
  auto again = PgStore::Migrate(cluster_->Url(PostgresCluster::kSuperuser, db_), kAppRole, "");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->find("applied migration"), std::string::npos);  // nothing left to apply
  EXPECT_EQ(cluster_->Sql("SELECT rolsuper::text || rolbypassrls::text FROM pg_roles WHERE "
                          "rolname = 'gh_app'"),
            "falsefalse");

  auto super = PgStore::Open(cluster_->Url(PostgresCluster::kSuperuser, db_));
  ASSERT_FALSE(super);
  EXPECT_NE(super.error().message.find("superuser"), std::string::npos) << super.error().message;

  cluster_->Sql("CREATE ROLE gh_bypass LOGIN BYPASSRLS; GRANT gh_app TO gh_bypass");
  auto bypass = PgStore::Open(cluster_->Url("gh_bypass", db_));
  ASSERT_FALSE(bypass);
  EXPECT_NE(bypass.error().message.find("BYPASSRLS"), std::string::npos);

  // A non-superuser owner: it may migrate, but not serve.
  cluster_->Sql("CREATE ROLE gh_owner LOGIN CREATEROLE");
  cluster_->Sql("CREATE DATABASE " + db_ + "_own OWNER gh_owner");
  auto owned = PgStore::Migrate(cluster_->Url("gh_owner", db_ + "_own"), "gh_app2", "");
  ASSERT_TRUE(owned) << owned.error().message;
  auto as_owner = PgStore::Open(cluster_->Url("gh_owner", db_ + "_own"));
  ASSERT_FALSE(as_owner);
  EXPECT_NE(as_owner.error().message.find("owns the gatehouse tables"), std::string::npos)
      << as_owner.error().message;
  EXPECT_TRUE(PgStore::Open(cluster_->Url("gh_app2", db_ + "_own")));

  auto unmigrated = PgStore::Open(cluster_->Url(kAppRole, "postgres"));
  ASSERT_FALSE(unmigrated);
  EXPECT_NE(unmigrated.error().message.find("migrate"), std::string::npos);

  EXPECT_EQ(PgStore::Migrate(cluster_->Url(PostgresCluster::kSuperuser, db_), "bad role;", "")
                .error()
                .code,
            ErrorCode::kInvalidArgument);
}

TEST_F(PgStoreTest, BehavesLikeTheSqliteStore) {
  ASSERT_TRUE(store_->Ping());
  ASSERT_TRUE(store_->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), true, Ev()));
  auto again = store_->CreateOrgWithKey({"org_b", "B", 2}, Key("org_b", "key_x", "hx"), true, Ev());
  EXPECT_EQ(again.error().code, ErrorCode::kAlreadyExists);
  EXPECT_FALSE(store_->FindKeyByHash("hx"));  // nothing of the refused bootstrap remains
  EXPECT_EQ(**store_->BootstrapOrgId(), "org_a");
  ASSERT_TRUE(
      store_->CreateOrgWithKey({"org_b", "B", 2}, Key("org_b", "key_b", "hb"), false, Ev()));

  EXPECT_EQ(store_->GetOrg("org_a")->name, "A");
  EXPECT_EQ(store_->UpdateOrg("org_a", OrgUpdate{"A2", {}}, Ev())->name, "A2");
  EXPECT_EQ(store_->ListOrgs()->size(), 2u);
  EXPECT_EQ(store_->GetKey("org_a", "key_b").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(store_->RevokeKey("org_a", "key_b", 5, Ev()).error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(store_->GetKey("org_b", "key_b")->revoked_at);
  EXPECT_EQ(store_->FindKeyByHash("hb")->org_id, "org_b");
  EXPECT_EQ(store_->FindKeyByHash("hb")->scopes, std::vector<std::string>{"read:findings"});
  // A pepper rotation moves a key's hash: only from the hash it has, only in the key's own org.
  EXPECT_FALSE(*store_->ReplaceKeyHash("org_a", "key_b", "hb", "hb2"));
  EXPECT_FALSE(*store_->ReplaceKeyHash("org_b", "key_b", "hzz", "hb2"));
  const auto logged_before = *store_->LatestKeyInvalidation();
  EXPECT_TRUE(*store_->ReplaceKeyHash("org_b", "key_b", "hb", "hb2"));
  auto moved_log = *store_->KeyInvalidationsSince(logged_before, 10);
  ASSERT_EQ(moved_log.size(), 1u);  // caches keyed by the old hash drop it
  EXPECT_EQ(moved_log[0].key_hash, "hb");
  EXPECT_FALSE(*store_->ReplaceKeyHash("org_b", "key_b", "hb", "hb3"));  // moved already
  EXPECT_EQ(store_->FindKeyByHash("hb2")->id, "key_b");
  EXPECT_EQ(store_->FindKeyByHash("hb").error().code, ErrorCode::kNotFound);
  ASSERT_TRUE(store_->ReplaceKeyHash("org_b", "key_b", "hb2", "hb"));

  EXPECT_EQ(store_->InsertKey(Key("org_a", "key_dup", "ha"), Ev()).error().code,
            ErrorCode::kAlreadyExists);
  EXPECT_EQ(store_->InsertKey(Key("org_zzz", "key_y", "hy"), Ev()).error().code,
            ErrorCode::kNotFound);

  for (int i = 0; i < 5; ++i) {
    auto k = Key("org_a", "key_p" + std::to_string(i), "hp" + std::to_string(i));
    k.created_at = 10 + i;
    ASSERT_TRUE(store_->InsertKey(k, Ev()));
  }
  KeyListQuery q;
  q.limit = 4;
  auto page1 = *store_->ListKeys("org_a", q);
  ASSERT_EQ(page1.keys.size(), 4u);
  EXPECT_EQ(page1.keys[0].id, "key_p4");
  q.cursor = page1.next_cursor;
  auto page2 = *store_->ListKeys("org_a", q);
  ASSERT_EQ(page2.keys.size(), 2u);
  EXPECT_EQ(page2.keys[1].id, "key_a");
  EXPECT_TRUE(page2.next_cursor.empty());

  auto start = *store_->LatestKeyInvalidation();
  ASSERT_TRUE(store_->RevokeKey("org_a", "key_p0", 5, Ev()));
  ASSERT_TRUE(store_->RevokeKey("org_a", "key_p0", 6, Ev()));  // already revoked: nothing new
  ASSERT_TRUE(store_->RotateKey("org_a", "key_p1", Key("org_a", "key_r", "hr"), 9, Ev()));
  auto log = *store_->KeyInvalidationsSince(start, 10);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].key_hash, "hp0");
  EXPECT_EQ(log[1].key_hash, "hp1");
  EXPECT_EQ(store_->RotateKey("org_a", "key_p0", Key("org_a", "key_s", "hs"), 9, Ev()).error().code,
            ErrorCode::kNotFound);

  ASSERT_TRUE(store_->RecordKeyUsage({{"key_b", 100, "10.0.0.1"}, {"key_b", 50, "10.0.0.2"}}));
  auto used = *store_->GetKey("org_b", "key_b");
  EXPECT_EQ(used.last_used_at, 100);
  EXPECT_EQ(used.last_used_ip, "10.0.0.1");
}

TEST_F(PgStoreTest, ConcurrentWritersAllSucceed) {
  ASSERT_TRUE(store_->InsertOrg({"org_a", "A", 1}, Ev()));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        std::string id = "key_" + std::to_string(t) + "_" + std::to_string(i);
        if (!store_->InsertKey(Key("org_a", id, "h" + id), Ev())) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  KeyListQuery q;
  q.limit = 200;
  EXPECT_EQ(store_->ListKeys("org_a", q)->keys.size(), 100u);
}

// What the database does on its own, for SQL that forgets the org or tries to escape it, run as
// the role the server uses.
TEST_F(PgStoreTest, RowLevelSecurityHoldsWhateverTheSqlSays) {
  ASSERT_TRUE(
      store_->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  ASSERT_TRUE(
      store_->CreateOrgWithKey({"org_b", "B", 1}, Key("org_b", "key_b", "hb"), false, Ev()));
  bool ok = false;
  EXPECT_EQ(AsApp("SELECT count(*) FROM gatehouse.api_keys", &ok), "0");  // no org: nothing
  EXPECT_TRUE(ok);
  EXPECT_EQ(AsApp("BEGIN; SET LOCAL gatehouse.org_id = 'org_a'; "
                  "SELECT string_agg(id, ',') FROM gatehouse.api_keys; COMMIT;",
                  &ok),
            "key_a");
  EXPECT_EQ(AsApp("BEGIN; SET LOCAL gatehouse.org_id = 'org_a'; "
                  "SELECT string_agg(id, ',') FROM gatehouse.orgs; COMMIT;",
                  &ok),
            "org_a");
  // A row for another org, or moving a row there, is refused.
  std::string out = AsApp(
      "BEGIN; SET LOCAL gatehouse.org_id = 'org_a'; "
      "INSERT INTO gatehouse.api_keys (id, org_id, label, scopes, environment, key_hash, last4, "
      "ip_allowlist, created_by, created_at) VALUES ('key_x', 'org_b', 'l', '', 'live', 'hx', "
      "'abcd', '', 'x', 1); COMMIT;",
      &ok);
  EXPECT_FALSE(ok);
  EXPECT_NE(out.find("row-level security"), std::string::npos) << out;
  out = AsApp(
      "BEGIN; SET LOCAL gatehouse.org_id = 'org_a'; "
      "UPDATE gatehouse.api_keys SET org_id = 'org_b'; COMMIT;",
      &ok);
  EXPECT_FALSE(ok);
  // The role cannot switch the policies off, or read past them.
  out = AsApp("ALTER TABLE gatehouse.api_keys DISABLE ROW LEVEL SECURITY", &ok);
  EXPECT_FALSE(ok);
  EXPECT_NE(out.find("must be owner"), std::string::npos) << out;
  out = AsApp("SET row_security = off; SELECT count(*) FROM gatehouse.api_keys", &ok);
  EXPECT_FALSE(ok) << out;
  out = AsApp("SELECT count(*) FROM gatehouse.gh_find_key_by_hash('hb')", &ok);
  EXPECT_EQ(out, "1");  // the narrow lookup works, for that one hash only
  out = AsApp("DROP POLICY org_isolation ON gatehouse.api_keys", &ok);
  EXPECT_FALSE(ok);
  EXPECT_EQ(store_->GetKey("org_b", "key_b")->org_id, "org_b");
}

// People on PostgreSQL: the shared SQL (store/people_repository.cc) with row level security on
// memberships, roles and invitations, and the two definer lookups that cross orgs.
TEST_F(PgStoreTest, PeopleAreKeptApartByRowLevelSecurity) {
  ASSERT_TRUE(
      store_->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  ASSERT_TRUE(
      store_->CreateOrgWithKey({"org_b", "B", 1}, Key("org_b", "key_b", "hb"), false, Ev()));
  PeopleRepository people(*store_);
  UserRecord u;
  u.id = "usr_1";
  u.email = "one@example.com";
  u.password_hash = "$argon2id$v=19$m=19456,t=2,p=1$x$y";
  ASSERT_TRUE(people.InsertUser(u, {}));
  EXPECT_EQ(people.InsertUser(u, {}).error().code, ErrorCode::kAlreadyExists);
  AuditSource op;
  ASSERT_TRUE(people.AddMember({"org_a", "usr_1", "owner", 1, {}, {}, {}},
                               op.Event("org_a", "member.add", "user:usr_1", 0, 1)));
  ASSERT_TRUE(people.AddMember({"org_b", "usr_1", "viewer", 2, {}, {}, {}},
                               op.Event("org_b", "member.add", "user:usr_1", 0, 2)));
  ASSERT_TRUE(people.InsertRole({"org_b", "b-role", "", {"keys:read"}, 3},
                                op.Event("org_b", "role.create", "role:b-role", 0, 3)));
  // Each org sees its own membership only; the user's own list crosses orgs by design.
  EXPECT_EQ(people.ListMembers("org_a")->size(), 1u);
  EXPECT_EQ(people.ListMembers("org_a")->front().role, "owner");
  EXPECT_EQ(people.OrgsOfUser("usr_1")->size(), 2u);
  EXPECT_FALSE(*people.GetRole("org_a", "b-role"));
  EXPECT_TRUE(*people.GetRole("org_b", "b-role"));
  // The last owner rule holds in the database transaction.
  EXPECT_EQ(
      people
          .SetRole("org_a", "usr_1", "viewer", op.Event("org_a", "member.role", "user:usr_1", 0, 4))
          .error()
          .code,
      ErrorCode::kAlreadyExists);
  bool ok = false;
  EXPECT_EQ(AsApp("SELECT count(*) FROM gatehouse.memberships", &ok), "0");
  EXPECT_EQ(AsApp("BEGIN; SET LOCAL gatehouse.org_id = 'org_a'; "
                  "SELECT string_agg(org_id || ':' || role, ',') FROM gatehouse.memberships; "
                  "COMMIT;",
                  &ok),
            "org_a:owner");
  std::string out = AsApp(
      "BEGIN; SET LOCAL gatehouse.org_id = 'org_a'; "
      "INSERT INTO gatehouse.roles VALUES ('org_b', 'planted', '', 'admin', 1); COMMIT;",
      &ok);
  EXPECT_FALSE(ok);
  EXPECT_NE(out.find("row-level security"), std::string::npos) << out;
  out = AsApp(
      "BEGIN; SET LOCAL gatehouse.org_id = 'org_a'; "
      "UPDATE gatehouse.memberships SET org_id = 'org_b'; COMMIT;",
      &ok);
  EXPECT_FALSE(ok);
  // The events went to their orgs' chains.
  EXPECT_EQ(store_->ListAudit("org_b", {})->events.front().action, "role.create");
  // Housekeeping runs as the application role too.
  SessionRecord s;
  s.id = "ses_1";
  s.family_id = "sfam_1";
  s.user_id = "usr_1";
  s.token_hash = "th";
  s.expires_at = 10;
  ASSERT_TRUE(people.InsertSession(s, {}));
  EXPECT_EQ(*people.PruneExpired(11, 1, 100), 1);
  EXPECT_FALSE(*people.FindSession("th"));
}

// The audit log on PostgreSQL: the same chain as on SQLite, append-only for the server's role,
// kept apart per org by row level security, and pruned only through the definer function.
TEST_F(PgStoreTest, TheAuditLogIsAppendOnlyPerOrgAndVerifies) {
  ASSERT_TRUE(
      store_->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  ASSERT_TRUE(
      store_->CreateOrgWithKey({"org_b", "B", 1}, Key("org_b", "key_b", "hb"), false, Ev()));
  std::vector<AuditEvent> batch;
  for (int i = 0; i < 10; ++i) {
    AuditEvent e = Ev("auth.proxy");
    e.org_id = i % 2 ? "org_a" : "org_b";
    e.actor = i % 2 ? "key_a" : "key_b";
    e.at = 1000 + i;
    e.status = i == 9 ? 503 : 200;
    batch.push_back(e);
  }
  ASSERT_TRUE(store_->AppendAudit(batch, CountKeyUsage(batch), false));
  EXPECT_EQ(batch[1].seq, 2);  // after org_a's creation event
  FakeClock clock(1'700'000'000'000'000);
  AuditService audit(*store_, clock, "pg-audit-pepper-0123456789abcdef0123456");
  auto report = audit.Verify("org_a");
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_TRUE(report->intact) << report->reason;
  EXPECT_EQ(report->head_seq, 6);
  AuditQuery q;
  q.actor = "key_a";
  EXPECT_EQ(store_->ListAudit("org_a", q)->events.size(), 5u);
  EXPECT_EQ(store_->ListAudit("org_b", q)->events.size(), 0u);  // B cannot see A's
  auto usage = store_->KeyUsageDays("org_a", "key_a", "1970-01-01");
  ASSERT_TRUE(usage);
  ASSERT_EQ(usage->size(), 1u);
  EXPECT_EQ((*usage)[0].status_2xx, 4);
  EXPECT_EQ((*usage)[0].status_5xx, 1);

  bool ok = true;
  std::string out = AsApp(
      "BEGIN; SET LOCAL gatehouse.org_id = 'org_a'; "
      "UPDATE gatehouse.audit_events SET actor = 'forged'; COMMIT;",
      &ok);
  EXPECT_FALSE(ok);
  EXPECT_NE(out.find("permission denied"), std::string::npos) << out;
  out = AsApp(
      "BEGIN; SET LOCAL gatehouse.org_id = 'org_a'; DELETE FROM gatehouse.audit_events; COMMIT;",
      &ok);
  EXPECT_FALSE(ok);
  EXPECT_EQ(AsApp("BEGIN; SET LOCAL gatehouse.org_id = 'org_b'; SELECT count(*) FROM "
                  "gatehouse.audit_events WHERE org_id = 'org_a'; COMMIT;",
                  &ok),
            "0");
  // Pruning goes through gh_prune_audit and leaves a checkpoint the verifier accepts.
  ASSERT_TRUE(store_->UpdateOrg("org_a", OrgUpdate{{}, 1}, Ev()));
  auto pruned = audit.ApplyRetention(*store_->GetOrg("org_a"));
  ASSERT_TRUE(pruned) << pruned.error().message;
  EXPECT_EQ(*pruned, 6);  // every event older than a day, all but the newest
  auto after = audit.Verify("org_a");
  EXPECT_TRUE(after->intact) << after->reason;
  EXPECT_EQ(after->checkpoint_seq, 6);
  // The owner (who can write anything) edits an event: the chain says where.
  cluster_->Sql(
      "UPDATE gatehouse.audit_events SET actor = 'forged' WHERE org_id = 'org_b' AND "
      "seq = 3",
      db_);
  auto broken = audit.Verify("org_b");
  EXPECT_FALSE(broken->intact);
  EXPECT_EQ(*broken->broken_at, 3);
}

TEST_F(PgStoreTest, LostConnectionsAreReopenedAndTheCallRetried) {
  ASSERT_TRUE(
      store_->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  // Every session of the server's role is killed, as a failover or a restarted pooler would.
  cluster_->Sql(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = "
      "'gh_app'",
      db_);
  for (int i = 0; i < 8; ++i) {  // more calls than the pool has connections
    auto k = store_->GetKey("org_a", "key_a");
    ASSERT_TRUE(k) << k.error().message;
  }
  EXPECT_TRUE(store_->FindKeyByHash("ha"));
}

TEST_F(PgStoreTest, ADownDatabaseIsUnavailableNeverAWrongAnswer) {
  ASSERT_TRUE(
      store_->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  // Its own cluster, so the others' tests keep theirs.
  PostgresCluster own;
  own.Sql("CREATE DATABASE d");
  ASSERT_TRUE(PgStore::Migrate(own.Url(PostgresCluster::kSuperuser, "d"), kAppRole, ""));
  auto store = std::move(*PgStore::Open(own.Url(kAppRole, "d"), 2));
  ASSERT_TRUE(store->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  own.Stop();
  for (auto r : {store->FindKeyByHash("ha").error(), store->GetKey("org_a", "key_a").error()}) {
    EXPECT_EQ(r.code, ErrorCode::kUnavailable) << r.message;
  }
  EXPECT_EQ(store->Ping().error().code, ErrorCode::kUnavailable);
}

// The audit journal's progress is a row the application role updates; a database migrated
// before that grant existed is refused at start, with the way out, instead of taking journaled
// events it can never store.
TEST_F(PgStoreTest, TheAuditJournalNeedsItsProgressRowAndSaysSoAtStart) {
  const auto root = std::filesystem::temp_directory_path() /
                    ("gh-pg-journal-" + std::to_string(::getpid()) + "-" + db_);
  std::filesystem::remove_all(root);
  AuditWriterOptions options;
  options.journal_dir = root;
  {
    auto writer = AuditWriter::Open(*store_, options);
    ASSERT_TRUE(writer) << writer.error().message;
  }
  ASSERT_TRUE(store_->JournalProgressOf("nobody"));
  cluster_->Sql("REVOKE UPDATE ON gatehouse.gh_meta FROM " + std::string(kAppRole), db_);
  auto refused = AuditWriter::Open(*store_, options);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("gatehouse migrate"), std::string::npos)
      << refused.error().message;
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace gatehouse::testing

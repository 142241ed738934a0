#include "store/sqlite/sqlite_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <thread>

#include "audit/details.h"
#include "store/people_repository.h"

namespace gatehouse {
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

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gh-store-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "gatehouse.db").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  ApiKeyRecord Key(const std::string& org, const std::string& id, const std::string& hash) {
    ApiKeyRecord k;
    k.id = id;
    k.org_id = org;
    k.label = "l";
    k.environment = "live";
    k.key_hash = hash;
    k.last4 = "abcd";
    k.created_by = "operator";
    k.created_at = 1;
    return k;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(SqliteStoreTest, MigratesOnceAndUsesWal) {
  { ASSERT_TRUE(SqliteStore::Open(path_)); }
  auto again = SqliteStore::Open(path_);
  ASSERT_TRUE(again);
  sqlite3* db = nullptr;
  sqlite3_open(path_.c_str(), &db);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, nullptr);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), "wal");
  sqlite3_finalize(s);
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, nullptr);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(s, 0), 7);
  sqlite3_finalize(s);
  sqlite3_close(db);
}

TEST_F(SqliteStoreTest, RefusesANewerSchema) {
  { ASSERT_TRUE(SqliteStore::Open(path_)); }
  sqlite3* db = nullptr;
  sqlite3_open(path_.c_str(), &db);
  sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  auto r = SqliteStore::Open(path_);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("newer"), std::string::npos);
}

TEST_F(SqliteStoreTest, BootstrapHappensOnceAndAtomically) {
  auto store = std::move(*SqliteStore::Open(path_));
  Org org{"org_a", "A", 1};
  ASSERT_TRUE(store->CreateOrgWithKey(org, Key("org_a", "key_1", "h1"), true, Ev()));
  Org other{"org_b", "B", 1};
  auto again = store->CreateOrgWithKey(other, Key("org_b", "key_2", "h2"), true, Ev());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kAlreadyExists);
  EXPECT_FALSE(store->GetOrg("org_b"));  // nothing of the second attempt remains
  EXPECT_FALSE(store->FindKeyByHash("h2"));
  EXPECT_EQ(**store->BootstrapOrgId(), "org_a");
}

TEST_F(SqliteStoreTest, OrgOwnedLookupsNeverCrossOrgs) {
  auto store = std::move(*SqliteStore::Open(path_));
  ASSERT_TRUE(store->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  ASSERT_TRUE(store->CreateOrgWithKey({"org_b", "B", 1}, Key("org_b", "key_b", "hb"), false, Ev()));
  EXPECT_EQ(store->GetKey("org_a", "key_b").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(store->RevokeKey("org_a", "key_b", 5, Ev()).error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(store->GetKey("org_b", "key_b")->revoked_at);
  EXPECT_EQ(store->ListKeys("org_a", {})->keys.size(), 1u);
  // A pepper rotation moves a key's hash: only from the hash it has, only in the key's own org.
  EXPECT_FALSE(*store->ReplaceKeyHash("org_a", "key_b", "hb", "hb2"));
  EXPECT_FALSE(*store->ReplaceKeyHash("org_b", "key_b", "hzz", "hb2"));
  const auto logged_before = *store->LatestKeyInvalidation();
  EXPECT_TRUE(*store->ReplaceKeyHash("org_b", "key_b", "hb", "hb2"));
  auto moved_log = *store->KeyInvalidationsSince(logged_before, 10);
  ASSERT_EQ(moved_log.size(), 1u);  // caches keyed by the old hash drop it
  EXPECT_EQ(moved_log[0].key_hash, "hb");
  EXPECT_FALSE(*store->ReplaceKeyHash("org_b", "key_b", "hb", "hb3"));  // moved already
  EXPECT_EQ(store->FindKeyByHash("hb2")->id, "key_b");
  EXPECT_EQ(store->FindKeyByHash("hb").error().code, ErrorCode::kNotFound);
  ASSERT_TRUE(store->ReplaceKeyHash("org_b", "key_b", "hb2", "hb"));
}

// People's org-owned rows (memberships, roles, invitations) behind the same tenant views.
TEST_F(SqliteStoreTest, PeopleRowsAreKeptApartByTheDatabase) {
  auto store = std::move(*SqliteStore::Open(path_));
  ASSERT_TRUE(store->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  ASSERT_TRUE(store->CreateOrgWithKey({"org_b", "B", 1}, Key("org_b", "key_b", "hb"), false, Ev()));
  PeopleRepository people(*store);
  UserRecord u;
  u.id = "usr_1";
  u.email = "one@example.com";
  u.password_hash = "$argon2id$v=19$m=19456,t=2,p=1$x$y";
  ASSERT_TRUE(people.InsertUser(u, {}));
  AuditSource op;
  ASSERT_TRUE(people.AddMember({"org_a", "usr_1", "owner", 1, {}, {}, {}},
                               op.Event("org_a", "member.add", "user:usr_1", 0, 1)));
  ASSERT_TRUE(people.AddMember({"org_b", "usr_1", "viewer", 2, {}, {}, {}},
                               op.Event("org_b", "member.add", "user:usr_1", 0, 2)));
  EXPECT_EQ(people.ListMembers("org_a")->size(), 1u);
  EXPECT_EQ(people.OrgsOfUser("usr_1")->size(), 2u);
  using Rows = std::vector<std::string>;
  EXPECT_EQ(*store->QueryAsTenant("org_a", "SELECT role FROM tenant_memberships"), Rows{"owner"});
  for (const char* direct : {"SELECT role FROM memberships", "SELECT name FROM roles",
                             "SELECT id FROM invitations", "DELETE FROM memberships"}) {
    auto r = store->QueryAsTenant("org_a", direct);
    ASSERT_FALSE(r) << direct;
    EXPECT_EQ(r.error().code, ErrorCode::kPermissionDenied) << direct;
  }
  auto planted = store->QueryAsTenant(
      "org_a", "INSERT INTO tenant_roles VALUES ('org_b', 'planted', '', 'admin', 1)");
  EXPECT_EQ(planted.error().code, ErrorCode::kOrgMismatch);
  EXPECT_EQ(
      people
          .SetRole("org_a", "usr_1", "viewer", op.Event("org_a", "member.role", "user:usr_1", 0, 3))
          .error()
          .code,
      ErrorCode::kAlreadyExists);  // the last owner
}

// What the database does on its own, whatever the query says: a query that forgets its org
// condition sees its own org only, naming a table directly is refused, and a row for another
// org cannot be written.
TEST_F(SqliteStoreTest, TheDatabaseKeepsOrgsApartWithoutTheQueriesHelp) {
  auto store = std::move(*SqliteStore::Open(path_));
  ASSERT_TRUE(store->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  ASSERT_TRUE(store->CreateOrgWithKey({"org_b", "B", 1}, Key("org_b", "key_b", "hb"), false, Ev()));
  using Rows = std::vector<std::string>;
  EXPECT_EQ(*store->QueryAsTenant("org_a", "SELECT id FROM tenant_api_keys"), Rows{"key_a"});
  EXPECT_EQ(*store->QueryAsTenant("org_b", "SELECT id FROM tenant_api_keys"), Rows{"key_b"});
  EXPECT_EQ(*store->QueryAsTenant("org_a", "SELECT id FROM tenant_orgs"), Rows{"org_a"});
  EXPECT_EQ(*store->QueryAsTenant("", "SELECT id FROM tenant_api_keys"), Rows{});
  for (const char* direct :
       {"SELECT id FROM api_keys", "SELECT id FROM orgs",
        "SELECT k.id FROM tenant_api_keys t JOIN api_keys k ON 1",
        "UPDATE api_keys SET revoked_at = 1", "DELETE FROM orgs", "DROP VIEW tenant_api_keys",
        "CREATE TEMP VIEW leak AS SELECT * FROM api_keys", "PRAGMA writable_schema = ON",
        "ATTACH DATABASE ':memory:' AS other"}) {
    auto r = store->QueryAsTenant("org_a", direct);
    ASSERT_FALSE(r) << direct;
    EXPECT_EQ(r.error().code, ErrorCode::kPermissionDenied) << direct;
  }
  // Writing another org's row, or moving a row to another org, through the views.
  auto insert = store->QueryAsTenant(
      "org_a",
      "INSERT INTO tenant_api_keys (id, org_id, label, scopes, environment, key_hash, last4, "
      "ip_allowlist, created_by, created_at) VALUES ('key_x', 'org_b', 'l', '', 'live', 'hx', "
      "'abcd', '', 'x', 1)");
  EXPECT_EQ(insert.error().code, ErrorCode::kOrgMismatch);
  auto move = store->QueryAsTenant("org_a", "UPDATE tenant_api_keys SET org_id = 'org_b'");
  EXPECT_EQ(move.error().code, ErrorCode::kOrgMismatch);
  EXPECT_EQ(*store->QueryAsTenant("org_a", "UPDATE tenant_api_keys SET label = 'mine'"), Rows{});
  EXPECT_EQ(store->GetKey("org_b", "key_b")->label, "l");  // only org_a's row changed
  EXPECT_EQ(store->GetKey("org_a", "key_a")->label, "mine");
}

TEST_F(SqliteStoreTest, RevocationAndRotationAreLoggedForOtherProcessesByTheDatabase) {
  auto store = std::move(*SqliteStore::Open(path_));
  ASSERT_TRUE(store->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  ASSERT_TRUE(store->InsertKey(Key("org_a", "key_b", "hb"), Ev()));
  auto start = *store->LatestKeyInvalidation();
  ASSERT_TRUE(store->RevokeKey("org_a", "key_a", 5, Ev()));
  ASSERT_TRUE(store->RevokeKey("org_a", "key_a", 6, Ev()));  // already revoked: nothing new
  ASSERT_TRUE(store->RotateKey("org_a", "key_b", Key("org_a", "key_c", "hc"), 9, Ev()));
  auto log = *store->KeyInvalidationsSince(start, 10);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].key_hash, "ha");
  EXPECT_EQ(log[1].key_hash, "hb");
  EXPECT_EQ(store->RotateKey("org_a", "key_a", Key("org_a", "key_d", "hd"), 9, Ev()).error().code,
            ErrorCode::kNotFound);  // a revoked key cannot be rotated
}

TEST_F(SqliteStoreTest, DuplicateHashIsAConflictAndUnknownOrgIsNotFound) {
  auto store = std::move(*SqliteStore::Open(path_));
  ASSERT_TRUE(store->CreateOrgWithKey({"org_a", "A", 1}, Key("org_a", "key_a", "ha"), false, Ev()));
  EXPECT_EQ(store->InsertKey(Key("org_a", "key_x", "ha"), Ev()).error().code,
            ErrorCode::kAlreadyExists);
  EXPECT_EQ(store->InsertKey(Key("org_zzz", "key_y", "hy"), Ev()).error().code,
            ErrorCode::kNotFound);
}

TEST_F(SqliteStoreTest, ConcurrentWritersWaitInsteadOfFailing) {
  auto store = std::move(*SqliteStore::Open(path_));
  ASSERT_TRUE(store->InsertOrg({"org_a", "A", 1}, Ev()));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        std::string id = "key_" + std::to_string(t) + "_" + std::to_string(i);
        if (!store->InsertKey(Key("org_a", id, "h" + id), Ev())) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  KeyListQuery q;
  q.limit = 200;
  EXPECT_EQ(store->ListKeys("org_a", q)->keys.size(), 200u);
}

}  // namespace
}  // namespace gatehouse

#include "store/sqlite/sqlite_store.h"

#include <sqlite3.h>

#include <spdlog/spdlog.h>

#include <map>
#include <sstream>

namespace gatehouse {

namespace {

// Append-only: a released migration is never edited, only followed by a new one.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE meta (
  name  TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
CREATE TABLE orgs (
  id         TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE TABLE api_keys (
  id           TEXT PRIMARY KEY,
  org_id       TEXT NOT NULL REFERENCES orgs(id),
  label        TEXT NOT NULL,
  scopes       TEXT NOT NULL,
  environment  TEXT NOT NULL CHECK (environment IN ('live', 'test')),
  key_hash     TEXT NOT NULL UNIQUE,
  last4        TEXT NOT NULL,
  expires_at   INTEGER,
  ip_allowlist TEXT NOT NULL,
  created_by   TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  last_used_at INTEGER,
  last_used_ip TEXT NOT NULL DEFAULT '',
  revoked_at   INTEGER,
  rotated_from TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX api_keys_by_org ON api_keys(org_id, created_at DESC, id DESC);
CREATE TABLE key_invalidations (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  key_hash   TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
)sql",
};

std::string JoinWords(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

std::vector<std::string> SplitWords(std::string_view text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(' ', start);
    if (end == std::string_view::npos) end = text.size();
    if (end > start) out.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace

class SqliteStore::Connection {
 public:
  explicit Connection(sqlite3* db) : db_(db) {}
  ~Connection() {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

  sqlite3* db() { return db_; }

  tl::unexpected<Error> Failure(int rc, const char* what) {
    int primary = rc & 0xff;
    if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
      spdlog::warn("sqlite busy during {}", what);
      return Fail(ErrorCode::kUnavailable, "the database is busy; try again");
    }
    if (primary == SQLITE_CONSTRAINT) {
      return Fail(ErrorCode::kAlreadyExists, "a record with that identity already exists");
    }
    spdlog::error("sqlite error during {}: {}", what, sqlite3_errmsg(db_));
    return Fail(ErrorCode::kInternal, "storage error");
  }

  Result<void> Exec(const char* sql) {
    char* msg = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &msg);
    if (msg) sqlite3_free(msg);
    if (rc != SQLITE_OK) return Failure(rc, "exec");
    return {};
  }

  // Statements are prepared once per connection and reset after each use.
  Result<sqlite3_stmt*> Prepare(const char* sql) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) {
      sqlite3_reset(it->second);
      sqlite3_clear_bindings(it->second);
      in_use_.push_back(it->second);
      return it->second;
    }
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) return Failure(rc, "prepare");
    statements_.emplace(sql, stmt);
    in_use_.push_back(stmt);
    return stmt;
  }

  // A statement left at SQLITE_ROW keeps its read transaction, and with it a stale WAL snapshot,
  // open. Every lease resets what it used before the connection goes back to the pool.
  void ResetUsed() {
    for (auto* s : in_use_) sqlite3_reset(s);
    in_use_.clear();
  }

 private:
  sqlite3* db_;
  std::map<const char*, sqlite3_stmt*> statements_;
  std::vector<sqlite3_stmt*> in_use_;
};

class SqliteStore::Lease {
 public:
  Lease(SqliteStore* store, Connection* c) : store_(store), c_(c) {}
  Lease(const Lease&) = delete;
  ~Lease() { store_->Release(c_); }
  Connection* operator->() { return c_; }
  Connection& operator*() { return *c_; }

 private:
  SqliteStore* store_;
  Connection* c_;
};

namespace {

// Binds positional parameters; strings are copied by SQLite (SQLITE_TRANSIENT) so that callers'
// temporaries may die before the step.
class Binder {
 public:
  explicit Binder(sqlite3_stmt* s) : s_(s) {}
  Binder& Text(std::string_view v) {
    sqlite3_bind_text(s_, ++i_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Binder& Int(std::int64_t v) {
    sqlite3_bind_int64(s_, ++i_, v);
    return *this;
  }
  Binder& OptInt(const std::optional<std::int64_t>& v) {
    if (v)
      sqlite3_bind_int64(s_, ++i_, *v);
    else
      sqlite3_bind_null(s_, ++i_);
    return *this;
  }

 private:
  sqlite3_stmt* s_;
  int i_ = 0;
};

std::string ColText(sqlite3_stmt* s, int i) {
  const auto* p = sqlite3_column_text(s, i);
  return p ? std::string(reinterpret_cast<const char*>(p),
                         static_cast<std::size_t>(sqlite3_column_bytes(s, i)))
           : std::string();
}

std::optional<std::int64_t> ColOptInt(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_int64(s, i);
}

constexpr const char* kKeyColumns =
    "id, org_id, label, scopes, environment, key_hash, last4, expires_at, ip_allowlist, "
    "created_by, created_at, last_used_at, last_used_ip, revoked_at, rotated_from";

ApiKeyRecord ReadKey(sqlite3_stmt* s) {
  ApiKeyRecord k;
  k.id = ColText(s, 0);
  k.org_id = ColText(s, 1);
  k.label = ColText(s, 2);
  k.scopes = SplitWords(ColText(s, 3));
  k.environment = ColText(s, 4);
  k.key_hash = ColText(s, 5);
  k.last4 = ColText(s, 6);
  k.expires_at = ColOptInt(s, 7);
  k.ip_allowlist = SplitWords(ColText(s, 8));
  k.created_by = ColText(s, 9);
  k.created_at = sqlite3_column_int64(s, 10);
  k.last_used_at = ColOptInt(s, 11);
  k.last_used_ip = ColText(s, 12);
  k.revoked_at = ColOptInt(s, 13);
  k.rotated_from = ColText(s, 14);
  return k;
}

// Runs `body` inside BEGIN IMMEDIATE ... COMMIT, rolling back on any error.
template <typename T, typename F>
Result<T> InWriteTransaction(SqliteStore::Connection& c, F&& body) {
  if (auto r = c.Exec("BEGIN IMMEDIATE"); !r) return tl::unexpected(r.error());
  Result<T> result = body();
  if (!result) {
    (void)c.Exec("ROLLBACK");
    return result;
  }
  if (auto r = c.Exec("COMMIT"); !r) {
    (void)c.Exec("ROLLBACK");
    return tl::unexpected(r.error());
  }
  return result;
}

Result<void> StepDone(SqliteStore::Connection& c, sqlite3_stmt* s, const char* what) {
  int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return c.Failure(rc, what);
  return {};
}

}  // namespace

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, int pool_size) {
  std::unique_ptr<SqliteStore> store(new SqliteStore());
  bool memory = path == ":memory:";
  if (memory) pool_size = 1;
  for (int i = 0; i < pool_size; ++i) {
    sqlite3* db = nullptr;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
      sqlite3_close_v2(db);
      return Fail(ErrorCode::kUnavailable, "cannot open SQLite database " + path + ": " + msg);
    }
    auto conn = std::make_unique<Connection>(db);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_extended_result_codes(db, 1);
    // FULL: a key shown to its creator must survive a power cut, not only a process crash.
    for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                               "PRAGMA foreign_keys=ON", "PRAGMA temp_store=MEMORY"}) {
      if (auto r = conn->Exec(pragma); !r) return tl::unexpected(r.error());
    }
    if (i == 0) {
      // Migrations run on the first connection before the others can see the schema.
      sqlite3_stmt* s = nullptr;
      sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, nullptr);
      int version = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
      sqlite3_finalize(s);
      constexpr int kLatest = static_cast<int>(std::size(kMigrations));
      if (version > kLatest) {
        return Fail(ErrorCode::kInternal, "database schema version " + std::to_string(version) +
                                              " is newer than this gatehouse (" +
                                              std::to_string(kLatest) + ")");
      }
      for (int v = version; v < kLatest; ++v) {
        auto applied = InWriteTransaction<void>(*conn, [&]() -> Result<void> {
          if (auto r = conn->Exec(kMigrations[v]); !r) return r;
          std::string set = "PRAGMA user_version=" + std::to_string(v + 1);
          return conn->Exec(set.c_str());
        });
        if (!applied) return tl::unexpected(applied.error());
        spdlog::info("sqlite: applied migration {}", v + 1);
      }
    }
    store->idle_.push_back(conn.get());
    store->all_.push_back(std::move(conn));
  }
  return store;
}

SqliteStore::~SqliteStore() = default;

SqliteStore::Lease SqliteStore::Acquire() {
  std::unique_lock lock(mu_);
  available_.wait(lock, [&] { return !idle_.empty(); });
  Connection* c = idle_.back();
  idle_.pop_back();
  return Lease(this, c);
}

void SqliteStore::Release(Connection* c) {
  c->ResetUsed();
  {
    std::lock_guard lock(mu_);
    idle_.push_back(c);
  }
  available_.notify_one();
}

Result<void> SqliteStore::Ping() {
  auto c = Acquire();
  auto s = c->Prepare("SELECT 1");
  if (!s) return tl::unexpected(s.error());
  int rc = sqlite3_step(*s);
  if (rc != SQLITE_ROW) return c->Failure(rc, "ping");
  return {};
}

Result<void> SqliteStore::InsertOrg(const Org& org) {
  auto c = Acquire();
  auto s = c->Prepare("INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)");
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Text(org.id).Text(org.name).Int(org.created_at);
  return StepDone(*c, *s, "insert org");
}

Result<Org> SqliteStore::GetOrg(std::string_view org_id) {
  auto c = Acquire();
  auto s = c->Prepare("SELECT id, name, created_at FROM orgs WHERE id = ?");
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Text(org_id);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return Fail(ErrorCode::kNotFound, "organization not found");
  if (rc != SQLITE_ROW) return c->Failure(rc, "get org");
  return Org{ColText(*s, 0), ColText(*s, 1), sqlite3_column_int64(*s, 2)};
}

Result<Org> SqliteStore::RenameOrg(std::string_view org_id, std::string_view name) {
  {
    auto c = Acquire();
    auto s = c->Prepare("UPDATE orgs SET name = ? WHERE id = ?");
    if (!s) return tl::unexpected(s.error());
    Binder(*s).Text(name).Text(org_id);
    if (auto r = StepDone(*c, *s, "rename org"); !r) return tl::unexpected(r.error());
    if (sqlite3_changes(c->db()) == 0) return Fail(ErrorCode::kNotFound, "organization not found");
  }
  return GetOrg(org_id);
}

Result<std::vector<Org>> SqliteStore::ListOrgs() {
  auto c = Acquire();
  auto s = c->Prepare("SELECT id, name, created_at FROM orgs ORDER BY created_at, id");
  if (!s) return tl::unexpected(s.error());
  std::vector<Org> out;
  int rc;
  while ((rc = sqlite3_step(*s)) == SQLITE_ROW) {
    out.push_back(Org{ColText(*s, 0), ColText(*s, 1), sqlite3_column_int64(*s, 2)});
  }
  if (rc != SQLITE_DONE) return c->Failure(rc, "list orgs");
  return out;
}

namespace {
Result<void> InsertKeyOn(SqliteStore::Connection& c, const ApiKeyRecord& k) {
  auto s = c.Prepare(
      "INSERT INTO api_keys (id, org_id, label, scopes, environment, key_hash, last4, expires_at, "
      "ip_allowlist, created_by, created_at, last_used_at, last_used_ip, revoked_at, rotated_from)"
      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!s) return tl::unexpected(s.error());
  Binder(*s)
      .Text(k.id)
      .Text(k.org_id)
      .Text(k.label)
      .Text(JoinWords(k.scopes))
      .Text(k.environment)
      .Text(k.key_hash)
      .Text(k.last4)
      .OptInt(k.expires_at)
      .Text(JoinWords(k.ip_allowlist))
      .Text(k.created_by)
      .Int(k.created_at)
      .OptInt(k.last_used_at)
      .Text(k.last_used_ip)
      .OptInt(k.revoked_at)
      .Text(k.rotated_from);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
    return Fail(ErrorCode::kNotFound, "organization not found");
  }
  if (rc != SQLITE_DONE) return c.Failure(rc, "insert key");
  return {};
}
}  // namespace

Result<void> SqliteStore::CreateOrgWithKey(const Org& org, const ApiKeyRecord& owner_key,
                                           bool bootstrap) {
  auto c = Acquire();
  return InWriteTransaction<void>(*c, [&]() -> Result<void> {
    if (bootstrap) {
      auto s = c->Prepare("INSERT INTO meta (name, value) VALUES ('bootstrap_org', ?)");
      if (!s) return tl::unexpected(s.error());
      Binder(*s).Text(org.id);
      int rc = sqlite3_step(*s);
      if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        return Fail(ErrorCode::kAlreadyExists, "this data directory is already initialised");
      }
      if (rc != SQLITE_DONE) return c->Failure(rc, "bootstrap");
    }
    auto o = c->Prepare("INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)");
    if (!o) return tl::unexpected(o.error());
    Binder(*o).Text(org.id).Text(org.name).Int(org.created_at);
    if (auto r = StepDone(*c, *o, "bootstrap org"); !r) return r;
    return InsertKeyOn(*c, owner_key);
  });
}

Result<std::optional<std::string>> SqliteStore::BootstrapOrgId() {
  auto c = Acquire();
  auto s = c->Prepare("SELECT value FROM meta WHERE name = 'bootstrap_org'");
  if (!s) return tl::unexpected(s.error());
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return std::optional<std::string>{};
  if (rc != SQLITE_ROW) return c->Failure(rc, "bootstrap org");
  return std::optional<std::string>(ColText(*s, 0));
}

Result<void> SqliteStore::InsertKey(const ApiKeyRecord& key) {
  auto c = Acquire();
  return InsertKeyOn(*c, key);
}

Result<ApiKeyRecord> SqliteStore::GetKey(std::string_view org_id, std::string_view key_id) {
  static const std::string sql =
      std::string("SELECT ") + kKeyColumns + " FROM api_keys WHERE org_id = ? AND id = ?";
  auto c = Acquire();
  auto s = c->Prepare(sql.c_str());
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Text(org_id).Text(key_id);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return Fail(ErrorCode::kNotFound, "API key not found");
  if (rc != SQLITE_ROW) return c->Failure(rc, "get key");
  return ReadKey(*s);
}

Result<ApiKeyRecord> SqliteStore::FindKeyByHash(std::string_view key_hash) {
  static const std::string sql =
      std::string("SELECT ") + kKeyColumns + " FROM api_keys WHERE key_hash = ?";
  auto c = Acquire();
  auto s = c->Prepare(sql.c_str());
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Text(key_hash);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return Fail(ErrorCode::kNotFound, "API key not found");
  if (rc != SQLITE_ROW) return c->Failure(rc, "find key");
  return ReadKey(*s);
}

Result<KeyPage> SqliteStore::ListKeys(std::string_view org_id, const KeyListQuery& query) {
  static const std::string first_page = std::string("SELECT ") + kKeyColumns +
                                        " FROM api_keys WHERE org_id = ? "
                                        "ORDER BY created_at DESC, id DESC LIMIT ?";
  static const std::string next_page = std::string("SELECT ") + kKeyColumns +
                                       " FROM api_keys WHERE org_id = ? AND "
                                       "(created_at < ? OR (created_at = ? AND id < ?)) "
                                       "ORDER BY created_at DESC, id DESC LIMIT ?";
  std::int64_t after_time = 0;
  std::string after_id;
  if (!query.cursor.empty()) {
    auto dot = query.cursor.find('.');
    try {
      if (dot == std::string::npos) throw std::invalid_argument("cursor");
      after_time = std::stoll(query.cursor.substr(0, dot));
      after_id = query.cursor.substr(dot + 1);
    } catch (const std::exception&) {
      return FailField("cursor", "cursor is not one this server issued");
    }
  }
  auto c = Acquire();
  auto s = c->Prepare(query.cursor.empty() ? first_page.c_str() : next_page.c_str());
  if (!s) return tl::unexpected(s.error());
  Binder b(*s);
  b.Text(org_id);
  if (!query.cursor.empty()) b.Int(after_time).Int(after_time).Text(after_id);
  b.Int(query.limit + 1);  // one extra row tells whether there is a next page
  KeyPage page;
  int rc;
  while ((rc = sqlite3_step(*s)) == SQLITE_ROW) page.keys.push_back(ReadKey(*s));
  if (rc != SQLITE_DONE) return c->Failure(rc, "list keys");
  if (static_cast<int>(page.keys.size()) > query.limit) {
    page.keys.pop_back();
    const auto& last = page.keys.back();
    page.next_cursor = std::to_string(last.created_at) + "." + last.id;
  }
  return page;
}

namespace {
Result<void> AppendInvalidation(SqliteStore::Connection& c, std::string_view org_id,
                                std::string_view key_id, UnixMicros at) {
  auto s = c.Prepare(
      "INSERT INTO key_invalidations (key_hash, created_at) "
      "SELECT key_hash, ? FROM api_keys WHERE org_id = ? AND id = ?");
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Int(at).Text(org_id).Text(key_id);
  return StepDone(c, *s, "append invalidation");
}
}  // namespace

Result<ApiKeyRecord> SqliteStore::RevokeKey(std::string_view org_id, std::string_view key_id,
                                            UnixMicros at) {
  {
    auto c = Acquire();
    auto done = InWriteTransaction<void>(*c, [&]() -> Result<void> {
      auto s = c->Prepare(
          "UPDATE api_keys SET revoked_at = ? WHERE org_id = ? AND id = ? AND revoked_at IS NULL");
      if (!s) return tl::unexpected(s.error());
      Binder(*s).Int(at).Text(org_id).Text(key_id);
      if (auto r = StepDone(*c, *s, "revoke key"); !r) return r;
      if (sqlite3_changes(c->db()) == 0) return {};
      return AppendInvalidation(*c, org_id, key_id, at);
    });
    if (!done) return tl::unexpected(done.error());
  }
  return GetKey(org_id, key_id);
}

Result<std::vector<KeyInvalidation>> SqliteStore::KeyInvalidationsSince(std::int64_t after_seq,
                                                                        int limit) {
  auto c = Acquire();
  auto s =
      c->Prepare("SELECT seq, key_hash FROM key_invalidations WHERE seq > ? ORDER BY seq LIMIT ?");
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Int(after_seq).Int(limit);
  std::vector<KeyInvalidation> out;
  int rc;
  while ((rc = sqlite3_step(*s)) == SQLITE_ROW) {
    out.push_back(KeyInvalidation{sqlite3_column_int64(*s, 0), ColText(*s, 1)});
  }
  if (rc != SQLITE_DONE) return c->Failure(rc, "key invalidations");
  return out;
}

Result<std::int64_t> SqliteStore::LatestKeyInvalidation() {
  auto c = Acquire();
  auto s = c->Prepare("SELECT COALESCE(MAX(seq), 0) FROM key_invalidations");
  if (!s) return tl::unexpected(s.error());
  int rc = sqlite3_step(*s);
  if (rc != SQLITE_ROW) return c->Failure(rc, "latest key invalidation");
  return sqlite3_column_int64(*s, 0);
}

Result<void> SqliteStore::RotateKey(std::string_view org_id, std::string_view old_key_id,
                                    const ApiKeyRecord& replacement, UnixMicros old_expires_at) {
  auto c = Acquire();
  return InWriteTransaction<void>(*c, [&]() -> Result<void> {
    auto s = c->Prepare(
        "UPDATE api_keys SET expires_at = ? WHERE org_id = ? AND id = ? AND revoked_at IS NULL");
    if (!s) return tl::unexpected(s.error());
    Binder(*s).Int(old_expires_at).Text(org_id).Text(old_key_id);
    if (auto r = StepDone(*c, *s, "rotate key"); !r) return r;
    if (sqlite3_changes(c->db()) == 0) return Fail(ErrorCode::kNotFound, "API key not found");
    if (auto r = AppendInvalidation(*c, org_id, old_key_id, replacement.created_at); !r) return r;
    return InsertKeyOn(*c, replacement);
  });
}

Result<void> SqliteStore::RecordKeyUsage(const std::vector<KeyUsage>& usage) {
  if (usage.empty()) return {};
  auto c = Acquire();
  return InWriteTransaction<void>(*c, [&]() -> Result<void> {
    for (const auto& u : usage) {
      auto s = c->Prepare(
          "UPDATE api_keys SET last_used_at = ?, last_used_ip = ? "
          "WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)");
      if (!s) return tl::unexpected(s.error());
      Binder(*s).Int(u.at).Text(u.ip).Text(u.key_id).Int(u.at);
      if (auto r = StepDone(*c, *s, "record key usage"); !r) return r;
    }
    return {};
  });
}

}  // namespace gatehouse

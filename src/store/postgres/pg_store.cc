#include "store/postgres/pg_store.h"

#include <libpq-fe.h>
#include <poll.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <thread>

#include "store/columns.h"

namespace gatehouse {

namespace {

// The role that owns the SECURITY DEFINER functions. Policies let it through, so the functions
// can answer the few questions that cross orgs; nothing else runs as it.
constexpr const char* kDefinerRole = "gatehouse_definer";

// Append-only: a released migration is never edited, only followed by a new one. They run in
// schema "gatehouse" as the owner.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE gh_meta (
  name  text PRIMARY KEY,
  value text NOT NULL
);
CREATE TABLE orgs (
  id         text PRIMARY KEY,
  org_id     text GENERATED ALWAYS AS (id) STORED,
  name       text NOT NULL,
  created_at bigint NOT NULL
);
CREATE TABLE api_keys (
  id           text PRIMARY KEY,
  org_id       text NOT NULL REFERENCES orgs(id),
  label        text NOT NULL,
  scopes       text NOT NULL,
  environment  text NOT NULL CHECK (environment IN ('live', 'test')),
  key_hash     text NOT NULL UNIQUE,
  last4        text NOT NULL,
  expires_at   bigint,
  ip_allowlist text NOT NULL,
  created_by   text NOT NULL,
  created_at   bigint NOT NULL,
  last_used_at bigint,
  last_used_ip text NOT NULL DEFAULT '',
  revoked_at   bigint,
  rotated_from text NOT NULL DEFAULT ''
);
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at DESC, id DESC);
CREATE TABLE key_invalidations (
  seq        bigserial PRIMARY KEY,
  key_hash   text NOT NULL,
  created_at bigint NOT NULL
);

-- Row level security on every org-owned table, for the owner too (FORCE). The org comes from a
-- transaction-local setting that the store sets from the caller's org.
ALTER TABLE orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE orgs FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON orgs
  USING (org_id = current_setting('gatehouse.org_id', true) OR current_user = 'gatehouse_definer')
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true));
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON api_keys
  USING (org_id = current_setting('gatehouse.org_id', true) OR current_user = 'gatehouse_definer')
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true) OR
              current_user = 'gatehouse_definer');

-- Revocation and rotation reach every node: the log that nodes poll, and a notification for
-- the ones listening. The advisory lock makes log order commit order, so a poller that reads
-- "after seq N" never skips a row committed later with a smaller number.
CREATE FUNCTION gh_log_key_invalidation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(7120001);
  INSERT INTO key_invalidations (key_hash, created_at)
  VALUES (NEW.key_hash, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  PERFORM pg_notify('gatehouse_key_invalidations', NEW.key_hash);
  RETURN NEW;
END $$;
CREATE TRIGGER api_keys_invalidate AFTER UPDATE OF revoked_at, expires_at ON api_keys
  FOR EACH ROW
  WHEN (NEW.revoked_at IS DISTINCT FROM OLD.revoked_at OR
        NEW.expires_at IS DISTINCT FROM OLD.expires_at)
  EXECUTE FUNCTION gh_log_key_invalidation();

-- The lookups that must cross orgs, each returning only what it is for.
CREATE FUNCTION gh_find_key_by_hash(p_hash text) RETURNS SETOF api_keys
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = gatehouse, pg_temp AS $$
  SELECT * FROM api_keys WHERE key_hash = p_hash LIMIT 1
$$;
CREATE FUNCTION gh_record_key_usage(p_id text, p_at bigint, p_ip text) RETURNS void
  LANGUAGE sql SECURITY DEFINER SET search_path = gatehouse, pg_temp AS $$
  UPDATE api_keys SET last_used_at = p_at, last_used_ip = p_ip
  WHERE id = p_id AND (last_used_at IS NULL OR last_used_at < p_at)
$$;
CREATE FUNCTION gh_list_orgs() RETURNS TABLE (id text, name text, created_at bigint)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = gatehouse, pg_temp AS $$
  SELECT o.id, o.name, o.created_at FROM orgs o ORDER BY o.created_at, o.id
$$;
)sql",
};

// The test build that proves the database alone keeps orgs apart compiles the store without
// its own org conditions (GATEHOUSE_FORGET_ORG_FILTER); everything else stays the same.
#ifdef GATEHOUSE_FORGET_ORG_FILTER
#define GH_ORG_FILTER(sql) ""
constexpr bool kOrgFilter = false;
#else
#define GH_ORG_FILTER(sql) sql
constexpr bool kOrgFilter = true;
#endif

using PgResultPtr = std::unique_ptr<PGresult, decltype(&PQclear)>;

PgResultPtr Wrap(PGresult* r) { return PgResultPtr(r, &PQclear); }

// A statement parameter in text form; nullopt is SQL NULL.
using Param = std::optional<std::string>;
Param P(std::string_view v) { return std::string(v); }
Param P(std::int64_t v) { return std::to_string(v); }
Param P(const std::optional<std::int64_t>& v) {
  return v ? Param(std::to_string(*v)) : std::nullopt;
}

bool IsSafeRoleName(std::string_view n) {
  if (n.empty() || n.size() > 63) return false;
  if (!(n[0] == '_' || (n[0] >= 'a' && n[0] <= 'z'))) return false;
  for (char c : n) {
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

}  // namespace

class PgStore::Connection {
 public:
  explicit Connection(PGconn* c) : conn_(c) {}
  ~Connection() { PQfinish(conn_); }
  PGconn* get() { return conn_; }
  bool healthy() const { return PQstatus(conn_) == CONNECTION_OK; }
  // After a lost connection: reconnects, and forgets statements prepared on the old session.
  bool Reset() {
    PQreset(conn_);
    prepared_.clear();
    return healthy() && Setup();
  }
  bool Setup() {
    auto r = Wrap(PQexec(conn_, "SET search_path TO gatehouse"));
    return PQresultStatus(r.get()) == PGRES_COMMAND_OK;
  }
  // The name of `sql` prepared on this session, preparing it on first use.
  const std::string* Prepared(const char* sql, int params) {
    auto it = prepared_.find(sql);
    if (it != prepared_.end()) return &it->second;
    std::string name = "gh_" + std::to_string(prepared_.size());
    auto r = Wrap(PQprepare(conn_, name.c_str(), sql, params, nullptr));
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      last_error_ = std::move(r);
      return nullptr;
    }
    return &prepared_.emplace(sql, std::move(name)).first->second;
  }
  PgResultPtr TakeLastError() { return std::move(last_error_); }

 private:
  PGconn* conn_;
  std::map<const char*, std::string> prepared_;
  PgResultPtr last_error_{nullptr, &PQclear};
};

// One transaction on one connection. Errors are values; `transient()` says whether trying the
// whole transaction again is safe and may succeed.
class PgStore::Tx {
 public:
  explicit Tx(Connection& c) : c_(c) {}

  class Rows {
   public:
    explicit Rows(PgResultPtr r) : r_(std::move(r)) {}
    int size() const { return PQntuples(r_.get()); }
    std::string Text(int row, int col) const {
      return std::string(PQgetvalue(r_.get(), row, col),
                         static_cast<std::size_t>(PQgetlength(r_.get(), row, col)));
    }
    std::int64_t Int(int row, int col) const {
      return std::strtoll(PQgetvalue(r_.get(), row, col), nullptr, 10);
    }
    std::optional<std::int64_t> OptInt(int row, int col) const {
      if (PQgetisnull(r_.get(), row, col)) return std::nullopt;
      return Int(row, col);
    }
    std::string CommandTuples() const { return PQcmdTuples(r_.get()); }

   private:
    PgResultPtr r_;
  };

  Result<void> Begin(std::string_view org_id) {
    std::string sql = "BEGIN";
    if (!org_id.empty()) {
      char* literal = PQescapeLiteral(c_.get(), org_id.data(), org_id.size());
      if (!literal) return Failure(nullptr, "begin");
      // is_local = true: the setting ends with the transaction, like SET LOCAL.
      sql += "; SELECT set_config('gatehouse.org_id', ";
      sql += literal;
      sql += ", true)";
      PQfreemem(literal);
    }
    auto r = Wrap(PQexec(c_.get(), sql.c_str()));
    auto st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Failure(r.get(), "begin");
    open_ = true;
    return {};
  }

  Result<Rows> Exec(const char* sql, const std::vector<Param>& params) {
    const std::string* name = c_.Prepared(sql, static_cast<int>(params.size()));
    if (!name) {
      auto err = c_.TakeLastError();
      return Failure(err.get(), "prepare");
    }
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    auto r = Wrap(PQexecPrepared(c_.get(), name->c_str(), static_cast<int>(values.size()),
                                 values.data(), nullptr, nullptr, 0));
    auto st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      return Failure(r.get(), "statement");
    }
    return Rows(std::move(r));
  }

  Result<void> Commit() {
    auto r = Wrap(PQexec(c_.get(), "COMMIT"));
    open_ = false;
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      auto failed = Failure(r.get(), "commit");
      // A serialization failure at COMMIT rolled everything back, so trying again is safe; a
      // connection lost during COMMIT leaves the outcome unknown, so it is never retried.
      transient_ = sqlstate_ == "40001" || sqlstate_ == "40P01";
      return failed;
    }
    return {};
  }

  void Rollback() {
    if (!open_ || !c_.healthy()) return;
    auto r = Wrap(PQexec(c_.get(), "ROLLBACK"));
    open_ = false;
  }

  bool transient() const { return transient_; }

 private:
  tl::unexpected<Error> Failure(const PGresult* r, const char* what) {
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    sqlstate_ = state ? state : "";
    const std::string& s = sqlstate_;
    if (!c_.healthy() || s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03") {
      transient_ = true;
      spdlog::warn("postgres unavailable during {}: {}", what, PQerrorMessage(c_.get()));
      return Fail(ErrorCode::kUnavailable, "the database is unavailable; try again");
    }
    if (s == "40001" || s == "40P01") {
      transient_ = true;
      return Fail(ErrorCode::kUnavailable, "the database is busy; try again");
    }
    if (s == "23505") {
      return Fail(ErrorCode::kAlreadyExists, "a record with that identity already exists");
    }
    if (s == "23503") return Fail(ErrorCode::kNotFound, "organization not found");
    if (s == "42501") {
      // Row level security refused a row of another org (or a privilege the role lacks).
      return Fail(ErrorCode::kOrgMismatch, "refused by the database: not this organization's");
    }
    spdlog::error("postgres error during {} ({}): {}", what, s,
                  r ? PQresultErrorMessage(r) : PQerrorMessage(c_.get()));
    return Fail(ErrorCode::kInternal, "storage error");
  }

  Connection& c_;
  bool open_ = false;
  bool transient_ = false;
  std::string sqlstate_;
};

namespace {

constexpr const char* kKeyColumns =
    "id, org_id, label, scopes, environment, key_hash, last4, expires_at, ip_allowlist, "
    "created_by, created_at, last_used_at, last_used_ip, revoked_at, rotated_from";

ApiKeyRecord ReadKey(const PgStore::Tx::Rows& r, int row) {
  ApiKeyRecord k;
  k.id = r.Text(row, 0);
  k.org_id = r.Text(row, 1);
  k.label = r.Text(row, 2);
  k.scopes = SplitWords(r.Text(row, 3));
  k.environment = r.Text(row, 4);
  k.key_hash = r.Text(row, 5);
  k.last4 = r.Text(row, 6);
  k.expires_at = r.OptInt(row, 7);
  k.ip_allowlist = SplitWords(r.Text(row, 8));
  k.created_by = r.Text(row, 9);
  k.created_at = r.Int(row, 10);
  k.last_used_at = r.OptInt(row, 11);
  k.last_used_ip = r.Text(row, 12);
  k.revoked_at = r.OptInt(row, 13);
  k.rotated_from = r.Text(row, 14);
  return k;
}

// Org-condition parameters, absent with the conditions in the forgetful test build.
void AddOrg(std::vector<Param>& params, std::string_view org_id) {
  if (kOrgFilter) params.push_back(P(org_id));
}

Result<std::unique_ptr<PgStore::Connection>> Connect(const std::string& url) {
  PGconn* raw = PQconnectdb(url.c_str());
  // NOTICEs ("already exists, skipping") are for interactive sessions, not our stderr.
  if (raw)
    PQsetNoticeProcessor(
        raw, [](void*, const char*) {}, nullptr);
  auto c = std::make_unique<PgStore::Connection>(raw);
  if (!c->healthy()) {
    std::string msg = raw ? PQerrorMessage(raw) : "out of memory";
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return Fail(ErrorCode::kUnavailable, "cannot connect to PostgreSQL: " + msg);
  }
  return c;
}

// For the operator commands: runs SQL with no parameters, as is.
Result<void> Run(PGconn* c, const std::string& sql, const char* what) {
  auto r = Wrap(PQexec(c, sql.c_str()));
  auto st = PQresultStatus(r.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::string msg = PQresultErrorMessage(r.get());
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return Fail(ErrorCode::kInternal, std::string(what) + ": " + msg);
  }
  return {};
}

std::string Quote(PGconn* c, std::string_view ident) {
  char* q = PQescapeIdentifier(c, ident.data(), ident.size());
  std::string out = q ? q : "";
  PQfreemem(q);
  return out;
}

}  // namespace

Result<std::string> PgStore::Migrate(const std::string& owner_url, const std::string& app_role,
                                     const std::string& app_password) {
  if (!IsSafeRoleName(app_role)) {
    return FailField("app_role", "must be 1-63 of [a-z0-9_], starting with a letter or _");
  }
  auto conn = Connect(owner_url);
  if (!conn) return tl::unexpected(conn.error());
  PGconn* c = (*conn)->get();
  // One migrator at a time, across every node that might be starting.
  if (auto r = Run(c, "SELECT pg_advisory_lock(7120000)", "lock"); !r) {
    return tl::unexpected(r.error());
  }
  if (auto r = Run(c,
                   "CREATE SCHEMA IF NOT EXISTS gatehouse; SET search_path TO gatehouse; "
                   "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, "
                   "applied_at timestamptz NOT NULL DEFAULT now())",
                   "prepare schema");
      !r) {
    return tl::unexpected(r.error());
  }
  if (auto r =
          Run(c,
              std::string("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
                          "'") +
                  kDefinerRole + "') THEN CREATE ROLE " + kDefinerRole + " NOLOGIN; END IF; END $$",
              "create the definer role");
      !r) {
    return tl::unexpected(r.error());
  }
  auto version = Wrap(PQexec(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
  int current = std::atoi(PQgetvalue(version.get(), 0, 0));
  constexpr int kLatest = static_cast<int>(std::size(kMigrations));
  if (current > kLatest) {
    return Fail(ErrorCode::kInternal, "database schema version " + std::to_string(current) +
                                          " is newer than this gatehouse (" +
                                          std::to_string(kLatest) + ")");
  }
  std::string summary;
  for (int v = current; v < kLatest; ++v) {
    std::string sql = std::string("BEGIN; ") + kMigrations[v] +
                      "; INSERT INTO schema_migrations (version) VALUES (" + std::to_string(v + 1) +
                      "); COMMIT";
    if (auto r = Run(c, sql, "migration"); !r) {
      (void)Run(c, "ROLLBACK", "rollback");
      return tl::unexpected(r.error());
    }
    summary += "applied migration " + std::to_string(v + 1) + "\n";
  }
  // The application role: it logs in, owns nothing, bypasses nothing, and gets only the
  // privileges the server uses. Re-running tightens a role that was changed by hand.
  std::string role = Quote(c, app_role);
  std::string grants =
      // Attributes are changed only when they are wrong: a migrating owner without superuser
      // may not even set NOSUPERUSER.
      "DO $$ BEGIN "
      "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" +
      app_role +
      "') THEN "
      "  CREATE ROLE " +
      role +
      " LOGIN; END IF; "
      "IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" +
      app_role +
      "' AND (rolsuper OR rolbypassrls)) THEN "
      "  ALTER ROLE " +
      role +
      " NOSUPERUSER NOBYPASSRLS; END IF; "
      "IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" +
      app_role +
      "' AND (rolcreatedb OR rolcreaterole OR NOT rolcanlogin)) THEN "
      "  ALTER ROLE " +
      role +
      " LOGIN NOCREATEDB NOCREATEROLE; END IF; "
      "END $$;"
      // Handing the functions to the definer role needs membership in it and, for that role,
      // CREATE on the schema for as long as the change takes.
      "GRANT " +
      kDefinerRole +
      " TO CURRENT_USER;"
      "GRANT CREATE ON SCHEMA gatehouse TO " +
      kDefinerRole +
      ";"
      "ALTER FUNCTION gh_find_key_by_hash(text) OWNER TO " +
      kDefinerRole +
      ";"
      "ALTER FUNCTION gh_record_key_usage(text, bigint, text) OWNER TO " +
      kDefinerRole +
      ";"
      "ALTER FUNCTION gh_list_orgs() OWNER TO " +
      kDefinerRole +
      ";"
      "REVOKE CREATE ON SCHEMA gatehouse FROM " +
      kDefinerRole +
      ";"
      "GRANT USAGE ON SCHEMA gatehouse TO " +
      role + ", " + kDefinerRole +
      ";"
      "GRANT SELECT, UPDATE ON api_keys TO " +
      kDefinerRole +
      ";"
      "GRANT SELECT ON orgs TO " +
      kDefinerRole +
      ";"
      "REVOKE ALL ON ALL TABLES IN SCHEMA gatehouse FROM " +
      role +
      ";"
      "GRANT SELECT, INSERT, UPDATE ON orgs, api_keys TO " +
      role +
      ";"
      "GRANT SELECT, INSERT ON key_invalidations, gh_meta TO " +
      role +
      ";"
      "GRANT SELECT ON schema_migrations TO " +
      role +
      ";"
      "GRANT USAGE ON SEQUENCE key_invalidations_seq_seq TO " +
      role +
      ";"
      "REVOKE ALL ON FUNCTION gh_find_key_by_hash(text), gh_record_key_usage(text, bigint, text),"
      " gh_list_orgs() FROM PUBLIC;"
      "GRANT EXECUTE ON FUNCTION gh_find_key_by_hash(text), "
      "gh_record_key_usage(text, bigint, text), gh_list_orgs() TO " +
      role + ";";
  if (auto r = Run(c, grants, "grant the application role"); !r) return tl::unexpected(r.error());
  if (!app_password.empty()) {
    char* literal = PQescapeLiteral(c, app_password.data(), app_password.size());
    std::string sql = "ALTER ROLE " + role + " PASSWORD " + (literal ? literal : "''");
    PQfreemem(literal);
    if (auto r = Run(c, sql, "set the application role's password"); !r) {
      return Fail(ErrorCode::kInternal, "cannot set the application role's password");
    }
  }
  (void)Run(c, "SELECT pg_advisory_unlock(7120000)", "unlock");
  summary += "schema version " + std::to_string(kLatest) + "; application role " + app_role +
             " has the server's privileges only\n";
  return summary;
}

Result<std::unique_ptr<PgStore>> PgStore::Open(const std::string& url, int pool_size) {
  std::unique_ptr<PgStore> store(new PgStore(url));
  for (int i = 0; i < pool_size; ++i) {
    auto conn = Connect(url);
    if (!conn) return tl::unexpected(conn.error());
    if (!(*conn)->Setup()) return Fail(ErrorCode::kUnavailable, "cannot set the search path");
    if (i == 0) {
      // Row level security binds only a role without these powers, so serving as one would make
      // the tenancy guarantee a lie: refuse, and say how to fix it.
      PGconn* c = (*conn)->get();
      auto r = Wrap(PQexec(c,
                           "SELECT r.rolname, r.rolsuper, r.rolbypassrls, "
                           "  EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = 'gatehouse' "
                           "          AND t.tableowner = current_user), "
                           "  (SELECT COALESCE(MAX(version), 0) FROM gatehouse.schema_migrations) "
                           "FROM pg_roles r WHERE r.rolname = current_user"));
      if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) {
        return Fail(ErrorCode::kUnavailable,
                    "the gatehouse schema is missing; run `gatehouse migrate --storage "
                    "OWNER_URL --app-role NAME` first");
      }
      std::string role = PQgetvalue(r.get(), 0, 0);
      auto yes = [&](int col) { return std::string_view(PQgetvalue(r.get(), 0, col)) == "t"; };
      std::string fix =
          " Serve as the application role that `gatehouse migrate --app-role NAME` "
          "creates.";
      if (yes(1)) {
        return Fail(ErrorCode::kInvalidArgument,
                    "refusing to serve as " + role +
                        ": it is a superuser, and row level security does not bind "
                        "superusers." +
                        fix);
      }
      if (yes(2)) {
        return Fail(ErrorCode::kInvalidArgument,
                    "refusing to serve as " + role + ": it has BYPASSRLS." + fix);
      }
      if (yes(3)) {
        return Fail(ErrorCode::kInvalidArgument,
                    "refusing to serve as " + role + ": it owns the gatehouse tables." + fix);
      }
      int version = std::atoi(PQgetvalue(r.get(), 0, 4));
      if (version != static_cast<int>(std::size(kMigrations))) {
        return Fail(ErrorCode::kUnavailable,
                    "the database schema is at version " + std::to_string(version) +
                        ", this gatehouse needs " + std::to_string(std::size(kMigrations)) +
                        "; run `gatehouse migrate` with the owner's URL");
      }
    }
    store->idle_.push_back(conn->get());
    store->all_.push_back(std::move(*conn));
  }
  return store;
}

PgStore::PgStore(std::string url) : url_(std::move(url)) {}
PgStore::~PgStore() = default;

PgStore::Connection* PgStore::Take() {
  std::unique_lock lock(mu_);
  available_.wait(lock, [&] { return !idle_.empty(); });
  Connection* c = idle_.back();
  idle_.pop_back();
  return c;
}

void PgStore::Give(Connection* c) {
  {
    std::lock_guard lock(mu_);
    idle_.push_back(c);
  }
  available_.notify_one();
}

template <typename T, typename F>
Result<T> PgStore::InTransaction(std::string_view org_id, F&& body) {
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    Connection* c = Take();
    struct Return {
      PgStore* s;
      Connection* c;
      ~Return() { s->Give(c); }
    } give_back{this, c};
    if (!c->healthy() && !c->Reset()) {
      if (attempt < kAttempts) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50 * attempt));
        continue;
      }
      return Fail(ErrorCode::kUnavailable, "the database is unavailable; try again");
    }
    Tx tx(*c);
    if (auto begun = tx.Begin(org_id); !begun) {
      if (tx.transient() && attempt < kAttempts) continue;
      return tl::unexpected(begun.error());
    }
    Result<T> out = body(tx);
    if (!out) {
      tx.Rollback();
      if (tx.transient() && attempt < kAttempts) continue;
      return out;
    }
    if (auto committed = tx.Commit(); !committed) {
      if (tx.transient() && attempt < kAttempts) continue;
      return tl::unexpected(committed.error());
    }
    return out;
  }
}

Result<void> PgStore::Ping() {
  return InTransaction<void>("", [](Tx& tx) -> Result<void> {
    auto r = tx.Exec("SELECT 1", {});
    if (!r) return tl::unexpected(r.error());
    return {};
  });
}

Result<void> PgStore::InsertOrg(const Org& org) {
  return InTransaction<void>(org.id, [&](Tx& tx) -> Result<void> {
    auto r = tx.Exec("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)",
                     {P(org.id), P(org.name), P(org.created_at)});
    if (!r) return tl::unexpected(r.error());
    return {};
  });
}

Result<Org> PgStore::GetOrg(std::string_view org_id) {
  return InTransaction<Org>(org_id, [&](Tx& tx) -> Result<Org> {
    std::vector<Param> params;
    AddOrg(params, org_id);
    auto r =
        tx.Exec("SELECT id, name, created_at FROM orgs " GH_ORG_FILTER("WHERE id = $1"), params);
    if (!r) return tl::unexpected(r.error());
    if (r->size() == 0) return Fail(ErrorCode::kNotFound, "organization not found");
    return Org{r->Text(0, 0), r->Text(0, 1), r->Int(0, 2)};
  });
}

Result<Org> PgStore::RenameOrg(std::string_view org_id, std::string_view name) {
  return InTransaction<Org>(org_id, [&](Tx& tx) -> Result<Org> {
    std::vector<Param> params{P(name)};
    AddOrg(params, org_id);
    auto r = tx.Exec("UPDATE orgs SET name = $1 " GH_ORG_FILTER(
                         "WHERE id = $2") " RETURNING id, name, created_at",
                     params);
    if (!r) return tl::unexpected(r.error());
    if (r->size() == 0) return Fail(ErrorCode::kNotFound, "organization not found");
    return Org{r->Text(0, 0), r->Text(0, 1), r->Int(0, 2)};
  });
}

Result<std::vector<Org>> PgStore::ListOrgs() {
  return InTransaction<std::vector<Org>>("", [&](Tx& tx) -> Result<std::vector<Org>> {
    auto r = tx.Exec("SELECT id, name, created_at FROM gh_list_orgs()", {});
    if (!r) return tl::unexpected(r.error());
    std::vector<Org> out;
    for (int i = 0; i < r->size(); ++i)
      out.push_back(Org{r->Text(i, 0), r->Text(i, 1), r->Int(i, 2)});
    return out;
  });
}

namespace {
Result<void> InsertKeyIn(PgStore::Tx& tx, const ApiKeyRecord& k) {
  auto r = tx.Exec(
      "INSERT INTO api_keys (id, org_id, label, scopes, environment, key_hash, last4, expires_at, "
      "ip_allowlist, created_by, created_at, last_used_at, last_used_ip, revoked_at, rotated_from)"
      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
      {P(k.id), P(k.org_id), P(k.label), P(JoinWords(k.scopes)), P(k.environment), P(k.key_hash),
       P(k.last4), P(k.expires_at), P(JoinWords(k.ip_allowlist)), P(k.created_by), P(k.created_at),
       P(k.last_used_at), P(k.last_used_ip), P(k.revoked_at), P(k.rotated_from)});
  if (!r) return tl::unexpected(r.error());
  return {};
}
}  // namespace

Result<void> PgStore::CreateOrgWithKey(const Org& org, const ApiKeyRecord& owner_key,
                                       bool bootstrap) {
  return InTransaction<void>(org.id, [&](Tx& tx) -> Result<void> {
    if (bootstrap) {
      auto b =
          tx.Exec("INSERT INTO gh_meta (name, value) VALUES ('bootstrap_org', $1)", {P(org.id)});
      if (!b) {
        if (b.error().code == ErrorCode::kAlreadyExists) {
          return Fail(ErrorCode::kAlreadyExists, "this database is already initialised");
        }
        return tl::unexpected(b.error());
      }
    }
    auto o = tx.Exec("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)",
                     {P(org.id), P(org.name), P(org.created_at)});
    if (!o) return tl::unexpected(o.error());
    return InsertKeyIn(tx, owner_key);
  });
}

Result<std::optional<std::string>> PgStore::BootstrapOrgId() {
  using Out = std::optional<std::string>;
  return InTransaction<Out>("", [&](Tx& tx) -> Result<Out> {
    auto r = tx.Exec("SELECT value FROM gh_meta WHERE name = 'bootstrap_org'", {});
    if (!r) return tl::unexpected(r.error());
    if (r->size() == 0) return Out{};
    return Out(r->Text(0, 0));
  });
}

Result<void> PgStore::InsertKey(const ApiKeyRecord& key) {
  return InTransaction<void>(key.org_id, [&](Tx& tx) { return InsertKeyIn(tx, key); });
}

Result<ApiKeyRecord> PgStore::GetKey(std::string_view org_id, std::string_view key_id) {
  static const std::string sql = std::string("SELECT ") + kKeyColumns +
                                 " FROM api_keys WHERE id = $1" GH_ORG_FILTER(" AND org_id = $2");
  return InTransaction<ApiKeyRecord>(org_id, [&](Tx& tx) -> Result<ApiKeyRecord> {
    std::vector<Param> params{P(key_id)};
    AddOrg(params, org_id);
    auto r = tx.Exec(sql.c_str(), params);
    if (!r) return tl::unexpected(r.error());
    if (r->size() == 0) return Fail(ErrorCode::kNotFound, "API key not found");
    return ReadKey(*r, 0);
  });
}

Result<ApiKeyRecord> PgStore::FindKeyByHash(std::string_view key_hash) {
  static const std::string sql =
      std::string("SELECT ") + kKeyColumns + " FROM gh_find_key_by_hash($1)";
  return InTransaction<ApiKeyRecord>("", [&](Tx& tx) -> Result<ApiKeyRecord> {
    auto r = tx.Exec(sql.c_str(), {P(key_hash)});
    if (!r) return tl::unexpected(r.error());
    if (r->size() == 0) return Fail(ErrorCode::kNotFound, "API key not found");
    return ReadKey(*r, 0);
  });
}

Result<KeyPage> PgStore::ListKeys(std::string_view org_id, const KeyListQuery& query) {
  static const std::string first_page =
      std::string("SELECT ") + kKeyColumns +
      " FROM api_keys WHERE true" GH_ORG_FILTER(
          " AND org_id = $2") " ORDER BY created_at DESC, id DESC LIMIT $1";
  static const std::string next_page =
      std::string("SELECT ") + kKeyColumns +
      " FROM api_keys WHERE (created_at < $2 OR (created_at = $2 AND id < $3))" GH_ORG_FILTER(
          " AND org_id = $4") " ORDER BY created_at DESC, id DESC LIMIT $1";
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
  return InTransaction<KeyPage>(org_id, [&](Tx& tx) -> Result<KeyPage> {
    std::vector<Param> params{P(static_cast<std::int64_t>(query.limit) + 1)};
    if (!query.cursor.empty()) {
      params.push_back(P(after_time));
      params.push_back(P(after_id));
    }
    AddOrg(params, org_id);
    auto r = tx.Exec(query.cursor.empty() ? first_page.c_str() : next_page.c_str(), params);
    if (!r) return tl::unexpected(r.error());
    KeyPage page;
    for (int i = 0; i < r->size(); ++i) page.keys.push_back(ReadKey(*r, i));
    if (static_cast<int>(page.keys.size()) > query.limit) {
      page.keys.pop_back();
      const auto& last = page.keys.back();
      page.next_cursor = std::to_string(last.created_at) + "." + last.id;
    }
    return page;
  });
}

Result<ApiKeyRecord> PgStore::RevokeKey(std::string_view org_id, std::string_view key_id,
                                        UnixMicros at) {
  static const std::string select =
      std::string("SELECT ") + kKeyColumns +
      " FROM api_keys WHERE id = $1" GH_ORG_FILTER(" AND org_id = $2");
  return InTransaction<ApiKeyRecord>(org_id, [&](Tx& tx) -> Result<ApiKeyRecord> {
    // The invalidation for other nodes is written by a trigger (migration 1).
    std::vector<Param> params{P(at), P(key_id)};
    AddOrg(params, org_id);
    auto u = tx.Exec(
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL" GH_ORG_FILTER(
            " AND org_id = $3"),
        params);
    if (!u) return tl::unexpected(u.error());
    std::vector<Param> sp{P(key_id)};
    AddOrg(sp, org_id);
    auto r = tx.Exec(select.c_str(), sp);
    if (!r) return tl::unexpected(r.error());
    if (r->size() == 0) return Fail(ErrorCode::kNotFound, "API key not found");
    return ReadKey(*r, 0);
  });
}

Result<void> PgStore::RotateKey(std::string_view org_id, std::string_view old_key_id,
                                const ApiKeyRecord& replacement, UnixMicros old_expires_at) {
  return InTransaction<void>(org_id, [&](Tx& tx) -> Result<void> {
    std::vector<Param> params{P(old_expires_at), P(old_key_id)};
    AddOrg(params, org_id);
    auto u = tx.Exec(
        "UPDATE api_keys SET expires_at = $1 WHERE id = $2 AND revoked_at IS NULL" GH_ORG_FILTER(
            " AND org_id = $3") " RETURNING id",
        params);
    if (!u) return tl::unexpected(u.error());
    if (u->size() == 0) return Fail(ErrorCode::kNotFound, "API key not found");
    return InsertKeyIn(tx, replacement);
  });
}

Result<std::vector<KeyInvalidation>> PgStore::KeyInvalidationsSince(std::int64_t after_seq,
                                                                    int limit) {
  using Out = std::vector<KeyInvalidation>;
  return InTransaction<Out>("", [&](Tx& tx) -> Result<Out> {
    auto r =
        tx.Exec("SELECT seq, key_hash FROM key_invalidations WHERE seq > $1 ORDER BY seq LIMIT $2",
                {P(after_seq), P(static_cast<std::int64_t>(limit))});
    if (!r) return tl::unexpected(r.error());
    Out out;
    for (int i = 0; i < r->size(); ++i) out.push_back(KeyInvalidation{r->Int(i, 0), r->Text(i, 1)});
    return out;
  });
}

Result<std::int64_t> PgStore::LatestKeyInvalidation() {
  return InTransaction<std::int64_t>("", [&](Tx& tx) -> Result<std::int64_t> {
    auto r = tx.Exec("SELECT COALESCE(MAX(seq), 0) FROM key_invalidations", {});
    if (!r) return tl::unexpected(r.error());
    return r->Int(0, 0);
  });
}

Result<void> PgStore::RecordKeyUsage(const std::vector<KeyUsage>& usage) {
  if (usage.empty()) return {};
  return InTransaction<void>("", [&](Tx& tx) -> Result<void> {
    for (const auto& u : usage) {
      auto r = tx.Exec("SELECT gh_record_key_usage($1, $2, $3)", {P(u.key_id), P(u.at), P(u.ip)});
      if (!r) return tl::unexpected(r.error());
    }
    return {};
  });
}

void PgStore::WatchKeyInvalidations(const std::function<void(std::string_view)>& on_invalidated,
                                    const std::atomic<bool>& stop) {
  auto pause = [&](int ms) {
    for (int waited = 0; waited < ms && !stop.load(); waited += 50) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };
  int backoff_ms = 100;
  while (!stop.load()) {
    auto conn = Connect(url_);
    if (!conn || !Run((*conn)->get(), "LISTEN gatehouse_key_invalidations", "listen")) {
      spdlog::warn(
          "revocation channel to PostgreSQL unavailable; retrying in {} ms (polling "
          "covers the gap)",
          backoff_ms);
      pause(backoff_ms);
      backoff_ms = std::min(backoff_ms * 2, 5000);
      continue;
    }
    backoff_ms = 100;
    PGconn* c = (*conn)->get();
    while (!stop.load() && (*conn)->healthy()) {
      pollfd p{PQsocket(c), POLLIN, 0};
      int ready = ::poll(&p, 1, 100);  // wakes up to notice `stop`
      if (ready <= 0) continue;
      if (!PQconsumeInput(c)) break;
      while (PGnotify* n = PQnotifies(c)) {
        on_invalidated(n->extra);
        PQfreemem(n);
      }
    }
    if (!stop.load()) spdlog::warn("lost the revocation channel to PostgreSQL; reconnecting");
  }
}

}  // namespace gatehouse

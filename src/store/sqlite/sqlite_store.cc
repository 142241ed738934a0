#include "store/sqlite/sqlite_store.h"

#include <sqlite3.h>

#include <spdlog/spdlog.h>

#include <map>
#include <sstream>

#include "audit/chain.h"
#include "audit/details.h"
#include "store/columns.h"
#include "store/sql.h"

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
    // Tenancy enforced by the database. The application reaches org-owned rows only through
    // these views, which show the rows of the connection's current org (gh_tenant(), set by the
    // store for each call from the caller's org), and through their INSTEAD OF triggers, which
    // refuse rows of any other org. An authorizer (SqliteStore::Connection) refuses statements
    // that name the tables themselves, except on the store's few cross-org paths.
    R"sql(
CREATE VIEW tenant_orgs AS SELECT id, name, created_at FROM orgs WHERE id = gh_tenant();
CREATE TRIGGER tenant_orgs_update INSTEAD OF UPDATE ON tenant_orgs
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.id IS NOT OLD.id;
  UPDATE orgs SET name = NEW.name WHERE id = OLD.id;
END;
CREATE VIEW tenant_api_keys AS
  SELECT id, org_id, label, scopes, environment, key_hash, last4, expires_at, ip_allowlist,
         created_by, created_at, last_used_at, last_used_ip, revoked_at, rotated_from
  FROM api_keys WHERE org_id = gh_tenant();
CREATE TRIGGER tenant_api_keys_insert INSTEAD OF INSERT ON tenant_api_keys
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT gh_tenant();
  INSERT INTO api_keys (id, org_id, label, scopes, environment, key_hash, last4, expires_at,
                        ip_allowlist, created_by, created_at, last_used_at, last_used_ip,
                        revoked_at, rotated_from)
  VALUES (NEW.id, NEW.org_id, NEW.label, NEW.scopes, NEW.environment, NEW.key_hash, NEW.last4,
          NEW.expires_at, NEW.ip_allowlist, NEW.created_by, NEW.created_at, NEW.last_used_at,
          NEW.last_used_ip, NEW.revoked_at, NEW.rotated_from);
END;
CREATE TRIGGER tenant_api_keys_update INSTEAD OF UPDATE ON tenant_api_keys
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch')
  WHERE NEW.id IS NOT OLD.id OR NEW.org_id IS NOT OLD.org_id OR NEW.key_hash IS NOT OLD.key_hash;
  UPDATE api_keys SET label = NEW.label, scopes = NEW.scopes, expires_at = NEW.expires_at,
                      ip_allowlist = NEW.ip_allowlist, revoked_at = NEW.revoked_at
  WHERE id = OLD.id;
END;
-- Revocation and rotation reach every process's key cache through this log. A trigger writes
-- it, so no code path can change a key's validity and forget to tell the other processes.
CREATE TRIGGER api_keys_invalidate AFTER UPDATE OF revoked_at, expires_at ON api_keys
WHEN NEW.revoked_at IS NOT OLD.revoked_at OR NEW.expires_at IS NOT OLD.expires_at
BEGIN
  INSERT INTO key_invalidations (key_hash, created_at)
  VALUES (NEW.key_hash, unixepoch() * 1000000);
END;
)sql",
    // The audit log (issue 4). Events reach it through tenant views like every org-owned row;
    // the view has no UPDATE or DELETE trigger, so the application can only append. Retention
    // (PruneAudit) deletes on the system path and leaves a signed checkpoint in audit_heads.
    R"sql(
ALTER TABLE orgs ADD COLUMN audit_retention_days INTEGER NOT NULL DEFAULT 0;
DROP VIEW tenant_orgs;
CREATE VIEW tenant_orgs AS
  SELECT id, name, created_at, audit_retention_days FROM orgs WHERE id = gh_tenant();
CREATE TRIGGER tenant_orgs_update INSTEAD OF UPDATE ON tenant_orgs
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.id IS NOT OLD.id;
  UPDATE orgs SET name = NEW.name, audit_retention_days = NEW.audit_retention_days
  WHERE id = OLD.id;
END;
CREATE TABLE audit_events (
  org_id     TEXT NOT NULL,  -- an org's id, or "system" for decisions that name no org
  seq        INTEGER NOT NULL,
  at         INTEGER NOT NULL,
  actor      TEXT NOT NULL,
  action     TEXT NOT NULL,
  resource   TEXT NOT NULL,
  result     TEXT NOT NULL,
  status     INTEGER NOT NULL,
  client_ip  TEXT NOT NULL,
  user_agent TEXT NOT NULL,
  request_id TEXT NOT NULL,
  details    TEXT NOT NULL,
  prev_hash  TEXT NOT NULL,
  hash       TEXT NOT NULL,
  PRIMARY KEY (org_id, seq)
) STRICT, WITHOUT ROWID;
-- No secondary index: with one per actor, every event dirtied another page of the log per
-- group commit and the writer lost a third of its throughput. Filters scan newest first.
CREATE TABLE audit_heads (
  org_id               TEXT PRIMARY KEY,
  seq                  INTEGER NOT NULL,
  hash                 TEXT NOT NULL,
  checkpoint_seq       INTEGER NOT NULL DEFAULT 0,
  checkpoint_hash      TEXT NOT NULL DEFAULT '',
  checkpoint_at        INTEGER NOT NULL DEFAULT 0,
  checkpoint_signature TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE TABLE key_usage_daily (
  org_id     TEXT NOT NULL REFERENCES orgs(id),
  key_id     TEXT NOT NULL,
  day        TEXT NOT NULL,
  status_2xx INTEGER NOT NULL DEFAULT 0,
  status_3xx INTEGER NOT NULL DEFAULT 0,
  status_4xx INTEGER NOT NULL DEFAULT 0,
  status_5xx INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (org_id, key_id, day)
) STRICT, WITHOUT ROWID;

CREATE VIEW tenant_audit_events AS
  SELECT org_id, seq, at, actor, action, resource, result, status, client_ip, user_agent,
         request_id, details, prev_hash, hash
  FROM audit_events WHERE org_id = gh_tenant();
CREATE TRIGGER tenant_audit_events_insert INSTEAD OF INSERT ON tenant_audit_events
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT gh_tenant();
  INSERT INTO audit_events (org_id, seq, at, actor, action, resource, result, status, client_ip,
                            user_agent, request_id, details, prev_hash, hash)
  VALUES (NEW.org_id, NEW.seq, NEW.at, NEW.actor, NEW.action, NEW.resource, NEW.result,
          NEW.status, NEW.client_ip, NEW.user_agent, NEW.request_id, NEW.details, NEW.prev_hash,
          NEW.hash);
END;
CREATE VIEW tenant_audit_heads AS
  SELECT org_id, seq, hash, checkpoint_seq, checkpoint_hash, checkpoint_at, checkpoint_signature
  FROM audit_heads WHERE org_id = gh_tenant();
CREATE TRIGGER tenant_audit_heads_insert INSTEAD OF INSERT ON tenant_audit_heads
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT gh_tenant();
  INSERT INTO audit_heads (org_id, seq, hash) VALUES (NEW.org_id, NEW.seq, NEW.hash)
  ON CONFLICT (org_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash;
END;
CREATE VIEW tenant_key_usage_daily AS
  SELECT org_id, key_id, day, status_2xx, status_3xx, status_4xx, status_5xx
  FROM key_usage_daily WHERE org_id = gh_tenant();
CREATE TRIGGER tenant_key_usage_daily_insert INSTEAD OF INSERT ON tenant_key_usage_daily
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT gh_tenant();
  INSERT INTO key_usage_daily (org_id, key_id, day, status_2xx, status_3xx, status_4xx, status_5xx)
  VALUES (NEW.org_id, NEW.key_id, NEW.day, NEW.status_2xx, NEW.status_3xx, NEW.status_4xx,
          NEW.status_5xx)
  ON CONFLICT (org_id, key_id, day) DO UPDATE SET
    status_2xx = status_2xx + excluded.status_2xx, status_3xx = status_3xx + excluded.status_3xx,
    status_4xx = status_4xx + excluded.status_4xx, status_5xx = status_5xx + excluded.status_5xx;
END;
)sql",
    // People (issue 5). Users, sessions and sign-in throttling belong to no org and are reached
    // on the system path only; memberships, custom roles, invitations and session policy are
    // org-owned, behind tenant views like keys.
    R"sql(
CREATE TABLE users (
  id                  TEXT PRIMARY KEY,
  email               TEXT NOT NULL UNIQUE,
  name                TEXT NOT NULL,
  password_hash       TEXT NOT NULL,
  created_at          INTEGER NOT NULL,
  password_changed_at INTEGER NOT NULL,
  disabled_at         INTEGER,
  last_login_at       INTEGER
) STRICT;
CREATE TABLE login_failures (
  subject      TEXT PRIMARY KEY,
  failures     INTEGER NOT NULL,
  locked_until INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL
) STRICT;
CREATE TABLE sessions (
  id                TEXT PRIMARY KEY,
  family_id         TEXT NOT NULL,
  user_id           TEXT NOT NULL REFERENCES users(id),
  token_hash        TEXT NOT NULL UNIQUE,
  created_at        INTEGER NOT NULL,
  family_created_at INTEGER NOT NULL,
  last_seen_at      INTEGER NOT NULL,
  auth_time         INTEGER NOT NULL,
  idle_timeout      INTEGER NOT NULL,
  expires_at        INTEGER NOT NULL,
  rotated_at        INTEGER,
  revoked_at        INTEGER,
  client_ip         TEXT NOT NULL,
  user_agent        TEXT NOT NULL
) STRICT;
CREATE INDEX sessions_by_user ON sessions(user_id, family_id);
CREATE TABLE memberships (
  org_id     TEXT NOT NULL REFERENCES orgs(id),
  user_id    TEXT NOT NULL REFERENCES users(id),
  role       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (org_id, user_id)
) STRICT;
CREATE INDEX memberships_by_user ON memberships(user_id);
CREATE TABLE roles (
  org_id      TEXT NOT NULL REFERENCES orgs(id),
  name        TEXT NOT NULL,
  description TEXT NOT NULL,
  permissions TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  PRIMARY KEY (org_id, name)
) STRICT;
CREATE TABLE invitations (
  id          TEXT PRIMARY KEY,
  org_id      TEXT NOT NULL REFERENCES orgs(id),
  email       TEXT NOT NULL,
  role        TEXT NOT NULL,
  token_hash  TEXT NOT NULL UNIQUE,
  invited_by  TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL,
  accepted_at INTEGER,
  accepted_by TEXT NOT NULL,
  revoked_at  INTEGER
) STRICT;
CREATE INDEX invitations_by_org ON invitations(org_id, created_at);
CREATE TABLE org_session_policy (
  org_id       TEXT PRIMARY KEY REFERENCES orgs(id),
  idle_timeout INTEGER NOT NULL
) STRICT;

CREATE VIEW tenant_memberships AS
  SELECT org_id, user_id, role, created_at FROM memberships WHERE org_id = gh_tenant();
CREATE TRIGGER tenant_memberships_insert INSTEAD OF INSERT ON tenant_memberships
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT gh_tenant();
  INSERT INTO memberships (org_id, user_id, role, created_at)
  VALUES (NEW.org_id, NEW.user_id, NEW.role, NEW.created_at);
END;
CREATE TRIGGER tenant_memberships_update INSTEAD OF UPDATE ON tenant_memberships
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT OLD.org_id;
  UPDATE memberships SET role = NEW.role WHERE org_id = OLD.org_id AND user_id = OLD.user_id;
END;
CREATE TRIGGER tenant_memberships_delete INSTEAD OF DELETE ON tenant_memberships
BEGIN
  DELETE FROM memberships WHERE org_id = OLD.org_id AND user_id = OLD.user_id;
END;
CREATE VIEW tenant_roles AS
  SELECT org_id, name, description, permissions, created_at FROM roles WHERE org_id = gh_tenant();
CREATE TRIGGER tenant_roles_insert INSTEAD OF INSERT ON tenant_roles
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT gh_tenant();
  INSERT INTO roles (org_id, name, description, permissions, created_at)
  VALUES (NEW.org_id, NEW.name, NEW.description, NEW.permissions, NEW.created_at);
END;
CREATE TRIGGER tenant_roles_update INSTEAD OF UPDATE ON tenant_roles
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT OLD.org_id;
  UPDATE roles SET description = NEW.description, permissions = NEW.permissions
  WHERE org_id = OLD.org_id AND name = OLD.name;
END;
CREATE TRIGGER tenant_roles_delete INSTEAD OF DELETE ON tenant_roles
BEGIN
  DELETE FROM roles WHERE org_id = OLD.org_id AND name = OLD.name;
END;
CREATE VIEW tenant_invitations AS
  SELECT id, org_id, email, role, token_hash, invited_by, created_at, expires_at, accepted_at,
         accepted_by, revoked_at
  FROM invitations WHERE org_id = gh_tenant();
CREATE TRIGGER tenant_invitations_insert INSTEAD OF INSERT ON tenant_invitations
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT gh_tenant();
  INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, created_at,
                           expires_at, accepted_at, accepted_by, revoked_at)
  VALUES (NEW.id, NEW.org_id, NEW.email, NEW.role, NEW.token_hash, NEW.invited_by,
          NEW.created_at, NEW.expires_at, NEW.accepted_at, NEW.accepted_by, NEW.revoked_at);
END;
CREATE TRIGGER tenant_invitations_update INSTEAD OF UPDATE ON tenant_invitations
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT OLD.org_id;
  UPDATE invitations SET accepted_at = NEW.accepted_at, accepted_by = NEW.accepted_by,
                         revoked_at = NEW.revoked_at
  WHERE id = OLD.id;
END;
CREATE VIEW tenant_org_session_policy AS
  SELECT org_id, idle_timeout FROM org_session_policy WHERE org_id = gh_tenant();
CREATE TRIGGER tenant_org_session_policy_insert INSTEAD OF INSERT ON tenant_org_session_policy
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT gh_tenant();
  INSERT INTO org_session_policy (org_id, idle_timeout) VALUES (NEW.org_id, NEW.idle_timeout);
END;
CREATE TRIGGER tenant_org_session_policy_delete INSTEAD OF DELETE ON tenant_org_session_policy
BEGIN
  DELETE FROM org_session_policy WHERE org_id = OLD.org_id;
END;
)sql",
    // Abuse protection (issue 6): an org's own rate limit and IP allowlist (subject ''), and a
    // key's rate limit (subject = key id). A change reaches every process's caches through the
    // key invalidation log: the key's hash, or "org:<id>" for the org's policy.
    R"sql(
CREATE TABLE access_policies (
  org_id       TEXT NOT NULL REFERENCES orgs(id),
  subject      TEXT NOT NULL,
  rate_limit   TEXT NOT NULL DEFAULT '',
  ip_allowlist TEXT NOT NULL DEFAULT '[]',
  allowlist_mode TEXT NOT NULL DEFAULT 'enforce',
  quota        TEXT NOT NULL DEFAULT '',
  updated_at   INTEGER NOT NULL,
  PRIMARY KEY (org_id, subject)
) STRICT;
-- Credits a key has used in its quota's current period ('2026-11-23' or '2026-11'), added to by
-- each node's periodic flush.
CREATE TABLE key_credits (
  org_id TEXT NOT NULL REFERENCES orgs(id),
  key_id TEXT NOT NULL,
  period TEXT NOT NULL,
  used   INTEGER NOT NULL,
  PRIMARY KEY (key_id, period)
) STRICT;
CREATE VIEW tenant_key_credits AS
  SELECT org_id, key_id, period, used FROM key_credits WHERE org_id = gh_tenant();
CREATE TRIGGER tenant_key_credits_insert INSTEAD OF INSERT ON tenant_key_credits
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT gh_tenant();
  INSERT INTO key_credits (org_id, key_id, period, used)
  VALUES (NEW.org_id, NEW.key_id, NEW.period, NEW.used)
  ON CONFLICT (key_id, period) DO UPDATE SET used = key_credits.used + excluded.used;
END;
CREATE TRIGGER access_policies_invalidate_insert AFTER INSERT ON access_policies
BEGIN
  INSERT INTO key_invalidations (key_hash, created_at)
  SELECT CASE WHEN NEW.subject = '' THEN 'org:' || NEW.org_id
              ELSE (SELECT key_hash FROM api_keys WHERE id = NEW.subject) END,
         unixepoch() * 1000000;
END;
CREATE TRIGGER access_policies_invalidate_update AFTER UPDATE ON access_policies
BEGIN
  INSERT INTO key_invalidations (key_hash, created_at)
  SELECT CASE WHEN NEW.subject = '' THEN 'org:' || NEW.org_id
              ELSE (SELECT key_hash FROM api_keys WHERE id = NEW.subject) END,
         unixepoch() * 1000000;
END;
CREATE VIEW tenant_access_policies AS
  SELECT org_id, subject, rate_limit, ip_allowlist, allowlist_mode, quota, updated_at
  FROM access_policies WHERE org_id = gh_tenant();
CREATE TRIGGER tenant_access_policies_insert INSTEAD OF INSERT ON tenant_access_policies
BEGIN
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.org_id IS NOT gh_tenant();
  SELECT RAISE(ABORT, 'tenant mismatch') WHERE NEW.subject <> '' AND NOT EXISTS
    (SELECT 1 FROM api_keys WHERE id = NEW.subject AND org_id = NEW.org_id);
  INSERT INTO access_policies (org_id, subject, rate_limit, ip_allowlist, allowlist_mode,
                               quota, updated_at)
  VALUES (NEW.org_id, NEW.subject, NEW.rate_limit, NEW.ip_allowlist, NEW.allowlist_mode,
          NEW.quota, NEW.updated_at)
  ON CONFLICT (org_id, subject) DO UPDATE SET rate_limit = excluded.rate_limit,
    ip_allowlist = excluded.ip_allowlist, allowlist_mode = excluded.allowlist_mode,
    quota = excluded.quota, updated_at = excluded.updated_at;
END;
)sql",
    // The serving nodes that share this store (cluster/node_registry.h), each seen every few
    // seconds, with the fingerprints of the peppers it holds: a node whose peppers cannot verify
    // what another makes is refused at start. Belongs to no org.
    R"sql(
CREATE TABLE nodes (
  id              TEXT PRIMARY KEY,
  host            TEXT NOT NULL,
  pid             INTEGER NOT NULL,
  pid_namespace   TEXT NOT NULL,
  started_at      INTEGER NOT NULL,
  seen_at         INTEGER NOT NULL,
  pepper          TEXT NOT NULL,
  previous_pepper TEXT NOT NULL,
  next_pepper     TEXT NOT NULL
) STRICT;
)sql",
    // The key prefix each node makes and accepts: a node with another prefix refuses the keys
    // the others make. '' for an entry of a node from before this column.
    R"sql(
ALTER TABLE nodes ADD COLUMN key_prefix TEXT NOT NULL DEFAULT '';
)sql",
};

// The test build that proves the database alone keeps orgs apart compiles the store without
// its own org conditions (GATEHOUSE_FORGET_ORG_FILTER); everything else stays the same.
#ifdef GATEHOUSE_FORGET_ORG_FILTER
constexpr bool kOrgFilter = false;
#define GH_ORG_FILTER(sql) ""
#else
constexpr bool kOrgFilter = true;
#define GH_ORG_FILTER(sql) sql
#endif

}  // namespace

class SqliteStore::Connection {
 public:
  explicit Connection(sqlite3* db) : db_(db) {
    sqlite3_create_function_v2(db_, "gh_tenant", 0, SQLITE_UTF8 | SQLITE_INNOCUOUS, this,
                               &Connection::TenantFunction, nullptr, nullptr, nullptr);
    sqlite3_set_authorizer(db_, &Connection::Authorize, this);
  }
  ~Connection() {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

  sqlite3* db() { return db_; }

  // One org's rows, through the tenant views only.
  void ActAsTenant(std::string_view org_id) {
    tenant_.assign(org_id);
    system_ = false;
  }
  // The store's cross-org paths (the equivalent of PostgreSQL's SECURITY DEFINER functions):
  // migrations, bootstrap, lookup by key hash, usage, the invalidation log, the operator's list.
  void ActAsSystem() {
    tenant_.clear();
    system_ = true;
  }
  void ResetActor() {
    tenant_.clear();
    system_ = false;
  }

  tl::unexpected<Error> Failure(int rc, const char* what) {
    int primary = rc & 0xff;
    if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
      spdlog::warn("sqlite busy during {}", what);
      return Fail(ErrorCode::kUnavailable, "the database is busy; try again");
    }
    if (primary == SQLITE_FULL || primary == SQLITE_IOERR) {
      // A full disk or a failing write passes (or not) outside of us; the caller may try again.
      spdlog::error("sqlite error during {}: {}", what, sqlite3_errmsg(db_));
      return Fail(ErrorCode::kUnavailable, "the database cannot be written now; try again");
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

  static void TenantFunction(sqlite3_context* ctx, int, sqlite3_value**) {
    auto* self = static_cast<Connection*>(sqlite3_user_data(ctx));
    if (self->tenant_.empty()) {
      sqlite3_result_null(ctx);  // no org: the views show nothing
    } else {
      sqlite3_result_text(ctx, self->tenant_.data(), static_cast<int>(self->tenant_.size()),
                          SQLITE_TRANSIENT);
    }
  }

  // Called while a statement is prepared. Outside the system paths, the org-owned tables may
  // be touched only from inside a view or trigger (`inner`), and the schema cannot change.
  static int Authorize(void* user, int action, const char* object, const char*, const char*,
                       const char* inner) {
    auto* self = static_cast<Connection*>(user);
    if (self->system_) return SQLITE_OK;
    switch (action) {
      case SQLITE_READ:
      case SQLITE_INSERT:
      case SQLITE_UPDATE:
      case SQLITE_DELETE: {
        std::string_view table = object ? object : "";
        bool org_owned = table == "orgs" || table == "api_keys" || table == "audit_events" ||
                         table == "audit_heads" || table == "key_usage_daily" ||
                         table == "memberships" || table == "roles" || table == "invitations" ||
                         table == "org_session_policy" || table == "access_policies" ||
                         table == "key_credits";
        return org_owned && inner == nullptr ? SQLITE_DENY : SQLITE_OK;
      }
      case SQLITE_SELECT:
      case SQLITE_FUNCTION:
      case SQLITE_TRANSACTION:
      case SQLITE_SAVEPOINT:
      case SQLITE_RECURSIVE:
        return SQLITE_OK;
      default:  // schema changes, ATTACH, PRAGMA: only migrations, which run as system
        return SQLITE_DENY;
    }
  }

  // A statement left at SQLITE_ROW keeps its read transaction, and with it a stale WAL snapshot,
  // open. Every lease resets what it used before the connection goes back to the pool.
  void ResetUsed() {
    for (auto* s : in_use_) sqlite3_reset(s);
    in_use_.clear();
  }

 private:
  sqlite3* db_;
  std::string tenant_;
  bool system_ = false;
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
  // An org condition's parameter: absent, like the condition, in the forgetful test build.
  Binder& Org(std::string_view org_id) {
    if (kOrgFilter) Text(org_id);
    return *this;
  }
  Binder& Int(std::int64_t v) {
    sqlite3_bind_int64(s_, ++i_, v);
    return *this;
  }
  // Not copied: `v` must outlive the statement's next step (the audit writer's hot loop).
  Binder& View(std::string_view v) {
    sqlite3_bind_text(s_, ++i_, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    return *this;
  }
  Binder& OptText(const std::optional<std::string>& v) {
    if (v) return Text(*v);
    sqlite3_bind_null(s_, ++i_);
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

// Appends `events` (all of the connection's current org) to that org's chain: reads the head
// once, links each event to the one before, writes the events and the new head. Runs inside the
// caller's write transaction, so the chain and the change it records commit together.
//
// `system`: the writer's group commit, on the system path, writes the tables themselves and
// names the org in each statement; the views' triggers cost more than the rest of an insert,
// and the writer is the one path where that shows (issue 4's throughput target).
Result<void> AppendAuditOn(SqliteStore::Connection& c, AuditEvent* events, std::size_t count,
                           bool system = false) {
  if (count == 0) return {};
  const std::string& org = events[0].org_id;
  auto head = system ? c.Prepare("SELECT seq, hash FROM audit_heads WHERE org_id = ?")
                     : c.Prepare("SELECT seq, hash FROM tenant_audit_heads");
  if (!head) return tl::unexpected(head.error());
  if (system) Binder(*head).Text(org);
  std::int64_t last_seq = 0;
  std::string head_hash(kGenesisHash);
  int rc = sqlite3_step(*head);
  if (rc == SQLITE_ROW) {
    last_seq = sqlite3_column_int64(*head, 0);
    head_hash = ColText(*head, 1);
  } else if (rc != SQLITE_DONE) {
    return c.Failure(rc, "audit head");
  }
  sqlite3_reset(*head);
  auto ins = c.Prepare(
      system ? "INSERT INTO audit_events (org_id, seq, at, actor, action, resource, result, "
               "status, client_ip, user_agent, request_id, details, prev_hash, hash) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
             : "INSERT INTO tenant_audit_events (org_id, seq, at, actor, action, resource, "
               "result, status, client_ip, user_agent, request_id, details, prev_hash, hash) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!ins) return tl::unexpected(ins.error());
  std::string_view last_hash = head_hash;  // then the hash of the event before, in `events`
  for (std::size_t i = 0; i < count; ++i) {
    AuditEvent& e = events[i];
    if (e.org_id != org) return Fail(ErrorCode::kInternal, "one org per audit append");
    LinkAuditEvent(e, last_seq, last_hash);
    // Every value is bound anew, and as a view: the events outlive the step.
    Binder(*ins)
        .View(e.org_id)
        .Int(e.seq)
        .Int(e.at)
        .View(e.actor)
        .View(e.action)
        .View(e.resource)
        .View(e.result)
        .Int(e.status)
        .View(e.client_ip)
        .View(e.user_agent)
        .View(e.request_id)
        .View(e.details)
        .View(e.prev_hash)
        .View(e.hash);
    rc = sqlite3_step(*ins);
    sqlite3_reset(*ins);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
      return Fail(ErrorCode::kNotFound, "organization not found");
    if (rc == SQLITE_CONSTRAINT_TRIGGER) {
      return Fail(ErrorCode::kOrgMismatch, "the event belongs to another organization");
    }
    if (rc != SQLITE_DONE) return c.Failure(rc, "append audit event");
    last_seq = e.seq;
    last_hash = e.hash;
  }
  auto set = c.Prepare(
      system ? "INSERT INTO audit_heads (org_id, seq, hash) VALUES (?, ?, ?) ON CONFLICT (org_id) "
               "DO UPDATE SET seq = excluded.seq, hash = excluded.hash"
             : "INSERT INTO tenant_audit_heads (org_id, seq, hash) VALUES (?, ?, ?)");
  if (!set) return tl::unexpected(set.error());
  Binder(*set).Text(org).Int(last_seq).Text(last_hash);
  return StepDone(c, *set, "audit head");
}

Result<void> AppendOneAuditOn(SqliteStore::Connection& c, std::string_view org_id,
                              const AuditEvent& audit) {
  AuditEvent e = audit;
  e.org_id = std::string(org_id);
  return AppendAuditOn(c, &e, 1);
}

constexpr const char* kAuditColumns =
    "org_id, seq, at, actor, action, resource, result, status, client_ip, user_agent, "
    "request_id, details, prev_hash, hash";

AuditEvent ReadAuditEvent(sqlite3_stmt* s) {
  AuditEvent e;
  e.org_id = ColText(s, 0);
  e.seq = sqlite3_column_int64(s, 1);
  e.at = sqlite3_column_int64(s, 2);
  e.actor = ColText(s, 3);
  e.action = ColText(s, 4);
  e.resource = ColText(s, 5);
  e.result = ColText(s, 6);
  e.status = sqlite3_column_int(s, 7);
  e.client_ip = ColText(s, 8);
  e.user_agent = ColText(s, 9);
  e.request_id = ColText(s, 10);
  e.details = ColText(s, 11);
  e.prev_hash = ColText(s, 12);
  e.hash = ColText(s, 13);
  return e;
}

Result<Org> GetOrgOn(SqliteStore::Connection& c, std::string_view org_id) {
  auto s =
      c.Prepare("SELECT id, name, created_at, audit_retention_days FROM tenant_orgs " GH_ORG_FILTER(
          "WHERE id = ?"));
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Org(org_id);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return Fail(ErrorCode::kNotFound, "organization not found");
  if (rc != SQLITE_ROW) return c.Failure(rc, "get org");
  Org org{ColText(*s, 0), ColText(*s, 1), sqlite3_column_int64(*s, 2), sqlite3_column_int(*s, 3)};
  sqlite3_reset(*s);
  return org;
}

}  // namespace

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, int pool_size) {
  // SQLite's allocation statistics take one process-wide mutex on every allocation, which the
  // audit writer and the request threads' lookups would contend on; nothing here reads them.
  static const bool configured = [] {
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);  // refused once SQLite is in use: harmless
    return true;
  }();
  (void)configured;
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
    conn->ActAsSystem();  // pragmas and migrations
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
    conn->ResetActor();
    store->idle_.push_back(conn.get());
    store->all_.push_back(std::move(conn));
  }
  return store;
}

SqliteStore::~SqliteStore() = default;

SqliteStore::Connection* SqliteStore::Take() {
  std::unique_lock lock(mu_);
  available_.wait(lock, [&] { return !idle_.empty(); });
  Connection* c = idle_.back();
  idle_.pop_back();
  return c;
}

SqliteStore::Lease SqliteStore::Acquire() { return Lease(this, Take()); }

SqliteStore::Lease SqliteStore::AcquireTenant(std::string_view org_id) {
  Connection* c = Take();
  c->ActAsTenant(org_id);
  return Lease(this, c);
}

SqliteStore::Lease SqliteStore::AcquireSystem() {
  Connection* c = Take();
  c->ActAsSystem();
  return Lease(this, c);
}

void SqliteStore::Release(Connection* c) {
  c->ResetUsed();
  c->ResetActor();
  {
    std::lock_guard lock(mu_);
    idle_.push_back(c);
  }
  available_.notify_one();
}

Result<void> SqliteStore::Ping() {
  auto c = Acquire();  // no org: touches no table
  auto s = c->Prepare("SELECT 1");
  if (!s) return tl::unexpected(s.error());
  int rc = sqlite3_step(*s);
  if (rc != SQLITE_ROW) return c->Failure(rc, "ping");
  return {};
}

Result<void> SqliteStore::InsertOrg(const Org& org, const AuditEvent& audit) {
  auto c = AcquireSystem();
  return InWriteTransaction<void>(*c, [&]() -> Result<void> {
    auto s = c->Prepare(
        "INSERT INTO orgs (id, name, created_at, audit_retention_days) VALUES (?, ?, ?, ?)");
    if (!s) return tl::unexpected(s.error());
    Binder(*s).Text(org.id).Text(org.name).Int(org.created_at).Int(org.audit_retention_days);
    if (auto r = StepDone(*c, *s, "insert org"); !r) return r;
    c->ActAsTenant(org.id);
    return AppendOneAuditOn(*c, org.id, audit);
  });
}

Result<Org> SqliteStore::GetOrg(std::string_view org_id) {
  auto c = AcquireTenant(org_id);
  return GetOrgOn(*c, org_id);
}

Result<Org> SqliteStore::UpdateOrg(std::string_view org_id, const OrgUpdate& update,
                                   const AuditEvent& audit) {
  auto c = AcquireTenant(org_id);
  return InWriteTransaction<Org>(*c, [&]() -> Result<Org> {
    auto before = GetOrgOn(*c, org_id);
    if (!before) return before;
    Org after = *before;
    if (update.name) after.name = *update.name;
    if (update.audit_retention_days) after.audit_retention_days = *update.audit_retention_days;
    auto s = c->Prepare(
        "UPDATE tenant_orgs SET name = ?, audit_retention_days = ? " GH_ORG_FILTER("WHERE id = ?"));
    if (!s) return tl::unexpected(s.error());
    Binder(*s).Text(after.name).Int(after.audit_retention_days).Org(org_id);
    if (auto r = StepDone(*c, *s, "update org"); !r) return tl::unexpected(r.error());
    AuditEvent e = audit;
    e.details = OrgChangeDetails(*before, after);
    if (auto r = AppendOneAuditOn(*c, org_id, e); !r) return tl::unexpected(r.error());
    return after;
  });
}

Result<std::vector<Org>> SqliteStore::ListOrgs() {
  auto c = AcquireSystem();  // the operator's view of every org
  auto s = c->Prepare(
      "SELECT id, name, created_at, audit_retention_days FROM orgs ORDER BY created_at, id");
  if (!s) return tl::unexpected(s.error());
  std::vector<Org> out;
  int rc;
  while ((rc = sqlite3_step(*s)) == SQLITE_ROW) {
    out.push_back(Org{ColText(*s, 0), ColText(*s, 1), sqlite3_column_int64(*s, 2),
                      sqlite3_column_int(*s, 3)});
  }
  if (rc != SQLITE_DONE) return c->Failure(rc, "list orgs");
  return out;
}

namespace {
Result<void> InsertKeyOn(SqliteStore::Connection& c, const ApiKeyRecord& k) {
  auto s = c.Prepare(
      "INSERT INTO tenant_api_keys (id, org_id, label, scopes, environment, key_hash, last4, "
      "expires_at, "
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
  if (rc == SQLITE_CONSTRAINT_TRIGGER) {
    return Fail(ErrorCode::kOrgMismatch, "the key belongs to another organization");
  }
  if (rc != SQLITE_DONE) return c.Failure(rc, "insert key");
  return {};
}
}  // namespace

Result<void> SqliteStore::CreateOrgWithKey(const Org& org, const ApiKeyRecord& owner_key,
                                           bool bootstrap, const AuditEvent& audit) {
  auto c = AcquireSystem();
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
    auto o = c->Prepare(
        "INSERT INTO orgs (id, name, created_at, audit_retention_days) VALUES (?, ?, ?, ?)");
    if (!o) return tl::unexpected(o.error());
    Binder(*o).Text(org.id).Text(org.name).Int(org.created_at).Int(org.audit_retention_days);
    if (auto r = StepDone(*c, *o, "bootstrap org"); !r) return r;
    c->ActAsTenant(org.id);  // the key goes in as the new org's own row
    if (auto r = InsertKeyOn(*c, owner_key); !r) return r;
    return AppendOneAuditOn(*c, org.id, audit);
  });
}

Result<std::optional<std::string>> SqliteStore::BootstrapOrgId() {
  auto c = AcquireSystem();
  auto s = c->Prepare("SELECT value FROM meta WHERE name = 'bootstrap_org'");
  if (!s) return tl::unexpected(s.error());
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return std::optional<std::string>{};
  if (rc != SQLITE_ROW) return c->Failure(rc, "bootstrap org");
  return std::optional<std::string>(ColText(*s, 0));
}

Result<void> SqliteStore::InsertKey(const ApiKeyRecord& key, const AuditEvent& audit) {
  auto c = AcquireTenant(key.org_id);
  return InWriteTransaction<void>(*c, [&]() -> Result<void> {
    if (auto r = InsertKeyOn(*c, key); !r) return r;
    return AppendOneAuditOn(*c, key.org_id, audit);
  });
}

Result<ApiKeyRecord> SqliteStore::GetKey(std::string_view org_id, std::string_view key_id) {
  static const std::string sql =
      std::string("SELECT ") + kKeyColumns +
      " FROM tenant_api_keys WHERE " GH_ORG_FILTER("org_id = ? AND ") "id = ?";
  auto c = AcquireTenant(org_id);
  auto s = c->Prepare(sql.c_str());
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Org(org_id).Text(key_id);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return Fail(ErrorCode::kNotFound, "API key not found");
  if (rc != SQLITE_ROW) return c->Failure(rc, "get key");
  return ReadKey(*s);
}

Result<ApiKeyRecord> SqliteStore::FindKeyByHash(std::string_view key_hash) {
  static const std::string sql =
      std::string("SELECT ") + kKeyColumns + " FROM api_keys WHERE key_hash = ?";
  auto c = AcquireSystem();  // crosses orgs by necessity: the org is what this finds out
  auto s = c->Prepare(sql.c_str());
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Text(key_hash);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return Fail(ErrorCode::kNotFound, "API key not found");
  if (rc != SQLITE_ROW) return c->Failure(rc, "find key");
  return ReadKey(*s);
}

Result<bool> SqliteStore::ReplaceKeyHash(std::string_view org_id, std::string_view key_id,
                                         std::string_view old_hash, std::string_view new_hash) {
  // On the system connection: the tenant view refuses any change of a key's hash, which no
  // request may make. This one is the verifier's, for a key it has just proven is presented.
  auto c = AcquireSystem();
  return InWriteTransaction<bool>(*c, [&]() -> Result<bool> {
    auto s =
        c->Prepare("UPDATE api_keys SET key_hash = ? WHERE org_id = ? AND id = ? AND key_hash = ?");
    if (!s) return tl::unexpected(s.error());
    Binder(*s).Text(new_hash).Text(org_id).Text(key_id).Text(old_hash);
    int rc = sqlite3_step(*s);
    if (rc != SQLITE_DONE) return c->Failure(rc, "replace key hash");
    if (sqlite3_changes(c->db()) != 1) return false;
    // Caches keyed by the old hash drop it, as the trigger does for a revocation: a process that
    // cached the key under the old hash would otherwise miss its revocation, which is logged
    // under the hash stored then.
    auto logged = c->Prepare(
        "INSERT INTO key_invalidations (key_hash, created_at) VALUES (?, unixepoch() * 1000000)");
    if (!logged) return tl::unexpected(logged.error());
    Binder(*logged).Text(old_hash);
    rc = sqlite3_step(*logged);
    if (rc != SQLITE_DONE) return c->Failure(rc, "log the old key hash");
    return true;
  });
}

Result<KeyPage> SqliteStore::ListKeys(std::string_view org_id, const KeyListQuery& query) {
  static const std::string first_page =
      std::string("SELECT ") + kKeyColumns +
      " FROM tenant_api_keys " GH_ORG_FILTER(
          "WHERE org_id = ? ") "ORDER BY created_at DESC, id DESC LIMIT ?";
  static const std::string next_page = std::string("SELECT ") + kKeyColumns +
                                       " FROM tenant_api_keys WHERE " GH_ORG_FILTER("org_id = ? AND ")
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
  auto c = AcquireTenant(org_id);
  auto s = c->Prepare(query.cursor.empty() ? first_page.c_str() : next_page.c_str());
  if (!s) return tl::unexpected(s.error());
  Binder b(*s);
  b.Org(org_id);
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

Result<ApiKeyRecord> SqliteStore::RevokeKey(std::string_view org_id, std::string_view key_id,
                                            UnixMicros at, const AuditEvent& audit) {
  static const std::string select =
      std::string("SELECT ") + kKeyColumns +
      " FROM tenant_api_keys WHERE " GH_ORG_FILTER("org_id = ? AND ") "id = ?";
  // The invalidation for other processes is appended by a trigger (migration 2).
  auto c = AcquireTenant(org_id);
  return InWriteTransaction<ApiKeyRecord>(*c, [&]() -> Result<ApiKeyRecord> {
    auto found = c->Prepare(select.c_str());
    if (!found) return tl::unexpected(found.error());
    Binder(*found).Org(org_id).Text(key_id);
    int rc = sqlite3_step(*found);
    if (rc == SQLITE_DONE) return Fail(ErrorCode::kNotFound, "API key not found");
    if (rc != SQLITE_ROW) return c->Failure(rc, "revoke key");
    ApiKeyRecord key = ReadKey(*found);
    sqlite3_reset(*found);
    AuditEvent e = audit;
    if (key.revoked_at) {
      e.details = DetailsOf({{"note", "already revoked"}});
    } else {
      auto s = c->Prepare("UPDATE tenant_api_keys SET revoked_at = ? WHERE " GH_ORG_FILTER(
          "org_id = ? AND ") "id = ? AND revoked_at IS NULL");
      if (!s) return tl::unexpected(s.error());
      Binder(*s).Int(at).Org(org_id).Text(key_id);
      if (auto r = StepDone(*c, *s, "revoke key"); !r) return tl::unexpected(r.error());
      key.revoked_at = at;
    }
    if (auto r = AppendOneAuditOn(*c, org_id, e); !r) return tl::unexpected(r.error());
    return key;
  });
}

Result<std::vector<KeyInvalidation>> SqliteStore::KeyInvalidationsSince(std::int64_t after_seq,
                                                                        int limit) {
  auto c = AcquireSystem();
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
  auto c = AcquireSystem();
  auto s = c->Prepare("SELECT COALESCE(MAX(seq), 0) FROM key_invalidations");
  if (!s) return tl::unexpected(s.error());
  int rc = sqlite3_step(*s);
  if (rc != SQLITE_ROW) return c->Failure(rc, "latest key invalidation");
  return sqlite3_column_int64(*s, 0);
}

Result<void> SqliteStore::RotateKey(std::string_view org_id, std::string_view old_key_id,
                                    const ApiKeyRecord& replacement, UnixMicros old_expires_at,
                                    const AuditEvent& audit) {
  auto c = AcquireTenant(org_id);
  return InWriteTransaction<void>(*c, [&]() -> Result<void> {
    auto found = c->Prepare("SELECT 1 FROM tenant_api_keys WHERE " GH_ORG_FILTER(
        "org_id = ? AND ") "id = ? AND revoked_at IS NULL");
    if (!found) return tl::unexpected(found.error());
    Binder(*found).Org(org_id).Text(old_key_id);
    int rc = sqlite3_step(*found);
    if (rc == SQLITE_DONE) return Fail(ErrorCode::kNotFound, "API key not found");
    if (rc != SQLITE_ROW) return c->Failure(rc, "rotate key");
    // The trigger of migration 2 logs the old key's new expiry for other processes.
    auto s = c->Prepare("UPDATE tenant_api_keys SET expires_at = ? WHERE " GH_ORG_FILTER(
        "org_id = ? AND ") "id = ?");
    if (!s) return tl::unexpected(s.error());
    Binder(*s).Int(old_expires_at).Org(org_id).Text(old_key_id);
    if (auto r = StepDone(*c, *s, "rotate key"); !r) return r;
    if (auto r = InsertKeyOn(*c, replacement); !r) return r;
    return AppendOneAuditOn(*c, org_id, audit);
  });
}

Result<std::vector<std::string>> SqliteStore::QueryAsTenant(std::string_view org_id,
                                                            const std::string& sql) {
  auto c = AcquireTenant(org_id);
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(c->db(), sql.c_str(), -1, &raw, nullptr);
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> s(raw, &sqlite3_finalize);
  if (rc == SQLITE_AUTH) return Fail(ErrorCode::kPermissionDenied, "not authorized");
  if (rc != SQLITE_OK) return c->Failure(rc, "query as tenant");
  std::vector<std::string> out;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) out.push_back(ColText(s.get(), 0));
  if ((rc & 0xff) == SQLITE_CONSTRAINT)
    return Fail(ErrorCode::kOrgMismatch, "refused by the database");
  if (rc != SQLITE_DONE) return c->Failure(rc, "query as tenant");
  return out;
}

Result<void> SqliteStore::RecordKeyUsage(const std::vector<KeyUsage>& usage) {
  if (usage.empty()) return {};
  auto c = AcquireSystem();  // one batch for keys of many orgs, from the verifier
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

Result<void> SqliteStore::AppendAudit(std::vector<AuditEvent>& events,
                                      const std::vector<KeyUsageCount>& usage, bool fsync,
                                      const JournalProgress* progress) {
  if (events.empty() && usage.empty() && !progress) return {};
  if (auto r = RequireAuditOrgs(events); !r) return r;
  // Each org's events go in as that org's rows (the tenant views), in the order given. The
  // usual batch (one org) is appended where it lies; only a mixed one is grouped by org.
  const bool one_org = std::all_of(events.begin(), events.end(), [&](const AuditEvent& e) {
    return e.org_id == events.front().org_id;
  });
  std::vector<std::size_t> order;
  if (!one_org) {
    order.resize(events.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return events[a].org_id < events[b].org_id;
    });
  }
  auto c = AcquireSystem();
  // In WAL mode, NORMAL commits with a write() to the log and no fsync: the batch survives a
  // crash of this process (the kernel has it), and the next FULL commit or checkpoint syncs it.
  if (!fsync) {
    if (auto r = c->Exec("PRAGMA synchronous=NORMAL"); !r) return r;
  }
  struct RestoreSync {
    SqliteStore::Connection& c;
    bool on;
    ~RestoreSync() {
      if (on) (void)c.Exec("PRAGMA synchronous=FULL");
    }
  } restore{*c, !fsync};
  return InWriteTransaction<void>(*c, [&]() -> Result<void> {
    std::vector<AuditEvent> group;
    if (one_org) {
      if (auto r = AppendAuditOn(*c, events.data(), events.size(), true); !r) return r;
    }
    for (std::size_t i = 0; i < order.size();) {
      const std::string org = events[order[i]].org_id;  // a copy: the events move below
      group.clear();
      std::size_t j = i;
      for (; j < order.size() && events[order[j]].org_id == org; ++j) {
        group.push_back(std::move(events[order[j]]));
      }
      auto r = AppendAuditOn(*c, group.data(), group.size(), true);
      // Moved back whether or not the store took them: a refused batch is offered again, and
      // then event by event, so the caller's events must still be whole.
      for (std::size_t k = i; k < j; ++k) events[order[k]] = std::move(group[k - i]);
      if (!r) return r;
      i = j;
    }
    for (const auto& u : usage) {
      auto s = c->Prepare(
          "INSERT INTO key_usage_daily (org_id, key_id, day, status_2xx, status_3xx, "
          "status_4xx, status_5xx) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (org_id, key_id, day) "
          "DO UPDATE SET status_2xx = status_2xx + excluded.status_2xx, "
          "status_3xx = status_3xx + excluded.status_3xx, "
          "status_4xx = status_4xx + excluded.status_4xx, "
          "status_5xx = status_5xx + excluded.status_5xx");
      if (!s) return tl::unexpected(s.error());
      Binder b(*s);
      b.Text(u.org_id).Text(u.key_id).Text(u.day);
      for (int cls = 2; cls <= 5; ++cls) b.Int(cls == u.status_class ? u.count : 0);
      if (auto r = StepDone(*c, *s, "key usage counts"); !r) return r;
    }
    if (progress) {
      auto s = c->Prepare(
          "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = "
          "excluded.value");
      if (!s) return tl::unexpected(s.error());
      Binder(*s)
          .Text(JournalMetaName(progress->journal_id))
          .Text(FormatJournalMark(progress->mark));
      if (auto r = StepDone(*c, *s, "audit journal progress"); !r) return r;
    }
    return {};
  });
}

Result<std::optional<JournalMark>> SqliteStore::JournalProgressOf(std::string_view journal_id) {
  auto c = AcquireSystem();
  auto s = c->Prepare("SELECT value FROM meta WHERE name = ?");
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Text(JournalMetaName(journal_id));
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_DONE) return std::optional<JournalMark>{};
  if (rc != SQLITE_ROW) return c->Failure(rc, "audit journal progress");
  return ParseJournalMark(ColText(*s, 0));
}

Result<AuditPage> SqliteStore::ListAudit(std::string_view org_id, const AuditQuery& query) {
  static const std::string sql =
      std::string("SELECT ") + kAuditColumns +
      " FROM tenant_audit_events WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2"
      " OR (substr(?2, -2) = '.*' AND substr(action, 1, length(?2) - 1) = "
      "substr(?2, 1, length(?2) - 1)))"
      " AND (?3 IS NULL OR resource = ?3) AND (?4 IS NULL OR result = ?4)"
      " AND (?5 IS NULL OR at >= ?5) AND (?6 IS NULL OR at < ?6) AND (?7 IS NULL OR seq < "
      "?7) " GH_ORG_FILTER("AND org_id = ?9 ") "ORDER BY seq DESC LIMIT ?8";
  auto c = AcquireTenant(org_id);
  auto s = c->Prepare(sql.c_str());
  if (!s) return tl::unexpected(s.error());
  Binder(*s)
      .OptText(query.actor)
      .OptText(query.action)
      .OptText(query.resource)
      .OptText(query.result)
      .OptInt(query.since)
      .OptInt(query.until)
      .OptInt(query.before_seq)
      .Int(query.limit + 1)
      .Org(org_id);
  AuditPage page;
  int rc;
  while ((rc = sqlite3_step(*s)) == SQLITE_ROW) page.events.push_back(ReadAuditEvent(*s));
  if (rc != SQLITE_DONE) return c->Failure(rc, "list audit");
  if (static_cast<int>(page.events.size()) > query.limit) {
    page.events.pop_back();
    page.next_cursor = std::to_string(page.events.back().seq);
  }
  return page;
}

Result<std::vector<AuditEvent>> SqliteStore::AuditChain(std::string_view org_id,
                                                        std::int64_t after_seq, int limit) {
  static const std::string sql = std::string("SELECT ") + kAuditColumns +
                                 " FROM tenant_audit_events WHERE seq > ? " GH_ORG_FILTER(
                                     "AND org_id = ? ") "ORDER BY seq LIMIT ?";
  auto c = AcquireTenant(org_id);
  auto s = c->Prepare(sql.c_str());
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Int(after_seq).Org(org_id).Int(limit);
  std::vector<AuditEvent> out;
  int rc;
  while ((rc = sqlite3_step(*s)) == SQLITE_ROW) out.push_back(ReadAuditEvent(*s));
  if (rc != SQLITE_DONE) return c->Failure(rc, "audit chain");
  return out;
}

namespace {
Result<AuditHead> GetAuditHeadOn(SqliteStore::Connection& c) {
  auto s = c.Prepare(
      "SELECT seq, hash, checkpoint_seq, checkpoint_hash, checkpoint_at, checkpoint_signature "
      "FROM tenant_audit_heads");
  if (!s) return tl::unexpected(s.error());
  AuditHead head;
  head.hash = head.checkpoint_hash = std::string(kGenesisHash);
  int rc = sqlite3_step(*s);
  if (rc == SQLITE_ROW) {
    head.seq = sqlite3_column_int64(*s, 0);
    head.hash = ColText(*s, 1);
    head.checkpoint_seq = sqlite3_column_int64(*s, 2);
    if (head.checkpoint_seq > 0) head.checkpoint_hash = ColText(*s, 3);
    head.checkpoint_at = sqlite3_column_int64(*s, 4);
    head.checkpoint_signature = ColText(*s, 5);
  } else if (rc != SQLITE_DONE) {
    return c.Failure(rc, "audit head");
  }
  sqlite3_reset(*s);
  return head;
}
}  // namespace

Result<AuditHead> SqliteStore::GetAuditHead(std::string_view org_id) {
  auto c = AcquireTenant(org_id);
  return GetAuditHeadOn(*c);
}

Result<std::int64_t> SqliteStore::PruneAudit(
    std::string_view org_id, UnixMicros before,
    const std::function<std::string(std::string_view, const AuditHead&)>& sign,
    const AuditEvent& audit) {
  auto c = AcquireTenant(org_id);
  return InWriteTransaction<std::int64_t>(*c, [&]() -> Result<std::int64_t> {
    auto head = GetAuditHeadOn(*c);
    if (!head) return tl::unexpected(head.error());
    // The newest event always stays, so the chain never becomes empty after a prune.
    auto cut = c->Prepare(
        "SELECT seq, hash, at FROM tenant_audit_events WHERE at < ? AND seq < ? AND seq > ? "
        "ORDER BY seq DESC LIMIT 1");
    if (!cut) return tl::unexpected(cut.error());
    Binder(*cut).Int(before).Int(head->seq).Int(head->checkpoint_seq);
    int rc = sqlite3_step(*cut);
    if (rc == SQLITE_DONE) return std::int64_t{0};
    if (rc != SQLITE_ROW) return c->Failure(rc, "audit prune");
    AuditHead checkpoint = *head;
    checkpoint.checkpoint_seq = sqlite3_column_int64(*cut, 0);
    checkpoint.checkpoint_hash = ColText(*cut, 1);
    checkpoint.checkpoint_at = sqlite3_column_int64(*cut, 2);
    sqlite3_reset(*cut);
    checkpoint.checkpoint_signature = sign(org_id, checkpoint);
    std::string org(org_id);
    c->ActAsSystem();  // retention is the one path that deletes audit rows
    auto del = c->Prepare("DELETE FROM audit_events WHERE org_id = ? AND seq <= ?");
    if (!del) return tl::unexpected(del.error());
    Binder(*del).Text(org).Int(checkpoint.checkpoint_seq);
    if (auto r = StepDone(*c, *del, "audit prune"); !r) return tl::unexpected(r.error());
    std::int64_t removed = sqlite3_changes64(c->db());
    auto set = c->Prepare(
        "UPDATE audit_heads SET checkpoint_seq = ?, checkpoint_hash = ?, checkpoint_at = ?, "
        "checkpoint_signature = ? WHERE org_id = ?");
    if (!set) return tl::unexpected(set.error());
    Binder(*set)
        .Int(checkpoint.checkpoint_seq)
        .Text(checkpoint.checkpoint_hash)
        .Int(checkpoint.checkpoint_at)
        .Text(checkpoint.checkpoint_signature)
        .Text(org);
    if (auto r = StepDone(*c, *set, "audit checkpoint"); !r) return tl::unexpected(r.error());
    c->ActAsTenant(org_id);
    AuditEvent e = audit;
    e.details = DetailsOf({{"removed", std::to_string(removed)},
                           {"checkpoint_seq", std::to_string(checkpoint.checkpoint_seq)}});
    if (auto r = AppendOneAuditOn(*c, org_id, e); !r) return tl::unexpected(r.error());
    return removed;
  });
}

Result<std::vector<KeyUsageDay>> SqliteStore::KeyUsageDays(std::string_view org_id,
                                                           std::string_view key_id,
                                                           std::string_view since_day) {
  auto c = AcquireTenant(org_id);
  auto s = c->Prepare(
      "SELECT day, status_2xx, status_3xx, status_4xx, status_5xx FROM tenant_key_usage_daily "
      "WHERE key_id = ? AND day >= ? " GH_ORG_FILTER("AND org_id = ? ") "ORDER BY day");
  if (!s) return tl::unexpected(s.error());
  Binder(*s).Text(key_id).Text(since_day).Org(org_id);
  std::vector<KeyUsageDay> out;
  int rc;
  while ((rc = sqlite3_step(*s)) == SQLITE_ROW) {
    out.push_back(KeyUsageDay{ColText(*s, 0), sqlite3_column_int64(*s, 1),
                              sqlite3_column_int64(*s, 2), sqlite3_column_int64(*s, 3),
                              sqlite3_column_int64(*s, 4)});
  }
  if (rc != SQLITE_DONE) return c->Failure(rc, "key usage");
  return out;
}

namespace {

// store/sql.h over one SQLite connection: a tenant connection for an org's transaction, the
// system path for a global one.
class SqliteSqlTx final : public SqlTx {
 public:
  SqliteSqlTx(SqliteStore::Connection& c, bool system) : c_(c), system_(system) {}

  Dialect dialect() const override { return Dialect::kSqlite; }

  Result<SqlRows> Query(const char* sql, const std::vector<SqlParam>& params) override {
    auto s = c_.Prepare(Dialected(sql));
    if (!s) return tl::unexpected(s.error());
    for (std::size_t i = 0; i < params.size(); ++i) {
      std::string name = "$" + std::to_string(i + 1);
      int index = sqlite3_bind_parameter_index(*s, name.c_str());
      if (index == 0) continue;  // not used by this statement
      if (params[i]) {
        sqlite3_bind_text(*s, index, params[i]->data(), static_cast<int>(params[i]->size()),
                          SQLITE_TRANSIENT);
      } else {
        sqlite3_bind_null(*s, index);
      }
    }
    SqlRows out;
    int columns = sqlite3_column_count(*s);
    int rc;
    while ((rc = sqlite3_step(*s)) == SQLITE_ROW) {
      auto& row = out.rows.emplace_back();
      row.reserve(columns);
      for (int col = 0; col < columns; ++col) {
        if (sqlite3_column_type(*s, col) == SQLITE_NULL) {
          row.emplace_back(std::nullopt);
        } else {
          row.emplace_back(ColText(*s, col));
        }
      }
    }
    sqlite3_reset(*s);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
      return Fail(ErrorCode::kNotFound, "a record it refers to does not exist");
    }
    if (rc == SQLITE_CONSTRAINT_TRIGGER) {
      return Fail(ErrorCode::kOrgMismatch, "refused by the database: not this organization's");
    }
    if (rc != SQLITE_DONE) return c_.Failure(rc, "statement");
    return out;
  }

  Result<void> Append(const AuditEvent& event) override {
    AuditEvent e = event;
    return AppendAuditOn(c_, &e, 1, system_);
  }

 private:
  // SQLite has no row locks: a write transaction holds the database already.
  static std::string WithoutLocks(std::string_view sql) {
    return ReplaceAll(std::string(sql), "{lock}", "");
  }
  static const char* Dialected(const char* sql) { return DialectText(sql, &WithoutLocks); }

  SqliteStore::Connection& c_;
  bool system_;
};

}  // namespace

Result<void> SqliteStore::RunSql(std::string_view org_id, bool write, const SqlBody& body) {
  bool system = org_id.empty();
  auto c = system ? AcquireSystem() : AcquireTenant(org_id);
  SqliteSqlTx tx(*c, system);
  if (write) return InWriteTransaction<void>(*c, [&] { return body(tx); });
  if (auto r = c->Exec("BEGIN"); !r) return r;
  auto out = body(tx);
  (void)c->Exec(out ? "COMMIT" : "ROLLBACK");
  return out;
}

}  // namespace gatehouse

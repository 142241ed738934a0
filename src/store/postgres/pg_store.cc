#include "store/postgres/pg_store.h"

#include <libpq-fe.h>
#include <poll.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <thread>

#include "audit/chain.h"
#include "audit/details.h"
#include "store/columns.h"
#include "store/sql.h"

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
    // The audit log (issue 4): append-only for the application role (SELECT and INSERT, no
    // UPDATE or DELETE), with each org's rows behind row level security like every org-owned
    // table. Retention deletes only through gh_prune_audit, which records a checkpoint.
    R"sql(
ALTER TABLE orgs ADD COLUMN audit_retention_days integer NOT NULL DEFAULT 0;
CREATE TABLE audit_events (
  org_id     text NOT NULL,  -- an org's id, or "system" for decisions that name no org
  seq        bigint NOT NULL,
  at         bigint NOT NULL,
  actor      text NOT NULL,
  action     text NOT NULL,
  resource   text NOT NULL,
  result     text NOT NULL,
  status     integer NOT NULL,
  client_ip  text NOT NULL,
  user_agent text NOT NULL,
  request_id text NOT NULL,
  details    text NOT NULL,
  prev_hash  text NOT NULL,
  hash       text NOT NULL,
  PRIMARY KEY (org_id, seq)
);
-- No secondary index, as on SQLite: appends stay sequential; filters scan newest first.
CREATE TABLE audit_heads (
  org_id               text PRIMARY KEY,
  seq                  bigint NOT NULL,
  hash                 text NOT NULL,
  checkpoint_seq       bigint NOT NULL DEFAULT 0,
  checkpoint_hash      text NOT NULL DEFAULT '',
  checkpoint_at        bigint NOT NULL DEFAULT 0,
  checkpoint_signature text NOT NULL DEFAULT ''
);
CREATE TABLE key_usage_daily (
  org_id     text NOT NULL REFERENCES orgs(id),
  key_id     text NOT NULL,
  day        text NOT NULL,
  status_2xx bigint NOT NULL DEFAULT 0,
  status_3xx bigint NOT NULL DEFAULT 0,
  status_4xx bigint NOT NULL DEFAULT 0,
  status_5xx bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (org_id, key_id, day)
);
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON audit_events
  USING (org_id = current_setting('gatehouse.org_id', true) OR current_user = 'gatehouse_definer')
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true));
ALTER TABLE audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON audit_heads
  USING (org_id = current_setting('gatehouse.org_id', true) OR current_user = 'gatehouse_definer')
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true) OR
              current_user = 'gatehouse_definer');
ALTER TABLE key_usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE key_usage_daily FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON key_usage_daily
  USING (org_id = current_setting('gatehouse.org_id', true))
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true));

DROP FUNCTION gh_list_orgs();
CREATE FUNCTION gh_list_orgs()
  RETURNS TABLE (id text, name text, created_at bigint, audit_retention_days integer)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = gatehouse, pg_temp AS $$
  SELECT o.id, o.name, o.created_at, o.audit_retention_days FROM orgs o ORDER BY o.created_at, o.id
$$;

-- Retention for the transaction's own org only: deletes its events up to p_seq (never the
-- newest) and records the signed checkpoint at the cut, together.
CREATE FUNCTION gh_prune_audit(p_seq bigint, p_hash text, p_at bigint, p_signature text)
  RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = gatehouse, pg_temp AS $$
DECLARE
  v_org text := current_setting('gatehouse.org_id', true);
  v_removed bigint;
BEGIN
  IF v_org IS NULL OR v_org = '' THEN RAISE EXCEPTION 'no organization'; END IF;
  IF p_seq >= (SELECT seq FROM audit_heads WHERE org_id = v_org) THEN
    RAISE EXCEPTION 'the newest event is never pruned';
  END IF;
  DELETE FROM audit_events WHERE org_id = v_org AND seq <= p_seq;
  GET DIAGNOSTICS v_removed = ROW_COUNT;
  UPDATE audit_heads SET checkpoint_seq = p_seq, checkpoint_hash = p_hash, checkpoint_at = p_at,
                         checkpoint_signature = p_signature
  WHERE org_id = v_org;
  RETURN v_removed;
END $$;
)sql",
    // People (issue 5). Users, sessions and sign-in throttling belong to no org: the
    // application reads them directly. Memberships, custom roles, invitations and session policy
    // are org-owned, behind row level security; the user's own list of orgs and the lookup of an
    // invitation by its token cross orgs through SECURITY DEFINER functions.
    R"sql(
CREATE TABLE users (
  id                  text PRIMARY KEY,
  email               text NOT NULL UNIQUE,
  name                text NOT NULL,
  password_hash       text NOT NULL,
  created_at          bigint NOT NULL,
  password_changed_at bigint NOT NULL,
  disabled_at         bigint,
  last_login_at       bigint
);
CREATE TABLE login_failures (
  subject      text PRIMARY KEY,
  failures     integer NOT NULL,
  locked_until bigint NOT NULL,
  updated_at   bigint NOT NULL
);
CREATE TABLE sessions (
  id                text PRIMARY KEY,
  family_id         text NOT NULL,
  user_id           text NOT NULL REFERENCES users(id),
  token_hash        text NOT NULL UNIQUE,
  created_at        bigint NOT NULL,
  family_created_at bigint NOT NULL,
  last_seen_at      bigint NOT NULL,
  auth_time         bigint NOT NULL,
  idle_timeout      bigint NOT NULL,
  expires_at        bigint NOT NULL,
  rotated_at        bigint,
  revoked_at        bigint,
  client_ip         text NOT NULL,
  user_agent        text NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id, family_id);
CREATE TABLE memberships (
  org_id     text NOT NULL REFERENCES orgs(id),
  user_id    text NOT NULL REFERENCES users(id),
  role       text NOT NULL,
  created_at bigint NOT NULL,
  PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);
CREATE TABLE roles (
  org_id      text NOT NULL REFERENCES orgs(id),
  name        text NOT NULL,
  description text NOT NULL,
  permissions text NOT NULL,
  created_at  bigint NOT NULL,
  PRIMARY KEY (org_id, name)
);
CREATE TABLE invitations (
  id          text PRIMARY KEY,
  org_id      text NOT NULL REFERENCES orgs(id),
  email       text NOT NULL,
  role        text NOT NULL,
  token_hash  text NOT NULL UNIQUE,
  invited_by  text NOT NULL,
  created_at  bigint NOT NULL,
  expires_at  bigint NOT NULL,
  accepted_at bigint,
  accepted_by text NOT NULL,
  revoked_at  bigint
);
CREATE INDEX invitations_by_org ON invitations (org_id, created_at);
CREATE TABLE org_session_policy (
  org_id       text PRIMARY KEY REFERENCES orgs(id),
  idle_timeout bigint NOT NULL
);
ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON memberships
  USING (org_id = current_setting('gatehouse.org_id', true) OR current_user = 'gatehouse_definer')
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true));
ALTER TABLE roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE roles FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON roles
  USING (org_id = current_setting('gatehouse.org_id', true))
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true));
ALTER TABLE invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON invitations
  USING (org_id = current_setting('gatehouse.org_id', true) OR current_user = 'gatehouse_definer')
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true));
ALTER TABLE org_session_policy ENABLE ROW LEVEL SECURITY;
ALTER TABLE org_session_policy FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON org_session_policy
  USING (org_id = current_setting('gatehouse.org_id', true) OR current_user = 'gatehouse_definer')
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true));

CREATE FUNCTION gh_orgs_of_user(p_user text)
  RETURNS TABLE (org_id text, org_name text, role text, created_at bigint, idle_timeout bigint)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = gatehouse, pg_temp AS $$
  SELECT m.org_id, o.name, m.role, m.created_at, p.idle_timeout
  FROM memberships m JOIN orgs o ON o.id = m.org_id
  LEFT JOIN org_session_policy p ON p.org_id = m.org_id
  WHERE m.user_id = p_user ORDER BY m.created_at, m.org_id
$$;
CREATE FUNCTION gh_find_invitation(p_hash text) RETURNS SETOF invitations
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = gatehouse, pg_temp AS $$
  SELECT * FROM invitations WHERE token_hash = p_hash LIMIT 1
$$;
)sql",
    // Abuse protection (issue 6): an org's own rate limit and IP allowlist (subject ''), and a
    // key's rate limit (subject = key id), announced on the key invalidation log.
    R"sql(
CREATE TABLE access_policies (
  org_id       text NOT NULL REFERENCES orgs(id),
  subject      text NOT NULL,
  rate_limit   text NOT NULL DEFAULT '',
  ip_allowlist text NOT NULL DEFAULT '[]',
  allowlist_mode text NOT NULL DEFAULT 'enforce',
  quota        text NOT NULL DEFAULT '',
  updated_at   bigint NOT NULL,
  PRIMARY KEY (org_id, subject)
);
CREATE TABLE key_credits (
  org_id text NOT NULL REFERENCES orgs(id),
  key_id text NOT NULL,
  period text NOT NULL,
  used   bigint NOT NULL,
  PRIMARY KEY (key_id, period)
);
ALTER TABLE key_credits ENABLE ROW LEVEL SECURITY;
ALTER TABLE key_credits FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON key_credits
  USING (org_id = current_setting('gatehouse.org_id', true))
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true));
ALTER TABLE access_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE access_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY org_isolation ON access_policies
  USING (org_id = current_setting('gatehouse.org_id', true))
  WITH CHECK (org_id = current_setting('gatehouse.org_id', true) AND
              (subject = '' OR EXISTS (SELECT 1 FROM api_keys k
                                       WHERE k.id = access_policies.subject AND
                                             k.org_id = access_policies.org_id)));
CREATE FUNCTION gh_log_policy_invalidation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  h text;
BEGIN
  IF NEW.subject = '' THEN
    h := 'org:' || NEW.org_id;
  ELSE
    SELECT key_hash INTO h FROM api_keys WHERE id = NEW.subject;
  END IF;
  PERFORM pg_advisory_xact_lock(7120001);
  INSERT INTO key_invalidations (key_hash, created_at)
  VALUES (h, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  PERFORM pg_notify('gatehouse_key_invalidations', h);
  RETURN NEW;
END $$;
CREATE TRIGGER access_policies_invalidate AFTER INSERT OR UPDATE ON access_policies
  FOR EACH ROW EXECUTE FUNCTION gh_log_policy_invalidation();
)sql",
    // The serving nodes that share this database (cluster/node_registry.h), each seen every few
    // seconds, with the fingerprints of the peppers it holds: a node whose peppers cannot verify
    // what another makes is refused at start. Belongs to no org.
    R"sql(
CREATE TABLE nodes (
  id              text PRIMARY KEY,
  host            text NOT NULL,
  pid             bigint NOT NULL,
  pid_namespace   text NOT NULL,
  started_at      bigint NOT NULL,
  seen_at         bigint NOT NULL,
  pepper          text NOT NULL,
  previous_pepper text NOT NULL,
  next_pepper     text NOT NULL
);
)sql",
    // The key prefix each node makes and accepts: a node with another prefix refuses the keys
    // the others make. '' for an entry of a node from before this column.
    R"sql(
ALTER TABLE nodes ADD COLUMN key_prefix text NOT NULL DEFAULT '';
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
    int columns() const { return PQnfields(r_.get()); }
    bool IsNull(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }

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

  // A statement built at run time (not prepared): for multi-row inserts whose size varies.
  Result<Rows> ExecOnce(const std::string& sql, const std::vector<Param>& params) {
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    auto r = Wrap(PQexecParams(c_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0));
    auto st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Failure(r.get(), "statement");
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
    // Connection failures, the server shutting down or out of disk, memory or connections
    // (53...), a cancelled statement: each passes, and the caller may try again.
    if (!c_.healthy() || s.starts_with("08") || s.starts_with("53") || s == "57P01" ||
        s == "57P02" || s == "57P03" || s == "57014") {
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

// Appends `events` (all of the transaction's org) to that org's chain. The head row is locked
// (FOR UPDATE) so that nodes appending to one org at once take turns; it is created first when
// missing, since FOR UPDATE cannot lock a row that is not there yet.
Result<void> AppendAuditIn(PgStore::Tx& tx, std::string_view org_id, AuditEvent* events,
                           std::size_t count) {
  if (count == 0) return {};
  auto created = tx.Exec(
      "INSERT INTO audit_heads (org_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
      {P(org_id), P(kGenesisHash)});
  if (!created) return tl::unexpected(created.error());
  std::vector<Param> hp;
  AddOrg(hp, org_id);
  auto head = tx.Exec(
      "SELECT seq, hash FROM audit_heads " GH_ORG_FILTER("WHERE org_id = $1 ") "FOR UPDATE", hp);
  if (!head) return tl::unexpected(head.error());
  if (head->size() != 1) return Fail(ErrorCode::kInternal, "audit head missing");
  std::int64_t last_seq = head->Int(0, 0);
  std::string last_hash = head->Text(0, 1);
  // Many rows per statement: a round trip per event would cap a node at what the network
  // latency allows, whatever the batch size.
  constexpr std::size_t kRowsPerStatement = 500;  // 14 parameters each, well under 65535
  for (std::size_t start = 0; start < count; start += kRowsPerStatement) {
    std::size_t end = std::min(count, start + kRowsPerStatement);
    std::string sql =
        "INSERT INTO audit_events (org_id, seq, at, actor, action, resource, result, status, "
        "client_ip, user_agent, request_id, details, prev_hash, hash) VALUES ";
    std::vector<Param> params;
    params.reserve((end - start) * 14);
    for (std::size_t i = start; i < end; ++i) {
      AuditEvent& e = events[i];
      e.org_id = std::string(org_id);
      LinkAuditEvent(e, last_seq, last_hash);
      last_seq = e.seq;
      last_hash = e.hash;
      sql += i == start ? "(" : ",(";
      for (std::size_t col = 0; col < 14; ++col) {
        if (col) sql += ',';
        sql += '$';
        sql += std::to_string(params.size() + col + 1);
      }
      sql += ')';
      for (auto& p : {P(e.org_id), P(e.seq), P(e.at), P(e.actor), P(e.action), P(e.resource),
                      P(e.result), P(static_cast<std::int64_t>(e.status)), P(e.client_ip),
                      P(e.user_agent), P(e.request_id), P(e.details), P(e.prev_hash), P(e.hash)}) {
        params.push_back(p);
      }
    }
    auto r = tx.ExecOnce(sql, params);
    if (!r) return tl::unexpected(r.error());
  }
  std::vector<Param> up{P(last_seq), P(last_hash)};
  AddOrg(up, org_id);
  auto u =
      tx.Exec("UPDATE audit_heads SET seq = $1, hash = $2 " GH_ORG_FILTER("WHERE org_id = $3"), up);
  if (!u) return tl::unexpected(u.error());
  return {};
}

Result<void> AppendOneAuditIn(PgStore::Tx& tx, std::string_view org_id, const AuditEvent& audit) {
  AuditEvent e = audit;
  return AppendAuditIn(tx, org_id, &e, 1);
}

constexpr const char* kAuditColumns =
    "org_id, seq, at, actor, action, resource, result, status, client_ip, user_agent, "
    "request_id, details, prev_hash, hash";

AuditEvent ReadAuditEvent(const PgStore::Tx::Rows& r, int row) {
  AuditEvent e;
  e.org_id = r.Text(row, 0);
  e.seq = r.Int(row, 1);
  e.at = r.Int(row, 2);
  e.actor = r.Text(row, 3);
  e.action = r.Text(row, 4);
  e.resource = r.Text(row, 5);
  e.result = r.Text(row, 6);
  e.status = static_cast<int>(r.Int(row, 7));
  e.client_ip = r.Text(row, 8);
  e.user_agent = r.Text(row, 9);
  e.request_id = r.Text(row, 10);
  e.details = r.Text(row, 11);
  e.prev_hash = r.Text(row, 12);
  e.hash = r.Text(row, 13);
  return e;
}

Result<Org> GetOrgIn(PgStore::Tx& tx, std::string_view org_id, bool for_update) {
  std::vector<Param> params;
  AddOrg(params, org_id);
  auto r = tx.Exec(
      for_update ? "SELECT id, name, created_at, audit_retention_days FROM orgs " GH_ORG_FILTER(
                       "WHERE id = $1 ") "FOR UPDATE"
                 : "SELECT id, name, created_at, audit_retention_days FROM orgs " GH_ORG_FILTER(
                       "WHERE id = $1"),
      params);
  if (!r) return tl::unexpected(r.error());
  if (r->size() == 0) return Fail(ErrorCode::kNotFound, "organization not found");
  return Org{r->Text(0, 0), r->Text(0, 1), r->Int(0, 2), static_cast<int>(r->Int(0, 3))};
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
      "ALTER FUNCTION gh_prune_audit(bigint, text, bigint, text) OWNER TO " +
      kDefinerRole +
      ";"
      "ALTER FUNCTION gh_orgs_of_user(text) OWNER TO " +
      kDefinerRole +
      ";"
      "ALTER FUNCTION gh_find_invitation(text) OWNER TO " +
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
      "GRANT SELECT, DELETE ON audit_events TO " +
      kDefinerRole +
      ";"
      "GRANT SELECT, UPDATE ON audit_heads TO " +
      kDefinerRole +
      ";"
      "GRANT SELECT ON memberships, org_session_policy, invitations TO " +
      kDefinerRole +
      ";"
      "REVOKE ALL ON ALL TABLES IN SCHEMA gatehouse FROM " +
      role +
      ";"
      "GRANT SELECT, INSERT, UPDATE ON orgs, api_keys TO " +
      role +
      ";"
      "GRANT SELECT, INSERT ON key_invalidations, gh_meta, audit_events TO " +
      role +
      ";"
      // The audit writer's journal progress is a row of gh_meta it updates.
      "GRANT UPDATE ON gh_meta TO " +
      role +
      ";"
      "GRANT SELECT, INSERT, UPDATE ON audit_heads, key_usage_daily TO " +
      role +
      ";"
      "GRANT SELECT ON schema_migrations TO " +
      role +
      ";"
      "GRANT SELECT, INSERT, UPDATE ON users, invitations TO " +
      role +
      ";"
      "GRANT SELECT, INSERT, UPDATE, DELETE ON sessions, login_failures, memberships, roles, "
      "org_session_policy, access_policies, key_credits, nodes TO " +
      role +
      ";"
      "GRANT USAGE ON SEQUENCE key_invalidations_seq_seq TO " +
      role +
      ";"
      "REVOKE ALL ON FUNCTION gh_find_key_by_hash(text), gh_record_key_usage(text, bigint, text),"
      " gh_list_orgs(), gh_prune_audit(bigint, text, bigint, text), gh_orgs_of_user(text),"
      " gh_find_invitation(text) FROM PUBLIC;"
      "GRANT EXECUTE ON FUNCTION gh_find_key_by_hash(text), "
      "gh_record_key_usage(text, bigint, text), gh_list_orgs(), "
      "gh_prune_audit(bigint, text, bigint, text), gh_orgs_of_user(text), "
      "gh_find_invitation(text) TO " +
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

Result<void> PgStore::InsertOrg(const Org& org, const AuditEvent& audit) {
  return InTransaction<void>(org.id, [&](Tx& tx) -> Result<void> {
    auto r = tx.Exec(
        "INSERT INTO orgs (id, name, created_at, audit_retention_days) VALUES ($1, $2, $3, $4)",
        {P(org.id), P(org.name), P(org.created_at),
         P(static_cast<std::int64_t>(org.audit_retention_days))});
    if (!r) return tl::unexpected(r.error());
    return AppendOneAuditIn(tx, org.id, audit);
  });
}

Result<Org> PgStore::GetOrg(std::string_view org_id) {
  return InTransaction<Org>(org_id, [&](Tx& tx) { return GetOrgIn(tx, org_id, false); });
}

Result<Org> PgStore::UpdateOrg(std::string_view org_id, const OrgUpdate& update,
                               const AuditEvent& audit) {
  return InTransaction<Org>(org_id, [&](Tx& tx) -> Result<Org> {
    auto before = GetOrgIn(tx, org_id, true);
    if (!before) return before;
    Org after = *before;
    if (update.name) after.name = *update.name;
    if (update.audit_retention_days) after.audit_retention_days = *update.audit_retention_days;
    std::vector<Param> params{P(after.name),
                              P(static_cast<std::int64_t>(after.audit_retention_days))};
    AddOrg(params, org_id);
    auto r = tx.Exec(
        "UPDATE orgs SET name = $1, audit_retention_days = $2 " GH_ORG_FILTER("WHERE id = $3"),
        params);
    if (!r) return tl::unexpected(r.error());
    AuditEvent e = audit;
    e.details = OrgChangeDetails(*before, after);
    if (auto a = AppendOneAuditIn(tx, org_id, e); !a) return tl::unexpected(a.error());
    return after;
  });
}

Result<std::vector<Org>> PgStore::ListOrgs() {
  return InTransaction<std::vector<Org>>("", [&](Tx& tx) -> Result<std::vector<Org>> {
    auto r = tx.Exec("SELECT id, name, created_at, audit_retention_days FROM gh_list_orgs()", {});
    if (!r) return tl::unexpected(r.error());
    std::vector<Org> out;
    for (int i = 0; i < r->size(); ++i)
      out.push_back(
          Org{r->Text(i, 0), r->Text(i, 1), r->Int(i, 2), static_cast<int>(r->Int(i, 3))});
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
                                       bool bootstrap, const AuditEvent& audit) {
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
    auto o = tx.Exec(
        "INSERT INTO orgs (id, name, created_at, audit_retention_days) VALUES ($1, $2, $3, $4)",
        {P(org.id), P(org.name), P(org.created_at),
         P(static_cast<std::int64_t>(org.audit_retention_days))});
    if (!o) return tl::unexpected(o.error());
    if (auto k = InsertKeyIn(tx, owner_key); !k) return k;
    return AppendOneAuditIn(tx, org.id, audit);
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

Result<void> PgStore::InsertKey(const ApiKeyRecord& key, const AuditEvent& audit) {
  return InTransaction<void>(key.org_id, [&](Tx& tx) -> Result<void> {
    if (auto r = InsertKeyIn(tx, key); !r) return r;
    return AppendOneAuditIn(tx, key.org_id, audit);
  });
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

Result<bool> PgStore::ReplaceKeyHash(std::string_view org_id, std::string_view key_id,
                                     std::string_view old_hash, std::string_view new_hash) {
  static const std::string sql =
      "UPDATE api_keys SET key_hash = $1 WHERE id = $2 AND key_hash = $3" GH_ORG_FILTER(
          " AND org_id = $4");
  return InTransaction<bool>(org_id, [&](Tx& tx) -> Result<bool> {
    std::vector<Param> params{P(new_hash), P(key_id), P(old_hash)};
    AddOrg(params, org_id);
    auto r = tx.Exec(sql.c_str(), params);
    if (!r) return tl::unexpected(r.error());
    if (r->CommandTuples() != "1") return false;
    // Caches keyed by the old hash drop it, as gh_log_key_invalidation does for a revocation:
    // a node that cached the key under the old hash would otherwise miss its revocation, which
    // is logged under the hash stored then.
    for (const char* step :
         {"SELECT pg_advisory_xact_lock(7120001)",
          "INSERT INTO key_invalidations (key_hash, created_at) "
          "VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)",
          "SELECT pg_notify('gatehouse_key_invalidations', $1)"}) {
      const bool takes_hash = std::string_view(step).find("$1") != std::string_view::npos;
      auto done =
          tx.Exec(step, takes_hash ? std::vector<Param>{P(old_hash)} : std::vector<Param>{});
      if (!done) return tl::unexpected(done.error());
    }
    return true;
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
                                        UnixMicros at, const AuditEvent& audit) {
  static const std::string select =
      std::string("SELECT ") + kKeyColumns +
      " FROM api_keys WHERE id = $1" GH_ORG_FILTER(" AND org_id = $2") " FOR UPDATE";
  return InTransaction<ApiKeyRecord>(org_id, [&](Tx& tx) -> Result<ApiKeyRecord> {
    std::vector<Param> sp{P(key_id)};
    AddOrg(sp, org_id);
    auto r = tx.Exec(select.c_str(), sp);
    if (!r) return tl::unexpected(r.error());
    if (r->size() == 0) return Fail(ErrorCode::kNotFound, "API key not found");
    ApiKeyRecord key = ReadKey(*r, 0);
    AuditEvent e = audit;
    if (key.revoked_at) {
      e.details = DetailsOf({{"note", "already revoked"}});
    } else {
      // The invalidation for other nodes is written by a trigger (migration 1).
      std::vector<Param> params{P(at), P(key_id)};
      AddOrg(params, org_id);
      auto u = tx.Exec(
          "UPDATE api_keys SET revoked_at = $1 WHERE id = $2" GH_ORG_FILTER(" AND org_id = $3"),
          params);
      if (!u) return tl::unexpected(u.error());
      key.revoked_at = at;
    }
    if (auto a = AppendOneAuditIn(tx, org_id, e); !a) return tl::unexpected(a.error());
    return key;
  });
}

Result<void> PgStore::RotateKey(std::string_view org_id, std::string_view old_key_id,
                                const ApiKeyRecord& replacement, UnixMicros old_expires_at,
                                const AuditEvent& audit) {
  return InTransaction<void>(org_id, [&](Tx& tx) -> Result<void> {
    std::vector<Param> params{P(old_expires_at), P(old_key_id)};
    AddOrg(params, org_id);
    auto u = tx.Exec(
        "UPDATE api_keys SET expires_at = $1 WHERE id = $2 AND revoked_at IS NULL" GH_ORG_FILTER(
            " AND org_id = $3") " RETURNING id",
        params);
    if (!u) return tl::unexpected(u.error());
    if (u->size() == 0) return Fail(ErrorCode::kNotFound, "API key not found");
    if (auto k = InsertKeyIn(tx, replacement); !k) return k;
    return AppendOneAuditIn(tx, org_id, audit);
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

Result<void> PgStore::AppendAudit(std::vector<AuditEvent>& events,
                                  const std::vector<KeyUsageCount>& usage, bool fsync,
                                  const JournalProgress* progress) {
  if (events.empty() && usage.empty() && !progress) return {};
  if (auto r = RequireAuditOrgs(events); !r) return r;
  // Orgs in a fixed order, so that two nodes' batches lock the same heads in the same order.
  std::vector<std::size_t> order(events.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return events[a].org_id < events[b].org_id;
  });
  std::vector<AuditEvent> linked(events.size());
  auto done = InTransaction<void>("", [&](Tx& tx) -> Result<void> {
    if (!fsync) {
      // The commit returns once the server has the WAL record, before it is flushed: the batch
      // survives this process, and the database server's own crash-safety covers the rest.
      auto off = tx.Exec("SELECT set_config('synchronous_commit', 'off', true)", {});
      if (!off) return tl::unexpected(off.error());
    }
    std::vector<AuditEvent> group;
    for (std::size_t i = 0; i < order.size();) {
      const std::string& org = events[order[i]].org_id;
      std::size_t j = i;
      group.clear();
      for (; j < order.size() && events[order[j]].org_id == org; ++j) {
        group.push_back(events[order[j]]);
      }
      // Each org's rows go in under that org's row level security.
      auto set = tx.Exec("SELECT set_config('gatehouse.org_id', $1, true)", {P(org)});
      if (!set) return tl::unexpected(set.error());
      if (auto r = AppendAuditIn(tx, org, group.data(), group.size()); !r) return r;
      for (std::size_t k = i; k < j; ++k) linked[order[k]] = std::move(group[k - i]);
      i = j;
    }
    for (const auto& u : usage) {
      auto set = tx.Exec("SELECT set_config('gatehouse.org_id', $1, true)", {P(u.org_id)});
      if (!set) return tl::unexpected(set.error());
      std::vector<Param> p{P(u.org_id), P(u.key_id), P(u.day)};
      for (int cls = 2; cls <= 5; ++cls) p.push_back(P(cls == u.status_class ? u.count : 0));
      auto r = tx.Exec(
          "INSERT INTO key_usage_daily (org_id, key_id, day, status_2xx, status_3xx, status_4xx, "
          "status_5xx) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (org_id, key_id, day) DO "
          "UPDATE SET status_2xx = key_usage_daily.status_2xx + excluded.status_2xx, "
          "status_3xx = key_usage_daily.status_3xx + excluded.status_3xx, "
          "status_4xx = key_usage_daily.status_4xx + excluded.status_4xx, "
          "status_5xx = key_usage_daily.status_5xx + excluded.status_5xx",
          p);
      if (!r) return tl::unexpected(r.error());
    }
    if (progress) {
      auto r = tx.Exec(
          "INSERT INTO gh_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET "
          "value = excluded.value",
          {P(JournalMetaName(progress->journal_id)), P(FormatJournalMark(progress->mark))});
      if (!r) return tl::unexpected(r.error());
    }
    return {};
  });
  if (!done) return done;
  events = std::move(linked);
  return {};
}

Result<std::optional<JournalMark>> PgStore::JournalProgressOf(std::string_view journal_id) {
  using Out = std::optional<JournalMark>;
  return InTransaction<Out>("", [&](Tx& tx) -> Result<Out> {
    auto r = tx.Exec("SELECT value FROM gh_meta WHERE name = $1", {P(JournalMetaName(journal_id))});
    if (!r) return tl::unexpected(r.error());
    if (r->size() == 0) return Out{};
    return ParseJournalMark(r->Text(0, 0));
  });
}

Result<AuditPage> PgStore::ListAudit(std::string_view org_id, const AuditQuery& query) {
  static const std::string sql =
      std::string("SELECT ") + kAuditColumns +
      " FROM audit_events WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action "
      "= $2 OR (right($2, 2) = '.*' AND left(action, length($2) - 1) = left($2, length($2) - 1)))"
      " AND ($3::text IS NULL OR resource = $3) AND ($4::text IS NULL OR result = $4)"
      " AND ($5::bigint IS NULL OR at >= $5) AND ($6::bigint IS NULL OR at < $6)"
      " AND ($7::bigint IS NULL OR seq < $7)" GH_ORG_FILTER(
          " AND org_id = $9") " ORDER BY seq DESC LIMIT $8";
  auto opt = [](const std::optional<std::string>& v) { return v ? Param(*v) : std::nullopt; };
  return InTransaction<AuditPage>(org_id, [&](Tx& tx) -> Result<AuditPage> {
    std::vector<Param> params{opt(query.actor),    opt(query.action),
                              opt(query.resource), opt(query.result),
                              P(query.since),      P(query.until),
                              P(query.before_seq), P(static_cast<std::int64_t>(query.limit) + 1)};
    AddOrg(params, org_id);
    auto r = tx.Exec(sql.c_str(), params);
    if (!r) return tl::unexpected(r.error());
    AuditPage page;
    for (int i = 0; i < r->size(); ++i) page.events.push_back(ReadAuditEvent(*r, i));
    if (static_cast<int>(page.events.size()) > query.limit) {
      page.events.pop_back();
      page.next_cursor = std::to_string(page.events.back().seq);
    }
    return page;
  });
}

Result<std::vector<AuditEvent>> PgStore::AuditChain(std::string_view org_id, std::int64_t after_seq,
                                                    int limit) {
  static const std::string sql = std::string("SELECT ") + kAuditColumns +
                                 " FROM audit_events WHERE seq > $1" GH_ORG_FILTER(
                                     " AND org_id = $3") " ORDER BY seq LIMIT $2";
  using Out = std::vector<AuditEvent>;
  return InTransaction<Out>(org_id, [&](Tx& tx) -> Result<Out> {
    std::vector<Param> params{P(after_seq), P(static_cast<std::int64_t>(limit))};
    AddOrg(params, org_id);
    auto r = tx.Exec(sql.c_str(), params);
    if (!r) return tl::unexpected(r.error());
    Out out;
    for (int i = 0; i < r->size(); ++i) out.push_back(ReadAuditEvent(*r, i));
    return out;
  });
}

namespace {
Result<AuditHead> GetAuditHeadIn(PgStore::Tx& tx, std::string_view org_id) {
  std::vector<Param> params;
  AddOrg(params, org_id);
  auto r = tx.Exec(
      "SELECT seq, hash, checkpoint_seq, checkpoint_hash, checkpoint_at, checkpoint_signature "
      "FROM audit_heads " GH_ORG_FILTER("WHERE org_id = $1"),
      params);
  if (!r) return tl::unexpected(r.error());
  AuditHead head;
  head.hash = head.checkpoint_hash = std::string(kGenesisHash);
  if (r->size() == 1) {
    head.seq = r->Int(0, 0);
    head.hash = r->Text(0, 1);
    head.checkpoint_seq = r->Int(0, 2);
    if (head.checkpoint_seq > 0) head.checkpoint_hash = r->Text(0, 3);
    head.checkpoint_at = r->Int(0, 4);
    head.checkpoint_signature = r->Text(0, 5);
  }
  return head;
}
}  // namespace

Result<AuditHead> PgStore::GetAuditHead(std::string_view org_id) {
  return InTransaction<AuditHead>(org_id, [&](Tx& tx) { return GetAuditHeadIn(tx, org_id); });
}

Result<std::int64_t> PgStore::PruneAudit(
    std::string_view org_id, UnixMicros before,
    const std::function<std::string(std::string_view, const AuditHead&)>& sign,
    const AuditEvent& audit) {
  return InTransaction<std::int64_t>(org_id, [&](Tx& tx) -> Result<std::int64_t> {
    std::vector<Param> lp;
    AddOrg(lp, org_id);
    auto lock =
        tx.Exec("SELECT 1 FROM audit_heads " GH_ORG_FILTER("WHERE org_id = $1 ") "FOR UPDATE", lp);
    if (!lock) return tl::unexpected(lock.error());
    auto head = GetAuditHeadIn(tx, org_id);
    if (!head) return tl::unexpected(head.error());
    std::vector<Param> cp{P(before), P(head->seq), P(head->checkpoint_seq)};
    AddOrg(cp, org_id);
    auto cut = tx.Exec(
        "SELECT seq, hash, at FROM audit_events WHERE at < $1 AND seq < $2 AND "
        "seq > $3" GH_ORG_FILTER(" AND org_id = $4") " ORDER BY seq DESC LIMIT 1",
        cp);
    if (!cut) return tl::unexpected(cut.error());
    if (cut->size() == 0) return std::int64_t{0};
    AuditHead checkpoint = *head;
    checkpoint.checkpoint_seq = cut->Int(0, 0);
    checkpoint.checkpoint_hash = cut->Text(0, 1);
    checkpoint.checkpoint_at = cut->Int(0, 2);
    checkpoint.checkpoint_signature = sign(org_id, checkpoint);
    auto removed = tx.Exec("SELECT gh_prune_audit($1, $2, $3, $4)",
                           {P(checkpoint.checkpoint_seq), P(checkpoint.checkpoint_hash),
                            P(checkpoint.checkpoint_at), P(checkpoint.checkpoint_signature)});
    if (!removed) return tl::unexpected(removed.error());
    std::int64_t n = removed->Int(0, 0);
    AuditEvent e = audit;
    e.details = DetailsOf({{"removed", std::to_string(n)},
                           {"checkpoint_seq", std::to_string(checkpoint.checkpoint_seq)}});
    if (auto a = AppendOneAuditIn(tx, org_id, e); !a) return tl::unexpected(a.error());
    return n;
  });
}

Result<std::vector<KeyUsageDay>> PgStore::KeyUsageDays(std::string_view org_id,
                                                       std::string_view key_id,
                                                       std::string_view since_day) {
  using Out = std::vector<KeyUsageDay>;
  return InTransaction<Out>(org_id, [&](Tx& tx) -> Result<Out> {
    std::vector<Param> params{P(key_id), P(since_day)};
    AddOrg(params, org_id);
    auto r = tx.Exec(
        "SELECT day, status_2xx, status_3xx, status_4xx, status_5xx FROM key_usage_daily "
        "WHERE key_id = $1 AND day >= $2" GH_ORG_FILTER(" AND org_id = $3") " ORDER BY day",
        params);
    if (!r) return tl::unexpected(r.error());
    Out out;
    for (int i = 0; i < r->size(); ++i) {
      out.push_back(
          KeyUsageDay{r->Text(i, 0), r->Int(i, 1), r->Int(i, 2), r->Int(i, 3), r->Int(i, 4)});
    }
    return out;
  });
}

namespace {

// store/sql.h over one PostgreSQL transaction, whose org row level security enforces.
class PgSqlTx final : public SqlTx {
 public:
  PgSqlTx(PgStore::Tx& tx, std::string_view org_id) : tx_(tx), org_(org_id), current_(org_id) {}

  Dialect dialect() const override { return Dialect::kPostgres; }

  Result<SqlRows> Query(const char* sql, const std::vector<SqlParam>& params) override {
    if (auto r = SetOrg(org_); !r) return tl::unexpected(r.error());
    std::vector<Param> values(params.begin(), params.end());
    auto rows = tx_.Exec(Dialected(sql), values);
    if (!rows) return tl::unexpected(rows.error());
    SqlRows out;
    int columns = rows->columns();
    for (int i = 0; i < rows->size(); ++i) {
      auto& row = out.rows.emplace_back();
      row.reserve(columns);
      for (int col = 0; col < columns; ++col) {
        if (rows->IsNull(i, col)) {
          row.emplace_back(std::nullopt);
        } else {
          row.emplace_back(rows->Text(i, col));
        }
      }
    }
    return out;
  }

  // A global transaction may record events of several orgs: each is appended with its own org
  // set, so that row level security checks every one.
  Result<void> Append(const AuditEvent& event) override {
    if (auto r = SetOrg(event.org_id); !r) return r;
    return AppendOneAuditIn(tx_, event.org_id, event);
  }

 private:
  Result<void> SetOrg(const std::string& org) {
    if (org == current_) return {};
    auto r = tx_.Exec("SELECT set_config('gatehouse.org_id', $1, true)", {P(org)});
    if (!r) return tl::unexpected(r.error());
    current_ = org;
    return {};
  }

  // The org-owned tables are named as themselves; row level security shows the org's rows.
  static std::string AsPostgres(std::string_view sql) {
    return ReplaceAll(ReplaceAll(std::string(sql), "tenant_", ""), "{lock}", "FOR UPDATE");
  }
  static const char* Dialected(const char* sql) { return DialectText(sql, &AsPostgres); }

  PgStore::Tx& tx_;
  std::string org_;
  std::string current_;
};

}  // namespace

Result<void> PgStore::RunSql(std::string_view org_id, bool write, const SqlBody& body) {
  (void)write;  // row locks ({lock}) serialise writers where it matters
  return InTransaction<void>(org_id, [&](Tx& tx) -> Result<void> {
    PgSqlTx sql(tx, org_id);
    return body(sql);
  });
}

}  // namespace gatehouse

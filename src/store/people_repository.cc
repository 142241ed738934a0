#include "store/people_repository.h"

#include "store/columns.h"
#include "store/repository.h"

namespace gatehouse {

using namespace repository;

namespace {

#define GH_USER_COLUMNS \
  "id, email, name, password_hash, created_at, password_changed_at, disabled_at, last_login_at"

UserRecord ReadUser(const SqlRows& r, int i) {
  UserRecord u;
  u.id = r.Text(i, 0);
  u.email = r.Text(i, 1);
  u.name = r.Text(i, 2);
  u.password_hash = r.Text(i, 3);
  u.created_at = r.Int(i, 4);
  u.password_changed_at = r.Int(i, 5);
  u.disabled_at = r.OptInt(i, 6);
  u.last_login_at = r.OptInt(i, 7);
  return u;
}

#define GH_SESSION_COLUMNS                                                            \
  "id, family_id, user_id, token_hash, created_at, family_created_at, last_seen_at, " \
  "auth_time, idle_timeout, expires_at, rotated_at, revoked_at, client_ip, user_agent"

SessionRecord ReadSession(const SqlRows& r, int i) {
  SessionRecord s;
  s.id = r.Text(i, 0);
  s.family_id = r.Text(i, 1);
  s.user_id = r.Text(i, 2);
  s.token_hash = r.Text(i, 3);
  s.created_at = r.Int(i, 4);
  s.family_created_at = r.Int(i, 5);
  s.last_seen_at = r.Int(i, 6);
  s.auth_time = r.Int(i, 7);
  s.idle_timeout = r.Int(i, 8);
  s.expires_at = r.Int(i, 9);
  s.rotated_at = r.OptInt(i, 10);
  s.revoked_at = r.OptInt(i, 11);
  s.client_ip = r.Text(i, 12);
  s.user_agent = r.Text(i, 13);
  return s;
}

#define GH_INVITATION_COLUMNS                                                              \
  "id, org_id, email, role, token_hash, invited_by, created_at, expires_at, accepted_at, " \
  "accepted_by, revoked_at"

Invitation ReadInvitation(const SqlRows& r, int i) {
  Invitation v;
  v.id = r.Text(i, 0);
  v.org_id = r.Text(i, 1);
  v.email = r.Text(i, 2);
  v.role = r.Text(i, 3);
  v.token_hash = r.Text(i, 4);
  v.invited_by = r.Text(i, 5);
  v.created_at = r.Int(i, 6);
  v.expires_at = r.Int(i, 7);
  v.accepted_at = r.OptInt(i, 8);
  v.accepted_by = r.Text(i, 9);
  v.revoked_at = r.OptInt(i, 10);
  return v;
}

RoleRecord ReadRole(const SqlRows& r, int i) {
  return RoleRecord{r.Text(i, 0), r.Text(i, 1), r.Text(i, 2), SplitWords(r.Text(i, 3)),
                    r.Int(i, 4)};
}

Result<void> InsertUserIn(SqlTx& tx, const UserRecord& u) {
  auto r =
      tx.Query("INSERT INTO users (" GH_USER_COLUMNS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
               {SqlText(u.id), SqlText(u.email), SqlText(u.name), SqlText(u.password_hash),
                SqlInt(u.created_at), SqlInt(u.password_changed_at), SqlOptInt(u.disabled_at),
                SqlOptInt(u.last_login_at)});
  if (!r) {
    if (r.error().code == ErrorCode::kAlreadyExists) {
      return Fail(ErrorCode::kAlreadyExists, "a user with that email already exists");
    }
    return tl::unexpected(r.error());
  }
  return {};
}

Result<void> InsertMemberIn(SqlTx& tx, const Membership& m) {
  auto r = tx.Query(
      "INSERT INTO tenant_memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
      {SqlText(m.org_id), SqlText(m.user_id), SqlText(m.role), SqlInt(m.created_at)});
  if (!r) {
    if (r.error().code == ErrorCode::kAlreadyExists) {
      return Fail(ErrorCode::kAlreadyExists, "that user is already a member of this org");
    }
    return tl::unexpected(r.error());
  }
  return {};
}

Result<std::optional<Membership>> GetMemberIn(SqlTx& tx, std::string_view org_id,
                                              std::string_view user_id, bool lock) {
  auto r =
      tx.Query(lock ? "SELECT m.org_id, m.user_id, m.role, m.created_at FROM tenant_memberships m "
                      "WHERE " GH_ORG_AND("m.org_id = $1") "m.user_id = $2 {lock}"
                    : "SELECT m.org_id, m.user_id, m.role, m.created_at FROM tenant_memberships m "
                      "WHERE " GH_ORG_AND("m.org_id = $1") "m.user_id = $2",
               OrgParams(org_id, {SqlText(user_id)}));
  if (!r) return tl::unexpected(r.error());
  if (r->empty()) return std::optional<Membership>();
  return Membership{r->Text(0, 0), r->Text(0, 1), r->Text(0, 2), r->Int(0, 3), {}, {}, {}};
}

// Refuses a change that would leave the org with no owner. Locks the owners' rows so that two
// owners demoting each other at once cannot both succeed.
Result<void> KeepAnOwner(SqlTx& tx, std::string_view org_id, const Membership& current,
                         bool stays_owner) {
  if (current.role != "owner" || stays_owner) return {};
  auto owners = tx.Query("SELECT user_id FROM tenant_memberships WHERE " GH_ORG_AND(
                             "org_id = $1") "role = 'owner' {lock}",
                         OrgParams(org_id, {}));
  if (!owners) return tl::unexpected(owners.error());
  if (owners->size() <= 1) {
    return Fail(ErrorCode::kAlreadyExists,
                "the last owner cannot leave or be demoted; make another member owner first");
  }
  return {};
}

}  // namespace

// ---- users ----

Result<void> PeopleRepository::InsertUser(const UserRecord& user,
                                          const std::vector<AuditEvent>& audit) {
  return RunVoid(store_, "", [&](SqlTx& tx) -> Result<void> {
    if (auto r = InsertUserIn(tx, user); !r) return r;
    return AppendAll(tx, audit);
  });
}

Result<UserRecord> PeopleRepository::GetUser(std::string_view user_id) {
  return Run<UserRecord>(store_, "", false, [&](SqlTx& tx) -> Result<UserRecord> {
    auto r = tx.Query("SELECT " GH_USER_COLUMNS " FROM users WHERE id = $1", {SqlText(user_id)});
    if (!r) return tl::unexpected(r.error());
    if (r->empty()) return Fail(ErrorCode::kNotFound, "user not found");
    return ReadUser(*r, 0);
  });
}

Result<std::optional<UserRecord>> PeopleRepository::FindUserByEmail(std::string_view email) {
  return Run<std::optional<UserRecord>>(
      store_, "", false, [&](SqlTx& tx) -> Result<std::optional<UserRecord>> {
        auto r =
            tx.Query("SELECT " GH_USER_COLUMNS " FROM users WHERE email = $1", {SqlText(email)});
        if (!r) return tl::unexpected(r.error());
        if (r->empty()) return std::optional<UserRecord>();
        return ReadUser(*r, 0);
      });
}

Result<std::vector<UserRecord>> PeopleRepository::ListUsers() {
  return Run<std::vector<UserRecord>>(
      store_, "", false, [&](SqlTx& tx) -> Result<std::vector<UserRecord>> {
        auto r = tx.Query("SELECT " GH_USER_COLUMNS " FROM users ORDER BY created_at, id", {});
        if (!r) return tl::unexpected(r.error());
        std::vector<UserRecord> out;
        for (int i = 0; i < r->size(); ++i) out.push_back(ReadUser(*r, i));
        return out;
      });
}

Result<void> PeopleRepository::UpdateUser(const UserRecord& u, const std::vector<AuditEvent>& audit,
                                          bool end_sessions, std::string_view keep_family) {
  return RunVoid(store_, "", [&](SqlTx& tx) -> Result<void> {
    auto found = tx.Query("SELECT id FROM users WHERE id = $1 {lock}", {SqlText(u.id)});
    if (!found) return tl::unexpected(found.error());
    if (found->empty()) return Fail(ErrorCode::kNotFound, "user not found");
    auto r = tx.Query(
        "UPDATE users SET name = $2, password_hash = $3, password_changed_at = $4, "
        "disabled_at = COALESCE(disabled_at, $5), last_login_at = $6 WHERE id = $1",
        {SqlText(u.id), SqlText(u.name), SqlText(u.password_hash), SqlInt(u.password_changed_at),
         SqlOptInt(u.disabled_at), SqlOptInt(u.last_login_at)});
    if (!r) return tl::unexpected(r.error());
    if (end_sessions) {
      UnixMicros at = audit.empty() ? u.password_changed_at : audit.front().at;
      auto s = tx.Query(
          "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL AND "
          "family_id <> $3",
          {SqlText(u.id), SqlInt(at), SqlText(keep_family)});
      if (!s) return tl::unexpected(s.error());
    }
    return AppendAll(tx, audit);
  });
}

Result<void> PeopleRepository::RecordSignIn(std::string_view user_id, UnixMicros at,
                                            const std::optional<std::string>& rehashed,
                                            std::string_view checked_hash) {
  return RunVoid(store_, "", [&](SqlTx& tx) -> Result<void> {
    auto r = tx.Query("UPDATE users SET last_login_at = $2 WHERE id = $1",
                      {SqlText(user_id), SqlInt(at)});
    if (!r) return tl::unexpected(r.error());
    if (rehashed) {
      auto h = tx.Query("UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3",
                        {SqlText(user_id), SqlText(*rehashed), SqlText(checked_hash)});
      if (!h) return tl::unexpected(h.error());
    }
    return {};
  });
}

// ---- throttling ----

Result<LoginThrottle> PeopleRepository::GetThrottle(std::string_view subject) {
  return Run<LoginThrottle>(store_, "", false, [&](SqlTx& tx) -> Result<LoginThrottle> {
    auto r = tx.Query("SELECT failures, locked_until FROM login_failures WHERE subject = $1",
                      {SqlText(subject)});
    if (!r) return tl::unexpected(r.error());
    if (r->empty()) return LoginThrottle{};
    return LoginThrottle{static_cast<int>(r->Int(0, 0)), r->Int(0, 1)};
  });
}

Result<LoginThrottle> PeopleRepository::AddLoginFailure(
    std::string_view subject, UnixMicros at, const std::function<UnixMicros(int)>& lock_for) {
  return Run<LoginThrottle>(store_, "", true, [&](SqlTx& tx) -> Result<LoginThrottle> {
    auto up = tx.Query(
        "INSERT INTO login_failures (subject, failures, locked_until, updated_at) "
        "VALUES ($1, 1, 0, $2) ON CONFLICT (subject) DO UPDATE SET "
        "failures = login_failures.failures + 1, updated_at = excluded.updated_at",
        {SqlText(subject), SqlInt(at)});
    if (!up) return tl::unexpected(up.error());
    auto r = tx.Query("SELECT failures FROM login_failures WHERE subject = $1 {lock}",
                      {SqlText(subject)});
    if (!r) return tl::unexpected(r.error());
    if (r->empty()) return Fail(ErrorCode::kInternal, "login failure not recorded");
    LoginThrottle t{static_cast<int>(r->Int(0, 0)), 0};
    UnixMicros lock = lock_for(t.failures);
    if (lock > 0) {
      t.locked_until = at + lock;
      auto set = tx.Query("UPDATE login_failures SET locked_until = $2 WHERE subject = $1",
                          {SqlText(subject), SqlInt(t.locked_until)});
      if (!set) return tl::unexpected(set.error());
    }
    return t;
  });
}

Result<void> PeopleRepository::ClearLoginFailures(std::string_view subject) {
  return RunStatement(store_, "", "DELETE FROM login_failures WHERE subject = $1",
                      {SqlText(subject)});
}

// ---- sessions ----

namespace {
Result<void> InsertSessionIn(SqlTx& tx, const SessionRecord& s) {
  auto r = tx.Query(
      "INSERT INTO sessions (" GH_SESSION_COLUMNS
      ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
      {SqlText(s.id), SqlText(s.family_id), SqlText(s.user_id), SqlText(s.token_hash),
       SqlInt(s.created_at), SqlInt(s.family_created_at), SqlInt(s.last_seen_at),
       SqlInt(s.auth_time), SqlInt(s.idle_timeout), SqlInt(s.expires_at), SqlOptInt(s.rotated_at),
       SqlOptInt(s.revoked_at), SqlText(s.client_ip), SqlText(s.user_agent)});
  if (!r) return tl::unexpected(r.error());
  return {};
}
}  // namespace

Result<void> PeopleRepository::InsertSession(const SessionRecord& session,
                                             const std::vector<AuditEvent>& audit) {
  return RunVoid(store_, "", [&](SqlTx& tx) -> Result<void> {
    if (auto r = InsertSessionIn(tx, session); !r) return r;
    return AppendAll(tx, audit);
  });
}

Result<std::optional<SessionRecord>> PeopleRepository::FindSession(std::string_view token_hash) {
  return Run<std::optional<SessionRecord>>(
      store_, "", false, [&](SqlTx& tx) -> Result<std::optional<SessionRecord>> {
        auto r = tx.Query("SELECT " GH_SESSION_COLUMNS " FROM sessions WHERE token_hash = $1",
                          {SqlText(token_hash)});
        if (!r) return tl::unexpected(r.error());
        if (r->empty()) return std::optional<SessionRecord>();
        return ReadSession(*r, 0);
      });
}

Result<void> PeopleRepository::TouchSession(std::string_view session_id, UnixMicros at,
                                            std::string_view ip) {
  return RunStatement(
      store_, "",
      "UPDATE sessions SET last_seen_at = $2, client_ip = $3 WHERE id = $1 AND last_seen_at < $2",
      {SqlText(session_id), SqlInt(at), SqlText(ip)});
}

Result<void> PeopleRepository::RotateSession(std::string_view old_id, const SessionRecord& next,
                                             UnixMicros at, const std::vector<AuditEvent>& audit) {
  return RunVoid(store_, "", [&](SqlTx& tx) -> Result<void> {
    auto old = tx.Query(
        "SELECT id FROM sessions WHERE id = $1 AND rotated_at IS NULL AND revoked_at IS NULL "
        "{lock}",
        {SqlText(old_id)});
    if (!old) return tl::unexpected(old.error());
    if (old->empty()) return Fail(ErrorCode::kAlreadyExists, "the session token was used already");
    auto mark = tx.Query("UPDATE sessions SET rotated_at = $2 WHERE id = $1",
                         {SqlText(old_id), SqlInt(at)});
    if (!mark) return tl::unexpected(mark.error());
    if (auto r = InsertSessionIn(tx, next); !r) return r;
    return AppendAll(tx, audit);
  });
}

Result<int> PeopleRepository::RevokeSessions(const SessionSelector& which, UnixMicros at,
                                             const std::vector<AuditEvent>& audit) {
  return Run<int>(store_, "", true, [&](SqlTx& tx) -> Result<int> {
    auto families = tx.Query(
        "SELECT DISTINCT family_id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND "
        "($2 = '' OR family_id = $2) AND family_id <> $3",
        {SqlText(which.user_id), SqlText(which.family_id), SqlText(which.except_family_id)});
    if (!families) return tl::unexpected(families.error());
    auto r = tx.Query(
        "UPDATE sessions SET revoked_at = $4 WHERE user_id = $1 AND revoked_at IS NULL AND "
        "($2 = '' OR family_id = $2) AND family_id <> $3",
        {SqlText(which.user_id), SqlText(which.family_id), SqlText(which.except_family_id),
         SqlInt(at)});
    if (!r) return tl::unexpected(r.error());
    if (auto a = AppendAll(tx, audit); !a) return tl::unexpected(a.error());
    return families->size();
  });
}

Result<std::vector<SessionRecord>> PeopleRepository::ListSessions(std::string_view user_id) {
  return Run<std::vector<SessionRecord>>(
      store_, "", false, [&](SqlTx& tx) -> Result<std::vector<SessionRecord>> {
        auto r = tx.Query("SELECT " GH_SESSION_COLUMNS
                          " FROM sessions WHERE user_id = $1 AND rotated_at IS NULL AND "
                          "revoked_at IS NULL ORDER BY family_created_at DESC, id",
                          {SqlText(user_id)});
        if (!r) return tl::unexpected(r.error());
        std::vector<SessionRecord> out;
        for (int i = 0; i < r->size(); ++i) out.push_back(ReadSession(*r, i));
        return out;
      });
}

// ---- memberships ----

Result<void> PeopleRepository::AddMember(const Membership& m, const AuditEvent& audit) {
  return RunVoid(store_, m.org_id, [&](SqlTx& tx) -> Result<void> {
    if (auto r = InsertMemberIn(tx, m); !r) return r;
    return tx.Append(audit);
  });
}

Result<std::vector<Membership>> PeopleRepository::ListMembers(std::string_view org_id) {
  return Run<std::vector<Membership>>(
      store_, org_id, false, [&](SqlTx& tx) -> Result<std::vector<Membership>> {
        auto r = tx.Query(
            "SELECT m.org_id, m.user_id, m.role, m.created_at, u.email FROM tenant_memberships m "
            "JOIN users u ON u.id = m.user_id " GH_ORG_FILTER(
                "WHERE m.org_id = $1 ") "ORDER BY m.created_at, m.user_id",
            OrgParams(org_id, {}));
        if (!r) return tl::unexpected(r.error());
        std::vector<Membership> out;
        for (int i = 0; i < r->size(); ++i) {
          out.push_back(Membership{
              r->Text(i, 0), r->Text(i, 1), r->Text(i, 2), r->Int(i, 3), r->Text(i, 4), {}, {}});
        }
        return out;
      });
}

Result<std::optional<Membership>> PeopleRepository::GetMember(std::string_view org_id,
                                                              std::string_view user_id) {
  return Run<std::optional<Membership>>(
      store_, org_id, false, [&](SqlTx& tx) { return GetMemberIn(tx, org_id, user_id, false); });
}

Result<std::vector<Membership>> PeopleRepository::OrgsOfUser(std::string_view user_id) {
  return Run<std::vector<Membership>>(
      store_, "", false, [&](SqlTx& tx) -> Result<std::vector<Membership>> {
        auto r = tx.Query(tx.dialect() == SqlTx::Dialect::kPostgres
                              ? "SELECT org_id, org_name, role, created_at, idle_timeout "
                                "FROM gh_orgs_of_user($1)"
                              : "SELECT m.org_id, o.name, m.role, m.created_at, p.idle_timeout "
                                "FROM memberships m JOIN orgs o ON o.id = m.org_id "
                                "LEFT JOIN org_session_policy p ON p.org_id = m.org_id "
                                "WHERE m.user_id = $1 ORDER BY m.created_at, m.org_id",
                          {SqlText(user_id)});
        if (!r) return tl::unexpected(r.error());
        std::vector<Membership> out;
        for (int i = 0; i < r->size(); ++i) {
          Membership m;
          m.org_id = r->Text(i, 0);
          m.org_name = r->Text(i, 1);
          m.role = r->Text(i, 2);
          m.created_at = r->Int(i, 3);
          m.user_id = std::string(user_id);
          m.idle_timeout = r->OptInt(i, 4);
          out.push_back(std::move(m));
        }
        return out;
      });
}

Result<Membership> PeopleRepository::SetRole(std::string_view org_id, std::string_view user_id,
                                             std::string_view role, const AuditEvent& audit) {
  return Run<Membership>(store_, org_id, true, [&](SqlTx& tx) -> Result<Membership> {
    auto current = GetMemberIn(tx, org_id, user_id, true);
    if (!current) return tl::unexpected(current.error());
    if (!*current) return Fail(ErrorCode::kNotFound, "member not found");
    if (auto r = KeepAnOwner(tx, org_id, **current, role == "owner"); !r) {
      return tl::unexpected(r.error());
    }
    auto r = tx.Query(
        "UPDATE tenant_memberships SET role = $3 WHERE " GH_ORG_AND("org_id = $1") "user_id = $2",
        OrgParams(org_id, {SqlText(user_id), SqlText(role)}));
    if (!r) return tl::unexpected(r.error());
    if (auto a = tx.Append(audit); !a) return tl::unexpected(a.error());
    Membership after = **current;
    after.role = std::string(role);
    return after;
  });
}

Result<void> PeopleRepository::RemoveMember(std::string_view org_id, std::string_view user_id,
                                            const AuditEvent& audit) {
  return RunVoid(store_, org_id, [&](SqlTx& tx) -> Result<void> {
    auto current = GetMemberIn(tx, org_id, user_id, true);
    if (!current) return tl::unexpected(current.error());
    if (!*current) return Fail(ErrorCode::kNotFound, "member not found");
    if (auto r = KeepAnOwner(tx, org_id, **current, false); !r) return r;
    auto r =
        tx.Query("DELETE FROM tenant_memberships WHERE " GH_ORG_AND("org_id = $1") "user_id = $2",
                 OrgParams(org_id, {SqlText(user_id)}));
    if (!r) return tl::unexpected(r.error());
    return tx.Append(audit);
  });
}

// ---- roles ----

Result<void> PeopleRepository::InsertRole(const RoleRecord& role, const AuditEvent& audit) {
  return RunVoid(store_, role.org_id, [&](SqlTx& tx) -> Result<void> {
    auto r = tx.Query(
        "INSERT INTO tenant_roles (org_id, name, description, permissions, created_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        {SqlText(role.org_id), SqlText(role.name), SqlText(role.description),
         SqlText(JoinWords(role.permissions)), SqlInt(role.created_at)});
    if (!r) {
      if (r.error().code == ErrorCode::kAlreadyExists) {
        return Fail(ErrorCode::kAlreadyExists, "a role with that name already exists");
      }
      return tl::unexpected(r.error());
    }
    return tx.Append(audit);
  });
}

Result<RoleRecord> PeopleRepository::UpdateRole(const RoleRecord& role, const AuditEvent& audit) {
  return Run<RoleRecord>(store_, role.org_id, true, [&](SqlTx& tx) -> Result<RoleRecord> {
    auto found = tx.Query(
        "SELECT org_id, name, description, permissions, created_at FROM tenant_roles "
        "WHERE " GH_ORG_AND("org_id = $1") "name = $2 {lock}",
        OrgParams(role.org_id, {SqlText(role.name)}));
    if (!found) return tl::unexpected(found.error());
    if (found->empty()) return Fail(ErrorCode::kNotFound, "role not found");
    auto r =
        tx.Query("UPDATE tenant_roles SET description = $3, permissions = $4 WHERE " GH_ORG_AND(
                     "org_id = $1") "name = $2",
                 {SqlText(role.org_id), SqlText(role.name), SqlText(role.description),
                  SqlText(JoinWords(role.permissions))});
    if (!r) return tl::unexpected(r.error());
    if (auto a = tx.Append(audit); !a) return tl::unexpected(a.error());
    RoleRecord after = ReadRole(*found, 0);
    after.description = role.description;
    after.permissions = role.permissions;
    return after;
  });
}

Result<void> PeopleRepository::DeleteRole(std::string_view org_id, std::string_view name,
                                          const AuditEvent& audit) {
  return RunVoid(store_, org_id, [&](SqlTx& tx) -> Result<void> {
    auto found = tx.Query(
        "SELECT name FROM tenant_roles WHERE " GH_ORG_AND("org_id = $1") "name = $2 {lock}",
        OrgParams(org_id, {SqlText(name)}));
    if (!found) return tl::unexpected(found.error());
    if (found->empty()) return Fail(ErrorCode::kNotFound, "role not found");
    auto held = tx.Query(
        "SELECT user_id FROM tenant_memberships WHERE " GH_ORG_AND("org_id = $1") "role = $2 "
        "UNION ALL SELECT id FROM tenant_invitations WHERE " GH_ORG_AND("org_id = $1") "role = $2 "
        "AND accepted_at IS NULL AND revoked_at IS NULL",
        OrgParams(org_id, {SqlText(name)}));
    if (!held) return tl::unexpected(held.error());
    if (!held->empty()) {
      return Fail(ErrorCode::kAlreadyExists,
                  "the role is still held by members or offered by invitations; change them "
                  "first");
    }
    auto r = tx.Query("DELETE FROM tenant_roles WHERE " GH_ORG_AND("org_id = $1") "name = $2",
                      OrgParams(org_id, {SqlText(name)}));
    if (!r) return tl::unexpected(r.error());
    return tx.Append(audit);
  });
}

Result<std::vector<RoleRecord>> PeopleRepository::ListRoles(std::string_view org_id) {
  return Run<std::vector<RoleRecord>>(
      store_, org_id, false, [&](SqlTx& tx) -> Result<std::vector<RoleRecord>> {
        auto r = tx.Query(
            "SELECT org_id, name, description, permissions, created_at FROM "
            "tenant_roles " GH_ORG_FILTER("WHERE org_id = $1 ") "ORDER BY name",
            OrgParams(org_id, {}));
        if (!r) return tl::unexpected(r.error());
        std::vector<RoleRecord> out;
        for (int i = 0; i < r->size(); ++i) out.push_back(ReadRole(*r, i));
        return out;
      });
}

Result<std::optional<RoleRecord>> PeopleRepository::GetRole(std::string_view org_id,
                                                            std::string_view name) {
  return Run<std::optional<RoleRecord>>(
      store_, org_id, false, [&](SqlTx& tx) -> Result<std::optional<RoleRecord>> {
        auto r = tx.Query(
            "SELECT org_id, name, description, permissions, created_at FROM tenant_roles "
            "WHERE " GH_ORG_AND("org_id = $1") "name = $2",
            OrgParams(org_id, {SqlText(name)}));
        if (!r) return tl::unexpected(r.error());
        if (r->empty()) return std::optional<RoleRecord>();
        return ReadRole(*r, 0);
      });
}

// ---- invitations ----

Result<void> PeopleRepository::InsertInvitation(const Invitation& v, const AuditEvent& audit) {
  return RunVoid(store_, v.org_id, [&](SqlTx& tx) -> Result<void> {
    auto r = tx.Query(
        "INSERT INTO tenant_invitations (" GH_INVITATION_COLUMNS
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        {SqlText(v.id), SqlText(v.org_id), SqlText(v.email), SqlText(v.role), SqlText(v.token_hash),
         SqlText(v.invited_by), SqlInt(v.created_at), SqlInt(v.expires_at),
         SqlOptInt(v.accepted_at), SqlText(v.accepted_by), SqlOptInt(v.revoked_at)});
    if (!r) return tl::unexpected(r.error());
    return tx.Append(audit);
  });
}

Result<std::vector<Invitation>> PeopleRepository::ListInvitations(std::string_view org_id) {
  return Run<std::vector<Invitation>>(
      store_, org_id, false, [&](SqlTx& tx) -> Result<std::vector<Invitation>> {
        auto r = tx.Query("SELECT " GH_INVITATION_COLUMNS " FROM tenant_invitations " GH_ORG_FILTER(
                              "WHERE org_id = $1 ") "ORDER BY created_at DESC, id",
                          OrgParams(org_id, {}));
        if (!r) return tl::unexpected(r.error());
        std::vector<Invitation> out;
        for (int i = 0; i < r->size(); ++i) out.push_back(ReadInvitation(*r, i));
        return out;
      });
}

Result<Invitation> PeopleRepository::RevokeInvitation(std::string_view org_id, std::string_view id,
                                                      UnixMicros at, const AuditEvent& audit) {
  return Run<Invitation>(store_, org_id, true, [&](SqlTx& tx) -> Result<Invitation> {
    auto found =
        tx.Query("SELECT " GH_INVITATION_COLUMNS
                 " FROM tenant_invitations WHERE " GH_ORG_AND("org_id = $1") "id = $2 {lock}",
                 OrgParams(org_id, {SqlText(id)}));
    if (!found) return tl::unexpected(found.error());
    if (found->empty()) return Fail(ErrorCode::kNotFound, "invitation not found");
    Invitation v = ReadInvitation(*found, 0);
    if (v.accepted_at) return Fail(ErrorCode::kAlreadyExists, "the invitation was accepted");
    if (!v.revoked_at) {
      v.revoked_at = at;
      auto r = tx.Query("UPDATE tenant_invitations SET revoked_at = $2 WHERE id = $1",
                        {SqlText(id), SqlInt(at)});
      if (!r) return tl::unexpected(r.error());
      if (auto a = tx.Append(audit); !a) return tl::unexpected(a.error());
    }
    return v;
  });
}

Result<std::optional<Invitation>> PeopleRepository::FindInvitation(std::string_view token_hash) {
  return Run<std::optional<Invitation>>(
      store_, "", false, [&](SqlTx& tx) -> Result<std::optional<Invitation>> {
        auto r = tx.Query(tx.dialect() == SqlTx::Dialect::kPostgres
                              ? "SELECT " GH_INVITATION_COLUMNS " FROM gh_find_invitation($1)"
                              : "SELECT " GH_INVITATION_COLUMNS
                                " FROM invitations WHERE token_hash = $1",
                          {SqlText(token_hash)});
        if (!r) return tl::unexpected(r.error());
        if (r->empty()) return std::optional<Invitation>();
        return ReadInvitation(*r, 0);
      });
}

Result<void> PeopleRepository::AcceptInvitation(const Invitation& inv,
                                                const std::optional<UserRecord>& new_user,
                                                const Membership& membership, UnixMicros at,
                                                const std::vector<AuditEvent>& audit) {
  return RunVoid(store_, inv.org_id, [&](SqlTx& tx) -> Result<void> {
    auto open = tx.Query(
        "SELECT id FROM tenant_invitations WHERE id = $1 AND accepted_at IS NULL AND "
        "revoked_at IS NULL AND expires_at > $2 {lock}",
        {SqlText(inv.id), SqlInt(at)});
    if (!open) return tl::unexpected(open.error());
    if (open->empty()) {
      return Fail(ErrorCode::kNotFound, "the invitation is not valid (used, revoked or expired)");
    }
    auto mark =
        tx.Query("UPDATE tenant_invitations SET accepted_at = $2, accepted_by = $3 WHERE id = $1",
                 {SqlText(inv.id), SqlInt(at), SqlText(membership.user_id)});
    if (!mark) return tl::unexpected(mark.error());
    if (new_user) {
      if (auto r = InsertUserIn(tx, *new_user); !r) return r;
    }
    if (auto r = InsertMemberIn(tx, membership); !r) return r;
    return AppendAll(tx, audit);
  });
}

// ---- housekeeping ----

Result<std::int64_t> PeopleRepository::PruneExpired(UnixMicros now, UnixMicros forget_after,
                                                    int keep_failures) {
  return Run<std::int64_t>(store_, "", true, [&](SqlTx& tx) -> Result<std::int64_t> {
    auto sessions = tx.Query("SELECT count(*) FROM sessions WHERE expires_at < $1", {SqlInt(now)});
    if (!sessions) return tl::unexpected(sessions.error());
    auto failures =
        tx.Query("SELECT count(*) FROM login_failures WHERE updated_at < $1 AND failures < $2",
                 {SqlInt(now - forget_after), SqlInt(keep_failures)});
    if (!failures) return tl::unexpected(failures.error());
    if (auto r = tx.Query("DELETE FROM sessions WHERE expires_at < $1", {SqlInt(now)}); !r) {
      return tl::unexpected(r.error());
    }
    if (auto r = tx.Query("DELETE FROM login_failures WHERE updated_at < $1 AND failures < $2",
                          {SqlInt(now - forget_after), SqlInt(keep_failures)});
        !r) {
      return tl::unexpected(r.error());
    }
    return sessions->Int(0, 0) + failures->Int(0, 0);
  });
}

// ---- session policy ----

Result<std::optional<UnixMicros>> PeopleRepository::IdleTimeout(std::string_view org_id) {
  return Run<std::optional<UnixMicros>>(
      store_, org_id, false, [&](SqlTx& tx) -> Result<std::optional<UnixMicros>> {
        auto r = tx.Query("SELECT idle_timeout FROM tenant_org_session_policy " GH_ORG_FILTER(
                              "WHERE org_id = $1"),
                          OrgParams(org_id, {}));
        if (!r) return tl::unexpected(r.error());
        if (r->empty()) return std::optional<UnixMicros>();
        return r->Int(0, 0);
      });
}

Result<void> PeopleRepository::SetIdleTimeout(std::string_view org_id, UnixMicros timeout,
                                              const AuditEvent& audit) {
  return RunVoid(store_, org_id, [&](SqlTx& tx) -> Result<void> {
    auto r = tx.Query("DELETE FROM tenant_org_session_policy " GH_ORG_FILTER("WHERE org_id = $1"),
                      OrgParams(org_id, {}));
    if (!r) return tl::unexpected(r.error());
    auto ins =
        tx.Query("INSERT INTO tenant_org_session_policy (org_id, idle_timeout) VALUES ($1, $2)",
                 {SqlText(org_id), SqlInt(timeout)});
    if (!ins) return tl::unexpected(ins.error());
    return tx.Append(audit);
  });
}

}  // namespace gatehouse

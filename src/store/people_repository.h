// Persistence of people (issue 5): users, sign-in throttling, sessions, memberships, custom
// roles, invitations and each org's session policy. Written once as SQL over Store::RunSql, so
// SQLite and PostgreSQL run the same statements with their own tenancy (store/sql.h).
//
// Users, sessions and login throttling belong to no org: one person may belong to several.
// Memberships, roles, invitations and session policy are org-owned, behind the database's own
// org isolation like keys and audit events. Every change takes its audit events, committed in
// the same transaction.
//
// Errors as in store.h; kAlreadyExists also reports the rules the database enforces
// atomically (the last owner, a role still held, a session token used twice).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/store.h"

namespace gatehouse {

// Which sessions RevokeSessions ends.
struct SessionSelector {
  std::string user_id;
  std::string family_id;         // one sign-in; empty: every sign-in of the user
  std::string except_family_id;  // keep this sign-in (log out everywhere else)
};

class PeopleRepository {
 public:
  explicit PeopleRepository(Store& store) : store_(store) {}

  // Users (global).
  Result<void> InsertUser(const UserRecord& user, const std::vector<AuditEvent>& audit);
  Result<UserRecord> GetUser(std::string_view user_id);
  Result<std::optional<UserRecord>> FindUserByEmail(std::string_view email);
  Result<std::vector<UserRecord>> ListUsers();
  // Writes the mutable fields (name, password hash and time, disabled, last sign-in); a
  // disabled account stays disabled whatever a concurrent writer read. With
  // `end_sessions`, also revokes the user's sessions except `keep_family`, in the same
  // transaction (a password change or a disabled account).
  Result<void> UpdateUser(const UserRecord& user, const std::vector<AuditEvent>& audit,
                          bool end_sessions = false, std::string_view keep_family = {});

  // A successful sign-in: sets last_login_at and, when `rehashed` is given, replaces the hash
  // only if it is still `checked_hash` (a password changed meanwhile is never undone).
  Result<void> RecordSignIn(std::string_view user_id, UnixMicros at,
                            const std::optional<std::string>& rehashed,
                            std::string_view checked_hash);

  // Sign-in throttling by subject (a keyed hash of the email).
  Result<LoginThrottle> GetThrottle(std::string_view subject);
  // Adds one failure and sets the lock that `lock_for(failures)` gives (micros from `at`),
  // atomically, so that concurrent failures on many nodes all count.
  Result<LoginThrottle> AddLoginFailure(std::string_view subject, UnixMicros at,
                                        const std::function<UnixMicros(int)>& lock_for);
  Result<void> ClearLoginFailures(std::string_view subject);

  // Sessions (global: a session is its user's).
  Result<void> InsertSession(const SessionRecord& session, const std::vector<AuditEvent>& audit);
  Result<std::optional<SessionRecord>> FindSession(std::string_view token_hash);
  Result<void> TouchSession(std::string_view session_id, UnixMicros at, std::string_view ip);
  // Marks `old_id` rotated and inserts `next` (same family). kAlreadyExists, changing nothing,
  // when `old_id` was rotated or revoked already: the caller treats that as token reuse.
  Result<void> RotateSession(std::string_view old_id, const SessionRecord& next, UnixMicros at,
                             const std::vector<AuditEvent>& audit);
  // Returns how many sign-ins ended.
  Result<int> RevokeSessions(const SessionSelector& which, UnixMicros at,
                             const std::vector<AuditEvent>& audit);
  // The live token of each of the user's sign-ins (not rotated, not revoked), newest first.
  Result<std::vector<SessionRecord>> ListSessions(std::string_view user_id);

  // Memberships.
  Result<void> AddMember(const Membership& m, const AuditEvent& audit);
  Result<std::vector<Membership>> ListMembers(std::string_view org_id);
  Result<std::optional<Membership>> GetMember(std::string_view org_id, std::string_view user_id);
  // Crosses orgs by necessity: the user's own list (org name, role, session policy).
  Result<std::vector<Membership>> OrgsOfUser(std::string_view user_id);
  // Both refuse (kAlreadyExists) to leave an org without an owner.
  Result<Membership> SetRole(std::string_view org_id, std::string_view user_id,
                             std::string_view role, const AuditEvent& audit);
  Result<void> RemoveMember(std::string_view org_id, std::string_view user_id,
                            const AuditEvent& audit);

  // Custom roles.
  Result<void> InsertRole(const RoleRecord& role, const AuditEvent& audit);
  Result<RoleRecord> UpdateRole(const RoleRecord& role, const AuditEvent& audit);
  // kAlreadyExists while a member holds it or an invitation offers it.
  Result<void> DeleteRole(std::string_view org_id, std::string_view name, const AuditEvent& audit);
  Result<std::vector<RoleRecord>> ListRoles(std::string_view org_id);
  Result<std::optional<RoleRecord>> GetRole(std::string_view org_id, std::string_view name);

  // Invitations.
  Result<void> InsertInvitation(const Invitation& inv, const AuditEvent& audit);
  Result<std::vector<Invitation>> ListInvitations(std::string_view org_id);
  Result<Invitation> RevokeInvitation(std::string_view org_id, std::string_view id, UnixMicros at,
                                      const AuditEvent& audit);
  // Crosses orgs by necessity: the org is not known until the invitation is found.
  Result<std::optional<Invitation>> FindInvitation(std::string_view token_hash);
  // Marks the invitation used, creates `new_user` when given, and adds the membership, in one
  // transaction. kNotFound when it was used, revoked or expired meanwhile (single use).
  Result<void> AcceptInvitation(const Invitation& inv, const std::optional<UserRecord>& new_user,
                                const Membership& membership, UnixMicros at,
                                const std::vector<AuditEvent>& audit);

  // Housekeeping: removes tokens of sign-ins past their absolute lifetime (dead whatever
  // happens) and failure counts untouched for `forget_after` that never reached `keep_failures`
  // (a suspended account's count stays until an operator resets it). Returns rows removed.
  Result<std::int64_t> PruneExpired(UnixMicros now, UnixMicros forget_after, int keep_failures);

  // The org's session inactivity timeout, when it set one.
  Result<std::optional<UnixMicros>> IdleTimeout(std::string_view org_id);
  Result<void> SetIdleTimeout(std::string_view org_id, UnixMicros timeout, const AuditEvent& audit);

 private:
  Store& store_;
};

}  // namespace gatehouse

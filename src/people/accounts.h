// People's accounts: creating users, signing in and out, re-authentication, passwords, and the
// operator's controls (disable, reset, unlock). The rules of NIST SP 800-63B rev. 4 that are
// about accounts live here: passwords per PasswordPolicy, hashed by PasswordHasher; sign-in
// throttled per account (in the store, across nodes) and per address (LoginGuard); the same
// answer, after the same work, for an unknown email and a wrong password.
//
// Per-account schedule (config [login]): the first `free_failures` consecutive failures cost
// nothing; each further one locks the account for twice as long as the one before (1 s, 2 s,
// 4 s…), never longer than `max_lock` (15 minutes), so an attacker cannot lock a real user out
// for long; reaching `max_failures` (100, NIST's bound) stops password sign-in for that account
// until an operator resets the password or unlocks it. A success resets the count.
//
// Events: sign-in attempts are authentication decisions of no org, recorded on the operator's
// "system" chain (actor: the user's id when the email is known); changes to a user are
// recorded in each org the user belongs to ("system" when none).
//
// Thread-safety: safe for concurrent use; methods block on the store and the hash pool.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "audit/details.h"
#include "people/login_guard.h"
#include "people/password_hasher.h"
#include "people/password_policy.h"
#include "people/sessions.h"

namespace gatehouse {

struct SignedIn {
  UserRecord user;
  IssuedSession session;
  std::vector<Membership> orgs;
};

// What a sign-in attempt is recorded as: the server completes it like any decision.
struct LoginAttempt {
  std::string actor;   // user id, or empty when the email is unknown
  std::string reason;  // empty on success
  std::string email;   // normalised, when it was valid
};

class AccountService {
 public:
  AccountService(PeopleRepository& people, SessionService& sessions, PasswordHasher& hasher,
                 const PasswordPolicy& policy, LoginGuard& guard, const Clock& clock,
                 std::shared_ptr<const Config> config, const Peppers& peppers);

  // A new user. `context` adds words the password must not be made of (the org's name).
  Result<UserRecord> CreateUser(std::string_view email, std::string_view password,
                                std::string_view name, const AuditSource& source,
                                const std::vector<std::string>& context = {});
  // A user record ready to insert (validated email, password checked and hashed).
  Result<UserRecord> PrepareUser(std::string_view email, std::string_view password,
                                 std::string_view name,
                                 const std::vector<std::string>& context = {});

  // `attempt` is filled whatever the outcome, for the audit log.
  Result<SignedIn> Login(std::string_view email, std::string_view password,
                         const AuditSource& source, LoginAttempt& attempt);
  // Checks the password of the session's user (throttled like sign-in) and issues a new token
  // with a fresh auth_time.
  Result<IssuedSession> Reauthenticate(const SessionRecord& session, std::string_view password,
                                       const AuditSource& source, LoginAttempt& attempt);
  Result<IssuedSession> Refresh(const SessionRecord& session, const AuditSource& source);
  Result<void> Logout(const SessionRecord& session, const AuditSource& source);
  // Every sign-in of the user, this one included. Returns how many ended.
  Result<int> LogoutEverywhere(const SessionRecord& session, const AuditSource& source);
  Result<int> EndSession(const SessionRecord& session, std::string_view family_id,
                         const AuditSource& source);
  // The current password is required (ASVS 6.2.3); other sign-ins end, this one stays.
  Result<void> ChangePassword(const SessionRecord& session, std::string_view current,
                              std::string_view next, const AuditSource& source);

  // Operator: set a password (ends every session, clears the throttle), disable, unlock.
  Result<UserRecord> SetPassword(std::string_view email, std::string_view password,
                                 const AuditSource& source);
  Result<UserRecord> Disable(std::string_view email, const AuditSource& source);
  Result<void> Unlock(std::string_view email);
  Result<std::vector<UserRecord>> List();
  Result<UserRecord> Get(std::string_view user_id);
  Result<std::vector<Membership>> OrgsOf(std::string_view user_id);

  // The user's change, as one event per org they belong to ("system" when none).
  Result<std::vector<AuditEvent>> UserEvents(std::string_view user_id, std::string_view action,
                                             std::string resource, int status,
                                             const AuditSource& source, std::string details = "{}");

  // A normalised password or kInvalidArgument; exposed for the invitation flow.
  const PasswordPolicy& policy() const { return policy_; }

 private:
  std::string Subject(std::string_view email) const;
  UnixMicros LockFor(int failures) const;
  UnixMicros IdleTimeoutFor(const std::vector<Membership>& orgs) const;
  // Checks `password` for the account of `email` with every throttle applied. On success
  // records the sign-in (and a hash upgrade) and returns the user; fills `attempt`.
  Result<UserRecord> CheckPassword(std::string_view email, std::string_view password,
                                   const AuditSource& source, LoginAttempt& attempt);

  PeopleRepository& people_;
  SessionService& sessions_;
  PasswordHasher& hasher_;
  const PasswordPolicy& policy_;
  LoginGuard& guard_;
  const Clock& clock_;
  std::shared_ptr<const Config> config_;
  HmacSha256Key subject_key_;
};

}  // namespace gatehouse

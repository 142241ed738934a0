#include "people/accounts.h"

#include <algorithm>

#include "core/json_input.h"
#include "core/random.h"
#include "people/email.h"

namespace gatehouse {

namespace {

long SecondsUntil(UnixMicros until, UnixMicros now) {
  return std::max<long>(1,
                        static_cast<long>((until - now + kMicrosPerSecond - 1) / kMicrosPerSecond));
}

tl::unexpected<Error> WrongCredentials() {
  return Fail(ErrorCode::kUnauthenticated, "invalid email or password");
}
}  // namespace

AccountService::AccountService(PeopleRepository& people, SessionService& sessions,
                               PasswordHasher& hasher, const PasswordPolicy& policy,
                               LoginGuard& guard, const Clock& clock,
                               std::shared_ptr<const Config> config, const Peppers& peppers)
    : people_(people),
      sessions_(sessions),
      hasher_(hasher),
      policy_(policy),
      guard_(guard),
      clock_(clock),
      config_(std::move(config)),
      // Keyed with the pepper every node holds throughout a rotation (the previous one on the
      // nodes switched, the current one on those not yet), so that a sign-in's failures are
      // one count across the cluster until the previous pepper is retired.
      subject_key_(DeriveSubkey(peppers.previous.empty() ? peppers.current : peppers.previous,
                                "gatehouse-login-subject-v1")) {}

std::string AccountService::Subject(std::string_view email) const {
  return HexEncode(subject_key_.Mac(email));
}

UnixMicros AccountService::LockFor(int failures) const {
  const auto& l = config_->login;
  if (failures <= l.free_failures) return 0;
  int doublings = std::min(failures - l.free_failures - 1, 40);
  UnixMicros lock = kMicrosPerSecond << doublings;
  return std::min(lock, ToMicros(l.max_lock));
}

UnixMicros AccountService::IdleTimeoutFor(const std::vector<Membership>& orgs) const {
  UnixMicros idle = ToMicros(config_->sessions.idle_timeout);
  for (const auto& m : orgs) {
    if (m.idle_timeout && *m.idle_timeout > 0) idle = std::min(idle, *m.idle_timeout);
  }
  return idle;
}

Result<std::vector<AuditEvent>> AccountService::UserEvents(std::string_view user_id,
                                                           std::string_view action,
                                                           std::string resource, int status,
                                                           const AuditSource& source,
                                                           std::string details) {
  auto orgs = people_.OrgsOfUser(user_id);
  if (!orgs) return tl::unexpected(orgs.error());
  UnixMicros now = clock_.Now();
  std::vector<AuditEvent> out;
  auto add = [&](std::string_view org) {
    AuditEvent e = source.Event(org, action, resource, status, now);
    e.details = details;
    out.push_back(std::move(e));
  };
  for (const auto& m : *orgs) add(m.org_id);
  if (out.empty()) add("system");
  return out;
}

Result<UserRecord> AccountService::PrepareUser(std::string_view email_in,
                                               std::string_view password_in, std::string_view name,
                                               const std::vector<std::string>& context) {
  auto email = NormalizeEmail(email_in);
  if (!email) return tl::unexpected(email.error());
  if (!IsPrintableText(name, 200)) {
    return FailField("name", "name must be at most 200 bytes with no control characters");
  }
  auto password = NormalizePassword(password_in);
  if (!password) return tl::unexpected(password.error());
  std::vector<std::string> words = context;
  words.push_back(*email);
  if (!name.empty()) words.emplace_back(name);
  if (auto r = policy_.Check(*password, words); !r) return tl::unexpected(r.error());
  auto hash = hasher_.Hash(*password);
  SecureZero(*password);
  if (!hash) return tl::unexpected(hash.error());
  UnixMicros now = clock_.Now();
  UserRecord u;
  u.id = NewId("usr");
  u.email = *email;
  u.name = std::string(name);
  u.password_hash = std::move(*hash);
  u.created_at = now;
  u.password_changed_at = now;
  return u;
}

Result<UserRecord> AccountService::CreateUser(std::string_view email, std::string_view password,
                                              std::string_view name, const AuditSource& source,
                                              const std::vector<std::string>& context) {
  auto user = PrepareUser(email, password, name, context);
  if (!user) return user;
  AuditEvent e = source.Event("system", "user.create", "user:" + user->id, 201, user->created_at);
  e.details = DetailsOf({{"email", user->email}});
  if (auto r = people_.InsertUser(*user, {e}); !r) return tl::unexpected(r.error());
  return user;
}

Result<UserRecord> AccountService::CheckPassword(std::string_view email_in,
                                                 std::string_view password_in,
                                                 const AuditSource& source, LoginAttempt& attempt) {
  UnixMicros now = clock_.Now();
  if (auto block = guard_.Blocked(source.client_ip)) {
    attempt.reason = block->stuffing ? "address_blocked_stuffing" : "address_blocked";
    return FailRetryAfter(ErrorCode::kResourceExhausted,
                          "too many failed sign-ins from your address; try again later",
                          SecondsUntil(block->until, now));
  }
  auto email = NormalizeEmail(email_in);
  if (email) attempt.email = *email;
  // An invalid email is throttled under its own text, like any unknown one.
  std::string subject = Subject(email ? std::string_view(*email) : email_in.substr(0, 254));
  auto throttle = people_.GetThrottle(subject);
  if (!throttle) return tl::unexpected(throttle.error());
  if (throttle->failures >= config_->login.max_failures) {
    attempt.reason = "account_suspended";
    return Fail(ErrorCode::kResourceExhausted,
                "too many failed sign-ins for this account: password sign-in is suspended until "
                "an operator resets the password");
  }
  if (throttle->locked_until > now) {
    attempt.reason = "account_locked";
    return FailRetryAfter(ErrorCode::kResourceExhausted,
                          "too many failed sign-ins for this account; try again later",
                          SecondsUntil(throttle->locked_until, now));
  }
  auto password = NormalizePassword(password_in);
  std::string candidate = password ? *password : std::string(password_in);
  std::optional<UserRecord> user;
  if (email) {
    auto found = people_.FindUserByEmail(*email);
    if (!found) return tl::unexpected(found.error());
    user = std::move(*found);
  }
  bool ok = false;
  // The same work whether or not the account exists or may sign in (ASVS 6.3.8).
  if (user && !user->disabled_at) {
    auto v = hasher_.Verify(candidate, user->password_hash);
    if (!v) return tl::unexpected(v.error());
    ok = *v && password.has_value();
  } else {
    if (auto v = hasher_.VerifyNobody(candidate); !v) return tl::unexpected(v.error());
  }
  if (user) attempt.actor = user->id;
  if (!ok) {
    SecureZero(candidate);
    auto counted = people_.AddLoginFailure(subject, now, [this](int n) { return LockFor(n); });
    if (!counted) return tl::unexpected(counted.error());
    auto block = guard_.Failure(source.client_ip, subject);
    if (block && block->stuffing) {
      attempt.reason = "credential_stuffing";
    } else if (!user) {
      attempt.reason = "unknown_email";
    } else if (user->disabled_at) {
      attempt.reason = "disabled";
    } else {
      attempt.reason = "wrong_password";
    }
    return WrongCredentials();
  }
  if (throttle->failures > 0) {
    if (auto r = people_.ClearLoginFailures(subject); !r) return tl::unexpected(r.error());
  }
  // Hashes made with older parameters are upgraded now, while the password is at hand.
  std::optional<std::string> rehashed;
  if (hasher_.NeedsRehash(user->password_hash)) {
    if (auto h = hasher_.Hash(candidate)) rehashed = std::move(*h);
  }
  SecureZero(candidate);
  if (auto r = people_.RecordSignIn(user->id, now, rehashed, user->password_hash); !r) {
    return tl::unexpected(r.error());
  }
  user->last_login_at = now;
  if (rehashed) user->password_hash = std::move(*rehashed);
  return std::move(*user);
}

Result<SignedIn> AccountService::Login(std::string_view email, std::string_view password,
                                       const AuditSource& source, LoginAttempt& attempt) {
  auto user = CheckPassword(email, password, source, attempt);
  if (!user) return tl::unexpected(user.error());
  auto orgs = people_.OrgsOfUser(user->id);
  if (!orgs) return tl::unexpected(orgs.error());
  AuditSource as_user = source;
  as_user.actor = user->id;
  auto events = UserEvents(user->id, "session.create", "user:" + user->id, 200, as_user);
  if (!events) return tl::unexpected(events.error());
  auto session = sessions_.Start(*user, IdleTimeoutFor(*orgs), as_user, *events);
  if (!session) return tl::unexpected(session.error());
  return SignedIn{std::move(*user), std::move(*session), std::move(*orgs)};
}

Result<IssuedSession> AccountService::Reauthenticate(const SessionRecord& session,
                                                     std::string_view password,
                                                     const AuditSource& source,
                                                     LoginAttempt& attempt) {
  auto user = people_.GetUser(session.user_id);
  if (!user) return tl::unexpected(user.error());
  auto checked = CheckPassword(user->email, password, source, attempt);
  if (!checked) return tl::unexpected(checked.error());
  auto orgs = people_.OrgsOfUser(user->id);
  if (!orgs) return tl::unexpected(orgs.error());
  auto events = UserEvents(user->id, "session.reauth", "session:" + session.family_id, 200, source);
  if (!events) return tl::unexpected(events.error());
  return sessions_.Rotate(session, true, IdleTimeoutFor(*orgs), source, *events);
}

Result<IssuedSession> AccountService::Refresh(const SessionRecord& session,
                                              const AuditSource& source) {
  auto orgs = people_.OrgsOfUser(session.user_id);
  if (!orgs) return tl::unexpected(orgs.error());
  return sessions_.Rotate(session, false, IdleTimeoutFor(*orgs), source, {});
}

Result<void> AccountService::Logout(const SessionRecord& session, const AuditSource& source) {
  auto events =
      UserEvents(session.user_id, "session.end", "session:" + session.family_id, 200, source);
  if (!events) return tl::unexpected(events.error());
  auto r = sessions_.End({session.user_id, session.family_id, ""}, *events);
  if (!r) return tl::unexpected(r.error());
  return {};
}

Result<int> AccountService::LogoutEverywhere(const SessionRecord& session,
                                             const AuditSource& source) {
  auto events =
      UserEvents(session.user_id, "session.end_all", "user:" + session.user_id, 200, source);
  if (!events) return tl::unexpected(events.error());
  return sessions_.End({session.user_id, "", ""}, *events);
}

Result<int> AccountService::EndSession(const SessionRecord& session, std::string_view family_id,
                                       const AuditSource& source) {
  if (family_id.empty()) return Fail(ErrorCode::kNotFound, "session not found");
  auto events =
      UserEvents(session.user_id, "session.end", "session:" + std::string(family_id), 200, source);
  if (!events) return tl::unexpected(events.error());
  auto n = sessions_.End({session.user_id, std::string(family_id), ""}, *events);
  if (!n) return n;
  if (*n == 0) return Fail(ErrorCode::kNotFound, "session not found");
  return n;
}

Result<void> AccountService::ChangePassword(const SessionRecord& session, std::string_view current,
                                            std::string_view next, const AuditSource& source) {
  auto user = people_.GetUser(session.user_id);
  if (!user) return tl::unexpected(user.error());
  LoginAttempt attempt;
  auto checked = CheckPassword(user->email, current, source, attempt);
  if (!checked) {
    if (checked.error().code == ErrorCode::kUnauthenticated) {
      return FailField("current_password", "the current password is not correct");
    }
    return tl::unexpected(checked.error());
  }
  auto orgs = people_.OrgsOfUser(user->id);
  if (!orgs) return tl::unexpected(orgs.error());
  std::vector<std::string> context = {user->email, user->name};
  for (const auto& m : *orgs) context.push_back(m.org_name);
  auto normalized = NormalizePassword(next);
  if (!normalized) {
    Error e = normalized.error();
    e.field = "new_password";
    return tl::unexpected(std::move(e));
  }
  if (auto r = policy_.Check(*normalized, context); !r) {
    Error e = r.error();
    e.field = "new_password";
    return tl::unexpected(std::move(e));
  }
  auto hash = hasher_.Hash(*normalized);
  SecureZero(*normalized);
  if (!hash) return tl::unexpected(hash.error());
  UserRecord updated = *checked;
  updated.password_hash = std::move(*hash);
  updated.password_changed_at = clock_.Now();
  auto events = UserEvents(user->id, "user.password", "user:" + user->id, 200, source);
  if (!events) return tl::unexpected(events.error());
  // Every other sign-in ends: whoever knew the old password loses what it gave them.
  return people_.UpdateUser(updated, *events, true, session.family_id);
}

Result<UserRecord> AccountService::SetPassword(std::string_view email_in, std::string_view password,
                                               const AuditSource& source) {
  auto email = NormalizeEmail(email_in);
  if (!email) return tl::unexpected(email.error());
  auto user = people_.FindUserByEmail(*email);
  if (!user) return tl::unexpected(user.error());
  if (!*user) return Fail(ErrorCode::kNotFound, "no user with that email");
  auto orgs = people_.OrgsOfUser((*user)->id);
  if (!orgs) return tl::unexpected(orgs.error());
  std::vector<std::string> context = {(*user)->email, (*user)->name};
  for (const auto& m : *orgs) context.push_back(m.org_name);
  auto normalized = NormalizePassword(password);
  if (!normalized) return tl::unexpected(normalized.error());
  if (auto r = policy_.Check(*normalized, context); !r) return tl::unexpected(r.error());
  auto hash = hasher_.Hash(*normalized);
  SecureZero(*normalized);
  if (!hash) return tl::unexpected(hash.error());
  UserRecord updated = **user;
  updated.password_hash = std::move(*hash);
  updated.password_changed_at = clock_.Now();
  auto events = UserEvents(updated.id, "user.password_reset", "user:" + updated.id, 200, source);
  if (!events) return tl::unexpected(events.error());
  if (auto r = people_.UpdateUser(updated, *events, true); !r) return tl::unexpected(r.error());
  if (auto r = people_.ClearLoginFailures(Subject(updated.email)); !r) {
    return tl::unexpected(r.error());
  }
  return updated;
}

Result<UserRecord> AccountService::Disable(std::string_view email_in, const AuditSource& source) {
  auto email = NormalizeEmail(email_in);
  if (!email) return tl::unexpected(email.error());
  auto user = people_.FindUserByEmail(*email);
  if (!user) return tl::unexpected(user.error());
  if (!*user) return Fail(ErrorCode::kNotFound, "no user with that email");
  UserRecord updated = **user;
  if (updated.disabled_at) return updated;
  updated.disabled_at = clock_.Now();
  auto events = UserEvents(updated.id, "user.disable", "user:" + updated.id, 200, source);
  if (!events) return tl::unexpected(events.error());
  // A disabled account's sessions end with it (ASVS 7.4.2).
  if (auto r = people_.UpdateUser(updated, *events, true); !r) return tl::unexpected(r.error());
  return updated;
}

Result<void> AccountService::Unlock(std::string_view email_in) {
  auto email = NormalizeEmail(email_in);
  if (!email) return tl::unexpected(email.error());
  return people_.ClearLoginFailures(Subject(*email));
}

Result<std::vector<UserRecord>> AccountService::List() { return people_.ListUsers(); }
Result<UserRecord> AccountService::Get(std::string_view user_id) {
  return people_.GetUser(user_id);
}
Result<std::vector<Membership>> AccountService::OrgsOf(std::string_view user_id) {
  return people_.OrgsOfUser(user_id);
}

}  // namespace gatehouse

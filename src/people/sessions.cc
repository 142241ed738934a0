#include "people/sessions.h"

#include "core/random.h"

namespace gatehouse {

namespace {
constexpr std::size_t kTokenRandomChars = 43;

tl::unexpected<Error> NotSignedIn() {
  return Fail(ErrorCode::kUnauthenticated, "missing or invalid session");
}

// A replayed token, for the operator's chain: the family it ended and where the replay came from.
AuditEvent ReuseEvent(const SessionRecord& s, UnixMicros at, std::string_view client_ip) {
  AuditSource source;
  source.actor = s.user_id;
  source.client_ip = std::string(client_ip);
  source.http = true;
  AuditEvent e = source.Event("system", "session.reuse", "session:" + s.family_id, 401, at);
  e.result = "denied";
  e.details = DetailsOf({{"reason", "rotated_token_presented"}});
  return e;
}
}  // namespace

SessionService::SessionService(PeopleRepository& people, const Clock& clock,
                               std::shared_ptr<const Config> config, const Peppers& peppers)
    : people_(people),
      clock_(clock),
      config_(std::move(config)),
      token_key_(peppers, "gatehouse-session-token-v1"),
      csrf_key_(peppers, "gatehouse-session-csrf-v1") {}

std::string SessionService::HashToken(std::string_view token) const {
  return token_key_.Hex(token);
}

IssuedSession SessionService::NewToken(const SessionRecord& base) const {
  IssuedSession out;
  out.token = std::string(kTokenPrefix) + RandomBase62(kTokenRandomChars);
  out.record = base;
  out.record.id = NewId("ses");
  out.record.token_hash = HashToken(out.token);
  out.record.rotated_at.reset();
  out.record.revoked_at.reset();
  return out;
}

Result<IssuedSession> SessionService::Start(const UserRecord& user, UnixMicros idle_timeout,
                                            const AuditSource& source,
                                            const std::vector<AuditEvent>& audit) {
  UnixMicros now = clock_.Now();
  SessionRecord base;
  base.family_id = NewId("sfam");
  base.user_id = user.id;
  base.created_at = now;
  base.family_created_at = now;
  base.last_seen_at = now;
  base.auth_time = now;
  base.idle_timeout = idle_timeout;
  base.expires_at = now + ToMicros(config_->sessions.absolute_lifetime);
  base.client_ip = source.client_ip;
  base.user_agent = source.user_agent.substr(0, 256);
  IssuedSession issued = NewToken(base);
  if (auto r = people_.InsertSession(issued.record, audit); !r) return tl::unexpected(r.error());
  return issued;
}

Result<SessionRecord> SessionService::Authenticate(std::string_view token,
                                                   std::string_view client_ip) {
  if (!IsSessionToken(token) || token.size() != kTokenPrefix.size() + kTokenRandomChars) {
    return NotSignedIn();
  }
  auto found = people_.FindSession(HashToken(token));
  // Issued under another pepper during a rotation (before it, or by a node already switched):
  // kept where it is, since the session ends (or its refresh replaces it) long before the
  // rotation does.
  if (found && !*found) {
    for (const auto& other : token_key_.OtherHexes(token)) {
      found = people_.FindSession(other);
      if (!found || *found) break;
    }
  }
  if (!found) return tl::unexpected(found.error());
  if (!*found) return NotSignedIn();
  SessionRecord s = std::move(**found);
  UnixMicros now = clock_.Now();
  if (s.revoked_at) return NotSignedIn();
  if (s.rotated_at) {
    // Only a copy of the token can be presented well after its replacement was issued: whoever
    // holds the family now may be the thief, so it ends for everyone.
    if (now - *s.rotated_at >= ToMicros(config_->sessions.reuse_grace)) {
      (void)people_.RevokeSessions({s.user_id, s.family_id, ""}, now,
                                   {ReuseEvent(s, now, client_ip)});
    }
    return NotSignedIn();
  }
  if (now >= s.expires_at) {
    return Fail(ErrorCode::kTokenExpired,
                "the session reached its absolute lifetime; sign in again");
  }
  if (now >= s.last_seen_at + s.idle_timeout) {
    return Fail(ErrorCode::kTokenExpired, "the session expired after inactivity; sign in again");
  }
  if (now - s.last_seen_at >= ToMicros(config_->sessions.touch_interval)) {
    if (auto r = people_.TouchSession(s.id, now, client_ip); !r) return tl::unexpected(r.error());
    s.last_seen_at = now;
    s.client_ip = std::string(client_ip);
  }
  return s;
}

Result<IssuedSession> SessionService::Rotate(const SessionRecord& current, bool reauthenticated,
                                             UnixMicros idle_timeout, const AuditSource& source,
                                             const std::vector<AuditEvent>& audit) {
  UnixMicros now = clock_.Now();
  if (now >= current.expires_at) {
    return Fail(ErrorCode::kTokenExpired,
                "the session reached its absolute lifetime; sign in again");
  }
  SessionRecord base = current;
  base.created_at = now;
  base.last_seen_at = now;
  base.idle_timeout = idle_timeout;
  if (reauthenticated) base.auth_time = now;
  if (!source.client_ip.empty()) base.client_ip = source.client_ip;
  if (!source.user_agent.empty()) base.user_agent = source.user_agent.substr(0, 256);
  IssuedSession issued = NewToken(base);
  auto r = people_.RotateSession(current.id, issued.record, now, audit);
  if (!r) {
    if (r.error().code == ErrorCode::kAlreadyExists) {
      // Two refreshes with one token: the second is a replay, unless they raced.
      auto again = people_.FindSession(current.token_hash);
      bool raced = again && *again && (*again)->rotated_at &&
                   now - *(*again)->rotated_at < ToMicros(config_->sessions.reuse_grace);
      if (!raced) {
        (void)people_.RevokeSessions({current.user_id, current.family_id, ""}, now,
                                     {ReuseEvent(current, now, source.client_ip)});
      }
      return NotSignedIn();
    }
    return tl::unexpected(r.error());
  }
  return issued;
}

Result<int> SessionService::End(const SessionSelector& which,
                                const std::vector<AuditEvent>& audit) {
  return people_.RevokeSessions(which, clock_.Now(), audit);
}

Result<std::vector<SessionRecord>> SessionService::List(std::string_view user_id) {
  return people_.ListSessions(user_id);
}

std::string SessionService::CsrfToken(const SessionRecord& s) const {
  return csrf_key_.Hex(s.family_id);
}

bool SessionService::CheckCsrf(const SessionRecord& s, std::string_view presented) const {
  return csrf_key_.Matches(s.family_id, presented);  // a page loaded under another pepper too
}

}  // namespace gatehouse

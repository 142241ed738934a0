// Browser and program sessions (issue 5; NIST SP 800-63B §5, ASVS V7). A session token is
// "ghs_" and 43 base62 characters from the OS CSPRNG (~256 bits), shown to its holder only and
// stored as a keyed hash. A sign-in is a family of tokens: refresh and re-authentication replace
// the token (the old one is marked rotated), and presenting a rotated token again, which only a
// thief or a replay does, ends the whole family.
//
// Limits: an inactivity timeout (set at sign-in from the strictest of the user's orgs, or the
// configured default), and an absolute lifetime from sign-in that refresh never extends.
//
// Thread-safety: safe for concurrent use; methods block on the store.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "audit/details.h"
#include "config/config.h"
#include "core/crypto.h"
#include "http/cookies.h"
#include "store/people_repository.h"

namespace gatehouse {

struct IssuedSession {
  SessionRecord record;
  std::string token;  // for its holder only; never stored or logged
};

class SessionService {
 public:
  static constexpr std::string_view kTokenPrefix = "ghs_";
  static constexpr std::string_view kCookieName = kSessionCookieName;

  // Sessions issued under the previous or the next pepper (a rotation under way) keep working.
  SessionService(PeopleRepository& people, const Clock& clock, std::shared_ptr<const Config> config,
                 const Peppers& peppers);

  static bool IsSessionToken(std::string_view credential) {
    return credential.starts_with(kTokenPrefix);
  }

  // A new sign-in for `user`, recorded by `audit` in the same transaction.
  Result<IssuedSession> Start(const UserRecord& user, UnixMicros idle_timeout,
                              const AuditSource& source, const std::vector<AuditEvent>& audit);

  // The live session of `token`: kUnauthenticated when unknown, ended or malformed;
  // kTokenExpired past the inactivity or absolute limit. A rotated token ends its family
  // (reuse) and is kUnauthenticated. Notes activity at most every touch_interval.
  Result<SessionRecord> Authenticate(std::string_view token, std::string_view client_ip);

  // Replaces `current`'s token. `reauthenticated`: the password was just checked, so the
  // session's auth_time becomes now. kTokenExpired past the absolute lifetime.
  Result<IssuedSession> Rotate(const SessionRecord& current, bool reauthenticated,
                               UnixMicros idle_timeout, const AuditSource& source,
                               const std::vector<AuditEvent>& audit);

  // Ends sign-ins of `which.user_id` (one family, all, or all but one).
  Result<int> End(const SessionSelector& which, const std::vector<AuditEvent>& audit);
  Result<std::vector<SessionRecord>> List(std::string_view user_id);

  // The CSRF token of a sign-in: stable across its refreshes, unknowable without the server's
  // key, so a page on another site cannot produce it.
  std::string CsrfToken(const SessionRecord& s) const;
  bool CheckCsrf(const SessionRecord& s, std::string_view presented) const;

  std::string HashToken(std::string_view token) const;
  const Config& config() const { return *config_; }

 private:
  IssuedSession NewToken(const SessionRecord& base) const;

  PeopleRepository& people_;
  const Clock& clock_;
  std::shared_ptr<const Config> config_;
  PepperedKey token_key_;
  PepperedKey csrf_key_;
};

}  // namespace gatehouse

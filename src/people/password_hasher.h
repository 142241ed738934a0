// Argon2id (libsodium) on a bounded pool of its own. Each hash costs tens of megabytes and about
// a tenth of a second by design, so a flood of sign-ins must queue here, boundedly, and never
// on the threads that serve other requests: when `queue` hashes already wait, callers get
// kUnavailable (503) at once instead of waiting in an unbounded line.
//
// Hashes are PHC strings ($argon2id$v=19$m=65536,t=3,p=1$salt$hash) that carry their own
// parameters, so that raising them later still verifies old hashes, which NeedsRehash then
// reports for an upgrade at the next sign-in. The password is first keyed with a sub-key of the
// deployment pepper (HMAC-SHA-256), so that a stolen database alone cannot be attacked offline
// (NIST SP 800-63B §3.1.1.2 recommends such a pepper). Each stored hash ends with a tag of the
// pepper it was keyed with ("#" and 16 hex digits), so that during a rotation a password keyed
// with the previous pepper is verified with that one, at the cost of one hash, and NeedsRehash
// moves it to the current pepper at its next sign-in. One keyed with the next pepper (by a node
// already switched) is verified with that one and stays as it is: moving it back would undo the
// rotation. Hashes from before tags existed are tried with the current pepper, then with the
// previous one.
//
// Thread-safety: every method may be called from many threads; each blocks until its hash ran.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "config/config.h"
#include "core/crypto.h"
#include "core/error.h"

namespace gatehouse {

class PasswordHasher {
 public:
  PasswordHasher(const PasswordConfig& config, const Peppers& peppers);
  ~PasswordHasher();
  PasswordHasher(const PasswordHasher&) = delete;
  PasswordHasher& operator=(const PasswordHasher&) = delete;

  // `password` normalised (NormalizePassword).
  Result<std::string> Hash(std::string_view password);
  // True when `password` matches `phc`. A malformed hash is a non-match, never an error.
  Result<bool> Verify(std::string_view password, std::string_view phc);
  // The same work as Verify against a hash of nobody's password, so that an unknown account
  // costs what a known one does.
  Result<void> VerifyNobody(std::string_view password);
  // True when `phc` was made with other parameters than the configured ones, or keyed with
  // the previous pepper (or before hashes named theirs). Never for the next pepper's.
  bool NeedsRehash(std::string_view phc) const;

  std::uint64_t rejected() const;

  // The fingerprint (PepperFingerprint) of the pepper that keyed a stored hash; empty for a
  // hash from before hashes named their pepper.
  static std::string_view PepperOf(std::string_view phc);

 private:
  Result<void> RunBounded(const std::function<void()>& job);
  static std::string Keyed(const HmacSha256Key& pepper, std::string_view password);
  static std::string TagOf(std::string_view pepper);
  void Work();

  std::uint64_t ops_;
  std::size_t mem_bytes_;
  std::size_t queue_capacity_;
  HmacSha256Key pepper_;
  std::string tag_;  // "#" and 16 hex digits: which pepper keyed a stored hash
  std::optional<HmacSha256Key> previous_pepper_;
  std::string previous_tag_;
  std::optional<HmacSha256Key> next_pepper_;
  std::string next_tag_;
  std::string nobody_;  // a PHC hash of a random password

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::uint64_t rejected_ = 0;
  std::vector<std::thread> workers_;
};

}  // namespace gatehouse

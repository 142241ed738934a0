// What a sign-in brings that nobody has checked yet: the Cookie header, the email and the
// password (invalid UTF-8, decomposed forms, control characters). None may crash; a password
// that normalises must normalise to itself again (NFC is idempotent), and an email that
// normalises must be stable too.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "http/cookies.h"
#include "people/email.h"
#include "people/password_policy.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  (void)gatehouse::CookieValue(input, gatehouse::kSessionCookieName);
  // What reaches an upstream never carries the session cookie.
  std::string rest = gatehouse::WithoutCookie(input, gatehouse::kSessionCookieName);
  if (gatehouse::CookieValue(rest, gatehouse::kSessionCookieName)) std::abort();
  if (auto e = gatehouse::NormalizeEmail(input)) {
    auto again = gatehouse::NormalizeEmail(*e);
    if (!again || *again != *e) std::abort();
  }
  static const gatehouse::PasswordPolicy policy(gatehouse::PasswordConfig{},
                                                {"password", "qwerty", "letmein"});
  if (auto p = gatehouse::NormalizePassword(input)) {
    auto again = gatehouse::NormalizePassword(*p);
    if (!again || *again != *p) std::abort();
    (void)policy.Check(*p, {"Acme Corp", "alice@example.com"});
  }
  return 0;
}

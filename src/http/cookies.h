// The Cookie request header (RFC 6265 §4.2.1), from untrusted bytes: `name=value` pairs separated
// by "; ". Nothing is decoded; a value in double quotes loses them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace gatehouse {

// The console's session cookie (issue 5): __Host- so that it is Secure, host-only and Path=/.
inline constexpr std::string_view kSessionCookieName = "__Host-gatehouse_session";

// The value of the first cookie called `name`; nullopt when absent or when the header is not a
// cookie list at all.
std::optional<std::string_view> CookieValue(std::string_view header, std::string_view name);

// `header` without the cookies called `name`, the rest as they were ("a=1; b=2"); empty when
// nothing is left.
std::string WithoutCookie(std::string_view header, std::string_view name);

}  // namespace gatehouse

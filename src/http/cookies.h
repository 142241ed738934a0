// The Cookie request header (RFC 6265 §4.2.1), from untrusted bytes: `name=value` pairs separated
// by "; ". Nothing is decoded; a value in double quotes loses them.
#pragma once

#include <optional>
#include <string_view>

namespace gatehouse {

// The value of the first cookie called `name`; nullopt when absent or when the header is not a
// cookie list at all.
std::optional<std::string_view> CookieValue(std::string_view header, std::string_view name);

}  // namespace gatehouse

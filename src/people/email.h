// Email addresses as identities: one email is one user, so every address is normalised the same
// way before it is stored or looked up.
#pragma once

#include <string>
#include <string_view>

#include "core/error.h"

namespace gatehouse {

// Trimmed and lower-cased; kInvalidArgument (field "email") unless it is local@domain with a
// dotted domain, no spaces or control characters, at most 254 bytes (RFC 5321).
Result<std::string> NormalizeEmail(std::string_view email);

}  // namespace gatehouse

// Small predicates over attacker-controlled text.
#pragma once

#include <cstddef>
#include <string_view>

namespace gatehouse {

// An HTTP token (RFC 9110 §5.6.2), as header names must be.
bool IsHttpToken(std::string_view text);

// A request id we are willing to echo back: 1-128 characters of [A-Za-z0-9._:-].
bool IsSafeRequestId(std::string_view text);

bool EqualsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace gatehouse

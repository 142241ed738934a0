// Durations ("90d") and timestamps (RFC 3339, UTC) as they appear in config and in the API.
#pragma once

#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/error.h"

namespace gatehouse {

// Parses "<n><unit>" with unit one of ms, s, m, h, d, w, y (365 days). n is a positive integer;
// the result is capped at 100 years so that arithmetic on it cannot overflow.
Result<UnixMicros> ParseDuration(std::string_view text);

// "2026-11-23T00:33:53Z" or with fractional seconds / a numeric offset.
Result<UnixMicros> ParseRfc3339(std::string_view text);

// Always UTC with a trailing Z and second precision, the form every API response uses.
std::string FormatRfc3339(UnixMicros t);

}  // namespace gatehouse

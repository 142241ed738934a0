// The JSON Schema "format" values a route schema can assert, each checked after the grammar of
// the RFC that defines it (and the OpenAPI numeric and string formats that schemas generated from
// OpenAPI documents carry). A format applies to strings only, except int32 and int64, which
// apply to numbers; any other instance passes, as the drafts say.
#pragma once

#include <optional>
#include <string_view>

#include <boost/json/value.hpp>

namespace gatehouse {

enum class StringFormat {
  kDateTime,             // RFC 3339 date-time
  kDate,                 // RFC 3339 full-date
  kTime,                 // RFC 3339 full-time (with its offset)
  kDuration,             // RFC 3339 appendix A
  kEmail,                // RFC 5321 Mailbox: dot-atom or quoted local part, host or address
  kHostname,             // RFC 1123
  kIdnEmail,             // RFC 6531: kEmail with UTF-8 in the local part and an IDN domain
  kIdnHostname,          // RFC 5890-5893 (IDNA2008): U-labels or A-labels, within RFC 1123's
                         // lengths once in ASCII
  kIpv4,                 // dotted quad, no leading zeros
  kIpv6,                 // RFC 4291 text forms
  kUri,                  // RFC 3986 URI (with a scheme)
  kUriReference,         // RFC 3986 URI-reference
  kIri,                  // RFC 3987 IRI (a URI with non-ASCII characters)
  kIriReference,         // RFC 3987 IRI-reference
  kUriTemplate,          // RFC 6570, levels 1-4
  kRegex,                // a pattern RE2 compiles (ECMA-262 without lookaround/backreferences)
  kUuid,                 // RFC 4122 string form
  kJsonPointer,          // RFC 6901
  kRelativeJsonPointer,  // draft-handrews-relative-json-pointer
  kInt32,                // OpenAPI: an integer in [-2^31, 2^31)
  kInt64,                // OpenAPI: an integer in [-2^63, 2^63)
  kByte,                 // OpenAPI: base64 (RFC 4648, padded)
  kAnyNumber,            // OpenAPI float and double: every number
  kAnyString,            // OpenAPI binary and password: every string
};

// The format a schema names, or nullopt for one gatehouse does not check.
std::optional<StringFormat> FormatNamed(std::string_view name);
// The names FormatNamed knows, for messages.
std::string_view KnownFormatNames();

// Whether `value` satisfies the format; values of a type the format does not apply to do.
bool MatchesFormat(StringFormat format, const boost::json::value& value);
bool MatchesFormat(StringFormat format, std::string_view text);

}  // namespace gatehouse

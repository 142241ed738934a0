#include "schema/formats.h"

#include <arpa/inet.h>
#include <idn2.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include <re2/re2.h>

namespace gatehouse {

namespace {

constexpr std::pair<std::string_view, StringFormat> kFormats[] = {
    {"date-time", StringFormat::kDateTime},
    {"date", StringFormat::kDate},
    {"time", StringFormat::kTime},
    {"duration", StringFormat::kDuration},
    {"email", StringFormat::kEmail},
    {"hostname", StringFormat::kHostname},
    {"idn-email", StringFormat::kIdnEmail},
    {"idn-hostname", StringFormat::kIdnHostname},
    {"ipv4", StringFormat::kIpv4},
    {"ipv6", StringFormat::kIpv6},
    {"uri", StringFormat::kUri},
    {"uri-reference", StringFormat::kUriReference},
    {"iri", StringFormat::kIri},
    {"iri-reference", StringFormat::kIriReference},
    {"uri-template", StringFormat::kUriTemplate},
    {"regex", StringFormat::kRegex},
    {"uuid", StringFormat::kUuid},
    {"json-pointer", StringFormat::kJsonPointer},
    {"relative-json-pointer", StringFormat::kRelativeJsonPointer},
    {"int32", StringFormat::kInt32},
    {"int64", StringFormat::kInt64},
    {"byte", StringFormat::kByte},
    {"float", StringFormat::kAnyNumber},
    {"double", StringFormat::kAnyNumber},
    {"binary", StringFormat::kAnyString},
    {"password", StringFormat::kAnyString},
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// `count` ASCII digits at `at`, as a number; nullopt when any is not a digit.
std::optional<int> DigitsAt(std::string_view s, std::size_t at, std::size_t count) {
  if (at + count > s.size()) return std::nullopt;
  int value = 0;
  for (std::size_t i = at; i < at + count; ++i) {
    if (!IsDigit(s[i])) return std::nullopt;
    value = value * 10 + (s[i] - '0');
  }
  return value;
}

bool IsLeapYear(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

bool IsFullDate(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  auto y = DigitsAt(s, 0, 4), m = DigitsAt(s, 5, 2), d = DigitsAt(s, 8, 2);
  if (!y || !m || !d || *m < 1 || *m > 12 || *d < 1) return false;
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const int days = kDays[*m - 1] + (*m == 2 && IsLeapYear(*y) ? 1 : 0);
  return *d <= days;
}

// HH:MM:SS[.frac](Z|+HH:MM|-HH:MM). A leap second (:60) is valid only at 23:59 UTC.
bool IsFullTime(std::string_view s) {
  if (s.size() < 9 || s[2] != ':' || s[5] != ':') return false;
  auto h = DigitsAt(s, 0, 2), m = DigitsAt(s, 3, 2), sec = DigitsAt(s, 6, 2);
  if (!h || !m || !sec || *h > 23 || *m > 59 || *sec > 60) return false;
  std::size_t i = 8;
  if (s[i] == '.') {
    const std::size_t start = ++i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    if (i == start) return false;
  }
  if (i >= s.size()) return false;  // the offset is not optional
  int offset_minutes = 0;
  if (s[i] == 'Z' || s[i] == 'z') {
    if (i + 1 != s.size()) return false;
  } else if (s[i] == '+' || s[i] == '-') {
    if (s.size() - i != 6 || s[i + 3] != ':') return false;
    auto oh = DigitsAt(s, i + 1, 2), om = DigitsAt(s, i + 4, 2);
    if (!oh || !om || *oh > 23 || *om > 59) return false;
    offset_minutes = (s[i] == '+' ? 1 : -1) * (*oh * 60 + *om);
  } else {
    return false;
  }
  if (*sec == 60) {
    const int utc = ((*h * 60 + *m - offset_minutes) % 1440 + 1440) % 1440;
    if (utc != 23 * 60 + 59) return false;
  }
  return true;
}

bool IsDateTime(std::string_view s) {
  return s.size() > 11 && (s[10] == 'T' || s[10] == 't') && IsFullDate(s.substr(0, 10)) &&
         IsFullTime(s.substr(11));
}

// P(nW | date-part [T time-part] | T time-part), each part's units in order and contiguous from
// its first one (RFC 3339's grammar has P1Y1M1D but not P1Y1D).
bool IsDuration(std::string_view s) {
  if (s.size() < 3 || s[0] != 'P') return false;
  std::size_t i = 1;
  auto number = [&] {
    const std::size_t start = i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    return i > start;
  };
  // A run of number-unit pairs whose units are consecutive letters of `units`.
  auto part = [&](std::string_view units) {
    std::size_t next = std::string_view::npos;  // index in `units` the next pair must use
    int pairs = 0;
    while (i < s.size() && IsDigit(s[i])) {
      if (!number() || i >= s.size()) return -1;
      const std::size_t unit = units.find(s[i]);
      if (unit == std::string_view::npos || (next != std::string_view::npos && unit != next)) {
        return -1;
      }
      next = unit + 1;
      ++i;
      ++pairs;
    }
    return pairs;
  };
  if (std::size_t w = s.find('W'); w != std::string_view::npos) {
    i = 1;
    return number() && i == w && w + 1 == s.size();
  }
  const int date_pairs = part("YMD");
  if (date_pairs < 0) return false;
  if (i == s.size()) return date_pairs > 0;
  if (s[i] != 'T') return false;
  ++i;
  const int time_pairs = part("HMS");
  return time_pairs > 0 && i == s.size();
}

bool IsHostname(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t end = s.find('.', start);
    if (end == std::string_view::npos) end = s.size();
    std::string_view label = s.substr(start, end - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!IsAlpha(c) && !IsDigit(c) && c != '-') return false;
    }
    start = end + 1;
  }
  return true;
}

// IDNA2008's rules (libidn2 without UTS 46 mapping: disallowed code points, CONTEXTJ/CONTEXTO,
// bidi, NFC, a leading combining mark, A-labels that do not decode), then RFC 1123's on the
// ASCII form, which is what DNS sees.
bool IsIdnHostname(std::string_view s) {
  if (s.empty() || s.size() > 1024 || s.find('\0') != std::string_view::npos) return false;
  // RFC 5891 §4.2.3.1 where libidn2 leaves it to its caller: no hyphen at either end of a
  // label, and no ASCII label with hyphens in both its third and fourth places but an A-label's
  // "xn--" (libidn2 checks the places of U-labels' characters itself).
  for (std::size_t start = 0; start <= s.size();) {
    std::size_t end = std::min(s.find('.', start), s.size());
    std::string_view label = s.substr(start, end - start);
    if (label.starts_with('-') || label.ends_with('-')) return false;
    if (label.size() >= 4 && label.substr(2, 2) == "--" &&
        std::all_of(label.begin(), label.end(), [](char c) { return c > 0 && c < 0x7f; }) &&
        !(label.size() > 4 && (label[0] == 'x' || label[0] == 'X') &&
          (label[1] == 'n' || label[1] == 'N'))) {
      return false;
    }
    start = end + 1;
  }
  const std::string text(s);
  char* ascii = nullptr;
  if (idn2_lookup_u8(reinterpret_cast<const std::uint8_t*>(text.c_str()),
                     reinterpret_cast<std::uint8_t**>(&ascii), IDN2_NO_TR46) != IDN2_OK) {
    return false;
  }
  const bool valid = IsHostname(ascii);
  idn2_free(ascii);
  return valid;
}

bool IsIpv4(std::string_view s) {
  int parts = 0;
  std::size_t i = 0;
  while (true) {
    const std::size_t start = i;
    int value = 0;
    while (i < s.size() && IsDigit(s[i]) && i - start < 3) value = value * 10 + (s[i++] - '0');
    const std::size_t length = i - start;
    if (length == 0 || value > 255 || (length > 1 && s[start] == '0')) return false;
    if (++parts == 4) return i == s.size();
    if (i >= s.size() || s[i] != '.') return false;
    ++i;
  }
}

bool IsIpv6(std::string_view s) {
  // inet_pton follows RFC 4291's text forms (one "::", an IPv4 tail) and refuses zone ids.
  if (s.empty() || s.size() > 45) return false;
  const std::string text(s);
  std::array<unsigned char, 16> bytes{};
  return ::inet_pton(AF_INET6, text.c_str(), bytes.data()) == 1;
}

// RFC 3986 character classes.
bool IsUnreserved(char c) {
  return IsAlpha(c) || IsDigit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}
bool IsSubDelim(char c) {
  return c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' || c == '*' ||
         c == '+' || c == ',' || c == ';' || c == '=';
}

// A percent-encoding ("%" and two hex digits) starts at s[i].
bool IsPercentEncodedAt(std::string_view s, std::size_t i) {
  return i + 2 < s.size() && s[i] == '%' && IsHex(s[i + 1]) && IsHex(s[i + 2]);
}

// Every character of `s` is unreserved, a sub-delim, percent-encoded, or one of `extra`; with
// `iri`, also any non-ASCII character (RFC 3987's ucschar and iprivate: a JSON string is UTF-8
// already, so its bytes from 0x80 up are whole characters).
bool AllOf(std::string_view s, std::string_view extra, bool iri = false) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (!IsPercentEncodedAt(s, i)) return false;
      i += 2;
    } else if (iri && static_cast<unsigned char>(c) >= 0x80) {
      continue;
    } else if (!IsUnreserved(c) && !IsSubDelim(c) && extra.find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

bool IsAuthority(std::string_view a, bool iri) {
  if (std::size_t at = a.find('@'); at != std::string_view::npos) {
    if (!AllOf(a.substr(0, at), ":", iri)) return false;
    a.remove_prefix(at + 1);
  }
  std::string_view host = a, port;
  if (a.starts_with('[')) {
    const std::size_t close = a.find(']');
    if (close == std::string_view::npos) return false;
    host = a.substr(1, close - 1);
    std::string_view rest = a.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
    }
    const bool future = host.size() > 2 && (host[0] == 'v' || host[0] == 'V');
    if (future) {
      const std::size_t dot = host.find('.');
      if (dot == std::string_view::npos || dot < 2 || dot + 1 == host.size()) return false;
      for (char c : host.substr(1, dot - 1)) {
        if (!IsHex(c)) return false;
      }
      std::string_view tail = host.substr(dot + 1);
      for (char c : tail) {
        if (!IsUnreserved(c) && !IsSubDelim(c) && c != ':') return false;
      }
    } else if (!IsIpv6(host)) {
      return false;
    }
  } else {
    if (std::size_t colon = a.rfind(':'); colon != std::string_view::npos) {
      host = a.substr(0, colon);
      port = a.substr(colon + 1);
    }
    if (!AllOf(host, "", iri)) return false;  // reg-name, which IPv4 addresses are too
  }
  for (char c : port) {
    if (!IsDigit(c)) return false;
  }
  return true;
}

// scheme ":" hier-part, or (references) a relative-ref; then [ "?" query ] [ "#" fragment ].
// `iri`: RFC 3987's IRI, the same grammar with non-ASCII characters allowed.
bool IsUriOrReference(std::string_view s, bool reference, bool iri = false) {
  if (std::size_t hash = s.find('#'); hash != std::string_view::npos) {
    if (!AllOf(s.substr(hash + 1), ":@/?", iri)) return false;
    s = s.substr(0, hash);
  }
  if (std::size_t q = s.find('?'); q != std::string_view::npos) {
    if (!AllOf(s.substr(q + 1), ":@/?", iri)) return false;
    s = s.substr(0, q);
  }
  // A scheme is what precedes the first ':' when no '/' comes before it.
  const std::size_t colon = s.find(':');
  const bool has_scheme = colon != std::string_view::npos && colon < s.find('/');
  if (has_scheme) {
    std::string_view scheme = s.substr(0, colon);
    if (scheme.empty() || !IsAlpha(scheme.front())) return false;
    for (char c : scheme) {
      if (!IsAlpha(c) && !IsDigit(c) && c != '+' && c != '-' && c != '.') return false;
    }
    s.remove_prefix(colon + 1);
  } else if (!reference) {
    return false;
  }
  if (s.starts_with("//")) {
    s.remove_prefix(2);
    const std::size_t slash = s.find('/');
    if (!IsAuthority(s.substr(0, slash), iri)) return false;
    s = slash == std::string_view::npos ? std::string_view() : s.substr(slash);
  }
  // The path; a relative path's first segment cannot hold a ':' (it would read as a scheme),
  // which the scheme test above already turned away.
  return AllOf(s, ":@/", iri);
}

// RFC 6570 URI Template, levels 1-4: literals (what a URI may hold, percent-encodings, and
// non-ASCII characters) and expressions "{" [operator] varspec *( "," varspec ) "}", where a
// varspec is a name of ALPHA / DIGIT / "_" / percent-encodings, dot-separated, with an optional
// ":" max-length (1-9999) or "*".
bool IsUriTemplate(std::string_view s) {
  auto is_literal = [](char c) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x80) return true;
    if (u <= 0x20 || c == 0x7f) return false;
    return std::string_view("\"'%<>\\^`{|}").find(c) == std::string_view::npos;
  };
  std::size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '%') {
      if (!IsPercentEncodedAt(s, i)) return false;
      i += 3;
      continue;
    }
    if (c != '{') {
      if (!is_literal(c)) return false;
      ++i;
      continue;
    }
    const std::size_t close = s.find('}', i);
    if (close == std::string_view::npos) return false;
    std::string_view expr = s.substr(i + 1, close - i - 1);
    i = close + 1;
    if (!expr.empty() && std::string_view("+#./;?&").find(expr.front()) != std::string_view::npos) {
      expr.remove_prefix(1);
    }
    // Each varspec, split at commas; an empty one (or expression) is not a name.
    for (;;) {
      const std::size_t comma = expr.find(',');
      std::string_view spec = expr.substr(0, comma);
      std::string_view name = spec;
      if (std::size_t colon = spec.find(':'); colon != std::string_view::npos) {
        name = spec.substr(0, colon);
        std::string_view len = spec.substr(colon + 1);
        if (len.empty() || len.size() > 4 || len.front() == '0') return false;
        for (char d : len) {
          if (!IsDigit(d)) return false;
        }
      } else if (spec.ends_with('*')) {
        name = spec.substr(0, spec.size() - 1);
      }
      if (name.empty() || name.front() == '.' || name.back() == '.') return false;
      for (std::size_t k = 0; k < name.size(); ++k) {
        const char v = name[k];
        if (v == '%') {
          if (!IsPercentEncodedAt(name, k)) return false;
          k += 2;
        } else if (v == '.') {
          if (name[k + 1] == '.') return false;
        } else if (!IsAlpha(v) && !IsDigit(v) && v != '_') {
          return false;
        }
      }
      if (comma == std::string_view::npos) break;
      expr.remove_prefix(comma + 1);
    }
  }
  return true;
}

// A pattern the `pattern` keyword would take: RE2's syntax, which is ECMA-262's without
// lookaround and backreferences. Bounded, since the text comes from a request body.
bool IsRegex(std::string_view s) {
  if (s.size() > 4096) return false;
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(1 << 20);
  RE2 re(re2::StringPiece(s.data(), s.size()), options);
  return re.ok();
}

bool IsJsonPointer(std::string_view s) {
  if (s.empty()) return true;
  if (s.front() != '/') return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '~' && (i + 1 >= s.size() || (s[i + 1] != '0' && s[i + 1] != '1'))) return false;
  }
  return true;
}

bool IsRelativeJsonPointer(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size() && IsDigit(s[i])) ++i;
  if (i == 0 || (i > 1 && s[0] == '0')) return false;
  std::string_view rest = s.substr(i);
  return rest == "#" || IsJsonPointer(rest);
}

bool IsUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !IsHex(s[i])) return false;
  }
  return true;
}

// RFC 5321's Mailbox: a dot-atom or quoted local part (at most 64 octets), then a host name or
// an address literal. `international`: RFC 6531's, whose local part may hold UTF-8 and whose
// domain is an IDN.
bool IsEmail(std::string_view s, bool international = false) {
  auto non_ascii = [&](char c) { return international && static_cast<unsigned char>(c) >= 0x80; };
  std::size_t i = 0;
  if (s.starts_with('"')) {
    for (i = 1; i < s.size() && s[i] != '"'; ++i) {
      if (s[i] == '\\') {
        if (++i >= s.size() || s[i] < 32 || s[i] > 126) return false;
      } else if ((s[i] < 32 || s[i] > 126) && !non_ascii(s[i])) {
        return false;
      }
    }
    if (i >= s.size()) return false;
    ++i;  // the closing quote
  } else {
    static constexpr std::string_view kAtextSymbols = "!#$%&'*+-/=?^_`{|}~";
    bool after_dot = true;  // no leading dot, no two in a row
    for (; i < s.size() && s[i] != '@'; ++i) {
      const char c = s[i];
      if (c == '.') {
        if (after_dot) return false;
        after_dot = true;
      } else if (IsAlpha(c) || IsDigit(c) || kAtextSymbols.find(c) != std::string_view::npos ||
                 non_ascii(c)) {
        after_dot = false;
      } else {
        return false;
      }
    }
    if (after_dot) return false;  // empty, or a trailing dot
  }
  if (i > 64 || i >= s.size() || s[i] != '@') return false;
  std::string_view domain = s.substr(i + 1);
  if (domain.starts_with('[') && domain.ends_with(']')) {
    std::string_view literal = domain.substr(1, domain.size() - 2);
    if (literal.starts_with("IPv6:")) return IsIpv6(literal.substr(5));
    return IsIpv4(literal);
  }
  return international ? IsIdnHostname(domain) : IsHostname(domain);
}

bool IsBase64(std::string_view s) {
  if (s.size() % 4 != 0) return false;
  std::size_t padding = 0;
  while (padding < 2 && padding < s.size() && s[s.size() - 1 - padding] == '=') ++padding;
  for (std::size_t i = 0; i < s.size() - padding; ++i) {
    const char c = s[i];
    if (!IsAlpha(c) && !IsDigit(c) && c != '+' && c != '/') return false;
  }
  return true;
}

bool IsIntegerWithin(const boost::json::value& v, int bits) {
  const double limit = std::ldexp(1.0, bits - 1);  // 2^31 or 2^63, exactly representable
  if (v.is_int64()) return bits == 64 || (v.get_int64() >= -limit && v.get_int64() < limit);
  if (v.is_uint64()) return false;  // the parser makes uint64 only of integers past INT64_MAX
  const double d = v.get_double();
  return std::isfinite(d) && std::floor(d) == d && d >= -limit && d < limit;
}

}  // namespace

std::optional<StringFormat> FormatNamed(std::string_view name) {
  for (auto [known, format] : kFormats) {
    if (known == name) return format;
  }
  return std::nullopt;
}

std::string_view KnownFormatNames() {
  return "date-time, date, time, duration, email, idn-email, hostname, idn-hostname, ipv4, ipv6, "
         "uri, uri-reference, iri, iri-reference, uri-template, regex, uuid, json-pointer, "
         "relative-json-pointer, "
         "and OpenAPI's int32, int64, float, double, byte, binary, password";
}

bool MatchesFormat(StringFormat format, std::string_view s) {
  switch (format) {
    case StringFormat::kDateTime:
      return IsDateTime(s);
    case StringFormat::kDate:
      return IsFullDate(s);
    case StringFormat::kTime:
      return IsFullTime(s);
    case StringFormat::kDuration:
      return IsDuration(s);
    case StringFormat::kEmail:
      return IsEmail(s);
    case StringFormat::kHostname:
      return IsHostname(s);
    case StringFormat::kIdnEmail:
      return IsEmail(s, true);
    case StringFormat::kIdnHostname:
      return IsIdnHostname(s);
    case StringFormat::kIpv4:
      return IsIpv4(s);
    case StringFormat::kIpv6:
      return IsIpv6(s);
    case StringFormat::kUri:
      return IsUriOrReference(s, false);
    case StringFormat::kUriReference:
      return IsUriOrReference(s, true);
    case StringFormat::kIri:
      return IsUriOrReference(s, false, true);
    case StringFormat::kIriReference:
      return IsUriOrReference(s, true, true);
    case StringFormat::kUriTemplate:
      return IsUriTemplate(s);
    case StringFormat::kRegex:
      return IsRegex(s);
    case StringFormat::kUuid:
      return IsUuid(s);
    case StringFormat::kJsonPointer:
      return IsJsonPointer(s);
    case StringFormat::kRelativeJsonPointer:
      return IsRelativeJsonPointer(s);
    case StringFormat::kByte:
      return IsBase64(s);
    case StringFormat::kInt32:
    case StringFormat::kInt64:
    case StringFormat::kAnyNumber:
    case StringFormat::kAnyString:
      return true;
  }
  return true;
}

bool MatchesFormat(StringFormat format, const boost::json::value& value) {
  if (value.is_string()) return MatchesFormat(format, std::string_view(value.get_string()));
  if (value.is_number()) {
    if (format == StringFormat::kInt32) return IsIntegerWithin(value, 32);
    if (format == StringFormat::kInt64) return IsIntegerWithin(value, 64);
  }
  return true;
}

}  // namespace gatehouse

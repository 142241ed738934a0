// Small predicates over attacker-controlled text.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace gatehouse {

// An HTTP token (RFC 9110 §5.6.2), as header names must be.
bool IsHttpToken(std::string_view text);
// A CR or LF anywhere: a header value that holds one could split a message.
bool ContainsLineBreak(std::string_view text);

// `text` as valid UTF-8 of at most `max_bytes` bytes: each byte that does not begin a
// well-formed character (RFC 3629: no overlong forms, surrogates, or code points past U+10FFFF)
// becomes U+FFFD, and the end is cut before the first character that would not fit whole.
// Header values may carry any byte (obs-text), and what is stored or served as JSON must be
// UTF-8: PostgreSQL refuses anything else in a text column.
std::string ValidUtf8(std::string_view text, std::size_t max_bytes);

// A request id we are willing to echo back: 1-128 characters of [A-Za-z0-9._:-].
bool IsSafeRequestId(std::string_view text);

// Inline: header parsing and proxying compare every field's name with several constants, and
// most comparisons end at the length check.
inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

// A hash that lets unordered maps keyed by std::string be searched with a string_view, without
// building a string per lookup: std::unordered_map<std::string, V, StringHash, std::equal_to<>>.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace gatehouse

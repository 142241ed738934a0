#include "core/text.h"

#include <array>

namespace gatehouse {

namespace {
// RFC 9110 tchar, as a table: every header name of every request is checked against it.
constexpr std::array<bool, 256> kTokenChars = [] {
  std::array<bool, 256> table{};
  for (int c = '0'; c <= '9'; ++c) table[static_cast<std::size_t>(c)] = true;
  for (int c = 'a'; c <= 'z'; ++c) table[static_cast<std::size_t>(c)] = true;
  for (int c = 'A'; c <= 'Z'; ++c) table[static_cast<std::size_t>(c)] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) table[static_cast<unsigned char>(c)] = true;
  return table;
}();
}  // namespace

bool IsHttpToken(std::string_view text) {
  if (text.empty()) return false;
  for (unsigned char c : text) {
    if (!kTokenChars[c]) return false;
  }
  return true;
}

bool ContainsLineBreak(std::string_view text) {
  return text.find('\r') != std::string_view::npos || text.find('\n') != std::string_view::npos;
}

bool IsSafeRequestId(std::string_view text) {
  if (text.empty() || text.size() > 128) return false;
  for (unsigned char c : text) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace gatehouse

#include "core/text.h"

#include <algorithm>
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

std::string ValidUtf8(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) {
    bool ascii = true;
    for (unsigned char c : text) ascii = ascii && c < 0x80;
    if (ascii) return std::string(text);  // what almost every client sends
  }
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    unsigned char low = 0x80, high = 0xBF;  // the range of the second byte
    if (lead < 0x80) {
      length = 1;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) low = 0xA0;   // overlong
      if (lead == 0xED) high = 0x9F;  // surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) low = 0x90;   // overlong
      if (lead == 0xF4) high = 0x8F;  // past U+10FFFF
    }
    bool whole = length > 0 && i + length <= text.size();
    if (whole && length > 1) {
      const auto second = static_cast<unsigned char>(text[i + 1]);
      whole = second >= low && second <= high;
      for (std::size_t k = 2; whole && k < length; ++k) {
        whole = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
      }
    }
    const std::string_view piece = whole ? text.substr(i, length) : kReplacement;
    if (out.size() + piece.size() > max_bytes) break;
    out.append(piece);
    i += whole ? length : 1;
  }
  return out;
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

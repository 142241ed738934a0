// How list-valued fields (scopes, IP allowlists) are stored by both stores: one text column of
// space-separated words. Scopes and CIDRs never contain spaces; both are validated on the way in.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace gatehouse {

inline std::string JoinWords(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

inline std::vector<std::string> SplitWords(std::string_view text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(' ', start);
    if (end == std::string_view::npos) end = text.size();
    if (end > start) out.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace gatehouse

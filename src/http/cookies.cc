#include "http/cookies.h"

namespace gatehouse {

namespace {

// Calls `each(name, pair)` for every non-empty `name=value` pair of a Cookie header, trimmed,
// until it returns false.
template <typename F>
void ForEachCookie(std::string_view header, F&& each) {
  while (!header.empty()) {
    std::size_t end = header.find(';');
    std::string_view pair = header.substr(0, end);
    header = end == std::string_view::npos ? std::string_view() : header.substr(end + 1);
    while (!pair.empty() && (pair.front() == ' ' || pair.front() == '\t')) pair.remove_prefix(1);
    while (!pair.empty() && (pair.back() == ' ' || pair.back() == '\t')) pair.remove_suffix(1);
    if (pair.empty()) continue;
    if (!each(pair.substr(0, pair.find('=')), pair)) return;
  }
}

}  // namespace

std::optional<std::string_view> CookieValue(std::string_view header, std::string_view name) {
  if (name.empty()) return std::nullopt;
  std::optional<std::string_view> found;
  ForEachCookie(header, [&](std::string_view n, std::string_view pair) {
    if (n != name || n.size() == pair.size()) return true;
    std::string_view value = pair.substr(n.size() + 1);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    found = value;
    return false;
  });
  return found;
}

std::string WithoutCookie(std::string_view header, std::string_view name) {
  std::string out;
  ForEachCookie(header, [&](std::string_view n, std::string_view pair) {
    if (n == name) return true;
    if (!out.empty()) out += "; ";
    out += pair;
    return true;
  });
  return out;
}

}  // namespace gatehouse

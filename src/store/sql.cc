#include "store/sql.h"

#include <map>
#include <mutex>
#include <utility>

namespace gatehouse {

const char* DialectText(const char* sql, std::string (*rewrite)(std::string_view)) {
  static std::mutex mu;
  static std::map<std::pair<const char*, void*>, std::string> texts;
  std::lock_guard lock(mu);
  auto key = std::make_pair(sql, reinterpret_cast<void*>(rewrite));
  auto it = texts.find(key);
  if (it == texts.end()) it = texts.emplace(key, rewrite(sql)).first;
  return it->second.c_str();
}

std::string ReplaceAll(std::string text, std::string_view from, std::string_view to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

}  // namespace gatehouse

#include "store/sql.h"

#include <charconv>
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

std::string JournalMetaName(std::string_view journal_id) {
  return "audit_journal:" + std::string(journal_id);
}

std::string FormatJournalMark(const JournalMark& mark) {
  return std::to_string(mark.segment) + ":" + std::to_string(mark.offset);
}

Result<std::optional<JournalMark>> ParseJournalMark(std::string_view value) {
  JournalMark mark;
  const char* end = value.data() + value.size();
  auto [colon, e1] = std::from_chars(value.data(), end, mark.segment);
  if (e1 == std::errc() && colon != end && *colon == ':') {
    auto [last, e2] = std::from_chars(colon + 1, end, mark.offset);
    if (e2 == std::errc() && last == end) return std::optional<JournalMark>(mark);
  }
  return Fail(ErrorCode::kInternal, "the stored audit journal progress is malformed");
}

Result<void> RequireAuditOrgs(const std::vector<AuditEvent>& events) {
  for (const auto& e : events) {
    if (e.org_id.empty()) {
      return Fail(ErrorCode::kInternal,
                  "an audit event without an org (action '" + e.action + "') was not stored");
    }
  }
  return {};
}

}  // namespace gatehouse

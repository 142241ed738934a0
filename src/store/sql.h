// One transaction's SQL, the same text on both stores, for the domains whose queries are plain
// enough to write once (people: users, sessions, memberships, roles, invitations; see
// store/people_repository.h). The stores keep their own tenancy:
//   - `$1`, `$2`… are the parameters, numbered in order of first use;
//   - `tenant_<table>` names an org-owned table as the transaction's org sees it: a view over
//     that org's rows on SQLite, the table itself behind row level security on PostgreSQL;
//   - `{lock}` locks the rows read until the transaction ends (FOR UPDATE on PostgreSQL; an
//     SQLite write transaction holds the whole database already).
// A transaction with no org ("global") sees the tables that belong to no org (users, sessions,
// login failures) and none of any org's rows; the few reads that cross orgs differ by dialect
// (SECURITY DEFINER functions on PostgreSQL, the system path on SQLite).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "store/records.h"

namespace gatehouse {

// A statement parameter in text form; nullopt is SQL NULL.
using SqlParam = std::optional<std::string>;
inline SqlParam SqlText(std::string_view v) { return std::string(v); }
inline SqlParam SqlInt(std::int64_t v) { return std::to_string(v); }
inline SqlParam SqlOptInt(const std::optional<std::int64_t>& v) {
  return v ? SqlParam(std::to_string(*v)) : std::nullopt;
}

class SqlRows {
 public:
  std::vector<std::vector<std::optional<std::string>>> rows;

  int size() const { return static_cast<int>(rows.size()); }
  bool empty() const { return rows.empty(); }
  std::string Text(int row, int col) const { return rows[row][col].value_or(""); }
  std::int64_t Int(int row, int col) const {
    const auto& v = rows[row][col];
    return v ? std::strtoll(v->c_str(), nullptr, 10) : 0;
  }
  std::optional<std::int64_t> OptInt(int row, int col) const {
    const auto& v = rows[row][col];
    if (!v) return std::nullopt;
    return std::strtoll(v->c_str(), nullptr, 10);
  }
};

class SqlTx {
 public:
  enum class Dialect { kSqlite, kPostgres };
  virtual ~SqlTx() = default;
  virtual Dialect dialect() const = 0;
  // `sql` must be a string literal (or otherwise live forever): statements are prepared once
  // per connection and keyed by its address.
  virtual Result<SqlRows> Query(const char* sql, const std::vector<SqlParam>& params) = 0;
  // Appends `event` to the chain of `event.org_id` (an org of the transaction, or in a global
  // transaction any org or "system"), in this transaction.
  virtual Result<void> Append(const AuditEvent& event) = 0;
};

// The statement text a store runs for `sql`: `rewrite(sql)`, computed once per statement and
// kept for the life of the process (statements are literals, and prepared statements are keyed
// by the address this returns).
const char* DialectText(const char* sql, std::string (*rewrite)(std::string_view));

// `text` with every `from` replaced by `to`.
std::string ReplaceAll(std::string text, std::string_view from, std::string_view to);

// `org_id` empty: a global transaction. `write`: takes the write lock up front (SQLite).
using SqlBody = std::function<Result<void>(SqlTx&)>;

// An audit journal's progress lives in the stores' meta table: name "audit_journal:<id>",
// value "<segment>:<offset>".
std::string JournalMetaName(std::string_view journal_id);
std::string FormatJournalMark(const JournalMark& mark);
Result<std::optional<JournalMark>> ParseJournalMark(std::string_view value);

// Every event of a batch names its org: one without would open a chain of its own, org "".
Result<void> RequireAuditOrgs(const std::vector<AuditEvent>& events);

}  // namespace gatehouse

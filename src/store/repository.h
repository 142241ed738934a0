// Helpers for the repositories written once over Store::RunSql (people, access policies).
#pragma once

#include <functional>
#include <optional>
#include <string_view>
#include <vector>

#include "store/sql.h"
#include "store/store.h"

namespace gatehouse::repository {

// As in the stores: the forgetful test build drops the org conditions, to show that the
// database alone keeps orgs apart. The org parameter stays (as a condition that holds for every
// row), so that parameters keep their numbers.
#ifdef GATEHOUSE_FORGET_ORG_FILTER
#define GH_ORG_FILTER(sql) "WHERE CAST($1 AS TEXT) IS NOT NULL "
#define GH_ORG_AND(sql) "CAST($1 AS TEXT) IS NOT NULL AND "
#else
#define GH_ORG_FILTER(sql) sql
#define GH_ORG_AND(sql) sql " AND "
#endif

// Org conditions always use $1.
inline std::vector<SqlParam> OrgParams(std::string_view org_id, std::vector<SqlParam> rest) {
  std::vector<SqlParam> out{SqlText(org_id)};
  for (auto& p : rest) out.push_back(std::move(p));
  return out;
}

inline Result<void> AppendAll(SqlTx& tx, const std::vector<AuditEvent>& audit) {
  for (const auto& e : audit) {
    if (auto r = tx.Append(e); !r) return r;
  }
  return {};
}

template <typename T>
Result<T> Run(Store& store, std::string_view org_id, bool write,
              const std::function<Result<T>(SqlTx&)>& body) {
  std::optional<T> out;
  auto r = store.RunSql(org_id, write, [&](SqlTx& tx) -> Result<void> {
    auto v = body(tx);
    if (!v) return tl::unexpected(v.error());
    out = std::move(*v);
    return {};
  });
  if (!r) return tl::unexpected(r.error());
  return std::move(*out);
}

inline Result<void> RunVoid(Store& store, std::string_view org_id, const SqlBody& body) {
  return store.RunSql(org_id, true, body);
}

// One statement whose rows nobody reads, in a write transaction of its own.
inline Result<void> RunStatement(Store& store, std::string_view org_id, const char* sql,
                                 const std::vector<SqlParam>& params) {
  return RunVoid(store, org_id, [&](SqlTx& tx) -> Result<void> {
    auto r = tx.Query(sql, params);
    if (!r) return tl::unexpected(r.error());
    return {};
  });
}

}  // namespace gatehouse::repository

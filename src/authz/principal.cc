#include "authz/principal.h"

#include <algorithm>

namespace gatehouse {

bool HasScope(const Principal& p, std::string_view scope) {
  for (const auto& s : p.scopes) {
    if (s == scope || s == "admin") return true;
  }
  return false;
}

Result<void> RequireScopes(const Principal& p, const std::vector<std::string>& required) {
  std::vector<std::string> missing;
  for (const auto& r : required) {
    if (!HasScope(p, r)) missing.push_back(r);
  }
  if (missing.empty()) return {};
  Error e{ErrorCode::kPermissionDenied,
          "missing required scope: " + JoinScopes(missing, ','),
          {},
          std::move(missing)};
  return tl::unexpected(std::move(e));
}

Result<void> RequireOrg(const Principal& p, std::string_view org_id) {
  if (p.org_id == org_id) return {};
  return Fail(ErrorCode::kOrgMismatch, "this credential belongs to a different organization");
}

std::string JoinScopes(const std::vector<std::string>& scopes, char sep) {
  std::string out;
  for (const auto& s : scopes) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

}  // namespace gatehouse

#include "authz/principal.h"

#include <algorithm>

namespace gatehouse {

namespace {
// The platform's administration permissions cover gatehouse's own objects of the same kind, so
// that a role built from the platform's categories works on gatehouse's endpoints too.
bool Implies(std::string_view held, std::string_view wanted) {
  if (!held.starts_with("admin:")) return false;
  std::string_view kind = held.substr(6);
  std::string_view object = kind == "users"      ? "members:"
                            : kind == "roles"    ? "roles:"
                            : kind == "settings" ? "orgs:"
                                                 : "";
  return !object.empty() && wanted.starts_with(object) &&
         (wanted.substr(object.size()) == "read" || wanted.substr(object.size()) == "write");
}
}  // namespace

bool HasScope(const Principal& p, std::string_view scope) {
  for (const auto& s : p.scopes) {
    if (s == scope || s == "admin" || Implies(s, scope)) return true;
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

#include "people/roles.h"

#include <algorithm>

namespace gatehouse {

namespace {

bool Has(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::vector<std::string> Matching(const std::vector<std::string>& all,
                                  const std::vector<std::string_view>& suffixes) {
  std::vector<std::string> out;
  for (const auto& p : all) {
    for (auto s : suffixes) {
      if (p.size() > s.size() && p.ends_with(s)) {
        out.push_back(p);
        break;
      }
    }
  }
  return out;
}

void AddUnique(std::vector<std::string>& to, const std::vector<std::string>& from) {
  for (const auto& p : from) {
    if (!Has(to, p)) to.push_back(p);
  }
}

}  // namespace

std::vector<RoleView> BuiltinRoles(const Config& config) {
  const auto& builtin = BuiltinPermissions();
  std::vector<RoleView> out;
  out.push_back(
      {"owner", "Everything, including billing and making other owners", {"admin"}, true});

  RoleView admin{"admin", "Everything but billing and the owner role", {}, true};
  for (const auto& p : builtin) {
    if (p != "admin" && p != "admin:billing") admin.permissions.push_back(p);
  }
  AddUnique(admin.permissions, config.scopes);
  out.push_back(std::move(admin));

  RoleView developer{
      "developer",
      "Builds with the platform: API keys, dashboards, workflows, integrations, AI",
      {"orgs:read", "keys:read", "keys:write", "keys:verify", "members:read", "roles:read",
       "webhooks:read", "webhooks:write", "vault:read", "dashboards:view", "dashboards:create",
       "dashboards:edit", "workflows:view", "workflows:create", "workflows:execute",
       "integrations:connect", "integrations:configure", "ai:use", "ai:deploy_agents"},
      true};
  AddUnique(developer.permissions, config.scopes);
  out.push_back(std::move(developer));

  RoleView viewer{"viewer", "Reads dashboards, workflows and the org", {}, true};
  viewer.permissions = {"orgs:read", "members:read", "roles:read", "keys:read"};
  AddUnique(viewer.permissions, Matching(builtin, {":view"}));
  AddUnique(viewer.permissions, Matching(config.scopes, {":view", ":read"}));
  for (const auto& s : config.scopes) {
    if (s.starts_with("read:") && !Has(viewer.permissions, s)) viewer.permissions.push_back(s);
  }
  out.push_back(std::move(viewer));

  RoleView auditor{"auditor",
                   "Reads the audit log, keys, members and settings; changes nothing",
                   {"audit:read", "orgs:read", "keys:read", "members:read", "roles:read",
                    "webhooks:read", "dashboards:view", "workflows:view"},
                   true};
  out.push_back(std::move(auditor));
  return out;
}

std::optional<RoleView> BuiltinRole(const Config& config, std::string_view name) {
  for (auto& r : BuiltinRoles(config)) {
    if (r.name == name) return r;
  }
  return std::nullopt;
}

RoleView FromRecord(const RoleRecord& r) { return {r.name, r.description, r.permissions, false}; }

bool IsValidRoleName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  if (!(name[0] >= 'a' && name[0] <= 'z')) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

}  // namespace gatehouse

// Roles are named sets of permissions. Five are built in (owner, admin, developer, viewer,
// auditor); orgs add their own (RoleRecord). A permission is a catalogue string: gatehouse's own
// objects (keys, members, roles, audit, vault, webhooks, org settings), the categories our
// users' platforms name (dashboards, workflows, integrations, AI, administration), and the
// deployment's route scopes (Config::scopes).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "store/records.h"

namespace gatehouse {

struct RoleView {
  std::string name;
  std::string description;
  std::vector<std::string> permissions;
  bool builtin = false;
};

inline constexpr std::string_view kOwnerRole = "owner";

// The built-in roles, with permissions resolved against `config` (admin and developer hold
// the deployment's route scopes too).
std::vector<RoleView> BuiltinRoles(const Config& config);
std::optional<RoleView> BuiltinRole(const Config& config, std::string_view name);
RoleView FromRecord(const RoleRecord& r);

// Role names: 1-64 of [a-z0-9_-], starting with a letter.
bool IsValidRoleName(std::string_view name);

}  // namespace gatehouse

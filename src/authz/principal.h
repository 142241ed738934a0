// Who is calling, as established by authentication. Built once per request and passed by const
// reference to everything that decides.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "limits/access_policy.h"

namespace gatehouse {

struct Principal {
  std::string org_id;
  std::string id;    // key id (users join in a later issue)
  std::string kind;  // "api_key"
  std::vector<std::string> scopes;
  std::string environment;  // "live" or "test"
  UnixMicros auth_time = 0;
  // Abuse protection: the org's own policy (null: none set) and the key's own rate limit.
  AccessPolicyPtr org_policy = nullptr;
  RatePolicy key_rate_limit = {};
  UsageQuota key_quota = {};      // the key's credits per period (credits 0: none)
  std::int64_t credits_used = 0;  // as loaded with the key (see QuotaService)
  std::int64_t credits_period = 0;
};

// `admin` holds every permission within its own org, and nothing outside it. The platform's
// `admin:users`, `admin:roles` and `admin:settings` hold members:*, roles:* and orgs:* (read and
// write) respectively.
bool HasScope(const Principal& p, std::string_view scope);

// kPermissionDenied naming every missing scope in Error::required.
Result<void> RequireScopes(const Principal& p, const std::vector<std::string>& required);

// kOrgMismatch when the addressed org is not the principal's, whatever its scopes. The message
// is the same whether or not the other org exists.
Result<void> RequireOrg(const Principal& p, std::string_view org_id);

std::string JoinScopes(const std::vector<std::string>& scopes, char sep = ' ');

}  // namespace gatehouse

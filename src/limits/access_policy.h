// What an org or a key has set for itself through the API, on top of the configured defaults:
// a rate limit, and for an org an IP allowlist for every credential of the org.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/cidr.h"
#include "limits/rate_policy.h"
#include "limits/usage_quota.h"

namespace gatehouse {

struct AccessPolicy {
  RatePolicy rate_limit;                  // requests 0: the configured default applies
  std::vector<std::string> ip_allowlist;  // CIDR texts as given; empty: any address
  std::vector<Cidr> ip_allowlist_cidrs;   // parsed
  bool allowlist_shadow = false;          // count and record refusals, refuse nothing
  UsageQuota quota;                       // keys only: credits per period
  UnixMicros updated_at = 0;
};

using AccessPolicyPtr = std::shared_ptr<const AccessPolicy>;

}  // namespace gatehouse

// Access policies in the control plane (issue 6): reading them from request bodies, storing
// them with their audit events, and showing them. Shared by the key and org handlers.
#pragma once

#include <optional>

#include <boost/json/value.hpp>

#include "api/control_plane.h"
#include "core/json_input.h"
#include "limits/access_policy.h"

namespace gatehouse {

// `rate_limit`: absent (nullopt), null (a policy with requests 0: back to the default), or
// {"requests":…,"window":…,"burst":…,"mode":…}.
Result<std::optional<RatePolicy>> ReadRateLimitField(JsonObjectReader& in);

// `quota`: absent, null (none), or {"credits":…,"refill":…,"mode":…}.
Result<std::optional<UsageQuota>> ReadQuotaField(JsonObjectReader& in);

// `ip_allowlist_mode`: absent, "enforce" (false) or "shadow" (true).
Result<std::optional<bool>> ReadAllowlistShadowField(JsonObjectReader& in);

// The key's own policy (rate limit and quota; empty when none).
Result<AccessPolicy> KeyPolicy(ControlPlaneDeps& d, std::string_view org_id,
                               std::string_view key_id);
// Stores it with a "key.policy" event, and drops the key from this process's cache at once.
Result<void> SaveKeyPolicy(ControlPlaneDeps& d, const HttpRequest& req, const Principal& p,
                           const ApiKeyRecord& key, const AccessPolicy& policy);

// The key as the API shows it, with its own rate limit.
Result<HttpResponse> KeyResponse(ControlPlaneDeps& d, const ApiKeyRecord& key, int status);

// null when the policy does not apply (requests 0).
boost::json::value RateLimitJson(const RatePolicy& p);
boost::json::value QuotaJson(const UsageQuota& q);

// The org's rate limit and allowlist as GET/PATCH /v1/orgs/{org} show them.
Result<void> AddOrgPolicyJson(ControlPlaneDeps& d, std::string_view org_id,
                              boost::json::object& out);
// Reads rate_limit, ip_allowlist and ip_allowlist_mode from a PATCH body and validates them
// against the current policy: the policy to store, or nullopt when none was given.
Result<std::optional<AccessPolicy>> ReadOrgPolicyChange(ControlPlaneDeps& d, const HttpRequest& req,
                                                        const Principal& p, JsonObjectReader& in);
// Stores it with an "org.access_policy" event (needs a recent sign-in for sessions).
Result<void> ApplyOrgPolicyChange(ControlPlaneDeps& d, const HttpRequest& req, const Principal& p,
                                  AccessPolicy policy);

}  // namespace gatehouse

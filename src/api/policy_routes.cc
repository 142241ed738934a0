#include <boost/json/serialize.hpp>

#include "api/guard.h"
#include "api/policies.h"
#include "audit/details.h"
#include "limits/org_policy_cache.h"
#include "store/policy_repository.h"

namespace gatehouse {

namespace json = boost::json;

namespace {

// A nullable object field: absent (nullopt), null (a default T: "none"), or read by `read`.
template <typename T, typename Read>
Result<std::optional<T>> ReadNullableObject(JsonObjectReader& in, std::string_view name,
                                            Read read) {
  if (in.IsNull(name)) {
    (void)in.OptObject(name);  // marks it read
    return std::optional<T>(T{});
  }
  auto o = in.OptObject(name);
  if (!o) return tl::unexpected(o.error());
  if (!*o) return std::optional<T>();
  auto v = read(**o, name);
  if (!v) return tl::unexpected(v.error());
  return std::optional<T>(std::move(*v));
}

}  // namespace

Result<std::optional<RatePolicy>> ReadRateLimitField(JsonObjectReader& in) {
  return ReadNullableObject<RatePolicy>(in, "rate_limit", ReadRatePolicy);
}

json::value RateLimitJson(const RatePolicy& p) {
  if (!p.enabled()) return nullptr;
  return RatePolicyJson(p);
}

Result<std::optional<UsageQuota>> ReadQuotaField(JsonObjectReader& in) {
  return ReadNullableObject<UsageQuota>(in, "quota", ReadUsageQuota);
}

Result<std::optional<bool>> ReadAllowlistShadowField(JsonObjectReader& in) {
  auto mode = in.OptString("ip_allowlist_mode");
  if (!mode) return tl::unexpected(mode.error());
  if (!*mode) return std::optional<bool>();
  if (**mode != "enforce" && **mode != "shadow") {
    return FailField("ip_allowlist_mode", "ip_allowlist_mode must be \"enforce\" or \"shadow\"");
  }
  return std::optional<bool>(**mode == "shadow");
}

json::value QuotaJson(const UsageQuota& q) {
  if (!q.enabled()) return nullptr;
  return UsageQuotaJson(q);
}

Result<AccessPolicy> KeyPolicy(ControlPlaneDeps& d, std::string_view org_id,
                               std::string_view key_id) {
  if (!d.policies) return AccessPolicy{};
  auto p = d.policies->Get(org_id, key_id);
  if (!p) return tl::unexpected(p.error());
  return p->value_or(AccessPolicy{});
}

Result<void> SaveKeyPolicy(ControlPlaneDeps& d, const HttpRequest& req, const Principal& p,
                           const ApiKeyRecord& key, const AccessPolicy& given) {
  if (!d.policies) return Fail(ErrorCode::kInternal, "access policies are not configured");
  AccessPolicy policy = given;
  policy.updated_at = d.clock.Now();
  AuditEvent e =
      SourceOf(req, p.id).Event(p.org_id, "key.policy", "key:" + key.id, 200, policy.updated_at);
  e.details = DetailsOf(
      {{"rate_limit",
        policy.rate_limit.enabled() ? StoreRatePolicy(policy.rate_limit) : std::string("default")},
       {"quota", policy.quota.enabled() ? StoreUsageQuota(policy.quota) : std::string("none")},
       {"ip_allowlist_mode", policy.allowlist_shadow ? "shadow" : "enforce"}});
  if (auto r = d.policies->Put(p.org_id, key.id, policy, e); !r) return r;
  if (d.verifier) d.verifier->Invalidate(key.key_hash);
  return {};
}

Result<void> AddOrgPolicyJson(ControlPlaneDeps& d, std::string_view org_id, json::object& out) {
  if (!d.policies) return {};
  auto p = d.policies->Get(org_id, "");
  if (!p) return tl::unexpected(p.error());
  AccessPolicy policy = p->value_or(AccessPolicy{});
  out["rate_limit"] = RateLimitJson(policy.rate_limit);
  out["ip_allowlist"] = Strings(policy.ip_allowlist);
  out["ip_allowlist_mode"] = policy.allowlist_shadow ? "shadow" : "enforce";
  return {};
}

Result<std::optional<AccessPolicy>> ReadOrgPolicyChange(ControlPlaneDeps& d, const HttpRequest& req,
                                                        const Principal& p, JsonObjectReader& in) {
  auto rate = ReadRateLimitField(in);
  if (!rate) return tl::unexpected(rate.error());
  auto allow = in.OptStringArray("ip_allowlist");
  if (!allow) return tl::unexpected(allow.error());
  auto shadow = ReadAllowlistShadowField(in);
  if (!shadow) return tl::unexpected(shadow.error());
  if (!*rate && !*allow && !*shadow) return std::optional<AccessPolicy>();
  if (!d.policies) return Fail(ErrorCode::kInternal, "access policies are not configured");
  auto current = d.policies->Get(p.org_id, "");
  if (!current) return tl::unexpected(current.error());
  AccessPolicy policy = current->value_or(AccessPolicy{});
  if (*rate) policy.rate_limit = **rate;
  if (*shadow) policy.allowlist_shadow = **shadow;
  if (*allow) {
    if ((*allow)->size() > 1000) {
      return FailField("ip_allowlist", "ip_allowlist holds at most 1000 entries");
    }
    policy.ip_allowlist.clear();
    policy.ip_allowlist_cidrs.clear();
    for (std::size_t i = 0; i < (*allow)->size(); ++i) {
      auto cidr = Cidr::Parse((**allow)[i]);
      if (!cidr) {
        std::string field = "ip_allowlist[" + std::to_string(i) + "]";
        return FailField(field, field + ": " + cidr.error().message);
      }
      policy.ip_allowlist.push_back(cidr->text());
      policy.ip_allowlist_cidrs.push_back(*cidr);
    }
  }
  // An enforced allowlist that leaves out the caller would lock the admin out with the change.
  if (!policy.allowlist_shadow && !AllowedBy(policy.ip_allowlist_cidrs, req.client_ip)) {
    return FailField("ip_allowlist",
                     "ip_allowlist does not include your own address; add it, or try the list "
                     "with \"ip_allowlist_mode\":\"shadow\" first");
  }
  return std::optional<AccessPolicy>(std::move(policy));
}

Result<void> ApplyOrgPolicyChange(ControlPlaneDeps& d, const HttpRequest& req, const Principal& p,
                                  AccessPolicy policy) {
  if (auto r = RequireRecentSignIn(d, p); !r) return tl::unexpected(r.error());
  policy.updated_at = d.clock.Now();
  AuditEvent e = SourceOf(req, p.id).Event(p.org_id, "org.access_policy", "org:" + p.org_id, 200,
                                           policy.updated_at);
  e.details =
      DetailsOf({{"rate_limit", policy.rate_limit.enabled() ? StoreRatePolicy(policy.rate_limit)
                                                            : std::string("default")},
                 {"ip_allowlist", json::serialize(Strings(policy.ip_allowlist))},
                 {"ip_allowlist_mode", policy.allowlist_shadow ? "shadow" : "enforce"}});
  if (auto r = d.policies->Put(p.org_id, "", policy, e); !r) return tl::unexpected(r.error());
  if (d.org_policies) d.org_policies->Invalidate(p.org_id);
  return {};
}

void RegisterPolicyRoutes(Router& router, std::shared_ptr<ControlPlaneDeps> d) {
  router.Add("PATCH", "/v1/orgs/{org}/keys/{id}", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermKeysWrite, [&](const Principal& p) -> Result<HttpResponse> {
      auto in = JsonObjectReader::Parse(req.body);
      if (!in) return tl::unexpected(in.error());
      auto rate = ReadRateLimitField(*in);
      if (!rate) return tl::unexpected(rate.error());
      auto quota = ReadQuotaField(*in);
      if (!quota) return tl::unexpected(quota.error());
      auto shadow = ReadAllowlistShadowField(*in);
      if (!shadow) return tl::unexpected(shadow.error());
      if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
      if (!*rate && !*quota && !*shadow) {
        return FailField("rate_limit",
                         "nothing to change: give rate_limit, quota and/or ip_allowlist_mode");
      }
      auto key = d->keys.Get(p.org_id, req.PathParam("id"));
      if (!key) return tl::unexpected(key.error());
      auto policy = KeyPolicy(*d, p.org_id, key->id);
      if (!policy) return tl::unexpected(policy.error());
      if (*rate) policy->rate_limit = **rate;
      if (*quota) policy->quota = **quota;
      if (*shadow) policy->allowlist_shadow = **shadow;
      if (auto r = SaveKeyPolicy(*d, req, p, *key, *policy); !r) {
        return tl::unexpected(r.error());
      }
      return KeyResponse(*d, *key, 200);
    });
  });
}

}  // namespace gatehouse

#include "store/policy_repository.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "store/repository.h"

namespace gatehouse {

using namespace repository;

namespace {

std::string ListJson(const std::vector<std::string>& items) {
  boost::json::array a;
  for (const auto& i : items) a.emplace_back(i);
  return boost::json::serialize(a);
}

Result<AccessPolicy> ReadPolicy(const SqlRows& r) {
  AccessPolicy p;
  auto rate = ParseStoredRatePolicy(r.Text(0, 0));
  if (!rate) return tl::unexpected(rate.error());
  p.rate_limit = *rate;
  boost::system::error_code ec;
  auto list = boost::json::parse(r.Text(0, 1), ec);
  if (ec || !list.is_array()) return Fail(ErrorCode::kInternal, "stored allowlist is not JSON");
  for (const auto& item : list.as_array()) {
    if (!item.is_string()) return Fail(ErrorCode::kInternal, "stored allowlist is invalid");
    std::string text(item.as_string());
    auto cidr = Cidr::Parse(text);
    // Validated on the way in; an unparsable entry denies everything rather than nothing.
    p.ip_allowlist_cidrs.push_back(cidr ? *cidr : *Cidr::Parse("::/128"));
    p.ip_allowlist.push_back(std::move(text));
  }
  p.allowlist_shadow = r.Text(0, 2) == "shadow";
  auto quota = ParseStoredUsageQuota(r.Text(0, 3));
  if (!quota) return tl::unexpected(quota.error());
  p.quota = *quota;
  p.updated_at = r.Int(0, 4);
  return p;
}

}  // namespace

Result<std::optional<AccessPolicy>> PolicyRepository::Get(std::string_view org_id,
                                                          std::string_view key_id) {
  return Run<std::optional<AccessPolicy>>(
      store_, org_id, false, [&](SqlTx& tx) -> Result<std::optional<AccessPolicy>> {
        auto r = tx.Query(
            "SELECT rate_limit, ip_allowlist, allowlist_mode, quota, updated_at "
            "FROM tenant_access_policies WHERE " GH_ORG_AND("org_id = $1") "subject = $2",
            OrgParams(org_id, {SqlText(key_id)}));
        if (!r) return tl::unexpected(r.error());
        if (r->empty()) return std::optional<AccessPolicy>();
        auto p = ReadPolicy(*r);
        if (!p) return tl::unexpected(p.error());
        return std::optional<AccessPolicy>(std::move(*p));
      });
}

Result<void> PolicyRepository::Put(std::string_view org_id, std::string_view key_id,
                                   const AccessPolicy& policy, const AuditEvent& audit) {
  return RunVoid(store_, org_id, [&](SqlTx& tx) -> Result<void> {
    std::vector<SqlParam> params = {SqlText(org_id),
                                    SqlText(key_id),
                                    SqlText(StoreRatePolicy(policy.rate_limit)),
                                    SqlText(ListJson(policy.ip_allowlist)),
                                    SqlText(policy.allowlist_shadow ? "shadow" : "enforce"),
                                    SqlText(StoreUsageQuota(policy.quota)),
                                    SqlInt(policy.updated_at)};
    // SQLite's tenant view upserts in its INSTEAD OF trigger (a view cannot take ON CONFLICT).
    auto r = tx.dialect() == SqlTx::Dialect::kSqlite
                 ? tx.Query(
                       "INSERT INTO tenant_access_policies (org_id, subject, rate_limit, "
                       "ip_allowlist, allowlist_mode, quota, updated_at) "
                       "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                       params)
                 : tx.Query(
                       "INSERT INTO tenant_access_policies (org_id, subject, rate_limit, "
                       "ip_allowlist, allowlist_mode, quota, updated_at) "
                       "VALUES ($1, $2, $3, $4, $5, $6, $7) "
                       "ON CONFLICT (org_id, subject) DO UPDATE SET "
                       "rate_limit = excluded.rate_limit, "
                       "ip_allowlist = excluded.ip_allowlist, "
                       "allowlist_mode = excluded.allowlist_mode, "
                       "quota = excluded.quota, "
                       "updated_at = excluded.updated_at",
                       params);
    if (!r) return tl::unexpected(r.error());
    return tx.Append(audit);
  });
}

Result<KeyPolicyLoad> PolicyRepository::LoadForKey(std::string_view org_id, std::string_view key_id,
                                                   UnixMicros now) {
  auto p = Get(org_id, key_id);
  if (!p) return tl::unexpected(p.error());
  KeyPolicyLoad out;
  if (!*p) return out;
  out.ip_allowlist_shadow = (*p)->allowlist_shadow;
  out.rate_limit = (*p)->rate_limit;
  out.quota = (*p)->quota;
  if (out.quota.enabled()) {
    out.credits_period = QuotaPeriod(out.quota, now);
    auto used = CreditsUsed(org_id, QuotaCounterId(out.quota, key_id), out.credits_period);
    if (!used) return tl::unexpected(used.error());
    out.credits_used = *used;
  }
  return out;
}

Result<std::int64_t> PolicyRepository::CreditsUsed(std::string_view org_id, std::string_view key_id,
                                                   std::int64_t period) {
  return Run<std::int64_t>(store_, org_id, false, [&](SqlTx& tx) -> Result<std::int64_t> {
    auto r = tx.Query("SELECT used FROM tenant_key_credits WHERE " GH_ORG_AND(
                          "org_id = $1") "key_id = $2 AND period = $3",
                      OrgParams(org_id, {SqlText(key_id), SqlText(std::to_string(period))}));
    if (!r) return tl::unexpected(r.error());
    return r->empty() ? 0 : r->Int(0, 0);
  });
}

Result<void> PolicyRepository::AddCreditsUsed(std::string_view org_id,
                                              const std::vector<CreditsDelta>& deltas) {
  return RunVoid(store_, org_id, [&](SqlTx& tx) -> Result<void> {
    for (const auto& d : deltas) {
      std::vector<SqlParam> params = {SqlText(org_id), SqlText(d.key_id),
                                      SqlText(std::to_string(d.period)), SqlInt(d.used)};
      // SQLite's tenant view adds in its INSTEAD OF trigger (a view cannot take ON CONFLICT).
      auto r = tx.dialect() == SqlTx::Dialect::kSqlite
                   ? tx.Query(
                         "INSERT INTO tenant_key_credits (org_id, key_id, period, used) "
                         "VALUES ($1, $2, $3, $4)",
                         params)
                   : tx.Query(
                         "INSERT INTO tenant_key_credits (org_id, key_id, period, used) "
                         "VALUES ($1, $2, $3, $4) ON CONFLICT (key_id, period) DO UPDATE "
                         "SET used = key_credits.used + excluded.used",
                         params);
      if (!r) return tl::unexpected(r.error());
    }
    return {};
  });
}

}  // namespace gatehouse

#include "orgs/org_service.h"

#include "core/json_input.h"
#include "core/random.h"

namespace gatehouse {

Result<void> ValidateOrgName(std::string_view name) {
  if (name.empty() || !IsPrintableText(name, 200)) {
    return FailField("name", "name must be 1-200 bytes with no control characters");
  }
  return {};
}

OrgService::OrgService(Store& store, KeyService& keys, const Clock& clock)
    : store_(store), keys_(keys), clock_(clock) {}

Result<NewOrgResult> OrgService::CreateWithOwnerKey(std::string_view name, bool bootstrap) {
  if (auto r = ValidateOrgName(name); !r) return tl::unexpected(r.error());
  NewOrgResult out;
  out.org = Org{NewId("org"), std::string(name), clock_.Now()};
  NewKeyParams params;
  params.label = "Owner key";
  params.scopes = {"admin"};
  auto issued = keys_.Prepare(KeyService::Operator(out.org.id), out.org.id, params);
  if (!issued) return tl::unexpected(issued.error());
  out.owner_key = std::move(*issued);
  AuditEvent event = AuditSource{}.Event(out.org.id, bootstrap ? "org.bootstrap" : "org.create",
                                         "org:" + out.org.id, 201, out.org.created_at);
  event.details = DetailsOf({{"name", out.org.name}, {"owner_key", out.owner_key.record.id}});
  if (auto r = store_.CreateOrgWithKey(out.org, out.owner_key.record, bootstrap, event); !r) {
    return tl::unexpected(r.error());
  }
  return out;
}

Result<NewOrgResult> OrgService::Bootstrap(std::string_view name) {
  return CreateWithOwnerKey(name, true);
}

Result<NewOrgResult> OrgService::Create(std::string_view name) {
  return CreateWithOwnerKey(name, false);
}

Result<Org> OrgService::Get(std::string_view org_id) { return store_.GetOrg(org_id); }

Result<Org> OrgService::Update(std::string_view org_id, const OrgUpdate& update,
                               const AuditSource& source) {
  if (update.name) {
    if (auto r = ValidateOrgName(*update.name); !r) return tl::unexpected(r.error());
  }
  if (update.audit_retention_days &&
      (*update.audit_retention_days < 0 || *update.audit_retention_days > 3650)) {
    return FailField("audit_retention_days",
                     "audit_retention_days must be 0 (keep forever) or 1-3650");
  }
  return store_.UpdateOrg(
      org_id, update,
      source.Event(org_id, "org.update", "org:" + std::string(org_id), 200, clock_.Now()));
}

Result<std::vector<Org>> OrgService::List() { return store_.ListOrgs(); }

}  // namespace gatehouse

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
  if (auto r = store_.CreateOrgWithKey(out.org, out.owner_key.record, bootstrap); !r) {
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

Result<Org> OrgService::Rename(std::string_view org_id, std::string_view name) {
  if (auto r = ValidateOrgName(name); !r) return tl::unexpected(r.error());
  return store_.RenameOrg(org_id, name);
}

Result<std::vector<Org>> OrgService::List() { return store_.ListOrgs(); }

}  // namespace gatehouse

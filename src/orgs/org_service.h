// Organizations: the tenants. Every other object belongs to exactly one.
//
// Thread-safety: safe for concurrent use; every method may block on the store.
#pragma once

#include <string>
#include "audit/details.h"

#include "keys/key_service.h"
#include "store/store.h"

namespace gatehouse {

struct NewOrgResult {
  Org org;
  IssuedKey owner_key;  // scope `admin`, shown once
};

class OrgService {
 public:
  OrgService(Store& store, KeyService& keys, const Clock& clock);

  // `gatehouse init`: the first org and its owner key. kAlreadyExists when already initialised.
  Result<NewOrgResult> Bootstrap(std::string_view name);
  // `gatehouse orgs create`: another org with its own owner key.
  Result<NewOrgResult> Create(std::string_view name);
  Result<Org> Get(std::string_view org_id);
  // Name and audit retention (0 or 1-3650 days); the event records before and after.
  Result<Org> Update(std::string_view org_id, const OrgUpdate& update,
                     const AuditSource& source = {});
  Result<std::vector<Org>> List();

 private:
  Result<NewOrgResult> CreateWithOwnerKey(std::string_view name, bool bootstrap);

  Store& store_;
  KeyService& keys_;
  const Clock& clock_;
};

// 1-200 bytes, no control characters.
Result<void> ValidateOrgName(std::string_view name);

}  // namespace gatehouse

// The one place that builds the object graph from a Config: clock, store, pepper, verifier and
// services. Shared by `serve` and the operator commands, so both apply the same rules.
#pragma once

#include <memory>

#include "audit/audit_service.h"
#include "config/config.h"
#include "keys/key_service.h"
#include "keys/key_verifier.h"
#include "limits/org_policy_cache.h"
#include "orgs/org_service.h"
#include "people/members.h"
#include "store/policy_repository.h"
#include "store/store.h"

namespace gatehouse {

struct App {
  std::shared_ptr<const Config> config;
  std::unique_ptr<Clock> clock;
  std::unique_ptr<Store> store;
  std::unique_ptr<KeyVerifier> verifier;
  std::unique_ptr<KeyService> keys;
  std::unique_ptr<OrgService> orgs;
  std::unique_ptr<AuditService> audit;
  std::unique_ptr<PeopleRepository> people;
  std::unique_ptr<PasswordPolicy> password_policy;
  std::unique_ptr<PasswordHasher> hasher;
  std::unique_ptr<LoginGuard> login_guard;
  std::unique_ptr<SessionService> sessions;
  std::unique_ptr<AccountService> accounts;
  std::unique_ptr<MemberService> members;
  std::unique_ptr<PolicyRepository> policies;
  std::unique_ptr<OrgPolicyCache> org_policies;
  // PepperFingerprint of each pepper held, by role; empty for a role not configured.
  struct {
    std::string current, previous, next;
  } pepper_fingerprints;

  // With `create_pepper`, a missing pepper file is created (0600, 32 random bytes, hex): that is
  // what `gatehouse init` does. Otherwise a missing pepper is an error that says to run init.
  static Result<std::unique_ptr<App>> Open(std::shared_ptr<const Config> config,
                                           bool create_pepper);
};

}  // namespace gatehouse

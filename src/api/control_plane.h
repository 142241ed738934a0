// The JSON control plane under /v1/ and the ops endpoints, as plain handlers on a Router.
// Every handler: authenticate, check the addressed org against the principal's, check the
// permission the endpoint names, validate the body strictly, call a domain service, render JSON.
// openapi.yaml at the repo root documents each route registered here (a test keeps them equal).
#pragma once

#include <filesystem>

#include "audit/audit_service.h"
#include "authz/authenticator.h"
#include "gateway/gateway.h"
#include "http/router.h"
#include "keys/key_service.h"
#include "limits/limit_service.h"
#include "limits/org_policy_cache.h"
#include "limits/quota_service.h"
#include "limits/threat_detector.h"
#include "metrics/metrics.h"
#include "orgs/org_service.h"
#include "people/members.h"
#include "store/policy_repository.h"

namespace gatehouse {

struct ControlPlaneDeps {
  Authenticator& auth;
  KeyService& keys;
  OrgService& orgs;
  Store& store;
  Gateway& gateway;
  Metrics& metrics;
  const Clock& clock;
  AuditService& audit;
  AccountService& accounts;
  SessionService& sessions;
  MemberService& members;
  PeopleRepository& people;
  // Required as a bearer token by /metrics when set; empty: /metrics serves loopback only.
  std::string metrics_token = {};
  // Abuse protection (issue 6); set by whoever assembles the server.
  PolicyRepository* policies = nullptr;
  OrgPolicyCache* org_policies = nullptr;
  KeyVerifier* verifier = nullptr;
  LimitService* limits = nullptr;
  ThreatDetector* threats = nullptr;
  QuotaService* quotas = nullptr;
  // This node's audit journal root, whose quarantine file verify reports (empty: none).
  std::filesystem::path audit_journal_dir = {};
};

void RegisterControlPlane(Router& router, ControlPlaneDeps deps);
// Org and key access policies: rate limits and org IP allowlists (issue 6).
void RegisterPolicyRoutes(Router& router, std::shared_ptr<ControlPlaneDeps> d);
// Sign-in, the caller's own account (/v1/auth, /v1/me), members, roles and invitations.
void RegisterPeopleRoutes(Router& router, std::shared_ptr<ControlPlaneDeps> d);

// The permission each control-plane route requires, for documentation and the RBAC tests.
inline constexpr std::string_view kPermOrgsRead = "orgs:read";
inline constexpr std::string_view kPermOrgsWrite = "orgs:write";
inline constexpr std::string_view kPermKeysRead = "keys:read";
inline constexpr std::string_view kPermKeysWrite = "keys:write";
inline constexpr std::string_view kPermKeysVerify = "keys:verify";
inline constexpr std::string_view kPermAuditRead = "audit:read";
inline constexpr std::string_view kPermMembersRead = "members:read";
inline constexpr std::string_view kPermMembersWrite = "members:write";
inline constexpr std::string_view kPermRolesRead = "roles:read";
inline constexpr std::string_view kPermRolesWrite = "roles:write";

}  // namespace gatehouse

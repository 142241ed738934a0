// A complete domain graph for tests: in-memory SQLite, a fake clock, the verifier and services,
// and a control-plane router, all without sockets.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>

#include "api/control_plane.h"
#include "audit/writer.h"
#include "config/config.h"
#include "keys/key_service.h"
#include "orgs/org_service.h"
#include "people/gateway_sessions.h"
#include "people/members.h"
#include "store/sqlite/sqlite_store.h"

namespace gatehouse::testing {

struct DomainEnv {
  explicit DomainEnv(Config c = DefaultConfig(),
                     std::string db = ":memory:", std::string metrics_token = "") {
    // OWASP's minimum Argon2id cost keeps the many hashes of the tests quick; production
    // defaults are tested where hashing itself is (tests/people).
    if (c.passwords.argon2_memory_kib == PasswordConfig{}.argon2_memory_kib) {
      c.passwords.argon2_memory_kib = 19456;
      c.passwords.argon2_iterations = 2;
    }
    config = std::make_shared<Config>(std::move(c));
    store = std::move(*SqliteStore::Open(db));
    verifier = std::make_unique<KeyVerifier>(
        KeyFormat(config->keys.prefix), HmacSha256Key("test-pepper-0123456789abcdef0123456789"),
        *store, clock,
        KeyVerifier::Options{1000, 30 * kMicrosPerSecond,
                             [this](std::string_view org, std::string_view key) {
                               return policies->LoadForKey(org, key, clock.Now());
                             },
                             [this](std::string_view what) {
                               if (what.starts_with("org:"))
                                 org_policies->Invalidate(what.substr(4));
                             }});
    keys = std::make_unique<KeyService>(*store, *verifier, clock, config);
    orgs = std::make_unique<OrgService>(*store, *keys, clock);
    gateway = std::make_unique<Gateway>(config);
    auth = std::make_unique<Authenticator>(*verifier, metrics, clock);
    audit = std::make_unique<AuditService>(*store, clock, "test-pepper-0123456789abcdef0123456789");
    people = std::make_unique<PeopleRepository>(*store);
    policy = std::make_unique<PasswordPolicy>(
        config->passwords, std::unordered_set<std::string>{"password", "letmein", "qwerty",
                                                           "correcthorsebatterystaple"});
    hasher = std::make_unique<PasswordHasher>(config->passwords, Peppers{kPepper});
    login_guard = std::make_unique<LoginGuard>(config->login, clock);
    sessions = std::make_unique<SessionService>(*people, clock, config, Peppers{kPepper});
    accounts = std::make_unique<AccountService>(*people, *sessions, *hasher, *policy, *login_guard,
                                                clock, config, Peppers{kPepper});
    members = std::make_unique<MemberService>(*store, *people, *accounts, clock, config,
                                              Peppers{kPepper});
    auth->SetSessionResolver(GatewaySessionResolver(*sessions, *members, *accounts));
    policies = std::make_unique<PolicyRepository>(*store);
    org_policies = std::make_unique<OrgPolicyCache>(
        [this](std::string_view org) { return policies->Get(org, ""); });
    auth->SetOrgPolicies(org_policies.get());
    limits = std::make_unique<LimitService>(config->rate_limits, clock);
    ControlPlaneDeps deps{*auth,
                          *keys,
                          *orgs,
                          *store,
                          *gateway,
                          metrics,
                          clock,
                          *audit,
                          *accounts,
                          *sessions,
                          *members,
                          *people,
                          std::move(metrics_token)};
    deps.policies = policies.get();
    deps.org_policies = org_policies.get();
    deps.verifier = verifier.get();
    deps.limits = limits.get();
    RegisterControlPlane(router, std::move(deps));
  }

  static constexpr const char* kPepper = "test-pepper-0123456789abcdef0123456789";

  NewOrgResult NewOrg(const std::string& name) { return *orgs->Create(name); }

  // Sends a request through the router as the server would (without the fast path).
  HttpResponse Call(std::string method, std::string target, std::string key = "",
                    std::string body = "", std::string client_ip = "127.0.0.1") {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!key.empty()) headers.emplace_back("Authorization", "Bearer " + key);
    return CallWith(std::move(method), std::move(target), std::move(headers), std::move(body),
                    std::move(client_ip));
  }

  // The same with any headers (cookies, Origin, X-CSRF-Token).
  HttpResponse CallWith(std::string method, std::string target,
                        std::vector<std::pair<std::string, std::string>> headers,
                        std::string body = "", std::string client_ip = "127.0.0.1") {
    method_ = std::move(method);
    target_ = std::move(target);
    body_ = std::move(body);
    headers_ = std::move(headers);
    HttpRequest req;
    req.method = method_;
    req.target = target_;
    std::string_view t = target_;
    req.path = t.substr(0, t.find('?'));
    req.query = t.size() > req.path.size() ? t.substr(req.path.size() + 1) : std::string_view{};
    for (const auto& [name, value] : headers_) req.headers.emplace_back(name, value);
    req.body = body_;
    req.client_ip = client_ip;
    req.request_id = "req_test";
    auto m = router.Find(req);
    if (!m.route) return ErrorResponse(m.error, req.request_id);
    HttpResponse res = m.route->handler(req);
    last_stale_credential = req.stale_credential;
    // What the server does with the decision a handler made: complete it and append it.
    if (req.audit) {
      AuditEvent e = std::move(*req.audit);
      e.at = clock.Now();
      e.status = res.status;
      e.result.assign(ResultOfStatus(res.status));
      e.client_ip = client_ip;
      e.request_id = req.request_id;
      std::vector<AuditEvent> batch{std::move(e)};
      auto usage = CountKeyUsage(batch);
      if (auto r = store->AppendAudit(batch, usage, true); !r)
        throw std::runtime_error("audit append failed: " + r.error().message);
      last_audit = batch.front();
    }
    return res;
  }

  std::optional<AuditEvent> last_audit;
  // Whether the last call's credential was refused as stale (threat detection reads it).
  bool last_stale_credential = false;

  FakeClock clock;
  std::shared_ptr<Config> config;
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<KeyVerifier> verifier;
  std::unique_ptr<KeyService> keys;
  std::unique_ptr<OrgService> orgs;
  std::unique_ptr<Gateway> gateway;
  Metrics metrics;
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<AuditService> audit;
  std::unique_ptr<PeopleRepository> people;
  std::unique_ptr<PasswordPolicy> policy;
  std::unique_ptr<PasswordHasher> hasher;
  std::unique_ptr<LoginGuard> login_guard;
  std::unique_ptr<SessionService> sessions;
  std::unique_ptr<AccountService> accounts;
  std::unique_ptr<MemberService> members;
  std::unique_ptr<PolicyRepository> policies;
  std::unique_ptr<OrgPolicyCache> org_policies;
  std::unique_ptr<LimitService> limits;
  Router router;

 private:
  std::string method_, target_, body_;
  std::vector<std::pair<std::string, std::string>> headers_;
};

}  // namespace gatehouse::testing

#include "api/control_plane.h"

#include <boost/json/parse.hpp>

#include <fmt/format.h>
#include <algorithm>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "api/guard.h"
#include "api/policies.h"
#include "audit/details.h"
#include "audit/writer.h"
#include "core/cidr.h"
#include "core/crypto.h"
#include "core/json_input.h"
#include "core/text.h"
#include "core/time_format.h"

namespace gatehouse {

namespace {

namespace json = boost::json;

json::object KeyJson(const KeyService& keys, const ApiKeyRecord& r, const AccessPolicy& policy) {
  json::object o;
  o["id"] = r.id;
  o["org_id"] = r.org_id;
  o["label"] = r.label;
  o["masked_key"] = keys.Masked(r);
  o["scopes"] = Strings(r.scopes);
  o["environment"] = r.environment;
  o["state"] = keys.State(r);
  o["expires_at"] = OptTime(r.expires_at);
  o["ip_allowlist"] = Strings(r.ip_allowlist);
  o["ip_allowlist_mode"] = policy.allowlist_shadow ? "shadow" : "enforce";
  o["rate_limit"] = RateLimitJson(policy.rate_limit);
  o["quota"] = QuotaJson(policy.quota);
  o["created_by"] = r.created_by;
  o["created_at"] = FormatRfc3339(r.created_at);
  o["last_used_at"] = OptTime(r.last_used_at);
  if (r.last_used_ip.empty())
    o["last_used_ip"] = nullptr;
  else
    o["last_used_ip"] = r.last_used_ip;
  o["revoked_at"] = OptTime(r.revoked_at);
  if (r.rotated_from.empty())
    o["rotated_from"] = nullptr;
  else
    o["rotated_from"] = r.rotated_from;
  return o;
}

Result<json::object> KeyObject(ControlPlaneDeps& d, const ApiKeyRecord& r) {
  auto policy = KeyPolicy(d, r.org_id, r.id);
  if (!policy) return tl::unexpected(policy.error());
  return KeyJson(d.keys, r, *policy);
}

json::object OrgJson(const Org& org) {
  json::object o;
  o["id"] = org.id;
  o["name"] = org.name;
  o["created_at"] = FormatRfc3339(org.created_at);
  o["audit_retention_days"] = org.audit_retention_days;
  return o;
}

// The org with its session policy (0: the deployment's default inactivity timeout).
Result<HttpResponse> OrgResponse(ControlPlaneDeps& d, const Org& org) {
  json::object o = OrgJson(org);
  auto idle = d.people.IdleTimeout(org.id);
  if (!idle) return tl::unexpected(idle.error());
  o["session_idle_timeout_minutes"] = *idle ? **idle / (60 * kMicrosPerSecond) : 0;
  if (auto r = AddOrgPolicyJson(d, org.id, o); !r) return tl::unexpected(r.error());
  return Json(200, o);
}

Result<HttpResponse> CreateKey(ControlPlaneDeps& d, HttpRequest& req, const Principal& p) {
  auto in = JsonObjectReader::Parse(req.body);
  if (!in) return tl::unexpected(in.error());
  NewKeyParams params;
  auto label = in->OptString("label");
  auto scopes = in->OptStringArray("scopes");
  auto env = in->OptString("environment");
  auto expires_in = in->OptString("expires_in");
  auto expires_at = in->OptString("expires_at");
  auto allow = in->OptStringArray("ip_allowlist");
  auto rate = ReadRateLimitField(*in);
  if (!rate) return tl::unexpected(rate.error());
  auto quota = ReadQuotaField(*in);
  if (!quota) return tl::unexpected(quota.error());
  auto shadow = ReadAllowlistShadowField(*in);
  if (!shadow) return tl::unexpected(shadow.error());
  for (auto* r : {&label, &env, &expires_in, &expires_at}) {
    if (!*r) return tl::unexpected(r->error());
  }
  if (!scopes) return tl::unexpected(scopes.error());
  if (!allow) return tl::unexpected(allow.error());
  if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
  params.label = label->value_or("");
  params.scopes = scopes->value_or(std::vector<std::string>{});
  params.environment = env->value_or("live");
  params.expires_in = *expires_in;
  params.expires_at = *expires_at;
  params.ip_allowlist = allow->value_or(std::vector<std::string>{});
  // A key with admin scope outlives the sign-in that made it: a recent password check first.
  if (std::find(params.scopes.begin(), params.scopes.end(), "admin") != params.scopes.end()) {
    if (auto r = RequireRecentSignIn(d, p); !r) return tl::unexpected(r.error());
  }
  auto issued = d.keys.Create(p, p.org_id, params, SourceOf(req, p.id));
  if (!issued) return tl::unexpected(issued.error());
  AccessPolicy policy;
  policy.rate_limit = rate->value_or(RatePolicy{});
  policy.quota = quota->value_or(UsageQuota{});
  policy.allowlist_shadow = shadow->value_or(false);
  if (policy.rate_limit.enabled() || policy.quota.enabled() || policy.allowlist_shadow) {
    if (auto r = SaveKeyPolicy(d, req, p, issued->record, policy); !r) {
      // Never hand out a key without the limits it was asked with.
      (void)d.keys.Revoke(p.org_id, issued->record.id, SourceOf(req, p.id));
      return tl::unexpected(r.error());
    }
  }
  json::object o = KeyJson(d.keys, issued->record, policy);
  o["key"] = issued->secret;  // the only time the key is ever shown
  return Json(201, o);
}

Result<HttpResponse> ListKeys(ControlPlaneDeps& d, HttpRequest& req, const Principal& p) {
  KeyListQuery q;
  auto limit = IntParam(req, "limit", 50, 1, 200);
  if (!limit) return tl::unexpected(limit.error());
  q.limit = *limit;
  if (auto cursor = req.QueryParam("cursor")) q.cursor = *cursor;
  auto page = d.keys.List(p.org_id, q);
  if (!page) return tl::unexpected(page.error());
  json::array keys;
  for (const auto& k : page->keys) {
    auto o = KeyObject(d, k);
    if (!o) return tl::unexpected(o.error());
    keys.emplace_back(std::move(*o));
  }
  json::object o;
  o["keys"] = std::move(keys);
  o["next_cursor"] =
      page->next_cursor.empty() ? json::value(nullptr) : json::value(page->next_cursor);
  return Json(200, o);
}

Result<HttpResponse> RotateKey(ControlPlaneDeps& d, HttpRequest& req, const Principal& p) {
  auto in = JsonObjectReader::Parse(req.body);
  if (!in) return tl::unexpected(in.error());
  auto grace_text = in->OptString("grace_period");
  if (!grace_text) return tl::unexpected(grace_text.error());
  if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
  UnixMicros grace = 24LL * 3600 * kMicrosPerSecond;
  if (*grace_text) {
    if (**grace_text == "0" || **grace_text == "0s") {
      grace = 0;
    } else {
      auto g = ParseDuration(**grace_text);
      if (!g) return FailField("grace_period", g.error().message);
      grace = *g;
    }
  }
  // The replacement keeps the old key's own rate limit and quota, and spends the same credits:
  // rotating never refills a quota.
  auto policy = KeyPolicy(d, p.org_id, req.PathParam("id"));
  if (!policy) return tl::unexpected(policy.error());
  if (policy->quota.enabled() && policy->quota.pool.empty()) {
    policy->quota.pool = std::string(req.PathParam("id"));
  }
  auto issued = d.keys.Rotate(p, p.org_id, req.PathParam("id"), grace, SourceOf(req, p.id));
  if (!issued) return tl::unexpected(issued.error());
  if (policy->rate_limit.enabled() || policy->quota.enabled()) {
    if (auto r = SaveKeyPolicy(d, req, p, issued->record, *policy); !r) {
      (void)d.keys.Revoke(p.org_id, issued->record.id, SourceOf(req, p.id));
      return tl::unexpected(r.error());
    }
  }
  json::object o = KeyJson(d.keys, issued->record, *policy);
  o["key"] = issued->secret;
  return Json(201, o);
}

Result<HttpResponse> VerifyKey(ControlPlaneDeps& d, HttpRequest& req, const Principal& caller) {
  auto in = JsonObjectReader::Parse(req.body);
  if (!in) return tl::unexpected(in.error());
  auto key = in->OptString("key");
  auto scopes = in->OptStringArray("scopes");
  if (!key) return tl::unexpected(key.error());
  if (!scopes) return tl::unexpected(scopes.error());
  if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
  if (!*key || (*key)->empty()) return FailField("key", "key is required");
  // The key under test is attacker-controlled; the verifier checks its shape before anything.
  // The verified key's last use is recorded without an address: the caller is the backend, not
  // the key's holder.
  auto verdict = d.auth.VerifyForCaller(**key, "");
  if (!verdict) return tl::unexpected(verdict.error());
  json::object o;
  KeyStatus status = verdict->status;
  // A caller only ever learns about keys of its own org; another org's key is "not found".
  if (verdict->facts && verdict->facts->org_id != caller.org_id) status = KeyStatus::kNotFound;
  std::string code(KeyStatusName(status));
  std::vector<std::string> missing;
  if (status == KeyStatus::kValid && *scopes) {
    Principal subject{verdict->facts->org_id,
                      verdict->facts->key_id,
                      "api_key",
                      verdict->facts->scopes,
                      verdict->facts->environment,
                      0,
                      {},
                      {}};
    if (auto r = RequireScopes(subject, **scopes); !r) {
      code = "forbidden";
      missing = r.error().required;
    }
  }
  // A valid key is also held to its limits (its own, or the defaults, and its org's): the
  // backend asking is serving the key's holder.
  std::optional<RateVerdict> limited;
  LimitChecks checks;
  Principal holder;
  if (code == "valid" && d.limits) {
    const auto& f = *verdict->facts;
    holder = Principal{f.org_id, f.key_id, "api_key", f.scopes, f.environment, 0, {}, {}};
    holder.key_rate_limit = f.rate_limit;
    if (d.org_policies) {
      auto org_policy = d.org_policies->Load(f.org_id);
      if (!org_policy) return tl::unexpected(org_policy.error());
      holder.org_policy = *org_policy;
    }
    checks = d.limits->Collect(holder, nullptr);
    if (!checks.empty()) {
      limited = d.limits->Decide(checks.span());
      d.limits->Count(*limited, checks.span());
      if (!limited->allowed) code = "rate_limited";
    }
  }
  // And its credits: a verification is one use of the key.
  std::optional<QuotaOutcome> spent;
  if (code == "valid" && d.quotas && verdict->facts->quota.enabled()) {
    const auto& f = *verdict->facts;
    spent = d.quotas->Spend(f.key_id, f.org_id, f.quota, f.credits_used, f.credits_period, 1,
                            req.client_ip);
    if (!spent->allowed) code = "usage_exceeded";
  }
  o["valid"] = code == "valid";
  o["code"] = code;
  if (status != KeyStatus::kNotFound && verdict->facts) {
    const auto& f = *verdict->facts;
    o["key_id"] = f.key_id;
    o["org_id"] = f.org_id;
    o["scopes"] = Strings(f.scopes);
    o["environment"] = f.environment;
    o["expires_at"] = OptTime(f.expires_at);
  }
  if (!missing.empty()) o["missing_scopes"] = Strings(missing);
  if (limited && limited->binding >= 0) {
    const LimitCheck& c = checks.items[static_cast<std::size_t>(limited->binding)];
    json::object rl;
    rl["limit"] = c.policy.capacity();
    rl["remaining"] = limited->binding_outcome.remaining;
    rl["reset"] = CeilSeconds(limited->binding_outcome.reset);
    rl["policy"] = RatePolicyJson(c.policy);
    rl["dimension"] = c.dimension;
    if (!limited->allowed) rl["retry_after"] = std::max(1L, CeilSeconds(limited->retry_after));
    o["rate_limit"] = std::move(rl);
  }
  if (spent) {
    json::object c;
    c["credits"] = spent->credits;
    c["remaining"] = spent->remaining;
    c["refill"] = verdict->facts->quota.refill;
    c["refills_at"] = spent->refill_at ? json::value(FormatRfc3339(spent->refill_at)) : nullptr;
    o["quota"] = std::move(c);
  }
  return Json(200, o);
}

// `only_actions`: a fixed action filter ("security.*" for the security events); the caller's
// `action` then narrows within it ("security.new_network").
Result<HttpResponse> ListAudit(ControlPlaneDeps& d, HttpRequest& req, const Principal& p,
                               std::string_view only_actions = {}) {
  AuditQuery q;
  auto limit = IntParam(req, "limit", 50, 1, 500);
  if (!limit) return tl::unexpected(limit.error());
  q.limit = *limit;
  for (auto [name, field] : {std::pair{"actor", &q.actor}, std::pair{"action", &q.action},
                             std::pair{"resource", &q.resource}, std::pair{"result", &q.result}}) {
    if (auto v = req.QueryParam(name)) {
      if (v->size() > 512) return FailField(name, std::string(name) + " is too long");
      *field = std::move(*v);
    }
  }
  for (auto [name, field] : {std::pair{"since", &q.since}, std::pair{"until", &q.until}}) {
    if (auto v = req.QueryParam(name)) {
      auto t = ParseRfc3339(*v);
      if (!t) return FailField(name, std::string(name) + " must be an RFC 3339 time");
      *field = *t;
    }
  }
  if (!only_actions.empty()) {
    std::string prefix(only_actions.substr(0, only_actions.size() - 1));  // "security."
    if (q.action && !q.action->starts_with(prefix)) {
      return FailField("action", "action must start with " + prefix);
    }
    if (!q.action) q.action = std::string(only_actions);
  }
  if (req.QueryParam("cursor")) {
    auto seq = IntParam<std::int64_t>(req, "cursor", 0, 1, INT64_MAX);
    if (!seq) return FailField("cursor", "cursor is not one this server issued");
    q.before_seq = *seq;
  }
  auto page = d.audit.List(p.org_id, q);
  if (!page) return tl::unexpected(page.error());
  json::array events;
  for (const auto& e : page->events) events.emplace_back(AuditEventJson(e));
  json::object o;
  o["events"] = std::move(events);
  o["next_cursor"] =
      page->next_cursor.empty() ? json::value(nullptr) : json::value(page->next_cursor);
  return Json(200, o);
}

// JSON lines, oldest first, pulled a page at a time so that memory stays flat for any size.
Result<HttpResponse> ExportAudit(ControlPlaneDeps& d, const Principal& p) {
  struct Cursor {
    AuditService* audit;
    std::string org;
    std::int64_t after = 0;
    bool done = false;
  };
  auto cursor = std::make_shared<Cursor>(Cursor{&d.audit, p.org_id});
  HttpResponse r;
  r.status = 200;
  r.SetHeader("Content-Type", "application/x-ndjson");
  r.stream = [cursor](std::string& piece) -> Result<bool> {
    piece.clear();
    if (cursor->done) return false;
    auto page = cursor->audit->ChainPage(cursor->org, cursor->after);
    if (!page) return tl::unexpected(page.error());
    if (static_cast<int>(page->size()) < AuditService::kChainPage) cursor->done = true;
    if (page->empty()) return false;
    for (const auto& e : *page) {
      piece += json::serialize(AuditEventJson(e));
      piece += '\n';
    }
    cursor->after = page->back().seq;
    return true;
  };
  return r;
}

Result<HttpResponse> GetKeyUsage(ControlPlaneDeps& d, HttpRequest& req, const Principal& p) {
  auto days = IntParam(req, "days", 30, 1, 366);
  if (!days) return tl::unexpected(days.error());
  auto report = d.audit.KeyUsage(p.org_id, req.PathParam("id"), *days);
  if (!report) return tl::unexpected(report.error());
  json::object o;
  o["key_id"] = report->key.id;
  o["last_used_at"] = OptTime(report->key.last_used_at);
  o["last_used_ip"] = report->key.last_used_ip.empty() ? json::value(nullptr)
                                                       : json::value(report->key.last_used_ip);
  json::array days_out;
  std::int64_t total = 0;
  for (const auto& u : report->days) {
    json::object day;
    day["day"] = u.day;
    day["2xx"] = u.status_2xx;
    day["3xx"] = u.status_3xx;
    day["4xx"] = u.status_4xx;
    day["5xx"] = u.status_5xx;
    total += u.status_2xx + u.status_3xx + u.status_4xx + u.status_5xx;
    days_out.emplace_back(std::move(day));
  }
  o["days"] = std::move(days_out);
  o["total_requests"] = total;
  return Json(200, o);
}

}  // namespace

Result<HttpResponse> KeyResponse(ControlPlaneDeps& d, const ApiKeyRecord& key, int status) {
  auto o = KeyObject(d, key);
  if (!o) return tl::unexpected(o.error());
  return Json(status, *o);
}

void RegisterControlPlane(Router& router, ControlPlaneDeps deps) {
  auto d = std::make_shared<ControlPlaneDeps>(deps);
  RegisterPeopleRoutes(router, d);
  RegisterPolicyRoutes(router, d);

  router.Add("GET", "/healthz", HandlerKind::kInline,
             [](HttpRequest&) { return JsonResponse(200, R"({"status":"ok"})"); });
  // The public key that signs audit checkpoints and verified heads, for auditors who hold no
  // secret of the deployment: the key that signs now first, then retired ones. The same on
  // every node: it derives from the shared pepper, or from [secrets] audit_signing_key_*.
  router.Add("GET", "/.well-known/jwks.json", HandlerKind::kInline,
             [jwks = d->audit.JwksJson()](HttpRequest&) {
               HttpResponse r = JsonResponse(200, jwks);
               r.SetHeader("Cache-Control", "public, max-age=3600");
               return r;
             });
  router.Add("GET", "/readyz", HandlerKind::kBlocking, [d](HttpRequest& req) {
    if (auto r = d->store.Ping(); !r) {
      return ErrorResponse(Error{ErrorCode::kUnavailable, "storage is not reachable", {}, {}},
                           req.request_id);
    }
    // Rate limits degrade rather than fail: a node whose Redis is down still limits, locally
    // at its share, and says so here.
    std::string limits = d->limits ? std::string(d->limits->mode()) : "off";
    return JsonResponse(
        200, R"({"status":"ready","checks":{"storage":"ok","rate_limits":")" + limits + "\"}}");
  });
  router.Add("GET", "/metrics", HandlerKind::kInline, [d](HttpRequest& req) {
    // Metrics describe traffic and failures: a token, or the machine itself.
    if (!d->metrics_token.empty()) {
      auto auth = req.Header("authorization");
      std::string_view presented = auth && auth->starts_with("Bearer ") ? auth->substr(7) : "";
      if (!ConstantTimeEquals(presented, d->metrics_token)) {
        return ErrorResponse(
            Error{ErrorCode::kUnauthenticated, "metrics need the configured bearer token", {}, {}},
            req.request_id);
      }
    } else if (!IsLoopback(req.client_ip)) {
      return ErrorResponse(Error{ErrorCode::kPermissionDenied,
                                 "metrics are served to loopback only unless a metrics token is "
                                 "configured",
                                 {},
                                 {}},
                           req.request_id);
    }
    HttpResponse r = JsonResponse(200, d->metrics.Render());
    r.SetHeader("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return r;
  });

  // Forward-auth: answered on the network thread when the key is cached. Each decision is
  // recorded, in the key's org when the key was found.
  auto record_authz = [](HttpRequest& req, const Result<Principal>& principal,
                         const AuthSubject& subject, std::string_view reason) {
    auto original = Gateway::ReadOriginal(req, req.PathParam("rest"));
    std::string resource =
        original ? fmt::format("forward:{} {}", original->method, ValidUtf8(original->uri, 256))
                 : std::string("forward:?");
    if (principal) {
      RecordDecision(req, principal->org_id, principal->id, "auth.forward", std::move(resource),
                     reason);
    } else {
      RecordDecision(
          req, subject.org_id, subject.key_id, "auth.forward", std::move(resource),
          subject.reason.empty() ? ErrorCodeName(principal.error().code) : subject.reason);
    }
  };
  // The decision, then the rate limits of an admitted request. On the network thread
  // (`may_block` false) a decision that needs Redis is left to the blocking path (nullopt).
  auto authz = [d, record_authz](HttpRequest& req, const Result<Principal>& principal,
                                 const AuthSubject& subject,
                                 bool may_block) -> std::optional<HttpResponse> {
    HttpResponse res = d->gateway.AuthzDecision(req, req.PathParam("rest"), principal);
    std::string_view reason;
    if (res.status == 200 && d->limits) {
      auto original = Gateway::ReadOriginal(req, req.PathParam("rest"));
      std::string_view uri = original ? original->uri : std::string_view();
      int route = d->gateway.Match(uri.substr(0, uri.find('?')));
      LimitChecks checks =
          d->limits->Collect(*principal, route >= 0 ? &d->gateway.route(route) : nullptr);
      if (!checks.empty()) {
        if (!may_block && d->limits->shared()) return std::nullopt;
        RateVerdict v =
            may_block ? d->limits->Decide(checks.span()) : d->limits->DecideHere(checks.span());
        d->limits->Count(v, checks.span());
        if (!v.allowed) {
          res = ErrorResponse(RefusalError(v, checks.span()), req.request_id);
          reason = "rate_limited";
        }
        AppendRateLimitHeaders(v, checks.span(), res.headers);
      }
      if (res.status == 200 && d->quotas && principal->key_quota.enabled()) {
        // Shared credits wait for Redis: not on the network thread. Nothing was decided yet
        // (shared limits would have left already), so the blocking path starts afresh.
        if (!may_block && d->quotas->shared()) return std::nullopt;
        QuotaOutcome spent =
            d->quotas->Spend(principal->id, principal->org_id, principal->key_quota,
                             principal->credits_used, principal->credits_period,
                             route >= 0 ? d->gateway.route(route).cost : 1, req.client_ip);
        if (!spent.allowed) {
          res = ErrorResponse(QuotaService::RefusalError(spent, principal->key_quota),
                              req.request_id);
          reason = "usage_exceeded";
        }
      }
    }
    if (res.status == 200 && d->threats && principal->kind == "api_key") {
      d->threats->KeyUsed(principal->id, principal->org_id, req.client_ip);
    }
    record_authz(req, principal, subject, reason);
    Gateway::ApplyDenyStatus(req, res);
    return res;
  };
  auto authz_fast = [d, authz](HttpRequest& req) -> std::optional<HttpResponse> {
    AuthSubject subject;
    auto principal = d->auth.TryFast(req, &subject);
    if (!principal) return std::nullopt;
    return authz(req, *principal, subject, false);
  };
  auto authz_slow = [d, authz](HttpRequest& req) {
    AuthSubject subject;
    auto principal = d->auth.Authenticate(req, &subject);
    return *authz(req, principal, subject, true);
  };
  router.Add("GET", "/v1/authz/check", HandlerKind::kBlocking, authz_slow, authz_fast);
  router.Add("POST", "/v1/authz/check", HandlerKind::kBlocking, authz_slow, authz_fast);
  router.Add("GET", "/v1/authz/check/{*rest}", HandlerKind::kBlocking, authz_slow, authz_fast);
  router.Add("POST", "/v1/authz/check/{*rest}", HandlerKind::kBlocking, authz_slow, authz_fast);

  router.Add("POST", "/v1/keys/verify", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermKeysVerify,
                   [&](const Principal& p) { return VerifyKey(*d, req, p); });
  });

  router.Add("GET", "/v1/orgs/{org}", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermOrgsRead, [&](const Principal& p) -> Result<HttpResponse> {
      auto org = d->orgs.Get(p.org_id);
      if (!org) return tl::unexpected(org.error());
      return OrgResponse(*d, *org);
    });
  });
  router.Add("PATCH", "/v1/orgs/{org}", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermOrgsWrite, [&](const Principal& p) -> Result<HttpResponse> {
      auto in = JsonObjectReader::Parse(req.body);
      if (!in) return tl::unexpected(in.error());
      auto name = in->OptString("name");
      if (!name) return tl::unexpected(name.error());
      auto retention = in->OptInt("audit_retention_days");
      if (!retention) return tl::unexpected(retention.error());
      auto idle = in->OptInt("session_idle_timeout_minutes");
      if (!idle) return tl::unexpected(idle.error());
      auto policy_change = ReadOrgPolicyChange(*d, req, p, *in);
      if (!policy_change) return tl::unexpected(policy_change.error());
      if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
      const bool policy_changed = policy_change->has_value();
      // Stored first: a policy refused (reauth) changes nothing else.
      if (policy_changed) {
        if (auto r = ApplyOrgPolicyChange(*d, req, p, std::move(**policy_change)); !r) {
          return tl::unexpected(r.error());
        }
      }
      if (!*name && !*retention && !*idle && !policy_changed) {
        return FailField("name",
                         "nothing to change: give name, audit_retention_days, "
                         "session_idle_timeout_minutes, rate_limit, ip_allowlist and/or "
                         "ip_allowlist_mode");
      }
      if (!*name && !*retention && !*idle) {
        auto org = d->orgs.Get(p.org_id);
        if (!org) return tl::unexpected(org.error());
        return OrgResponse(*d, *org);
      }
      if (*idle) {
        if (**idle < 0 || **idle > 24 * 60) {
          return FailField("session_idle_timeout_minutes",
                           "session_idle_timeout_minutes must be 0 (the default) or 1-1440");
        }
        UnixMicros now = d->clock.Now();
        AuditEvent e =
            SourceOf(req, p.id).Event(p.org_id, "org.session_policy", "org:" + p.org_id, 200, now);
        e.details = DetailsOf({{"session_idle_timeout_minutes", std::to_string(**idle)}});
        if (auto r = d->people.SetIdleTimeout(p.org_id, **idle * 60 * kMicrosPerSecond, e); !r) {
          return tl::unexpected(r.error());
        }
        if (!*name && !*retention) {
          auto org = d->orgs.Get(p.org_id);
          if (!org) return tl::unexpected(org.error());
          return OrgResponse(*d, *org);
        }
      }
      OrgUpdate update;
      update.name = *name;
      if (*retention) {
        if (**retention < 0 || **retention > 3650) {
          return FailField("audit_retention_days",
                           "audit_retention_days must be 0 (keep forever) or 1-3650");
        }
        update.audit_retention_days = static_cast<int>(**retention);
      }
      auto org = d->orgs.Update(p.org_id, update, SourceOf(req, p.id));
      if (!org) return tl::unexpected(org.error());
      return OrgResponse(*d, *org);
    });
  });

  router.Add("POST", "/v1/orgs/{org}/keys", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermKeysWrite,
                   [&](const Principal& p) { return CreateKey(*d, req, p); });
  });
  router.Add("GET", "/v1/orgs/{org}/keys", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermKeysRead,
                   [&](const Principal& p) { return ListKeys(*d, req, p); });
  });
  router.Add("GET", "/v1/orgs/{org}/keys/{id}", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermKeysRead, [&](const Principal& p) -> Result<HttpResponse> {
      auto k = d->keys.Get(p.org_id, req.PathParam("id"));
      if (!k) return tl::unexpected(k.error());
      return KeyResponse(*d, *k, 200);
    });
  });
  router.Add("DELETE", "/v1/orgs/{org}/keys/{id}", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermKeysWrite, [&](const Principal& p) -> Result<HttpResponse> {
      auto k = d->keys.Revoke(p.org_id, req.PathParam("id"), SourceOf(req, p.id));
      if (!k) return tl::unexpected(k.error());
      return KeyResponse(*d, *k, 200);
    });
  });
  router.Add("POST", "/v1/orgs/{org}/keys/{id}/rotate", HandlerKind::kBlocking,
             [d](HttpRequest& req) {
               return Guarded(*d, req, kPermKeysWrite,
                              [&](const Principal& p) { return RotateKey(*d, req, p); });
             });
  router.Add("GET", "/v1/orgs/{org}/keys/{id}/usage", HandlerKind::kBlocking,
             [d](HttpRequest& req) {
               return Guarded(*d, req, kPermKeysRead,
                              [&](const Principal& p) { return GetKeyUsage(*d, req, p); });
             });

  router.Add("GET", "/v1/orgs/{org}/audit", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermAuditRead,
                   [&](const Principal& p) { return ListAudit(*d, req, p); });
  });
  // What threat detection recorded about the org's keys (issue 6): audit events named
  // security.*, until webhooks deliver them.
  router.Add(
      "GET", "/v1/orgs/{org}/security-events", HandlerKind::kBlocking, [d](HttpRequest& req) {
        return Guarded(*d, req, kPermAuditRead,
                       [&](const Principal& p) { return ListAudit(*d, req, p, "security.*"); });
      });
  router.Add("GET", "/v1/orgs/{org}/audit/export", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermAuditRead, [&](const Principal& p) { return ExportAudit(*d, p); });
  });
  router.Add("POST", "/v1/orgs/{org}/audit/verify", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermAuditRead, [&](const Principal& p) -> Result<HttpResponse> {
      auto anchor = ReadAuditAnchor(req.body, false);
      if (!anchor) return tl::unexpected(anchor.error());
      auto report = d->audit.Verify(p.org_id, *anchor ? &**anchor : nullptr);
      if (!report) return tl::unexpected(report.error());
      json::object o = AuditVerifyReportJson(*report);
      std::size_t set_aside = 0;
      if (!d->audit_journal_dir.empty()) {
        const auto counts = CountSetAside(d->audit_journal_dir);
        if (auto it = counts.find(p.org_id); it != counts.end()) set_aside = it->second;
      }
      o["set_aside"] = set_aside;
      return Json(200, o);
    });
  });
}

}  // namespace gatehouse

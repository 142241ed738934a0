#include "api/control_plane.h"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "core/cidr.h"
#include "core/crypto.h"
#include "core/json_input.h"
#include "core/time_format.h"

namespace gatehouse {

namespace {

namespace json = boost::json;

json::value OptTime(const std::optional<UnixMicros>& t) {
  if (!t) return nullptr;
  return json::value(FormatRfc3339(*t));
}

json::array Strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

json::object KeyJson(const KeyService& keys, const ApiKeyRecord& r) {
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

json::object OrgJson(const Org& org) {
  json::object o;
  o["id"] = org.id;
  o["name"] = org.name;
  o["created_at"] = FormatRfc3339(org.created_at);
  return o;
}

HttpResponse Json(int status, const json::value& v) {
  return JsonResponse(status, json::serialize(v));
}

// Runs `body` for an authenticated principal of the addressed org holding `permission`. Handlers
// then act on the principal's org, never on the org named in the path: the store scopes its
// transaction (and so the database's row level security) to that org, so even a handler that
// skipped this check could not reach another org's rows.
template <typename F>
HttpResponse Guarded(ControlPlaneDeps& d, HttpRequest& req, std::string_view permission, F&& body) {
  auto principal = d.auth.Authenticate(req);
  if (!principal) return ErrorResponse(principal.error(), req.request_id);
  req.principal_id = principal->id;
  std::string_view org = req.PathParam("org");
  if (!org.empty()) {
    if (auto r = RequireOrg(*principal, org); !r) {
      d.metrics.CountAuthFailure(Metrics::AuthFailure::kOrgMismatch);
      return ErrorResponse(r.error(), req.request_id);
    }
  }
  if (auto r = RequireScopes(*principal, {std::string(permission)}); !r) {
    d.metrics.CountAuthFailure(Metrics::AuthFailure::kForbidden);
    return ErrorResponse(r.error(), req.request_id);
  }
  Result<HttpResponse> out = body(*principal);
  if (!out) return ErrorResponse(out.error(), req.request_id);
  return std::move(*out);
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
  auto issued = d.keys.Create(p, p.org_id, params);
  if (!issued) return tl::unexpected(issued.error());
  json::object o = KeyJson(d.keys, issued->record);
  o["key"] = issued->secret;  // the only time the key is ever shown
  return Json(201, o);
}

Result<HttpResponse> ListKeys(ControlPlaneDeps& d, HttpRequest& req, const Principal& p) {
  KeyListQuery q;
  if (auto limit = req.QueryParam("limit")) {
    try {
      std::size_t used = 0;
      q.limit = std::stoi(*limit, &used);
      if (used != limit->size()) throw std::invalid_argument("limit");
    } catch (const std::exception&) {
      return FailField("limit", "limit must be an integer 1-200");
    }
  }
  if (auto cursor = req.QueryParam("cursor")) q.cursor = *cursor;
  auto page = d.keys.List(p.org_id, q);
  if (!page) return tl::unexpected(page.error());
  json::array keys;
  for (const auto& k : page->keys) keys.emplace_back(KeyJson(d.keys, k));
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
  auto issued = d.keys.Rotate(p, p.org_id, req.PathParam("id"), grace);
  if (!issued) return tl::unexpected(issued.error());
  json::object o = KeyJson(d.keys, issued->record);
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
    Principal subject{verdict->facts->org_id, verdict->facts->key_id,      "api_key",
                      verdict->facts->scopes, verdict->facts->environment, 0};
    if (auto r = RequireScopes(subject, **scopes); !r) {
      code = "forbidden";
      missing = r.error().required;
    }
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
  return Json(200, o);
}

}  // namespace

void RegisterControlPlane(Router& router, ControlPlaneDeps deps) {
  auto d = std::make_shared<ControlPlaneDeps>(deps);

  router.Add("GET", "/healthz", HandlerKind::kInline,
             [](HttpRequest&) { return JsonResponse(200, R"({"status":"ok"})"); });
  router.Add("GET", "/readyz", HandlerKind::kBlocking, [d](HttpRequest& req) {
    if (auto r = d->store.Ping(); !r) {
      return ErrorResponse(Error{ErrorCode::kUnavailable, "storage is not reachable", {}, {}},
                           req.request_id);
    }
    return JsonResponse(200, R"({"status":"ready","checks":{"storage":"ok"}})");
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

  // Forward-auth: answered on the network thread when the key is cached.
  auto authz_fast = [d](HttpRequest& req) -> std::optional<HttpResponse> {
    auto principal = d->auth.TryFast(req);
    if (!principal) return std::nullopt;
    return d->gateway.AuthzDecision(req, req.PathParam("rest"), *principal);
  };
  auto authz_slow = [d](HttpRequest& req) {
    return d->gateway.AuthzDecision(req, req.PathParam("rest"), d->auth.Authenticate(req));
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
      return Json(200, OrgJson(*org));
    });
  });
  router.Add("PATCH", "/v1/orgs/{org}", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermOrgsWrite, [&](const Principal& p) -> Result<HttpResponse> {
      auto in = JsonObjectReader::Parse(req.body);
      if (!in) return tl::unexpected(in.error());
      auto name = in->OptString("name");
      if (!name) return tl::unexpected(name.error());
      if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
      if (!*name) return FailField("name", "name is required");
      auto org = d->orgs.Rename(p.org_id, **name);
      if (!org) return tl::unexpected(org.error());
      return Json(200, OrgJson(*org));
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
      return Json(200, KeyJson(d->keys, *k));
    });
  });
  router.Add("DELETE", "/v1/orgs/{org}/keys/{id}", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermKeysWrite, [&](const Principal& p) -> Result<HttpResponse> {
      auto k = d->keys.Revoke(p.org_id, req.PathParam("id"));
      if (!k) return tl::unexpected(k.error());
      return Json(200, KeyJson(d->keys, *k));
    });
  });
  router.Add("POST", "/v1/orgs/{org}/keys/{id}/rotate", HandlerKind::kBlocking,
             [d](HttpRequest& req) {
               return Guarded(*d, req, kPermKeysWrite,
                              [&](const Principal& p) { return RotateKey(*d, req, p); });
             });
}

}  // namespace gatehouse

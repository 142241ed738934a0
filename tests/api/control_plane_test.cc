// Handler-level tests: requests built in memory, run through the router and real services on an
// in-memory SQLite store.
#include "api/control_plane.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "support/domain_env.h"

namespace gatehouse {
namespace {

namespace json = boost::json;
using testing::DomainEnv;

json::value Body(const HttpResponse& r) { return json::parse(r.body); }
std::string Code(const HttpResponse& r) {
  return std::string(Body(r).at("error").at("code").as_string());
}

class ControlPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = env_.NewOrg("Acme");
    b_ = env_.NewOrg("Beta");
  }
  std::string KeysPath(const NewOrgResult& o) { return "/v1/orgs/" + o.org.id + "/keys"; }
  std::size_t KeyCount(const NewOrgResult& o) {
    KeyListQuery q;
    q.limit = 200;
    return env_.keys->List(o.org.id, q)->keys.size();
  }
  DomainEnv env_;
  NewOrgResult a_, b_;
};

TEST_F(ControlPlaneTest, CreatesAKeyShownOnceThenMasked) {
  auto r = env_.Call(
      "POST", KeysPath(a_), a_.owner_key.secret,
      R"({"label":"ServiceNow Integration Key","scopes":["read:findings"],"expires_in":"90d"})");
  ASSERT_EQ(r.status, 201) << r.body;
  auto created = Body(r).as_object();
  std::string secret(created.at("key").as_string());
  EXPECT_TRUE(env_.verifier->format().Check(secret));
  EXPECT_EQ(created.at("state"), "active");
  std::string id(created.at("id").as_string());
  auto got = env_.Call("GET", KeysPath(a_) + "/" + id, a_.owner_key.secret);
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.body.find(secret), std::string::npos);
  EXPECT_FALSE(Body(got).as_object().contains("key"));
  auto list = env_.Call("GET", KeysPath(a_), a_.owner_key.secret);
  EXPECT_EQ(list.body.find(secret), std::string::npos);
  EXPECT_EQ(Body(list).at("keys").as_array().size(), 2u);
}

TEST_F(ControlPlaneTest, BadInputGetsTheRightErrorAndChangesNothing) {
  struct Case {
    std::string body;
    std::string field;
  };
  std::vector<Case> cases = {
      {"{", ""},
      {"[]", ""},
      {R"({"label":"x","colour":"red"})", "colour"},
      {R"({"label":5})", "label"},
      {R"({"label":"x","scopes":"read:findings"})", "scopes"},
      {R"({"label":"x","expires_in":"1000y"})", "expires_in"},
      {R"({"label":"x","expires_in":"-5d"})", "expires_in"},
      {R"({"label":"x","expires_at":"tomorrow"})", "expires_at"},
      {R"({"label":"x","scopes":["launch:missiles"]})", "scopes"},
      {"{\"label\":\"\xff\xfe\"}", ""},
      {R"({"label":"line\nbreak"})", "label"},
      {R"({"label":"x","ip_allowlist":["300.0.0.0/8"]})", "ip_allowlist"},
      {R"({"label":"x","environment":"staging"})", "environment"},
      {R"({"scopes":[]})", "label"},
  };
  for (const auto& c : cases) {
    auto r = env_.Call("POST", KeysPath(a_), a_.owner_key.secret, c.body);
    EXPECT_EQ(r.status, 400) << c.body;
    EXPECT_EQ(Code(r), "invalid_request") << c.body;
    if (!c.field.empty()) {
      EXPECT_EQ(Body(r).at("error").at("field"), c.field.c_str()) << c.body;
    }
    EXPECT_EQ(Body(r).at("error").at("request_id"), "req_test");
  }
  EXPECT_EQ(KeyCount(a_), 1u);
}

TEST_F(ControlPlaneTest, AnotherOrgsResourcesAreOffLimitsEvenToAdmin) {
  std::string b_key_path = KeysPath(b_) + "/" + b_.owner_key.record.id;
  for (auto [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/orgs/" + b_.org.id},
           {"PATCH", "/v1/orgs/" + b_.org.id},
           {"GET", KeysPath(b_)},
           {"POST", KeysPath(b_)},
           {"GET", b_key_path},
           {"DELETE", b_key_path},
           {"POST", b_key_path + "/rotate"},
           {"GET", "/v1/orgs/org_doesnotexist/keys"}}) {
    auto r = env_.Call(method, path, a_.owner_key.secret, R"({"label":"x","name":"pwned"})");
    EXPECT_EQ(r.status, 403) << method << " " << path;
    EXPECT_EQ(Code(r), "org_mismatch") << method << " " << path;
    EXPECT_EQ(r.body.find("Beta"), std::string::npos);
  }
  // A's key id under A's path but belonging to B is simply not found.
  auto r = env_.Call("GET", KeysPath(a_) + "/" + b_.owner_key.record.id, a_.owner_key.secret);
  EXPECT_EQ(r.status, 404);
  EXPECT_FALSE(env_.keys->Get(b_.org.id, b_.owner_key.record.id)->revoked_at);
  EXPECT_EQ(env_.orgs->Get(b_.org.id)->name, "Beta");
}

TEST_F(ControlPlaneTest, MissingPermissionIsForbiddenAndNamesIt) {
  auto reader = *env_.keys->Create(KeyService::Operator(a_.org.id), a_.org.id,
                                   NewKeyParams{"reader", {"keys:read"}, "live", {}, {}, {}});
  EXPECT_EQ(env_.Call("GET", KeysPath(a_), reader.secret).status, 200);
  auto r = env_.Call("POST", KeysPath(a_), reader.secret, R"({"label":"x"})");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(Code(r), "forbidden");
  EXPECT_EQ(Body(r).at("error").at("required").as_array().at(0), "keys:write");
}

TEST_F(ControlPlaneTest, BadCredentialsAreOneUniform401) {
  std::string good = a_.owner_key.secret;
  std::string bad_checksum = good.substr(0, good.size() - 1) + (good.back() == 'a' ? "b" : "a");
  std::string unknown = env_.verifier->format().Generate(KeyEnvironment::kLive);
  std::string wrong_prefix = "pk" + good.substr(2);
  std::vector<std::string> messages;
  for (const auto& k : {std::string(""), bad_checksum, good.substr(0, 20), unknown, wrong_prefix}) {
    auto r = env_.Call("GET", KeysPath(a_), k);
    EXPECT_EQ(r.status, 401) << k;
    EXPECT_EQ(Code(r), "unauthorized");
    messages.push_back(std::string(Body(r).at("error").at("message").as_string()));
  }
  ASSERT_TRUE(env_.keys->Revoke(a_.org.id, a_.owner_key.record.id));
  auto revoked = env_.Call("GET", KeysPath(b_), good);
  EXPECT_EQ(revoked.status, 401);
  messages.push_back(std::string(Body(revoked).at("error").at("message").as_string()));
  for (const auto& m : messages) EXPECT_EQ(m, messages.front());
}

TEST_F(ControlPlaneTest, IpAllowlistIsEnforced) {
  NewKeyParams p{"office", {"keys:read"}, "live", {}, {}, {"203.0.113.0/24"}};
  auto k = *env_.keys->Create(KeyService::Operator(a_.org.id), a_.org.id, p);
  EXPECT_EQ(env_.Call("GET", KeysPath(a_), k.secret, "", "203.0.113.9").status, 200);
  auto r = env_.Call("GET", KeysPath(a_), k.secret, "", "198.51.100.1");
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(Code(r), "ip_not_allowed");
}

TEST_F(ControlPlaneTest, RevokeAndRotate) {
  auto created = Body(env_.Call("POST", KeysPath(a_), a_.owner_key.secret,
                                R"({"label":"svc","scopes":["read:findings"]})"));
  std::string id(created.at("id").as_string());
  std::string secret(created.at("key").as_string());
  auto rotated = env_.Call("POST", KeysPath(a_) + "/" + id + "/rotate", a_.owner_key.secret,
                           R"({"grace_period":"0s"})");
  ASSERT_EQ(rotated.status, 201) << rotated.body;
  EXPECT_EQ(Body(rotated).at("rotated_from"), id.c_str());
  EXPECT_EQ(env_.verifier->Verify(secret, "")->status, KeyStatus::kExpired);
  std::string new_id(Body(rotated).at("id").as_string());
  auto del = env_.Call("DELETE", KeysPath(a_) + "/" + new_id, a_.owner_key.secret);
  ASSERT_EQ(del.status, 200);
  EXPECT_EQ(Body(del).at("state"), "revoked");
  auto bad = env_.Call("POST", KeysPath(a_) + "/" + new_id + "/rotate", a_.owner_key.secret, "");
  EXPECT_EQ(bad.status, 409);
  EXPECT_EQ(env_.Call("DELETE", KeysPath(a_) + "/key_nope", a_.owner_key.secret).status, 404);
  auto bad_grace = env_.Call("POST", KeysPath(a_) + "/" + id + "/rotate", a_.owner_key.secret,
                             R"({"grace_period":"90d"})");
  EXPECT_EQ(bad_grace.status, 400);
}

TEST_F(ControlPlaneTest, VerifyEndpointReportsWhyAndStaysInsideTheOrg) {
  auto verifier_key =
      *env_.keys->Create(KeyService::Operator(a_.org.id), a_.org.id,
                         NewKeyParams{"backend", {"keys:verify"}, "live", {}, {}, {}});
  auto customer =
      *env_.keys->Create(KeyService::Operator(a_.org.id), a_.org.id,
                         NewKeyParams{"customer", {"read:findings"}, "test", {}, {}, {}});
  auto call = [&](const std::string& body) {
    return Body(env_.Call("POST", "/v1/keys/verify", verifier_key.secret, body));
  };
  auto ok = call(R"({"key":")" + customer.secret + R"(","scopes":["read:findings"]})");
  EXPECT_EQ(ok.at("valid"), true);
  EXPECT_EQ(ok.at("code"), "valid");
  EXPECT_EQ(ok.at("environment"), "test");
  auto forbidden = call(R"({"key":")" + customer.secret + R"(","scopes":["write:evidence"]})");
  EXPECT_EQ(forbidden.at("code"), "forbidden");
  EXPECT_EQ(call(R"({"key":"sk_live_garbage"})").at("code"), "not_found");
  // B's key, valid as it is, is invisible to A.
  auto other = call(R"({"key":")" + b_.owner_key.secret + R"("})");
  EXPECT_EQ(other.at("code"), "not_found");
  EXPECT_FALSE(other.as_object().contains("org_id"));
  ASSERT_TRUE(env_.keys->Revoke(a_.org.id, customer.record.id));
  EXPECT_EQ(call(R"({"key":")" + customer.secret + R"("})").at("code"), "revoked");
  auto no_perm = env_.Call("POST", "/v1/keys/verify", customer.secret, R"({"key":"x"})");
  EXPECT_EQ(no_perm.status, 401);  // the customer key itself is revoked now
  auto missing = env_.Call("POST", "/v1/keys/verify", verifier_key.secret, R"({"scopes":[]})");
  EXPECT_EQ(missing.status, 400);
}

TEST_F(ControlPlaneTest, OrgsCanBeReadAndRenamed) {
  auto r =
      env_.Call("PATCH", "/v1/orgs/" + a_.org.id, a_.owner_key.secret, R"({"name":"Acme Corp"})");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Body(r).at("name"), "Acme Corp");
  EXPECT_EQ(
      env_.Call("PATCH", "/v1/orgs/" + a_.org.id, a_.owner_key.secret, R"({"name":""})").status,
      400);
  EXPECT_EQ(Body(env_.Call("GET", "/v1/orgs/" + a_.org.id, a_.owner_key.secret)).at("name"),
            "Acme Corp");
}

TEST_F(ControlPlaneTest, ForwardAuthDecisions) {
  auto reader = *env_.keys->Create(KeyService::Operator(a_.org.id), a_.org.id,
                                   NewKeyParams{"reader", {"read:findings"}, "live", {}, {}, {}});
  auto check = [&](const std::string& method, const std::string& uri, const std::string& key) {
    HttpRequest req;
    req.method = "GET";
    req.path = "/v1/authz/check";
    std::string auth = "Bearer " + key;
    req.headers = {{"X-Original-Method", method}, {"X-Original-URI", uri}, {"Authorization", auth}};
    req.client_ip = "127.0.0.1";
    req.request_id = "req_t";
    return env_.gateway->AuthzDecision(req, "", env_.auth->Authenticate(req));
  };
  auto ok = check("GET", "/api/v1/findings/7?x=1", reader.secret);
  EXPECT_EQ(ok.status, 200);
  EXPECT_TRUE(ok.body.empty());
  EXPECT_EQ(ok.headers.size(), 4u);
  EXPECT_EQ(check("POST", "/api/v1/evidence", reader.secret).status, 403);
  EXPECT_EQ(check("DELETE", "/api/v1/findings/7", reader.secret).status, 403);
  EXPECT_EQ(check("GET", "/not/a/route", reader.secret).status, 403);
  EXPECT_EQ(check("GET", "/api/v1/findings/../evidence", reader.secret).status, 400);
  EXPECT_EQ(check("GET", "/api/v1/findings", "sk_live_x").status, 401);
}

TEST_F(ControlPlaneTest, UnknownPathsAndMethods) {
  EXPECT_EQ(env_.Call("GET", "/v1/nothing", a_.owner_key.secret).status, 404);
  EXPECT_EQ(env_.Call("PUT", KeysPath(a_), a_.owner_key.secret).status, 405);
  auto q = env_.Call("GET", KeysPath(a_) + "?api_key=" + a_.owner_key.secret, a_.owner_key.secret);
  EXPECT_EQ(q.status, 400);
  EXPECT_EQ(q.body.find(a_.owner_key.secret), std::string::npos);
}

TEST(ControlPlaneMetrics, ServedToLoopbackOnlyUnlessATokenIsConfigured) {
  testing::DomainEnv open;
  EXPECT_EQ(open.Call("GET", "/metrics", "", "", "127.0.0.1").status, 200);
  EXPECT_EQ(open.Call("GET", "/metrics", "", "", "::1").status, 200);
  auto remote = open.Call("GET", "/metrics", "", "", "10.1.2.3");
  EXPECT_EQ(remote.status, 403);
  EXPECT_EQ(remote.body.find("gatehouse_requests_total"), std::string::npos);

  testing::DomainEnv guarded(DefaultConfig(), ":memory:", "scrape-token-0123456789abcdef");
  EXPECT_EQ(guarded.Call("GET", "/metrics", "", "", "10.1.2.3").status, 401);
  EXPECT_EQ(guarded.Call("GET", "/metrics", "", "", "127.0.0.1").status, 401);  // token rules
  EXPECT_EQ(guarded.Call("GET", "/metrics", "wrong-token", "", "10.1.2.3").status, 401);
  auto ok = guarded.Call("GET", "/metrics", "scrape-token-0123456789abcdef", "", "10.1.2.3");
  EXPECT_EQ(ok.status, 200);
  EXPECT_NE(ok.body.find("gatehouse_"), std::string::npos);
}

}  // namespace
}  // namespace gatehouse

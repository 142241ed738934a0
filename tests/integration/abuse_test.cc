// Abuse protection over real HTTP (issue 6): rate limits on the proxy, forward-auth and
// /v1/keys/verify; per-key and per-org policies through the API; org IP allowlists.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "integration/fixture.h"

namespace gatehouse::testing {
namespace {

std::string fmt_hex(std::size_t n) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%zx", n);
  return buf;
}

std::string Field(const std::string& body, const std::string& name) {
  auto at = body.find("\"" + name + "\":\"");
  if (at == std::string::npos) return "";
  at += name.size() + 4;
  return body.substr(at, body.find('"', at) - at);
}

class RateLimitTest : public GatewayFixture {
 protected:
  std::string ExtraConfig() override {
    return "[[routes]]\nname = \"chat\"\npath_prefix = \"/api/v1/chat\"\n"
           "upstream = \"http://127.0.0.1:" +
           std::to_string(upstream_->port()) +
           "\"\nscopes = [\"read:findings\"]\n"
           "rate_limit = { requests = 5, window = \"1h\" }\ncost = 2\n"
           "content_types = [\"application/json\"]\nmax_body_bytes = 64\n";
  }

  // A key with its own limit, created through the API.
  std::pair<std::string, std::string> LimitedKey(const std::string& rate_limit_json) {
    auto r = Call(
        "POST", "/v1/orgs/" + org_ + "/keys", key_,
        R"({"label":"limited","scopes":["read:findings"],"rate_limit":)" + rate_limit_json + "}");
    EXPECT_EQ(r.status, 201) << r.body;
    return {Field(r.body, "key"), Field(r.body, "id")};
  }
};

TEST_F(RateLimitTest, AKeysOwnLimitRefusesWith429AndSaysWhichLimitTripped) {
  auto [secret, id] = LimitedKey(R"({"requests":3,"window":"1m"})");
  for (int i = 0; i < 3; ++i) {
    auto r = Call("GET", "/api/v1/findings/1", secret);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.Header("ratelimit-limit"), "3");
    EXPECT_EQ(r.Header("ratelimit-remaining"), std::to_string(2 - i));
    EXPECT_EQ(r.Header("ratelimit-policy"), "3;w=60");
  }
  auto refused = Call("GET", "/api/v1/findings/1", secret);
  EXPECT_EQ(refused.status, 429);
  EXPECT_NE(refused.body.find("\"code\":\"rate_limit_exceeded\""), std::string::npos);
  EXPECT_NE(refused.body.find("key limit"), std::string::npos) << refused.body;
  EXPECT_EQ(refused.Header("retry-after"), "20");
  EXPECT_EQ(refused.Header("ratelimit-remaining"), "0");
  // The refusal is in the audit log, with the limit that tripped.
  auto audit = Call("GET", "/v1/orgs/" + org_ + "/audit?action=auth.proxy&actor=" + id, key_);
  EXPECT_NE(audit.body.find("rate_limited"), std::string::npos) << audit.body;
  // Other keys are not affected.
  std::string other = NewKey(R"(["read:findings"])");
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", other).status, 200);

  // Lifting the limit takes effect at once (the cached key is dropped).
  auto patched = Call("PATCH", "/v1/orgs/" + org_ + "/keys/" + id, key_, R"({"rate_limit":null})");
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_NE(patched.body.find("\"rate_limit\":null"), std::string::npos);
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", secret).status, 200);
  // And setting one again, too.
  patched = Call("PATCH", "/v1/orgs/" + org_ + "/keys/" + id, key_,
                 R"({"rate_limit":{"requests":1,"window":"1h","burst":1}})");
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_NE(patched.body.find("\"window\":\"1h\""), std::string::npos) << patched.body;
  auto after = Call("GET", "/api/v1/findings/1", secret);
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", secret).status, 429) << after.status;
}

TEST_F(RateLimitTest, AKeysCreditsRunOutWithUsageExceededAndSurviveARestart) {
  auto r = Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
                R"({"label":"metered","scopes":["read:findings"],)"
                R"("quota":{"credits":10,"refill":"monthly"}})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_NE(r.body.find(R"("quota":{"credits":10,"refill":"monthly","mode":"enforce"})"),
            std::string::npos)
      << r.body;
  std::string secret = Field(r.body, "key");
  std::string id = Field(r.body, "id");
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(Call("GET", "/api/v1/findings/1", secret).status, 200) << i;
  auto out = Call("GET", "/api/v1/findings/1", secret);
  EXPECT_EQ(out.status, 429);
  EXPECT_NE(out.body.find("\"code\":\"usage_exceeded\""), std::string::npos) << out.body;
  EXPECT_NE(out.body.find("10 credits per month, renewed at"), std::string::npos) << out.body;
  EXPECT_FALSE(out.Header("retry-after").empty());
  // A warning came before (at a tenth left), as a security event of the org.
  std::string events;
  for (int i = 0; i < 50 && events.find("security.usage_low") == std::string::npos; ++i) {
    events = Call("GET", "/v1/orgs/" + org_ + "/security-events", key_).body;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(events.find("security.usage_low"), std::string::npos) << events;
  // Backends verifying the key hear the same.
  std::string backend = NewKey(R"(["keys:verify"])");
  auto v = Call("POST", "/v1/keys/verify", backend, R"({"key":")" + secret + R"("})");
  EXPECT_NE(v.body.find("\"code\":\"usage_exceeded\""), std::string::npos) << v.body;
  EXPECT_NE(v.body.find("\"remaining\":0"), std::string::npos) << v.body;

  // The spending is in the store (flushed every second): a restart does not refill the key.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // two flushes, on a busy machine
  server_.reset();
  server_ = std::make_unique<ServerProcess>(config_);
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", secret).status, 429);

  // Lifting the quota lets it through at once.
  auto lifted = Call("PATCH", "/v1/orgs/" + org_ + "/keys/" + id, key_, R"({"quota":null})");
  ASSERT_EQ(lifted.status, 200) << lifted.body;
  EXPECT_NE(lifted.body.find("\"quota\":null"), std::string::npos);
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", secret).status, 200);
}

TEST_F(RateLimitTest, RotatingAKeyNeverRefillsItsCredits) {
  auto r = Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
                R"({"label":"metered","scopes":["read:findings"],"quota":{"credits":5}})");
  ASSERT_EQ(r.status, 201) << r.body;
  std::string old_secret = Field(r.body, "key");
  std::string old_id = Field(r.body, "id");
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Call("GET", "/api/v1/findings/1", old_secret).status, 200);
  auto rotated = Call("POST", "/v1/orgs/" + org_ + "/keys/" + old_id + "/rotate", key_, "{}");
  ASSERT_EQ(rotated.status, 201) << rotated.body;
  EXPECT_NE(rotated.body.find(R"("quota":{"credits":5,"refill":"none","mode":"enforce"})"),
            std::string::npos)
      << rotated.body;
  EXPECT_EQ(rotated.body.find("pool"), std::string::npos) << rotated.body;
  std::string new_secret = Field(rotated.body, "key");
  // The replacement and the old key (still in its grace period) spend the same 2 credits left.
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", new_secret).status, 200);
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", old_secret).status, 200);
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", new_secret).status, 429);
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", old_secret).status, 429);
  // A quota cannot be pointed at another key's credits through the API.
  auto sneaky = Call("PATCH", "/v1/orgs/" + org_ + "/keys/" + old_id, key_,
                     R"({"quota":{"credits":5,"pool":"key_someone_else"}})");
  EXPECT_EQ(sneaky.status, 400) << sneaky.body;
  EXPECT_NE(sneaky.body.find("quota.pool"), std::string::npos) << sneaky.body;
}

TEST_F(RateLimitTest, ARoutesCostIsWhatEachRequestSpends) {
  auto r = Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
                R"({"label":"m","scopes":["read:findings"],"quota":{"credits":3}})");
  ASSERT_EQ(r.status, 201) << r.body;
  std::string secret = Field(r.body, "key");
  EXPECT_EQ(Call("GET", "/api/v1/chat/x", secret).status, 200);  // 2 of 3
  auto refused = Call("GET", "/api/v1/chat/x", secret);          // needs 2, 1 left
  EXPECT_EQ(refused.status, 429);
  EXPECT_NE(refused.body.find("all 3 credits are spent"), std::string::npos) << refused.body;
  EXPECT_TRUE(refused.Header("retry-after").empty());                // refill "none": never
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", secret).status, 200);  // costs 1
}

TEST_F(RateLimitTest, ARouteCanRequireAContentTypeAndABodySize) {
  std::string k = NewKey(R"(["read:findings"])");
  auto ok = Call("POST", "/api/v1/chat/completions", k, R"({"model":"m"})",
                 {{"Content-Type", "application/json; charset=utf-8"}});
  EXPECT_EQ(ok.status, 200) << ok.body;
  auto wrong = Call("POST", "/api/v1/chat/completions", k, "model=m",
                    {{"Content-Type", "application/x-www-form-urlencoded"}});
  EXPECT_EQ(wrong.status, 415);
  EXPECT_NE(wrong.body.find("application/json"), std::string::npos) << wrong.body;
  auto none = Call("POST", "/api/v1/chat/completions", k, "{}");
  EXPECT_EQ(none.status, 415);
  auto big = Call("POST", "/api/v1/chat/completions", k, std::string(100, ' '),
                  {{"Content-Type", "application/json"}});
  EXPECT_EQ(big.status, 413);
  EXPECT_NE(big.body.find("at most 64 bytes"), std::string::npos) << big.body;
  // Chunked bodies are held to the same size as they pass.
  Connection c(server_->port());
  c.Send("POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + k +
         "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
         "50\r\n" +
         std::string(80, ' ') + "\r\n0\r\n\r\n");
  EXPECT_EQ(c.Read().status, 413);
  // Other routes keep the deployment's limits.
  EXPECT_EQ(Call("POST", "/api/v1/findings/1", k, std::string(100, ' ')).status, 200);
}

TEST_F(RateLimitTest, BadPoliciesAreRefusedNamingTheField) {
  for (auto [body, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"rate_limit":{"requests":0,"window":"1m"}})", "rate_limit.requests"},
           {R"({"rate_limit":{"requests":5}})", "rate_limit.window"},
           {R"({"rate_limit":{"requests":5,"window":"1m","extra":1}})", "rate_limit.extra"},
           {R"({"rate_limit":"lots"})", "rate_limit"},
           {R"({"quota":{"credits":0}})", "quota.credits"},
           {R"({"quota":{"credits":5,"refill":"weekly"}})", "quota.refill"},
       }) {
    auto r = Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
                  R"({"label":"x","scopes":["read:findings"],)" + body.substr(1));
    EXPECT_EQ(r.status, 400) << body << r.body;
    EXPECT_NE(r.body.find(field), std::string::npos) << body << r.body;
  }
  // Nothing was created by the refused requests.
  auto list = Call("GET", "/v1/orgs/" + org_ + "/keys", key_);
  EXPECT_EQ(list.body.find("\"label\":\"x\""), std::string::npos);
}

TEST_F(RateLimitTest, RouteLimitsAreSharedByEveryCallerOfTheRoute) {
  std::string a = NewKey(R"(["read:findings"])");
  std::string b = NewKey(R"(["read:findings"])");
  int admitted = 0;
  for (int i = 0; i < 8; ++i) {
    admitted += Call("GET", "/api/v1/chat/completions", i % 2 ? a : b).status == 200;
  }
  EXPECT_EQ(admitted, 5);
  auto r = Call("GET", "/api/v1/chat/completions", a);
  EXPECT_EQ(r.status, 429);
  EXPECT_NE(r.body.find("route limit"), std::string::npos) << r.body;
  // Other routes are not affected.
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", a).status, 200);
}

TEST_F(RateLimitTest, OrgLimitCoversEveryKeyOfTheOrg) {
  auto r =
      Call("PATCH", "/v1/orgs/" + org_, key_, R"({"rate_limit":{"requests":4,"window":"1h"}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"rate_limit\":{\"requests\":4"), std::string::npos) << r.body;
  std::string a = NewKey(R"(["read:findings"])");
  std::string b = NewKey(R"(["read:findings"])");
  int admitted = 0;
  for (int i = 0; i < 6; ++i)
    admitted += Call("GET", "/api/v1/findings/1", i % 2 ? a : b).status == 200;
  EXPECT_EQ(admitted, 4);
  // Forward-auth counts against the same limit.
  auto check = Call("GET", "/v1/authz/check", a, "", {{"X-Original-URI", "/api/v1/findings/2"}});
  EXPECT_EQ(check.status, 429);
  EXPECT_NE(check.body.find("org limit"), std::string::npos);
  EXPECT_FALSE(check.Header("retry-after").empty());
}

TEST_F(RateLimitTest, VerifyEndpointReportsRateLimitedKeys) {
  auto [secret, id] = LimitedKey(R"({"requests":2,"window":"1h"})");
  std::string backend = NewKey(R"(["keys:verify"])");
  std::string body = R"({"key":")" + secret + R"("})";
  for (int i = 0; i < 2; ++i) {
    auto r = Call("POST", "/v1/keys/verify", backend, body);
    ASSERT_EQ(r.status, 200);
    EXPECT_NE(r.body.find("\"code\":\"valid\""), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("\"remaining\":" + std::to_string(1 - i)), std::string::npos) << r.body;
  }
  auto r = Call("POST", "/v1/keys/verify", backend, body);
  EXPECT_NE(r.body.find("\"code\":\"rate_limited\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"valid\":false"), std::string::npos);
  EXPECT_NE(r.body.find("\"retry_after\":"), std::string::npos);
}

TEST_F(RateLimitTest, AKeysOwnAllowlistCanRunInShadowFirst) {
  auto r = Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
                R"({"label":"pinned","scopes":["read:findings"],"ip_allowlist":["10.0.0.0/8"],)"
                R"("ip_allowlist_mode":"shadow"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_NE(r.body.find("\"ip_allowlist_mode\":\"shadow\""), std::string::npos) << r.body;
  std::string secret = Field(r.body, "key");
  std::string id = Field(r.body, "id");
  // From 127.0.0.1, outside the list: served, and counted.
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", secret).status, 200);
  auto metrics = Call("GET", "/metrics", "");
  EXPECT_NE(metrics.body.find("gatehouse_allowlist_shadow_refusals_total 1"), std::string::npos)
      << metrics.body;
  // Enforced: refused at once (the cached key is dropped).
  auto enforce =
      Call("PATCH", "/v1/orgs/" + org_ + "/keys/" + id, key_, R"({"ip_allowlist_mode":"enforce"})");
  ASSERT_EQ(enforce.status, 200) << enforce.body;
  EXPECT_NE(enforce.body.find("\"ip_allowlist_mode\":\"enforce\""), std::string::npos);
  auto refused = Call("GET", "/api/v1/findings/1", secret);
  EXPECT_EQ(refused.status, 403);
  EXPECT_NE(refused.body.find("ip_not_allowed"), std::string::npos) << refused.body;
  auto bad =
      Call("PATCH", "/v1/orgs/" + org_ + "/keys/" + id, key_, R"({"ip_allowlist_mode":"audit"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("ip_allowlist_mode"), std::string::npos) << bad.body;
}

TEST_F(RateLimitTest, OrgAllowlistRefusesOtherAddressesAndCannotLockOutTheAdmin) {
  std::string k = NewKey(R"(["read:findings"])");
  // The admin calls from 127.0.0.1: a list without it is refused.
  auto lockout = Call("PATCH", "/v1/orgs/" + org_, key_, R"({"ip_allowlist":["10.0.0.0/8"]})");
  EXPECT_EQ(lockout.status, 400) << lockout.body;
  EXPECT_NE(lockout.body.find("ip_allowlist"), std::string::npos);
  auto bad = Call("PATCH", "/v1/orgs/" + org_, key_, R"({"ip_allowlist":["10.0.0.1/8"]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("ip_allowlist[0]"), std::string::npos) << bad.body;

  // Shadow first: nothing is refused, the would-be refusals are counted.
  auto shadow = Call("PATCH", "/v1/orgs/" + org_, key_,
                     R"({"ip_allowlist":["127.0.0.1/32"],"ip_allowlist_mode":"shadow"})");
  ASSERT_EQ(shadow.status, 200) << shadow.body;
  // 127.0.0.2 is a trusted proxy: the client is the address it forwards for.
  auto from_elsewhere =
      RequestFrom("127.0.0.2", server_->port(), "GET", "/api/v1/findings/1",
                  {{"Authorization", "Bearer " + k}, {"X-Forwarded-For", "203.0.113.9"}});
  EXPECT_EQ(from_elsewhere.status, 200) << from_elsewhere.body;
  auto metrics = Call("GET", "/metrics", "");
  EXPECT_NE(metrics.body.find("gatehouse_allowlist_shadow_refusals_total 1"), std::string::npos);

  auto enforce = Call("PATCH", "/v1/orgs/" + org_, key_, R"({"ip_allowlist_mode":"enforce"})");
  ASSERT_EQ(enforce.status, 200) << enforce.body;
  from_elsewhere =
      RequestFrom("127.0.0.2", server_->port(), "GET", "/api/v1/findings/1",
                  {{"Authorization", "Bearer " + k}, {"X-Forwarded-For", "203.0.113.9"}});
  EXPECT_EQ(from_elsewhere.status, 403);
  EXPECT_NE(from_elsewhere.body.find("ip_not_allowed"), std::string::npos);
  // The control plane too, for every key of the org.
  auto cp = RequestFrom("127.0.0.2", server_->port(), "GET", "/v1/orgs/" + org_,
                        {{"Authorization", "Bearer " + key_}, {"X-Forwarded-For", "203.0.113.9"}});
  EXPECT_EQ(cp.status, 403);
  // From the allowed address all is well.
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", k).status, 200);
  auto org = Call("GET", "/v1/orgs/" + org_, key_);
  EXPECT_NE(org.body.find("\"ip_allowlist\":[\"127.0.0.1/32\"]"), std::string::npos) << org.body;
}

// A route whose request bodies must match a JSON Schema (issue 6, part 7).
// The control plane (/v1/...) holds each caller to [rate_limits] control_plane, counted apart
// from the caller's proxied traffic and from every other caller.
class ControlPlaneLimitTest : public GatewayFixture {
 protected:
  std::string ExtraConfig() override {
    return "[rate_limits]\ncontrol_plane = { requests = 6, window = \"1m\" }\n";
  }
};

TEST_F(ControlPlaneLimitTest, EachCallerHasItsOwnLimitApartFromItsProxiedTraffic) {
  std::string reader = NewKey(R"(["keys:read","read:findings"])");  // the admin's first call
  const std::string list = "/v1/orgs/" + org_ + "/keys";
  for (int i = 0; i < 6; ++i) ASSERT_EQ(Call("GET", list, reader).status, 200) << i;
  auto refused = Call("GET", list, reader);
  EXPECT_EQ(refused.status, 429);
  EXPECT_NE(refused.body.find("\"code\":\"rate_limit_exceeded\""), std::string::npos);
  EXPECT_NE(refused.body.find("control_plane limit"), std::string::npos) << refused.body;
  EXPECT_EQ(refused.Header("retry-after"), "10");  // one call's worth of a 6-per-minute limit
  EXPECT_EQ(refused.Header("ratelimit-policy"), "6;w=60");
  EXPECT_EQ(refused.Header("ratelimit-remaining"), "0");
  // Its proxied traffic is another budget, and other callers have their own.
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", reader).status, 200);
  EXPECT_EQ(Call("GET", list, key_).status, 200);
  // The refusal is in the audit log and in /metrics.
  auto audit = Call("GET", "/v1/orgs/" + org_ + "/audit?action=auth.api", key_);
  ASSERT_EQ(audit.status, 200) << audit.body;
  EXPECT_NE(audit.body.find("rate_limited"), std::string::npos) << audit.body;
  EXPECT_NE(
      Call("GET", "/metrics", "").body.find("gatehouse_ratelimit_refused_control_plane_total 1"),
      std::string::npos);
}

class SchemaTest : public GatewayFixture {
 protected:
  std::string ExtraConfig() override {
    std::ofstream schema(dir_.path() + "/chat.schema.json");
    schema << R"({
      "type": "object",
      "required": ["model", "messages"],
      "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/message"}},
        "stream": {"type": "boolean"}
      },
      "definitions": {
        "message": {
          "type": "object",
          "required": ["role", "content"],
          "properties": {"role": {"enum": ["system", "user", "assistant"]},
                         "content": {"type": "string"}}
        }
      }
    })";
    // Relative to the config file's folder.
    return "[[routes]]\nname = \"chat\"\npath_prefix = \"/ai/v1/chat\"\n"
           "upstream = \"http://127.0.0.1:" +
           std::to_string(upstream_->port()) +
           "\"\nscopes = [\"read:findings\"]\njson_schema_file = \"chat.schema.json\"\n"
           "max_body_bytes = 2000\n"
           "[[routes]]\nname = \"bulk\"\npath_prefix = \"/ai/v1/bulk\"\n"
           "upstream = \"http://127.0.0.1:" +
           std::to_string(upstream_->port()) +
           "\"\nscopes = [\"read:findings\"]\njson_schema_file = \"chat.schema.json\"\n";
  }
  static constexpr const char* kValid =
      R"({"model":"m","messages":[{"role":"user","content":"hello"}],"stream":false})";
};

TEST_F(SchemaTest, ABodyThatMatchesReachesTheUpstreamWhole) {
  std::string k = NewKey(R"(["read:findings"])");
  auto ok =
      Call("POST", "/ai/v1/chat/completions", k, kValid, {{"Content-Type", "application/json"}});
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(upstream_->last_body(), kValid);
  EXPECT_NE(upstream_->last_head().find("Content-Length: " + std::to_string(strlen(kValid))),
            std::string::npos)
      << upstream_->last_head();

  // A chunked body is read whole, checked, and sent on with a Content-Length.
  Connection c(server_->port());
  std::string body = kValid;
  c.Send("POST /ai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + k +
         "\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt_hex(10) + "\r\n" + body.substr(0, 10) +
         "\r\n" + fmt_hex(body.size() - 10) + "\r\n" + body.substr(10) + "\r\n0\r\n\r\n");
  auto chunked = c.Read();
  ASSERT_EQ(chunked.status, 200) << chunked.body;
  EXPECT_EQ(upstream_->last_body(), kValid);
  const std::string head = upstream_->last_head();
  EXPECT_EQ(head.find("chunked"), std::string::npos) << head;
  EXPECT_NE(head.find("Content-Length: " + std::to_string(body.size())), std::string::npos);

  // Requests without a body on the route are not held to the schema.
  EXPECT_EQ(Call("GET", "/ai/v1/chat/models", k).status, 200);
}

TEST_F(SchemaTest, LargeBodiesAreCheckedOffTheNetworkThreadWithTheSameAnswers) {
  std::string k = NewKey(R"(["read:findings"])");
  const std::string content(300'000, 'x');  // past the size checked in place
  std::string big = R"({"model":"m","messages":[{"role":"user","content":")" + content + R"("}]})";
  auto ok = Call("POST", "/ai/v1/bulk/completions", k, big, {{"Content-Type", "application/json"}});
  ASSERT_EQ(ok.status, 200) << ok.body.substr(0, 300);
  EXPECT_EQ(upstream_->last_body().size(), big.size());
  std::string bad = R"({"model":"m","messages":[{"role":"user","content":")" + content +
                    R"("},{"role":"boss","content":""}]})";
  auto refused = Call("POST", "/ai/v1/bulk/completions", k, bad, {});
  EXPECT_EQ(refused.status, 400);
  EXPECT_NE(refused.body.find("\"pointer\":\"/messages/1/role\""), std::string::npos)
      << refused.body;
}

TEST_F(SchemaTest, AViolationIs400WithThePointerAndNeverReachesTheUpstream) {
  std::string k = NewKey(R"(["read:findings"])");
  const int before = upstream_->requests.load();
  struct Case {
    std::string body, pointer;
  };
  for (
      const auto& [body, pointer] : std::vector<Case>{
          {R"({"model":"m","messages":[{"role":"user","content":"a"},{"role":"boss","content":"b"}]})",
           "/messages/1/role"},
          {R"({"messages":[{"role":"user","content":"a"}]})", "/model"},
          {R"({"model":"m","messages":[]})", "/messages"},
          {R"({"model":7,"messages":[{"role":"user","content":"a"}]})", "/model"},
          {R"(["not","an","object"])", ""},
      }) {
    auto r =
        Call("POST", "/ai/v1/chat/completions", k, body, {{"Content-Type", "application/json"}});
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_NE(r.body.find("\"code\":\"invalid_request\""), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("\"pointer\":\"" + pointer + "\""), std::string::npos) << r.body;
  }
  auto not_json = Call("POST", "/ai/v1/chat/completions", k, "{\"model\":", {});
  EXPECT_EQ(not_json.status, 400);
  EXPECT_NE(not_json.body.find("not valid JSON"), std::string::npos) << not_json.body;
  // A POST with no body at all does not slip past the schema.
  auto empty = Call("POST", "/ai/v1/chat/completions", k, "", {});
  EXPECT_EQ(empty.status, 400) << empty.body;
  // Too large is still 413, whether or not it would match.
  std::string padded = R"({"model":")" + std::string(3000, 'm') + R"(","messages":[]})";
  EXPECT_EQ(Call("POST", "/ai/v1/chat/completions", k, padded).status, 413);
  EXPECT_EQ(upstream_->requests.load(), before);

  // The refusal read the whole body, so the connection serves the next request.
  Connection c(server_->port());
  std::string bad = R"({"model":"m"})";
  c.Send(BuildRequest("POST", "/ai/v1/chat/completions", {{"Authorization", "Bearer " + k}}, bad));
  auto refused = c.Read();
  EXPECT_EQ(refused.status, 400);
  EXPECT_NE(refused.body.find("\"pointer\":\"/messages\""), std::string::npos) << refused.body;
  c.Send(
      BuildRequest("POST", "/ai/v1/chat/completions", {{"Authorization", "Bearer " + k}}, kValid));
  EXPECT_EQ(c.Read().status, 200);
  // The refusal is in the audit log like any other proxy decision.
  auto audit = Call("GET", "/v1/orgs/" + org_ + "/audit?action=auth.proxy", key_);
  EXPECT_NE(audit.body.find("invalid_request"), std::string::npos) << audit.body;
}

TEST(SchemaConfig, ASchemaThatCannotBeAppliedStopsTheStart) {
  TempDir dir;
  std::ofstream(dir.path() + "/bad.json") << R"({"properties":{"a":{"pattern":"(?<=x)y"}}})";
  std::ofstream(dir.path() + "/gatehouse.toml")
      << "data_dir = \"" << dir.path() << "/data\"\n[[routes]]\nname = \"r\"\n"
      << "path_prefix = \"/r\"\nupstream = \"http://127.0.0.1:9\"\n"
      << "json_schema_file = \"bad.json\"\n";
  int status = 0;
  std::string out = RunCommand(
      {"/bin/sh", "-c",
       Binary() + " serve --config " + dir.path() + "/gatehouse.toml --listen 127.0.0.1:0 2>&1"},
      &status);
  EXPECT_EQ(status, 2) << out;
  EXPECT_NE(out.find("routes[0].json_schema_file"), std::string::npos) << out;
  EXPECT_NE(out.find("#/properties/a/pattern"), std::string::npos) << out;
}

}  // namespace
}  // namespace gatehouse::testing

namespace gatehouse::testing {
namespace {

class ThreatTest : public GatewayFixture {
 protected:
  std::string ExtraConfig() override {
    return "[threats]\nwindow = \"30s\"\nblock_duration = \"2s\"\n"
           "invalid_keys = { threshold = 5, reaction = \"block\" }\n"
           "key_failures = { threshold = 4, reaction = \"notify\" }\n"
           "address_failures = { threshold = 3, reaction = \"block\", mode = \"shadow\" }\n";
  }
  std::string Metric(const std::string& name) {
    auto m = Call("GET", "/metrics", "").body;
    auto at = m.find("\n" + name + " ");
    if (at == std::string::npos) return "";
    at += name.size() + 2;
    return m.substr(at, m.find('\n', at) - at);
  }
};

TEST_F(ThreatTest, KeyEnumerationFromOneAddressBlocksThatAddressForAWhile) {
  std::string good = NewKey(R"(["read:findings"])");
  const std::string garbage = "sk_live_" + std::string(32, 'A') + "AAAAAA";
  // Requests that send no key guess nothing: however many, they block no one.
  for (int i = 0; i < 8; ++i) {
    auto r = RequestFrom("127.0.0.3", server_->port(), "GET", "/api/v1/findings/1", {});
    EXPECT_EQ(r.status, 401);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(Metric("gatehouse_security_blocks_total"), "0");
  for (int i = 0; i < 5; ++i) {
    auto r = RequestFrom("127.0.0.3", server_->port(), "GET", "/api/v1/findings/1",
                         {{"Authorization", "Bearer " + garbage}});
    EXPECT_EQ(r.status, 401);
  }
  // Counted once each answer is written: the fifth may still be on its way into the counts.
  for (int i = 0; i < 100 && Metric("gatehouse_security_blocks_total") != "1"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Now even a good key from that address is turned away, cheaply and with a reason.
  auto blocked = RequestFrom("127.0.0.3", server_->port(), "GET", "/api/v1/findings/1",
                             {{"Authorization", "Bearer " + good}});
  EXPECT_EQ(blocked.status, 429);
  EXPECT_NE(blocked.body.find("blocked"), std::string::npos) << blocked.body;
  EXPECT_FALSE(blocked.Header("retry-after").empty());
  // Other addresses are not.
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", good).status, 200);
  EXPECT_EQ(Metric("gatehouse_security_blocks_total"), "1");
  EXPECT_EQ(Metric("gatehouse_security_blocked_requests_total"), "1");
  // The shadow rule (3 failures from an address, the keyless ones among them) would have
  // blocked first: it only counted.
  EXPECT_EQ(Metric("gatehouse_security_shadow_actions_total"), "1");
  EXPECT_NE(server_->Output().find("security: invalid_keys from 127.0.0.3"), std::string::npos);
  // The block ends by itself.
  std::this_thread::sleep_for(std::chrono::milliseconds(2300));
  auto after = RequestFrom("127.0.0.3", server_->port(), "GET", "/api/v1/findings/1",
                           {{"Authorization", "Bearer " + good}});
  EXPECT_EQ(after.status, 200);
}

TEST_F(ThreatTest, ARevokedKeyStillInUseGuessesNothingButCountsAgainstItsKey) {
  auto created = Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
                      R"({"label":"retired integration","scopes":["read:findings"]})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string stale = Field(created.body, "key");
  const std::string stale_id = Field(created.body, "id");
  ASSERT_EQ(Call("DELETE", "/v1/orgs/" + org_ + "/keys/" + stale_id, key_).status, 200);
  // A client nobody told keeps calling with it, through each of the three doors: more 401s than
  // the enumeration rule allows (5). None was a guess: the address stays open.
  const std::vector<std::pair<std::string, std::string>> with_stale{
      {"Authorization", "Bearer " + stale}};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(
        RequestFrom("127.0.0.4", server_->port(), "GET", "/api/v1/findings/1", with_stale).status,
        401);
  }
  auto forward = with_stale;
  forward.emplace_back("X-Original-URI", "/api/v1/findings/1");
  forward.emplace_back("X-Original-Method", "GET");
  EXPECT_EQ(RequestFrom("127.0.0.4", server_->port(), "GET", "/v1/authz/check", forward).status,
            401);
  EXPECT_EQ(
      RequestFrom("127.0.0.4", server_->port(), "GET", "/v1/orgs/" + org_ + "/keys", with_stale)
          .status,
      401);
  std::string events;
  for (int i = 0; i < 50; ++i) {  // counted once answered, written by the audit writer after
    events = Call("GET", "/v1/orgs/" + org_ + "/security-events?action=security.key_failures", key_)
                 .body;
    if (events.find(stale_id) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // The key's org learns that its revoked key is still being used, and by whom.
  EXPECT_NE(events.find(R"("actor":")" + stale_id), std::string::npos) << events;
  EXPECT_NE(events.find("127.0.0.4"), std::string::npos) << events;
  EXPECT_EQ(Metric("gatehouse_security_blocks_total"), "0");
  std::string good = NewKey(R"(["read:findings"])");
  EXPECT_EQ(RequestFrom("127.0.0.4", server_->port(), "GET", "/api/v1/findings/1",
                        {{"Authorization", "Bearer " + good}})
                .status,
            200);
  // The access log names the stale key it refused.
  EXPECT_NE(server_->Output().find(R"("principal":")" + stale_id), std::string::npos);
}

TEST_F(ThreatTest, AKeyFromANewNetworkAndAKeyThatKeepsFailingAreSecurityEventsOfItsOrg) {
  std::string k = NewKey(R"(["read:findings"])");
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", k).status, 200);  // learned: 127.0.0.0/24
  // Through the trusted proxy, from somewhere else.
  auto r = RequestFrom("127.0.0.2", server_->port(), "GET", "/api/v1/findings/1",
                       {{"Authorization", "Bearer " + k}, {"X-Forwarded-For", "198.51.100.7"}});
  EXPECT_EQ(r.status, 200);
  // A key without the route's scope, four times.
  std::string narrow = NewKey(R"(["write:evidence"])");
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Call("GET", "/api/v1/findings/1", narrow).status, 403);

  std::string events;
  for (int i = 0; i < 50; ++i) {  // written by the audit writer, a moment later
    events = Call("GET", "/v1/orgs/" + org_ + "/security-events", key_).body;
    if (events.find("security.key_failures") != std::string::npos &&
        events.find("security.new_network") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(events.find("security.new_network"), std::string::npos) << events;
  EXPECT_NE(events.find("198.51.100.0/24"), std::string::npos) << events;
  EXPECT_NE(events.find("security.key_failures"), std::string::npos) << events;
  EXPECT_NE(events.find(R"("notify":"pending")"), std::string::npos) << events;
  // Only security events, and filters narrow within them.
  EXPECT_EQ(events.find("\"action\":\"key.create\""), std::string::npos);
  auto only =
      Call("GET", "/v1/orgs/" + org_ + "/security-events?action=security.new_network", key_);
  EXPECT_EQ(only.body.find("security.key_failures"), std::string::npos) << only.body;
  auto bad = Call("GET", "/v1/orgs/" + org_ + "/security-events?action=key.create", key_);
  EXPECT_EQ(bad.status, 400);
  // The audit API takes the same prefix form.
  auto audit = Call("GET", "/v1/orgs/" + org_ + "/audit?action=security.*", key_);
  EXPECT_NE(audit.body.find("security.new_network"), std::string::npos);
}
}  // namespace
}  // namespace gatehouse::testing

// The cross-tenant attack suite: org A's owner tries org B's ids on every endpoint, in the path,
// the body and the query. Every try must be refused (403 org_mismatch or 404, or a verdict that
// says "not found"), and nothing of org B may appear in any response.
//
// It runs four times: on SQLite and on PostgreSQL (GATEHOUSE_TEST_STORAGE=postgres), each
// against the real binary and against gatehouse_forgetful, built with
// GATEHOUSE_FORGET_ORG_FILTER, whose store queries have no org conditions at all, to show that
// the database alone keeps the orgs apart (ctest cross_tenant_*).
//
// A new endpoint joins with one line in kEndpoints; a test below fails until it does.
#include <boost/json.hpp>

#include <regex>
#include <set>

#include "integration/fixture.h"

namespace gatehouse::testing {
namespace {

struct Endpoint {
  std::string method;
  std::string path;  // {org}, {key}: replaced by the attacked ids
  std::string body;  // {org}, {key}, {secret}: likewise
};

// Every endpoint that names or reaches org-owned data.
const std::vector<Endpoint> kEndpoints = {
    {"GET", "/v1/orgs/{org}", ""},
    {"PATCH", "/v1/orgs/{org}", R"({"name":"renamed by A"})"},
    {"GET", "/v1/orgs/{org}/keys", ""},
    {"POST", "/v1/orgs/{org}/keys", R"({"label":"planted by A","scopes":["read:findings"]})"},
    {"GET", "/v1/orgs/{org}/keys/{key}", ""},
    {"DELETE", "/v1/orgs/{org}/keys/{key}", ""},
    {"POST", "/v1/orgs/{org}/keys/{key}/rotate", R"({"grace_period":"1h"})"},
    {"GET", "/v1/orgs/{org}/keys/{key}/usage", ""},
    {"GET", "/v1/orgs/{org}/audit", ""},
    {"GET", "/v1/orgs/{org}/audit/export", ""},
    {"POST", "/v1/orgs/{org}/audit/verify", ""},
    {"POST", "/v1/keys/verify", R"({"key":"{secret}"})"},
};

// Endpoints that hold no org's data, so they are not attacked; listed so that the coverage test
// knows every route was considered.
const std::set<std::string> kNoOrgData = {
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /v1/authz/check",
    "POST /v1/authz/check",
    "GET /v1/authz/check/{rest}",
    "POST /v1/authz/check/{rest}",
};

std::string Fill(std::string text, const std::string& org, const std::string& key,
                 const std::string& secret) {
  for (auto [from, to] :
       {std::pair{std::string("{org}"), org}, {"{key}", key}, {"{secret}", secret}}) {
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from))
      text.replace(at, from.size(), to);
  }
  return text;
}

class CrossTenantTest : public GatewayFixture {
 protected:
  void SetUp() override {
    GatewayFixture::SetUp();
    int status = 0;
    std::vector<std::string> argv = {Binary(), "orgs", "create", "Org B Zq7", "--json"};
    for (const auto& f : StorageFlags()) argv.push_back(f);
    std::string out = RunCommand(argv, &status);
    ASSERT_EQ(status, 0) << out;
    auto v = boost::json::parse(out);
    b_org_ = std::string(v.at("org_id").as_string());
    b_owner_ = std::string(v.at("api_key").as_string());
    // A second key of B's, with a label and scope that must never show up for A.
    auto r = Call("POST", "/v1/orgs/" + b_org_ + "/keys", b_owner_,
                  R"({"label":"b-secret-label-Zq7","scopes":["read:findings"]})");
    ASSERT_EQ(r.status, 201) << r.body;
    auto k = boost::json::parse(r.body);
    b_key_id_ = std::string(k.at("id").as_string());
    b_secret_ = std::string(k.at("key").as_string());
    // A key of A's own that the query and body attacks may revoke or rotate: attacks on A's own
    // paths act on A's data, and A's owner key must survive them.
    auto spare = Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
                      R"({"label":"a-spare","scopes":["read:findings"]})");
    ASSERT_EQ(spare.status, 201) << spare.body;
    a_key_id_ = std::string(boost::json::parse(spare.body).at("id").as_string());
  }

  // Everything that identifies B or its data.
  std::vector<std::string> Secrets() const {
    return {b_org_, "Org B Zq7", b_key_id_, b_secret_, b_owner_, "b-secret-label-Zq7"};
  }

  void ExpectRefusedWithoutLeak(const Response& r, const std::string& what) {
    bool refused =
        r.status == 404 ||
        (r.status == 403 && r.body.find("\"code\":\"org_mismatch\"") != std::string::npos) ||
        r.status == 400;
    EXPECT_TRUE(refused) << what << " -> " << r.status << " " << r.body;
    ExpectNoLeak(r, what);
  }

  void ExpectNoLeak(const Response& r, const std::string& what) {
    for (const auto& s : Secrets()) {
      EXPECT_EQ(r.body.find(s), std::string::npos) << what << " leaked " << s << ": " << r.body;
      for (const auto& [name, value] : r.headers) {
        EXPECT_EQ(value.find(s), std::string::npos) << what << " leaked " << s << " in " << name;
      }
    }
  }

  std::string b_org_, b_owner_, b_key_id_, b_secret_, a_key_id_;
};

TEST_F(CrossTenantTest, OrgBsIdsInThePathAreRefused) {
  for (const auto& e : kEndpoints) {
    if (e.path.find("{org}") == std::string::npos) continue;
    std::string path = Fill(e.path, b_org_, b_key_id_, b_secret_);
    auto r = Call(e.method, path, key_, Fill(e.body, b_org_, b_key_id_, b_secret_));
    ExpectRefusedWithoutLeak(r, e.method + " " + path);
  }
}

TEST_F(CrossTenantTest, OrgBsObjectsUnderOrgAsPathAreNotFound) {
  for (const auto& e : kEndpoints) {
    if (e.path.find("{key}") == std::string::npos) continue;
    std::string path = Fill(e.path, org_, b_key_id_, b_secret_);
    auto r = Call(e.method, path, key_, Fill(e.body, org_, b_key_id_, b_secret_));
    EXPECT_EQ(r.status, 404) << e.method << " " << path << ": " << r.body;
    ExpectNoLeak(r, e.method + " " + path);
  }
}

TEST_F(CrossTenantTest, OrgBsIdsInBodiesAndQueriesChangeNothingAndShowNothing) {
  for (const auto& e : kEndpoints) {
    // Query: B's ids as every plausible parameter, on A's own path.
    std::string path = Fill(e.path, org_, a_key_id_, "") + "?org=" + b_org_ + "&org_id=" + b_org_ +
                       "&key_id=" + b_key_id_ + "&cursor=" + b_key_id_;
    auto q = Call(e.method, path, key_, Fill(e.body, org_, b_key_id_, b_secret_));
    ExpectNoLeak(q, e.method + " " + path);
    // Body: B's ids as extra fields; a strict reader refuses them.
    if (!e.body.empty()) {
      std::string body = Fill(e.body, org_, b_key_id_, b_secret_);
      body.insert(body.size() - 1,
                  R"(,"org_id":")" + b_org_ + R"(","key_id":")" + b_key_id_ + "\"");
      auto r = Call(e.method, Fill(e.path, org_, a_key_id_, ""), key_, body);
      ExpectRefusedWithoutLeak(r, e.method + " " + e.path + " body " + body);
    }
  }
  // Verification of B's key by A: "not found", whatever B's key is.
  auto v = Call("POST", "/v1/keys/verify", key_, R"({"key":")" + b_secret_ + R"("})");
  EXPECT_EQ(v.status, 200);
  EXPECT_NE(v.body.find("\"code\":\"not_found\""), std::string::npos) << v.body;
  ExpectNoLeak(v, "verify B's key");
  // And B is untouched: its name, its keys, its key's state.
  auto org = Call("GET", "/v1/orgs/" + b_org_, b_owner_);
  EXPECT_NE(org.body.find("Org B Zq7"), std::string::npos) << org.body;
  auto keys = Call("GET", "/v1/orgs/" + b_org_ + "/keys", b_owner_);
  EXPECT_EQ(keys.body.find("planted by A"), std::string::npos) << keys.body;
  auto key = Call("GET", "/v1/orgs/" + b_org_ + "/keys/" + b_key_id_, b_owner_);
  EXPECT_NE(key.body.find("\"state\":\"active\""), std::string::npos) << key.body;
}

TEST_F(CrossTenantTest, EveryDocumentedEndpointIsAttackedOrHoldsNoOrgData) {
  std::ifstream in(std::string(GATEHOUSE_SOURCE_DIR) + "/openapi.yaml");
  ASSERT_TRUE(in);
  std::set<std::string> attacked;
  for (const auto& e : kEndpoints) {
    std::string p = std::regex_replace(e.path, std::regex("\\{key\\}"), "{id}");
    attacked.insert(e.method + " " + p);
  }
  std::regex path_re("^  (/[^:]*):\\s*$");
  std::regex method_re("^    (get|post|put|patch|delete):\\s*$");
  std::string line, path;
  std::smatch m;
  int seen = 0;
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, path_re)) {
      path = m[1];
    } else if (!path.empty() && std::regex_match(line, m, method_re)) {
      std::string method = m[1];
      for (auto& c : method) c = static_cast<char>(std::toupper(c));
      std::string endpoint = method + " " + path;
      ++seen;
      EXPECT_TRUE(attacked.count(endpoint) || kNoOrgData.count(endpoint))
          << endpoint << " is in openapi.yaml but not in the cross-tenant suite";
    }
  }
  EXPECT_GT(seen, 10);
}

}  // namespace
}  // namespace gatehouse::testing

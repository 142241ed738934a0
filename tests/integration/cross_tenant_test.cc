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

#include <map>
#include <regex>
#include <set>

#include "integration/fixture.h"

namespace gatehouse::testing {
namespace {

struct Endpoint {
  std::string method;
  std::string path;  // {org}, {key}, {user}, {inv}, {role}: replaced by the attacked ids
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
    {"PATCH", "/v1/orgs/{org}/keys/{key}", R"({"rate_limit":{"requests":1,"window":"1h"}})"},
    {"POST", "/v1/orgs/{org}/keys/{key}/rotate", R"({"grace_period":"1h"})"},
    {"GET", "/v1/orgs/{org}/keys/{key}/usage", ""},
    {"GET", "/v1/orgs/{org}/audit", ""},
    {"GET", "/v1/orgs/{org}/audit/export", ""},
    {"GET", "/v1/orgs/{org}/security-events", ""},
    {"POST", "/v1/orgs/{org}/audit/verify", ""},
    {"POST", "/v1/keys/verify", R"({"key":"{secret}"})"},
    {"GET", "/v1/orgs/{org}/members", ""},
    {"PATCH", "/v1/orgs/{org}/members/{user}", R"({"role":"viewer"})"},
    {"DELETE", "/v1/orgs/{org}/members/{user}", ""},
    {"DELETE", "/v1/orgs/{org}/members/{user}/sessions", ""},
    {"POST", "/v1/orgs/{org}/invitations", R"({"email":"planted@example.com","role":"viewer"})"},
    {"GET", "/v1/orgs/{org}/invitations", ""},
    {"DELETE", "/v1/orgs/{org}/invitations/{inv}", ""},
    {"GET", "/v1/orgs/{org}/roles", ""},
    {"POST", "/v1/orgs/{org}/roles", R"({"name":"planted","permissions":["keys:read"]})"},
    {"PATCH", "/v1/orgs/{org}/roles/{role}", R"({"permissions":["keys:read"]})"},
    {"DELETE", "/v1/orgs/{org}/roles/{role}", ""},
};

// The caller's own account and sign-in: no org in the path; what they show is checked by
// SessionsShowOnlyTheirOwnOrgs and InvitationsOfAnotherOrgCannotBeTaken below.
const std::set<std::string> kCallersOwn = {
    "POST /v1/auth/login",         "POST /v1/auth/refresh",       "POST /v1/auth/reauth",
    "POST /v1/auth/logout",        "POST /v1/auth/logout-all",    "GET /v1/me",
    "GET /v1/me/sessions",         "DELETE /v1/me/sessions/{id}", "POST /v1/me/password",
    "POST /v1/invitations/accept",
};

// Endpoints that hold no org's data, so they are not attacked; listed so that the coverage test
// knows every route was considered.
const std::set<std::string> kNoOrgData = {
    "GET /healthz",
    "GET /readyz",
    "GET /.well-known/jwks.json",  // one deployment key; the same answer to every caller
    "GET /metrics",
    "GET /v1/authz/check",
    "POST /v1/authz/check",
    "GET /v1/authz/check/{rest}",
    "POST /v1/authz/check/{rest}",
};

// The ids of one org's people objects, for the paths that name them.
struct PeopleIds {
  std::string user, inv, role;
};

std::string Fill(std::string text, const std::string& org, const std::string& key,
                 const std::string& secret, const PeopleIds& people = {}) {
  for (auto [from, to] : {std::pair{std::string("{org}"), org},
                          {"{key}", key},
                          {"{secret}", secret},
                          {"{user}", people.user},
                          {"{inv}", people.inv},
                          {"{role}", people.role}}) {
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
    // B's people: a member who joined by invitation, a pending invitation, a custom role.
    b_people_ = JoinByInvitation(b_org_, b_owner_, "b-member-zq7@example.com");
    b_people_.inv = PendingInvitation(b_org_, b_owner_, "b-pending-zq7@example.com");
    auto role = Call("POST", "/v1/orgs/" + b_org_ + "/roles", b_owner_,
                     R"({"name":"b-role-zq7","permissions":["keys:read"]})");
    ASSERT_EQ(role.status, 201) << role.body;
    b_people_.role = "b-role-zq7";
    // A's own, for the attacks on A's own paths.
    a_people_ = JoinByInvitation(org_, key_, "a-member@example.com");
    a_people_.inv = PendingInvitation(org_, key_, "a-pending@example.com");
    ASSERT_EQ(Call("POST", "/v1/orgs/" + org_ + "/roles", key_,
                   R"({"name":"a-role","permissions":["keys:read"]})")
                  .status,
              201);
    a_people_.role = "a-role";
  }

  PeopleIds JoinByInvitation(const std::string& org, const std::string& key,
                             const std::string& email) {
    PeopleIds ids;
    auto inv = Call("POST", "/v1/orgs/" + org + "/invitations", key,
                    R"({"email":")" + email + R"(","role":"admin"})");
    EXPECT_EQ(inv.status, 201) << inv.body;
    std::string token(boost::json::parse(inv.body).at("token").as_string());
    auto joined = Call("POST", "/v1/invitations/accept", "",
                       R"({"token":")" + token + R"(","password":")" + kMemberPassword + "\"}");
    EXPECT_EQ(joined.status, 201) << joined.body;
    ids.user = std::string(boost::json::parse(joined.body).at("user_id").as_string());
    return ids;
  }

  std::string PendingInvitation(const std::string& org, const std::string& key,
                                const std::string& email) {
    auto inv = Call("POST", "/v1/orgs/" + org + "/invitations", key,
                    R"({"email":")" + email + R"(","role":"viewer"})");
    EXPECT_EQ(inv.status, 201) << inv.body;
    auto v = boost::json::parse(inv.body);
    pending_tokens_[org] = std::string(v.at("token").as_string());
    return std::string(v.at("id").as_string());
  }

  std::string SessionOf(const std::string& email) {
    auto r = Call("POST", "/v1/auth/login", "",
                  R"({"email":")" + email + R"(","password":")" + kMemberPassword + "\"}");
    EXPECT_EQ(r.status, 200) << r.body;
    return std::string(boost::json::parse(r.body).at("token").as_string());
  }

  static constexpr const char* kMemberPassword = "heron quartz lantern meadow";

  // Everything that identifies B or its data.
  std::vector<std::string> Secrets() const {
    return {b_org_,       "Org B Zq7",          b_key_id_,       b_secret_,
            b_owner_,     "b-secret-label-Zq7", b_people_.user,  b_people_.inv,
            "b-role-zq7", "b-member-zq7",       "b-pending-zq7", pending_tokens_.at(b_org_)};
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
  PeopleIds a_people_, b_people_;
  std::map<std::string, std::string> pending_tokens_;
};

TEST_F(CrossTenantTest, OrgBsIdsInThePathAreRefused) {
  for (const auto& e : kEndpoints) {
    if (e.path.find("{org}") == std::string::npos) continue;
    std::string path = Fill(e.path, b_org_, b_key_id_, b_secret_, b_people_);
    auto r = Call(e.method, path, key_, Fill(e.body, b_org_, b_key_id_, b_secret_));
    ExpectRefusedWithoutLeak(r, e.method + " " + path);
  }
}

// The same attacks by a signed-in person of A (an admin there) with a session token.
TEST_F(CrossTenantTest, OrgBsIdsInThePathAreRefusedToASessionOfA) {
  std::string session = SessionOf("a-member@example.com");
  for (const auto& e : kEndpoints) {
    if (e.path.find("{org}") == std::string::npos) continue;
    std::string path = Fill(e.path, b_org_, b_key_id_, b_secret_, b_people_);
    auto r = Call(e.method, path, session, Fill(e.body, b_org_, b_key_id_, b_secret_));
    ExpectRefusedWithoutLeak(r, "session: " + e.method + " " + path);
  }
  // B's member, roles and invitation are as they were.
  auto members = Call("GET", "/v1/orgs/" + b_org_ + "/members", b_owner_);
  EXPECT_NE(members.body.find("\"role\":\"admin\""), std::string::npos) << members.body;
  auto roles = Call("GET", "/v1/orgs/" + b_org_ + "/roles", b_owner_);
  EXPECT_NE(roles.body.find("b-role-zq7"), std::string::npos);
  EXPECT_EQ(roles.body.find("planted"), std::string::npos);
  auto invs = Call("GET", "/v1/orgs/" + b_org_ + "/invitations", b_owner_);
  EXPECT_NE(invs.body.find("\"state\":\"pending\""), std::string::npos) << invs.body;
  EXPECT_EQ(invs.body.find("planted@example.com"), std::string::npos);
}

TEST_F(CrossTenantTest, SessionsShowOnlyTheirOwnOrgs) {
  std::string session = SessionOf("a-member@example.com");
  for (const char* path : {"/v1/me", "/v1/me/sessions"}) {
    auto r = Call("GET", path, session);
    EXPECT_EQ(r.status, 200) << r.body;
    ExpectNoLeak(r, path);
  }
  // Ending a session of B's member through A's own list: not found.
  std::string b_session = SessionOf("b-member-zq7@example.com");
  auto b_list = Call("GET", "/v1/me/sessions", b_session);
  std::string b_family(boost::json::parse(b_list.body).at("sessions").at(0).at("id").as_string());
  EXPECT_EQ(Call("DELETE", "/v1/me/sessions/" + b_family, session).status, 404);
  EXPECT_EQ(Call("GET", "/v1/me", b_session).status, 200);
}

TEST_F(CrossTenantTest, InvitationsOfAnotherOrgCannotBeTaken) {
  std::string session = SessionOf("a-member@example.com");
  auto r = Call("POST", "/v1/invitations/accept", session,
                R"({"token":")" + pending_tokens_.at(b_org_) + R"("})");
  EXPECT_EQ(r.status, 403) << r.body;  // the invitation is for another email
  ExpectNoLeak(r, "accept B's invitation");
  auto invs = Call("GET", "/v1/orgs/" + b_org_ + "/invitations", b_owner_);
  EXPECT_NE(invs.body.find("\"state\":\"pending\""), std::string::npos) << invs.body;
}

TEST_F(CrossTenantTest, OrgBsObjectsUnderOrgAsPathAreNotFound) {
  for (const auto& e : kEndpoints) {
    if (e.path.find("{key}") == std::string::npos && e.path.find("{user}") == std::string::npos &&
        e.path.find("{inv}") == std::string::npos && e.path.find("{role}") == std::string::npos) {
      continue;
    }
    std::string path = Fill(e.path, org_, b_key_id_, b_secret_, b_people_);
    auto r = Call(e.method, path, key_, Fill(e.body, org_, b_key_id_, b_secret_));
    EXPECT_EQ(r.status, 404) << e.method << " " << path << ": " << r.body;
    ExpectNoLeak(r, e.method + " " + path);
  }
}

TEST_F(CrossTenantTest, OrgBsIdsInBodiesAndQueriesChangeNothingAndShowNothing) {
  for (const auto& e : kEndpoints) {
    // Query: B's ids as every plausible parameter, on A's own path.
    std::string path = Fill(e.path, org_, a_key_id_, "", a_people_) + "?org=" + b_org_ +
                       "&org_id=" + b_org_ + "&key_id=" + b_key_id_ + "&cursor=" + b_key_id_;
    auto q = Call(e.method, path, key_, Fill(e.body, org_, b_key_id_, b_secret_));
    ExpectNoLeak(q, e.method + " " + path);
    // Body: B's ids as extra fields; a strict reader refuses them.
    if (!e.body.empty()) {
      std::string body = Fill(e.body, org_, b_key_id_, b_secret_);
      body.insert(body.size() - 1,
                  R"(,"org_id":")" + b_org_ + R"(","key_id":")" + b_key_id_ + "\"");
      auto r = Call(e.method, Fill(e.path, org_, a_key_id_, "", a_people_), key_, body);
      ExpectRefusedWithoutLeak(r, e.method + " " + e.path + " body " + body);
    }
  }
  // B's signed head as an anchor for A's chain: refused, and nothing of B's chain is judged.
  auto b_report = Call("POST", "/v1/orgs/" + b_org_ + "/audit/verify", b_owner_);
  ASSERT_EQ(b_report.status, 200) << b_report.body;
  const auto b_head = boost::json::parse(b_report.body).at("signed_head");
  auto anchored = Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_,
                       "{\"anchor\":" + boost::json::serialize(b_head) + "}");
  ExpectRefusedWithoutLeak(anchored, "B's signed head as A's anchor");
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
    std::string p = std::regex_replace(e.path, std::regex("\\{key\\}|\\{inv\\}"), "{id}");
    p = std::regex_replace(p, std::regex("\\{role\\}"), "{name}");
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
      EXPECT_TRUE(attacked.count(endpoint) || kNoOrgData.count(endpoint) ||
                  kCallersOwn.count(endpoint))
          << endpoint << " is in openapi.yaml but not in the cross-tenant suite";
    }
  }
  EXPECT_GT(seen, 10);
}

}  // namespace
}  // namespace gatehouse::testing

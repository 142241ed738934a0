// Members, roles and invitations (issue 5 parts 2-3): built-in and custom roles, permissions on
// every route, no granting beyond one's own permissions, the last owner, single-use invitations
// with an expiry, and admin force logout.
#include <set>

#include "people/people_fixture.h"

namespace gatehouse {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;
using testing::Body;
using testing::Code;

class MembersTest : public testing::PeopleTest {
 protected:
  std::string RoleOf(const std::string& user_id) {
    auto m = env_.people->GetMember(Org(), user_id);
    return *m ? (*m)->role : "";
  }
  std::string Invite(const std::string& token, const std::string& email, const std::string& role) {
    auto r = env_.Call("POST", OrgPath("/invitations"), token,
                       json::serialize(json::object{{"email", email}, {"role", role}}));
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? std::string(Body(r).at("token").as_string()) : "";
  }
  HttpResponse Accept(const std::string& invitation, const std::string& password,
                      const std::string& session = "") {
    json::object body{{"token", invitation}};
    if (!password.empty()) body["password"] = password;
    return env_.Call("POST", "/v1/invitations/accept", session, json::serialize(body));
  }
};

TEST_F(MembersTest, FiveBuiltInRolesCoverThePlatformsCategories) {
  auto token = Login("owner@example.com", kOwnerPassword);
  auto r = env_.Call("GET", OrgPath("/roles"), token);
  ASSERT_EQ(r.status, 200) << r.body;
  std::map<std::string, std::vector<std::string>> roles;
  auto listed = Body(r);
  for (const auto& role : listed.at("roles").as_array()) {
    std::vector<std::string> perms;
    for (const auto& p : role.at("permissions").as_array()) perms.emplace_back(p.as_string());
    roles[std::string(role.at("name").as_string())] = perms;
  }
  for (const char* name : {"owner", "admin", "developer", "viewer", "auditor"}) {
    EXPECT_TRUE(roles.contains(name)) << name;
  }
  auto has = [&](const std::string& role, const std::string& p) {
    auto& v = roles[role];
    return std::find(v.begin(), v.end(), p) != v.end();
  };
  for (const char* p :
       {"dashboards:delete", "workflows:manage", "integrations:remove", "ai:manage_settings",
        "admin:users", "admin:roles", "admin:settings", "members:write", "roles:write",
        "vault:write", "webhooks:write", "audit:read", "orgs:write"}) {
    EXPECT_TRUE(has("admin", p)) << p;
  }
  EXPECT_FALSE(has("admin", "admin:billing"));  // the owner's alone
  EXPECT_TRUE(has("developer", "workflows:execute"));
  EXPECT_TRUE(has("developer", "ai:deploy_agents"));
  EXPECT_FALSE(has("developer", "members:write"));
  EXPECT_TRUE(has("viewer", "dashboards:view"));
  EXPECT_FALSE(has("viewer", "keys:write"));
  EXPECT_TRUE(has("auditor", "audit:read"));
  EXPECT_FALSE(has("auditor", "keys:write"));
}

TEST_F(MembersTest, EveryRouteChecksTheRolesPermissions) {
  AddUser("viewer@example.com", kPassword, "viewer");
  AddUser("auditor@example.com", kPassword, "auditor");
  auto viewer = Login("viewer@example.com", kPassword);
  auto auditor = Login("auditor@example.com", kPassword);
  auto denied = env_.Call("POST", OrgPath("/keys"), viewer, R"({"label":"x"})");
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(Body(denied).at("error").at("required").at(0), "keys:write");
  EXPECT_EQ(env_.Call("GET", OrgPath("/keys"), viewer).status, 200);
  EXPECT_EQ(env_.Call("GET", OrgPath("/audit"), viewer).status, 403);
  EXPECT_EQ(env_.Call("GET", OrgPath("/audit"), auditor).status, 200);
  EXPECT_EQ(env_.Call("PATCH", OrgPath(), auditor, R"({"name":"x"})").status, 403);
  EXPECT_EQ(env_.Call("POST", OrgPath("/invitations"), viewer,
                      R"({"email":"x@example.com","role":"viewer"})")
                .status,
            403);
  EXPECT_EQ(env_.Call("GET", OrgPath("/members"), viewer).status, 200);
}

TEST_F(MembersTest, AUserOfAnotherOrgIsRefusedWithOrgMismatch) {
  auto other = env_.NewOrg("Contoso");
  AddUser("stranger@example.com", kPassword, "owner", other.org.id);
  auto stranger = Login("stranger@example.com", kPassword);
  for (const char* path : {"", "/members", "/keys", "/roles", "/invitations", "/audit"}) {
    auto r = env_.Call("GET", OrgPath(path), stranger);
    EXPECT_EQ(r.status, 403) << path;
    EXPECT_EQ(Code(r), "org_mismatch") << path;
  }
  EXPECT_EQ(Code(env_.Call("GET", "/v1/orgs/org_doesnotexist/members", stranger)), "org_mismatch");
}

TEST_F(MembersTest, AKeyNeverCarriesMoreThanItsCreatorsRole) {
  AddUser("dev@example.com", kPassword, "developer");
  auto dev = Login("dev@example.com", kPassword);
  auto ok =
      env_.Call("POST", OrgPath("/keys"), dev, R"({"label":"ci","scopes":["read:findings"]})");
  EXPECT_EQ(ok.status, 201) << ok.body;
  auto dev_id = env_.people->FindUserByEmail("dev@example.com")->value().id;
  EXPECT_EQ(Body(ok).at("created_by").as_string(), dev_id);
  for (const char* scope : {"audit:read", "admin", "members:write"}) {
    auto r = env_.Call("POST", OrgPath("/keys"), dev,
                       std::string(R"({"label":"x","scopes":[")") + scope + "\"]}");
    EXPECT_EQ(r.status, 403) << scope;
    EXPECT_NE(r.body.find("cannot grant"), std::string::npos) << r.body;
  }
}

TEST_F(MembersTest, OnlyOwnersMakeOwnersAndTheLastOwnerStays) {
  auto admin_user = AddUser("admin@example.com", kPassword, "admin");
  auto dev_user = AddUser("dev@example.com", kPassword, "developer");
  auto admin = Login("admin@example.com", kPassword);
  auto owner = Login("owner@example.com", kOwnerPassword);
  auto promote = [&](const std::string& token, const std::string& user, const std::string& role) {
    return env_.Call("PATCH", OrgPath("/members/" + user), token,
                     json::serialize(json::object{{"role", role}}));
  };
  EXPECT_EQ(promote(admin, dev_user.id, "owner").status, 403);
  EXPECT_EQ(promote(admin, owner_.id, "viewer").status, 403);  // nor unmake them
  EXPECT_EQ(promote(admin, dev_user.id, "viewer").status, 200);
  EXPECT_EQ(RoleOf(dev_user.id), "viewer");
  EXPECT_EQ(promote(admin, dev_user.id, "no-such-role").status, 400);
  // The last owner can neither be demoted nor leave.
  auto demote = promote(owner, owner_.id, "admin");
  EXPECT_EQ(demote.status, 409);
  EXPECT_NE(demote.body.find("last owner"), std::string::npos);
  EXPECT_EQ(env_.Call("DELETE", OrgPath("/members/" + owner_.id), owner).status, 409);
  // With a second owner, the first may step down.
  EXPECT_EQ(promote(owner, admin_user.id, "owner").status, 200);
  EXPECT_EQ(promote(owner, owner_.id, "admin").status, 200);
  EXPECT_EQ(RoleOf(owner_.id), "admin");
}

TEST_F(MembersTest, MembersLeaveAndAdminsRemoveWithARecentSignIn) {
  auto viewer_user = AddUser("viewer@example.com", kPassword, "viewer");
  auto dev_user = AddUser("dev@example.com", kPassword, "developer");
  auto viewer = Login("viewer@example.com", kPassword);
  auto owner = Login("owner@example.com", kOwnerPassword);
  EXPECT_EQ(env_.Call("DELETE", OrgPath("/members/" + dev_user.id), viewer).status, 403);
  EXPECT_EQ(env_.Call("DELETE", OrgPath("/members/" + viewer_user.id), viewer).status, 200);
  EXPECT_EQ(RoleOf(viewer_user.id), "");
  EXPECT_EQ(Code(env_.Call("GET", OrgPath("/members"), viewer)), "org_mismatch");
  Advance(16min);
  EXPECT_EQ(Code(env_.Call("DELETE", OrgPath("/members/" + dev_user.id), owner)),
            "reauth_required");
  auto re = env_.Call("POST", "/v1/auth/reauth", owner,
                      json::serialize(json::object{{"password", kOwnerPassword}}));
  ASSERT_EQ(re.status, 200);
  EXPECT_EQ(env_.Call("DELETE", OrgPath("/members/" + dev_user.id), TokenOf(re)).status, 200);
  EXPECT_EQ(env_.Call("GET", OrgPath("/members"), TokenOf(re)).body.find("dev@example.com"),
            std::string::npos);
}

TEST_F(MembersTest, ForceLogoutEndsEverySessionOfTheMemberAtOnce) {
  auto dev_user = AddUser("dev@example.com", kPassword, "developer");
  AddUser("admin@example.com", kPassword, "admin");
  auto d1 = Login("dev@example.com", kPassword);
  auto d2 = Login("dev@example.com", kPassword);
  auto admin = Login("admin@example.com", kPassword);
  auto r = env_.Call("DELETE", OrgPath("/members/" + dev_user.id + "/sessions"), admin);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r).at("sessions_ended"), 2);
  EXPECT_EQ(env_.Call("GET", "/v1/me", d1).status, 401);
  EXPECT_EQ(env_.Call("GET", "/v1/me", d2).status, 401);
  // Not the owner's, whose role is above the admin's.
  EXPECT_EQ(env_.Call("DELETE", OrgPath("/members/" + owner_.id + "/sessions"), admin).status, 403);
  // Nor anyone outside the org.
  auto other = env_.NewOrg("Contoso");
  auto outsider = AddUser("out@example.com", kPassword, "viewer", other.org.id);
  EXPECT_EQ(env_.Call("DELETE", OrgPath("/members/" + outsider.id + "/sessions"), admin).status,
            404);
}

TEST_F(MembersTest, CustomRolesAreBoundedByTheirAuthorsPermissions) {
  AddUser("admin@example.com", kPassword, "admin");
  auto admin = Login("admin@example.com", kPassword);
  auto make = [&](const std::string& body) {
    return env_.Call("POST", OrgPath("/roles"), admin, body);
  };
  EXPECT_EQ(
      make(R"({"name":"analyst","permissions":["dashboards:view","workflows:execute"]})").status,
      201);
  EXPECT_EQ(make(R"({"name":"analyst","permissions":[]})").status, 409);
  EXPECT_EQ(make(R"({"name":"viewer","permissions":[]})").status, 409);  // built in
  EXPECT_EQ(make(R"({"name":"Bad Name","permissions":[]})").status, 400);
  EXPECT_EQ(make(R"({"name":"x","permissions":["no:such"]})").status, 400);
  EXPECT_EQ(make(R"({"name":"biller","permissions":["admin:billing"]})").status, 403);
  // A member holding the custom role gets exactly its permissions.
  auto inv = Invite(admin, "ana@example.com", "analyst");
  ASSERT_EQ(Accept(inv, kPassword).status, 201);
  auto ana = Login("ana@example.com", kPassword);
  auto me = Body(env_.Call("GET", "/v1/me", ana));
  EXPECT_EQ(me.at("orgs").at(0).at("role"), "analyst");
  EXPECT_EQ(me.at("orgs").at(0).at("permissions").as_array().size(), 2u);
  EXPECT_EQ(env_.Call("GET", OrgPath("/keys"), ana).status, 403);
  EXPECT_EQ(env_.Call("PATCH", OrgPath("/roles/analyst"), admin,
                      R"({"permissions":["dashboards:view","keys:read"]})")
                .status,
            200);
  EXPECT_EQ(env_.Call("GET", OrgPath("/keys"), ana).status, 200);
  // A role still held cannot go.
  EXPECT_EQ(env_.Call("DELETE", OrgPath("/roles/analyst"), admin).status, 409);
  EXPECT_EQ(env_.Call("DELETE", OrgPath("/roles/owner"), admin).status, 409);
}

TEST_F(MembersTest, ThePlatformsAdminPermissionsCoverGatehousesOwnObjects) {
  auto owner = Login("owner@example.com", kOwnerPassword);
  ASSERT_EQ(env_.Call("POST", OrgPath("/roles"), owner,
                      R"({"name":"people-admin","permissions":["admin:users"]})")
                .status,
            201);
  auto inv = Invite(owner, "hr@example.com", "people-admin");
  ASSERT_EQ(Accept(inv, kPassword).status, 201);
  auto hr = Login("hr@example.com", kPassword);
  EXPECT_EQ(env_.Call("GET", OrgPath("/members"), hr).status, 200);
  EXPECT_EQ(env_.Call("POST", OrgPath("/invitations"), hr,
                      R"({"email":"new@example.com","role":"people-admin"})")
                .status,
            201);
  EXPECT_EQ(env_.Call("GET", OrgPath("/roles"), hr).status, 403);  // admin:roles is another
  EXPECT_EQ(env_.Call("PATCH", OrgPath(), hr, R"({"name":"x"})").status, 403);
}

TEST_F(MembersTest, InvitationsAreSingleUseAndExpire) {
  auto owner = Login("owner@example.com", kOwnerPassword);
  auto token = Invite(owner, "New.Hire@Example.com", "developer");
  ASSERT_TRUE(token.starts_with("ghi_"));
  // Weak passwords are refused with the reason, and the invitation stays usable.
  auto weak = Accept(token, "Password1234567");
  EXPECT_EQ(weak.status, 400);
  auto joined = Accept(token, kPassword);
  ASSERT_EQ(joined.status, 201) << joined.body;
  EXPECT_EQ(Body(joined).at("role"), "developer");
  EXPECT_EQ(Body(joined).at("email"), "new.hire@example.com");
  EXPECT_EQ(Accept(token, kPassword).status, 404);  // used
  Login("new.hire@example.com", kPassword);
  auto listed = Body(env_.Call("GET", OrgPath("/invitations"), owner));
  EXPECT_EQ(listed.at("invitations").at(0).at("state"), "accepted");
  EXPECT_EQ(json::serialize(listed).find(token), std::string::npos);  // shown once only
  // Inviting a member again is a conflict.
  auto again = env_.Call("POST", OrgPath("/invitations"), owner,
                         R"({"email":"new.hire@example.com","role":"viewer"})");
  EXPECT_EQ(again.status, 409);
}

TEST_F(MembersTest, AnInvitationExpiresExactlyAtItsLimit) {
  auto owner = Login("owner@example.com", kOwnerPassword);
  auto early = Invite(owner, "early@example.com", "viewer");
  auto late = Invite(owner, "late@example.com", "viewer");
  Advance(7 * 24h - 1us);
  EXPECT_EQ(Accept(early, kPassword).status, 201);
  Advance(1us);
  EXPECT_EQ(Accept(late, kPassword).status, 404);
}

TEST_F(MembersTest, ARevokedInvitationCannotBeUsed) {
  auto owner = Login("owner@example.com", kOwnerPassword);
  auto token = Invite(owner, "maybe@example.com", "viewer");
  auto list = Body(env_.Call("GET", OrgPath("/invitations"), owner));
  std::string id(list.at("invitations").at(0).at("id").as_string());
  auto revoked = env_.Call("DELETE", OrgPath("/invitations/" + id), owner);
  ASSERT_EQ(revoked.status, 200);
  EXPECT_EQ(Body(revoked).at("state"), "revoked");
  EXPECT_EQ(Accept(token, kPassword).status, 404);
  EXPECT_EQ(Accept("ghi_forged", kPassword).status, 404);
}

TEST_F(MembersTest, AnExistingAccountAcceptsSignedInAsTheInvitedEmail) {
  auto other = env_.NewOrg("Contoso");
  AddUser("consultant@example.com", kPassword, "viewer", other.org.id);
  AddUser("someone.else@example.com", kPassword, "");
  auto owner = Login("owner@example.com", kOwnerPassword);
  auto token = Invite(owner, "consultant@example.com", "auditor");
  EXPECT_EQ(Accept(token, "a brand new password here").status, 401);
  auto wrong_user = Login("someone.else@example.com", kPassword);
  EXPECT_EQ(Accept(token, "", wrong_user).status, 403);
  auto consultant = Login("consultant@example.com", kPassword);
  ASSERT_EQ(Accept(token, "", consultant).status, 201);
  auto me = Body(env_.Call("GET", "/v1/me", consultant));
  EXPECT_EQ(me.at("orgs").as_array().size(), 2u);  // one person, two orgs, a role in each
  EXPECT_EQ(env_.Call("GET", OrgPath("/audit"), consultant).status, 200);
  EXPECT_EQ(env_.Call("GET", "/v1/orgs/" + other.org.id + "/audit", consultant).status, 403);
}

TEST_F(MembersTest, AnAdminCannotOfferARoleAboveTheirOwn) {
  AddUser("admin@example.com", kPassword, "admin");
  auto admin = Login("admin@example.com", kPassword);
  auto r = env_.Call("POST", OrgPath("/invitations"), admin,
                     R"({"email":"boss@example.com","role":"owner"})");
  EXPECT_EQ(r.status, 403);
}

TEST_F(MembersTest, BadBodiesGetAJsonErrorAndChangeNothing) {
  auto dev_user = AddUser("dev@example.com", kPassword, "developer");
  auto owner = Login("owner@example.com", kOwnerPassword);
  const std::vector<std::pair<std::string, std::string>> routes = {
      {"POST", "/v1/auth/login"},
      {"POST", "/v1/auth/reauth"},
      {"POST", "/v1/me/password"},
      {"POST", "/v1/invitations/accept"},
      {"PATCH", OrgPath("/members/" + dev_user.id)},
      {"POST", OrgPath("/invitations")},
      {"POST", OrgPath("/roles")},
      {"PATCH", OrgPath("/roles/analyst")},
      {"PATCH", OrgPath()},
  };
  const std::vector<std::string> bodies = {"",
                                           "not json",
                                           "[]",
                                           "{\"unknown\":1}",
                                           "{\"email\":5,\"password\":[]}",
                                           "{\"role\":{\"nested\":true}}",
                                           "{\"permissions\":\"admin\"}",
                                           "{\"session_idle_timeout_minutes\":-1}",
                                           std::string(5000, '{')};
  for (const auto& [method, path] : routes) {
    for (const auto& body : bodies) {
      auto r = env_.Call(method, path, owner, body);
      EXPECT_EQ(r.status, 400) << method << " " << path << " " << body.substr(0, 40) << " -> "
                               << r.body;
      EXPECT_EQ(Code(r), "invalid_request") << method << " " << path;
    }
  }
  EXPECT_EQ(RoleOf(dev_user.id), "developer");
  EXPECT_EQ(env_.Call("GET", "/v1/me", owner).status, 200);
}

TEST_F(MembersTest, ChangesAreRecordedInTheOrgsAuditLog) {
  auto dev_user = AddUser("dev@example.com", kPassword, "developer");
  auto owner = Login("owner@example.com", kOwnerPassword);
  env_.Call("PATCH", OrgPath("/members/" + dev_user.id), owner, R"({"role":"viewer"})");
  Invite(owner, "x@example.com", "viewer");
  env_.Call("POST", OrgPath("/roles"), owner, R"({"name":"ops","permissions":["keys:read"]})");
  std::set<std::string> actions;
  auto page = env_.store->ListAudit(Org(), {});
  for (const auto& e : page->events) actions.insert(e.action);
  for (const char* a : {"member.add", "member.role", "invitation.create", "role.create",
                        "session.create", "auth.api"}) {
    EXPECT_TRUE(actions.contains(a)) << a;
  }
}

}  // namespace
}  // namespace gatehouse

// Sessions (issue 5 part 4-5; ASVS V7, NIST SP 800-63B §5): tokens, inactivity and absolute
// limits at their boundaries, rotation with reuse detection, logout, the session list, CSRF on
// cookie requests, and re-authentication.
#include <set>

#include "people/people_fixture.h"

namespace gatehouse {
namespace {

using namespace std::chrono_literals;
namespace json = boost::json;
using testing::Body;
using testing::Code;
using testing::Header;

class SessionsTest : public testing::PeopleTest {};

TEST_F(SessionsTest, TokensAreLongRandomOpaqueAndOnlyTheirHashIsStored) {
  std::set<std::string> tokens;
  for (int i = 0; i < 20; ++i) tokens.insert(Login("owner@example.com", kOwnerPassword));
  EXPECT_EQ(tokens.size(), 20u);
  for (const auto& t : tokens) {
    EXPECT_TRUE(t.starts_with("ghs_"));
    EXPECT_GE(t.size() - 4, 43u);  // 43 base62 characters: about 256 bits
  }
  // What a stolen database holds: keyed hashes, never a token.
  auto stored = env_.store->QueryAsTenant("", "SELECT token_hash FROM sessions");
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->size(), 20u);
  for (const auto& h : *stored) {
    EXPECT_EQ(h.size(), 64u);
    for (const auto& t : tokens) EXPECT_EQ(h.find(t.substr(4)), std::string::npos);
  }
}

TEST_F(SessionsTest, MeShowsTheUserTheirOrgsRolesAndTheSession) {
  auto token = Login("owner@example.com", kOwnerPassword);
  auto r = env_.Call("GET", "/v1/me", token);
  ASSERT_EQ(r.status, 200) << r.body;
  auto me = Body(r).as_object();
  EXPECT_EQ(me.at("user").at("email"), "owner@example.com");
  EXPECT_EQ(me.at("orgs").as_array().size(), 1u);
  EXPECT_EQ(me.at("orgs").at(0).at("role"), "owner");
  EXPECT_EQ(me.at("orgs").at(0).at("id").as_string(), Org());
  EXPECT_EQ(me.at("session").at("csrf_token").as_string().size(), 64u);
  EXPECT_EQ(Header(r, "cache-control"), "no-store");
  // An API key is not a user.
  EXPECT_EQ(env_.Call("GET", "/v1/me", org_.owner_key.secret).status, 401);
  EXPECT_EQ(env_.Call("GET", "/v1/me", "ghs_notarealtoken").status, 401);
  EXPECT_FALSE(env_.last_stale_credential);  // a made-up token is a guess
}

TEST_F(SessionsTest, ASessionIssuedBeforeAPepperRotationLastsThroughIt) {
  auto token = Login("owner@example.com", kOwnerPassword);
  auto me = env_.Call("GET", "/v1/me", token);
  ASSERT_EQ(me.status, 200) << me.body;
  const std::string csrf(Body(me).at("session").at("csrf_token").as_string());
  const std::string new_pepper = "a-new-pepper-0123456789abcdef012345";
  SessionService rotating(*env_.people, env_.clock, env_.config,
                          Peppers{new_pepper, testing::DomainEnv::kPepper});
  auto session = rotating.Authenticate(token, "127.0.0.1");
  ASSERT_TRUE(session) << session.error().message;
  // The page loaded before the rotation still holds the CSRF token it was given then.
  EXPECT_TRUE(rotating.CheckCsrf(*session, csrf));
  EXPECT_NE(rotating.CsrfToken(*session), csrf);  // new pages get the new one
  EXPECT_TRUE(rotating.CheckCsrf(*session, rotating.CsrfToken(*session)));
  EXPECT_FALSE(rotating.CheckCsrf(*session, std::string(64, '0')));
  // Once the previous pepper is retired, it ends.
  SessionService retired(*env_.people, env_.clock, env_.config, Peppers{new_pepper});
  EXPECT_FALSE(retired.Authenticate(token, "127.0.0.1"));
}

TEST_F(SessionsTest, InactivityEndsTheSessionExactlyAtTheLimit) {
  auto token = Login("owner@example.com", kOwnerPassword);
  Advance(1h - 1us);
  EXPECT_EQ(env_.Call("GET", "/v1/me", token).status, 200);  // activity restarts the clock
  Advance(1h - 1us);
  EXPECT_EQ(env_.Call("GET", "/v1/me", token).status, 200);
  Advance(1h);
  auto r = env_.Call("GET", "/v1/me", token);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(Code(r), "token_expired");
  // A page left open, polling with its expired session, guesses nothing (threat detection).
  EXPECT_TRUE(env_.last_stale_credential);
}

TEST_F(SessionsTest, AnOrgsOwnInactivityTimeoutApplies) {
  auto owner = Login("owner@example.com", kOwnerPassword);
  auto set = env_.Call("PATCH", OrgPath(), owner, R"({"session_idle_timeout_minutes":5})");
  ASSERT_EQ(set.status, 200) << set.body;
  EXPECT_EQ(Body(set).at("session_idle_timeout_minutes"), 5);
  auto token = Login("owner@example.com", kOwnerPassword);
  Advance(5min - 1us);
  EXPECT_EQ(env_.Call("GET", "/v1/me", token).status, 200);
  Advance(5min);
  EXPECT_EQ(Code(env_.Call("GET", "/v1/me", token)), "token_expired");
}

TEST_F(SessionsTest, RefreshRotatesButNeverOutlivesTheAbsoluteLifetime) {
  auto token = Login("owner@example.com", kOwnerPassword);
  // Keep refreshing within the idle limit: the sign-in still ends at 12 hours.
  for (int i = 0; i < 14; ++i) {
    Advance(50min);
    auto r = env_.Call("POST", "/v1/auth/refresh", token);
    ASSERT_EQ(r.status, 200) << i << " " << r.body;
    std::string next = TokenOf(r);
    EXPECT_NE(next, token);
    token = next;
  }
  // 14 × 50 min = 11 h 40 min; the absolute limit is at 12 h.
  Advance(20min - 1us);
  EXPECT_EQ(env_.Call("GET", "/v1/me", token).status, 200);
  Advance(1us);
  auto r = env_.Call("POST", "/v1/auth/refresh", token);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(Code(r), "token_expired");
  EXPECT_EQ(Code(env_.Call("GET", "/v1/me", token)), "token_expired");
}

TEST_F(SessionsTest, ReusingARotatedTokenEndsTheWholeSignIn) {
  auto first = Login("owner@example.com", kOwnerPassword);
  auto other = Login("owner@example.com", kOwnerPassword);  // a second, unrelated sign-in
  auto r = env_.Call("POST", "/v1/auth/refresh", first);
  ASSERT_EQ(r.status, 200);
  auto second = TokenOf(r);
  EXPECT_EQ(env_.Call("GET", "/v1/me", second).status, 200);
  // Right after the refresh, the old token is refused but ends nothing: a browser's requests
  // in flight during a refresh still carry it.
  EXPECT_EQ(env_.Call("GET", "/v1/me", first).status, 401);
  EXPECT_EQ(env_.Call("GET", "/v1/me", second).status, 200);
  // Later, the old token again (a thief's copy, or a replay): both the old and the new die.
  Advance(10s);
  EXPECT_EQ(env_.Call("GET", "/v1/me", first).status, 401);
  EXPECT_EQ(env_.Call("GET", "/v1/me", second).status, 401);
  EXPECT_EQ(env_.Call("POST", "/v1/auth/refresh", second).status, 401);
  // The other sign-in is untouched.
  EXPECT_EQ(env_.Call("GET", "/v1/me", other).status, 200);
  auto events = env_.store->ListAudit("system", {});
  bool seen = false;
  for (const auto& e : events->events) seen = seen || e.action == "session.reuse";
  EXPECT_TRUE(seen);
}

TEST_F(SessionsTest, RefreshingTwiceWithOneTokenIsAReplay) {
  auto token = Login("owner@example.com", kOwnerPassword);
  auto a = env_.Call("POST", "/v1/auth/refresh", token);
  ASSERT_EQ(a.status, 200);
  Advance(10s);
  EXPECT_EQ(env_.Call("POST", "/v1/auth/refresh", token).status, 401);
  EXPECT_EQ(env_.Call("GET", "/v1/me", TokenOf(a)).status, 401);
}

TEST_F(SessionsTest, LogoutListAndRevokeOneOrAll) {
  auto laptop = Login("owner@example.com", kOwnerPassword, "10.0.0.1");
  auto phone = Login("owner@example.com", kOwnerPassword, "10.0.0.2");
  auto tablet = Login("owner@example.com", kOwnerPassword, "10.0.0.3");
  auto list = env_.Call("GET", "/v1/me/sessions", laptop);
  ASSERT_EQ(list.status, 200);
  auto sessions = Body(list).at("sessions").as_array();
  ASSERT_EQ(sessions.size(), 3u);
  std::string phone_id;
  int current = 0;
  for (const auto& s : sessions) {
    if (s.at("current").as_bool()) ++current;
    if (s.at("client_ip") == "10.0.0.2") phone_id = std::string(s.at("id").as_string());
  }
  EXPECT_EQ(current, 1);
  ASSERT_FALSE(phone_id.empty());
  EXPECT_EQ(env_.Call("DELETE", "/v1/me/sessions/" + phone_id, laptop).status, 200);
  EXPECT_EQ(env_.Call("GET", "/v1/me", phone).status, 401);
  EXPECT_EQ(env_.Call("DELETE", "/v1/me/sessions/sfam_nope", laptop).status, 404);
  EXPECT_EQ(env_.Call("POST", "/v1/auth/logout", tablet).status, 200);
  EXPECT_EQ(env_.Call("GET", "/v1/me", tablet).status, 401);
  EXPECT_EQ(env_.Call("GET", "/v1/me", laptop).status, 200);
  auto phone2 = Login("owner@example.com", kOwnerPassword);
  auto all = env_.Call("POST", "/v1/auth/logout-all", laptop);
  ASSERT_EQ(all.status, 200);
  EXPECT_EQ(Body(all).at("sessions_ended"), 2);
  EXPECT_EQ(env_.Call("GET", "/v1/me", laptop).status, 401);
  EXPECT_EQ(env_.Call("GET", "/v1/me", phone2).status, 401);
}

TEST_F(SessionsTest, AnotherUsersSessionCannotBeEnded) {
  AddUser("dev@example.com", kPassword, "developer");
  auto dev = Login("dev@example.com", kPassword);
  auto owner = Login("owner@example.com", kOwnerPassword);
  auto list = env_.Call("GET", "/v1/me/sessions", owner);
  std::string owner_session(Body(list).at("sessions").at(0).at("id").as_string());
  EXPECT_EQ(env_.Call("DELETE", "/v1/me/sessions/" + owner_session, dev).status, 404);
  EXPECT_EQ(env_.Call("GET", "/v1/me", owner).status, 200);
}

TEST_F(SessionsTest, BrowserSessionsUseAHostCookieAndStateChangesNeedCsrfDefence) {
  auto login = env_.CallWith(
      "POST", "/v1/auth/login",
      {{"Origin", "https://console.example.com"}, {"Host", "console.example.com"}},
      R"({"email":"owner@example.com","password":")" + std::string(kOwnerPassword) + "\"}");
  ASSERT_EQ(login.status, 200) << login.body;
  std::string cookie = Header(login, "set-cookie");
  EXPECT_TRUE(cookie.starts_with("__Host-gatehouse_session=ghs_")) << cookie;
  for (const char* attr : {"; Path=/", "; Secure", "; HttpOnly", "; SameSite=Lax"}) {
    EXPECT_NE(cookie.find(attr), std::string::npos) << attr;
  }
  EXPECT_EQ(cookie.find("Domain="), std::string::npos);
  EXPECT_FALSE(Body(login).as_object().contains("token"));  // never in the body as well
  std::string pair = cookie.substr(0, cookie.find(';'));
  std::string csrf(Body(login).at("session").at("csrf_token").as_string());
  std::vector<std::pair<std::string, std::string>> same_site = {{"Cookie", "theme=dark; " + pair},
                                                                {"Host", "console.example.com"}};

  EXPECT_EQ(env_.CallWith("GET", "/v1/me", same_site).status, 200);  // reads need no token
  std::string body = R"({"label":"ci","scopes":["read:findings"]})";
  auto no_token = env_.CallWith("POST", OrgPath("/keys"), same_site, body);
  EXPECT_EQ(no_token.status, 403);
  EXPECT_NE(no_token.body.find("X-CSRF-Token"), std::string::npos);
  auto cross = same_site;
  cross.emplace_back("Origin", "https://evil.example.net");
  cross.emplace_back("X-CSRF-Token", csrf);
  EXPECT_EQ(env_.CallWith("POST", OrgPath("/keys"), cross, body).status, 403);
  auto wrong = same_site;
  wrong.emplace_back("X-CSRF-Token", std::string(64, '0'));
  EXPECT_EQ(env_.CallWith("POST", OrgPath("/keys"), wrong, body).status, 403);
  auto ok = same_site;
  ok.emplace_back("Origin", "https://console.example.com");
  ok.emplace_back("X-CSRF-Token", csrf);
  EXPECT_EQ(env_.CallWith("POST", OrgPath("/keys"), ok, body).status, 201);
  // Logout clears the cookie.
  auto out = env_.CallWith("POST", "/v1/auth/logout", ok);
  ASSERT_EQ(out.status, 200);
  EXPECT_NE(Header(out, "set-cookie").find("Max-Age=0"), std::string::npos);
  EXPECT_EQ(env_.CallWith("GET", "/v1/me", same_site).status, 401);
}

TEST_F(SessionsTest, TheSessionHeldBeforeASignInEndsWithIt) {
  auto before = Login("owner@example.com", kOwnerPassword);
  std::string body =
      R"({"email":"owner@example.com","password":")" + std::string(kOwnerPassword) + "\"}";
  auto after = env_.CallWith("POST", "/v1/auth/login",
                             {{"Cookie", "__Host-gatehouse_session=" + before}}, body);
  ASSERT_EQ(after.status, 200);
  EXPECT_EQ(env_.Call("GET", "/v1/me", before).status, 401);
  EXPECT_EQ(env_.Call("GET", "/v1/me", TokenOf(after)).status, 200);
}

TEST_F(SessionsTest, ASignInFromAnotherSiteIsRefused) {
  auto r = env_.CallWith(
      "POST", "/v1/auth/login",
      {{"Origin", "https://evil.example.net"}, {"Host", "console.example.com"}},
      R"({"email":"owner@example.com","password":")" + std::string(kOwnerPassword) + "\"}");
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(Header(r, "set-cookie").empty());
}

TEST_F(SessionsTest, SensitiveOperationsNeedARecentSignIn) {
  auto token = Login("owner@example.com", kOwnerPassword);
  std::string admin_key = R"({"label":"root","scopes":["admin"]})";
  EXPECT_EQ(env_.Call("POST", OrgPath("/keys"), token, admin_key).status, 201);
  Advance(15min + 1s);
  EXPECT_EQ(env_.Call("GET", "/v1/me", token).status, 200);
  auto stale = env_.Call("POST", OrgPath("/keys"), token, admin_key);
  EXPECT_EQ(stale.status, 403);
  EXPECT_EQ(Code(stale), "reauth_required");
  // Keys of other scopes need no fresh sign-in.
  EXPECT_EQ(
      env_.Call("POST", OrgPath("/keys"), token, R"({"label":"ci","scopes":["read:findings"]})")
          .status,
      201);
  auto wrong = env_.Call("POST", "/v1/auth/reauth", token, R"({"password":"not it at all, no"})");
  EXPECT_EQ(wrong.status, 401);
  auto re = env_.Call("POST", "/v1/auth/reauth", token,
                      R"({"password":")" + std::string(kOwnerPassword) + "\"}");
  ASSERT_EQ(re.status, 200) << re.body;
  auto fresh = TokenOf(re);
  // A new token on re-authentication; the old one is dead (ASVS 7.2.4).
  EXPECT_EQ(env_.Call("GET", "/v1/me", token).status, 401);
  EXPECT_EQ(env_.Call("POST", OrgPath("/keys"), fresh, admin_key).status, 201);
}

TEST_F(SessionsTest, ChangingThePasswordNeedsTheCurrentOneAndEndsOtherSessions) {
  auto here = Login("owner@example.com", kOwnerPassword);
  auto elsewhere = Login("owner@example.com", kOwnerPassword);
  std::string next = "violet granite seasons river";
  auto wrong =
      env_.Call("POST", "/v1/me/password", here,
                R"({"current_password":"not the password at all","new_password":")" + next + "\"}");
  EXPECT_EQ(wrong.status, 400);
  EXPECT_EQ(Body(wrong).at("error").at("field"), "current_password");
  auto weak = env_.Call("POST", "/v1/me/password", here,
                        R"({"current_password":")" + std::string(kOwnerPassword) +
                            R"(","new_password":"Password1234567"})");
  EXPECT_EQ(weak.status, 400);
  EXPECT_EQ(Body(weak).at("error").at("field"), "new_password");
  auto ok = env_.Call("POST", "/v1/me/password", here,
                      R"({"current_password":")" + std::string(kOwnerPassword) +
                          R"(","new_password":")" + next + "\"}");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(env_.Call("GET", "/v1/me", here).status, 200);
  EXPECT_EQ(env_.Call("GET", "/v1/me", elsewhere).status, 401);
  EXPECT_EQ(LoginCall("owner@example.com", kOwnerPassword).status, 401);
  Login("owner@example.com", next);
  // Later, without a recent sign-in, changing it again needs re-authentication first.
  Advance(16min);
  auto stale = env_.Call(
      "POST", "/v1/me/password", here,
      R"({"current_password":")" + next + R"(","new_password":"copper meadow whistle tide"})");
  EXPECT_EQ(Code(stale), "reauth_required");
}

TEST_F(SessionsTest, DisablingAUserEndsTheirSessionsAndSignIns) {
  auto stale = AddUser("dev@example.com", kPassword, "developer");
  auto dev = Login("dev@example.com", kPassword);
  ASSERT_TRUE(env_.accounts->Disable("dev@example.com", {}));
  // A writer that read the user before the disable cannot undo it.
  ASSERT_TRUE(env_.people->UpdateUser(stale, {}));
  EXPECT_TRUE(env_.people->GetUser(stale.id)->disabled_at);
  EXPECT_EQ(env_.Call("GET", "/v1/me", dev).status, 401);
  auto again = LoginCall("dev@example.com", kPassword);
  EXPECT_EQ(again.status, 401);
  EXPECT_EQ(Body(again).at("error").at("message"), "invalid email or password");
}

// At the gateway a session token is a credential like a key, in one org at a time, with the
// role's permissions as scopes (the console's cookie is not accepted there).
TEST_F(SessionsTest, ForwardAuthTakesSessionTokensWithTheRolesPermissions) {
  AddUser("dev@example.com", kPassword, "developer");
  AddUser("auditor@example.com", kPassword, "auditor");
  auto check = [&](const std::string& token, std::vector<std::pair<std::string, std::string>> h) {
    h.emplace_back("Authorization", "Bearer " + token);
    h.emplace_back("X-Original-URI", "/api/v1/findings/7");
    h.emplace_back("X-Original-Method", "GET");
    return env_.CallWith("GET", "/v1/authz/check", h);
  };
  auto dev = Login("dev@example.com", kPassword);
  auto ok = check(dev, {});
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto dev_id = env_.people->FindUserByEmail("dev@example.com")->value().id;
  EXPECT_EQ(Header(ok, "x-gatehouse-principal"), dev_id);
  EXPECT_EQ(Header(ok, "x-gatehouse-org"), Org());
  EXPECT_EQ(check(Login("auditor@example.com", kPassword), {}).status, 403);  // no read:findings
  // A member of two orgs names the one they act in.
  auto other = env_.NewOrg("Contoso");
  ASSERT_TRUE(env_.members->AddMember(other.org.id, dev_id, "viewer", {}));
  auto unnamed = check(dev, {});
  EXPECT_EQ(unnamed.status, 403);
  EXPECT_NE(unnamed.body.find("X-Gatehouse-Org"), std::string::npos);
  auto named = check(dev, {{"X-Gatehouse-Org", other.org.id}});
  EXPECT_EQ(named.status, 200);
  EXPECT_EQ(Header(named, "x-gatehouse-org"), other.org.id);
  auto stranger = env_.NewOrg("Stranger");
  EXPECT_EQ(Code(check(dev, {{"X-Gatehouse-Org", stranger.org.id}})), "org_mismatch");
  // Ended or expired sessions are refused like revoked keys.
  Advance(1h);
  EXPECT_EQ(Code(check(dev, {{"X-Gatehouse-Org", Org()}})), "token_expired");
  auto cookie_only = env_.CallWith(
      "GET", "/v1/authz/check",
      {{"Cookie", "__Host-gatehouse_session=" + dev}, {"X-Original-URI", "/api/v1/findings/7"}});
  EXPECT_EQ(cookie_only.status, 401);
}

TEST_F(SessionsTest, HousekeepingRemovesDeadSessionsOnly) {
  auto old_token = Login("owner@example.com", kOwnerPassword);
  env_.Call("POST", "/v1/auth/refresh", old_token);
  Advance(11h + 45min);
  auto fresh = Login("owner@example.com", kOwnerPassword);
  Advance(20min);  // the first sign-in (two rows) is past its absolute lifetime now
  auto removed = env_.people->PruneExpired(env_.clock.Now(), 30LL * 86400 * kMicrosPerSecond, 100);
  ASSERT_TRUE(removed);
  EXPECT_EQ(*removed, 2);
  EXPECT_EQ(env_.Call("GET", "/v1/me", fresh).status, 200);
  EXPECT_EQ(env_.Call("GET", "/v1/me", old_token).status, 401);
}

TEST_F(SessionsTest, OldHashesAreUpgradedAtTheNextSignIn) {
  PasswordConfig weak;
  weak.argon2_memory_kib = 8192;
  weak.argon2_iterations = 1;
  PasswordHasher old(weak, Peppers{testing::DomainEnv::kPepper});
  UserRecord u;
  u.id = "usr_legacy";
  u.email = "legacy@example.com";
  u.password_hash = *old.Hash(*NormalizePassword(kPassword));
  ASSERT_TRUE(u.password_hash.find("m=8192,t=1") != std::string::npos);
  ASSERT_TRUE(env_.people->InsertUser(u, {}));
  Login("legacy@example.com", kPassword);
  auto upgraded = env_.people->GetUser("usr_legacy");
  EXPECT_NE(upgraded->password_hash.find("m=19456,t=2"), std::string::npos)
      << upgraded->password_hash;
  Login("legacy@example.com", kPassword);
}

TEST_F(SessionsTest, UnicodePasswordsVerifyWhateverTheirNormalForm) {
  AddUser("zoe@example.com", "caf\xc3\xa9 au lait with cream", "viewer");
  Login("zoe@example.com", "cafe\xcc\x81 au lait with cream");
}

}  // namespace
}  // namespace gatehouse

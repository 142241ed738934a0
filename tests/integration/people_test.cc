// People through the real server: sign-in over HTTP with the session cookie and its CSRF
// defence, force logout seen by a request running at the same time, and no secret in the logs.
// Runs on SQLite and, in integration_postgres, on PostgreSQL.
#include <boost/json.hpp>

#include <atomic>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "core/time_format.h"
#include "integration/fixture.h"

namespace gatehouse::testing {
namespace {

using namespace std::chrono_literals;

class PeopleHttpTest : public GatewayFixture {
 protected:
  static constexpr const char* kPassword = "heron quartz lantern meadow";

  // A member of the fixture's org with `role`, added with the operator's CLI.
  std::string AddMember(const std::string& email, const std::string& role) {
    std::vector<std::string> argv = {Binary(), "users",  "create", email,   "--org",
                                     org_,     "--role", role,     "--json"};
    for (const auto& f : StorageFlags()) argv.push_back(f);
    int status = 0;
    std::string out = RunCommand(argv, &status, {{"GATEHOUSE_USER_PASSWORD", kPassword}});
    EXPECT_EQ(status, 0) << out;
    return std::string(boost::json::parse(out).at("user_id").as_string());
  }
  std::string Token(const std::string& email) {
    auto r = Call("POST", "/v1/auth/login", "",
                  R"({"email":")" + email + R"(","password":")" + kPassword + "\"}");
    EXPECT_EQ(r.status, 200) << r.body;
    return std::string(boost::json::parse(r.body).at("token").as_string());
  }
};

TEST_F(PeopleHttpTest, BrowserSignInGetsAHostCookieAndCsrfHoldsOverHttp) {
  AddMember("dev@example.com", "developer");
  std::vector<std::pair<std::string, std::string>> browser = {{"Origin", "http://127.0.0.1"}};
  auto login =
      Call("POST", "/v1/auth/login", "",
           R"({"email":"dev@example.com","password":")" + std::string(kPassword) + "\"}", browser);
  ASSERT_EQ(login.status, 200) << login.body;
  std::string cookie = login.Header("set-cookie");
  ASSERT_TRUE(cookie.starts_with("__Host-gatehouse_session=ghs_")) << cookie;
  EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
  EXPECT_NE(cookie.find("Secure"), std::string::npos);
  EXPECT_NE(cookie.find("SameSite=Lax"), std::string::npos);
  EXPECT_EQ(login.body.find("ghs_"), std::string::npos);
  EXPECT_EQ(login.Header("cache-control"), "no-store");
  std::string pair = cookie.substr(0, cookie.find(';'));
  std::string csrf(boost::json::parse(login.body).at("session").at("csrf_token").as_string());
  auto me = Call("GET", "/v1/me", "", "", {{"Cookie", pair}});
  ASSERT_EQ(me.status, 200) << me.body;
  std::string body = R"({"label":"from the console","scopes":["read:findings"]})";
  std::string keys = "/v1/orgs/" + org_ + "/keys";
  EXPECT_EQ(Call("POST", keys, "", body, {{"Cookie", pair}}).status, 403);
  EXPECT_EQ(Call("POST", keys, "", body,
                 {{"Cookie", pair}, {"X-CSRF-Token", csrf}, {"Origin", "https://evil.example"}})
                .status,
            403);
  auto created = Call("POST", keys, "", body,
                      {{"Cookie", pair}, {"X-CSRF-Token", csrf}, {"Origin", "http://127.0.0.1"}});
  EXPECT_EQ(created.status, 201) << created.body;
  // The key created by a person works at the gateway like any other.
  std::string secret(boost::json::parse(created.body).at("key").as_string());
  EXPECT_EQ(Call("GET", "/api/v1/findings", secret).status, 200);
}

TEST_F(PeopleHttpTest, TheProxyTakesASessionTokenWithTheRolesPermissions) {
  std::string user = AddMember("viewer@example.com", "viewer");
  std::string token = Token("viewer@example.com");
  auto r = Call("GET", "/api/v1/findings/3", token);
  ASSERT_EQ(r.status, 200) << r.body;
  std::string head = upstream_->last_head();
  EXPECT_NE(head.find("X-Gatehouse-Principal: " + user), std::string::npos) << head;
  EXPECT_NE(head.find("X-Gatehouse-Org: " + org_), std::string::npos) << head;
  EXPECT_EQ(head.find(token), std::string::npos);
  // A viewer reads; writing evidence needs a scope the role does not have.
  EXPECT_EQ(Call("POST", "/api/v1/evidence/x", token, "{}").status, 403);
  // An org named in bytes that are no org id (nor UTF-8) is simply not the user's.
  auto stranger =
      Call("GET", "/api/v1/findings/3", token, "", {{"X-Gatehouse-Org", "org_\xff\xfe"}});
  EXPECT_EQ(stranger.status, 403) << stranger.body;
  EXPECT_NE(stranger.body.find("org_mismatch"), std::string::npos) << stranger.body;
  // Logged out, the token stops at the gateway too.
  ASSERT_EQ(Call("POST", "/v1/auth/logout", token).status, 200);
  EXPECT_EQ(Call("GET", "/api/v1/findings/3", token).status, 401);
}

TEST_F(PeopleHttpTest, ForceLogoutIsSeenByARequestRunningAtTheSameTime) {
  std::string dev_id = AddMember("dev@example.com", "developer");
  std::string token = Token("dev@example.com");
  std::atomic<bool> stop{false};
  std::atomic<int> ok_before{0};
  std::mutex mu;
  std::vector<std::pair<std::chrono::steady_clock::time_point, int>> seen;
  std::thread client([&] {
    while (!stop) {
      auto started = std::chrono::steady_clock::now();
      int status = Call("GET", "/v1/me", token).status;
      if (status == 200) ++ok_before;
      std::lock_guard lock(mu);
      seen.emplace_back(started, status);
    }
  });
  while (ok_before < 5) std::this_thread::sleep_for(5ms);
  auto kill = Call("DELETE", "/v1/orgs/" + org_ + "/members/" + dev_id + "/sessions", key_);
  auto killed_at = std::chrono::steady_clock::now();
  ASSERT_EQ(kill.status, 200) << kill.body;
  EXPECT_NE(kill.body.find("\"sessions_ended\":1"), std::string::npos);
  // Give the client a few more requests, all started after the logout answered.
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard lock(mu);
      int after = 0;
      for (const auto& [t, s] : seen) after += t > killed_at;
      if (after >= 5) break;
    }
    std::this_thread::sleep_for(5ms);
  }
  stop = true;
  client.join();
  int after = 0;
  for (const auto& [t, status] : seen) {
    if (t > killed_at) {
      ++after;
      EXPECT_EQ(status, 401) << "a request started after the force logout still passed";
    }
  }
  EXPECT_GE(after, 5);
}

TEST_F(PeopleHttpTest, PasswordsAndTokensNeverReachTheLogs) {
  AddMember("dev@example.com", "developer");
  std::string token = Token("dev@example.com");
  Call("POST", "/v1/auth/login", "", R"({"email":"dev@example.com","password":"wrong-pass-Xq9"})");
  Call("POST", "/v1/me/password", token,
       R"({"current_password":")" + std::string(kPassword) +
           R"(","new_password":"amber willow signal harbor"})");
  Call("GET", "/v1/me", token);
  std::string logs = server_->Output();
  for (const char* secret : {kPassword, "wrong-pass-Xq9", "amber willow signal harbor"}) {
    EXPECT_EQ(logs.find(secret), std::string::npos) << secret;
  }
  EXPECT_EQ(logs.find(token), std::string::npos);
  EXPECT_EQ(logs.find("ghs_"), std::string::npos);
}

TEST_F(PeopleHttpTest, AfterAPepperRotationWhatIsUsedMovesAndWhatIsNotEndsWithThePreviousPepper) {
  AddMember("dev@example.com", "developer");
  const std::string session = Token("dev@example.com");
  ASSERT_FALSE(session.empty());
  auto invited = Call("POST", "/v1/orgs/" + org_ + "/invitations", key_,
                      R"({"email":"new@example.com","role":"viewer"})");
  ASSERT_EQ(invited.status, 201) << invited.body;
  const std::string invitation(boost::json::parse(invited.body).at("token").as_string());
  const std::string used = NewKey(R"(["read:findings"])");
  const std::string idle = NewKey(R"(["read:findings"])");
  auto jwks = [&] {
    return boost::json::parse(Request(server_->port(), "GET", "/.well-known/jwks.json", {}).body)
        .at("keys")
        .as_array();
  };
  const boost::json::value old_jwk = jwks().at(0);
  server_.reset();

  // The operator rotates: a new pepper, and the old one as the previous pepper.
  const std::string pepper_file = dir_.path() + "/data/secrets/pepper";
  std::string old_pepper;
  std::getline(std::ifstream(pepper_file), old_pepper);
  ASSERT_GE(old_pepper.size(), 32u);
  const std::string new_pepper(64, 'e');
  std::ofstream(pepper_file, std::ios::trunc) << new_pepper << "\n";
  // A previous pepper that is the pepper itself is a mistake, said without echoing either.
  std::vector<std::string> cli = {
      "/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", Binary(), "keys", "list", "--org", org_};
  for (const auto& f : StorageFlags()) cli.push_back(f);
  int status = -1;
  std::string out = RunCommand(cli, &status, {{"GATEHOUSE_PREVIOUS_PEPPER", new_pepper}});
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("the previous key pepper is the pepper itself"), std::string::npos) << out;
  EXPECT_EQ(out.find(new_pepper), std::string::npos) << out;

  // Whole seconds, so that the time the list is given is not after a use this second.
  const std::string switched_at =
      FormatRfc3339(std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count() *
                    kMicrosPerSecond);
  server_ = std::make_unique<ServerProcess>(
      config_, std::map<std::string, std::string>{{"GATEHOUSE_PREVIOUS_PEPPER", old_pepper}});
  EXPECT_EQ(Call("GET", "/v1/orgs/" + org_, key_).status, 200);
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", used).status, 200);
  EXPECT_FALSE(Token("dev@example.com").empty());
  // Nobody is signed out, and an invitation sent before is still good.
  EXPECT_EQ(Call("GET", "/v1/me", session).status, 200);
  auto joined =
      Call("POST", "/v1/invitations/accept", "",
           std::string(R"({"token":")") + invitation + R"(","password":")" + kPassword + "\"}");
  EXPECT_EQ(joined.status, 201) << joined.body;
  auto metrics = Call("GET", "/metrics", "").body;
  EXPECT_NE(metrics.find("\ngatehouse_keys_rehashed_total 2\n"), std::string::npos);
  // What the pepper's old audit signing key signed still verifies: it is retired, not gone.
  auto rotated_jwks = jwks();
  ASSERT_EQ(rotated_jwks.size(), 2u);
  EXPECT_EQ(rotated_jwks.at(1), old_jwk);
  server_->Signal(SIGTERM);  // a graceful stop writes the last uses
  EXPECT_EQ(server_->Wait(), 0);
  server_.reset();

  // The operator lists the keys that have not moved: the active ones not used since the switch.
  std::vector<std::string> unmoved = {Binary(),     "keys",           "list",
                                      "--all-orgs", "--unused-since", switched_at};
  for (const auto& f : StorageFlags()) unmoved.push_back(f);
  out = RunCommand(unmoved, &status, {{"GATEHOUSE_PREVIOUS_PEPPER", old_pepper}});
  EXPECT_EQ(status, 0) << out;
  auto listed_last4 = [&] {
    std::set<std::string> last4;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);) {
      const std::string masked(boost::json::parse(line).at("masked_key").as_string());
      last4.insert(masked.substr(masked.size() - 4));
    }
    return last4;
  };
  EXPECT_EQ(listed_last4(), std::set<std::string>{idle.substr(idle.size() - 4)}) << out;

  // The previous pepper retired: what was used during the rotation stays; what was not, ends.
  server_ = std::make_unique<ServerProcess>(config_);
  EXPECT_EQ(Call("GET", "/v1/orgs/" + org_, key_).status, 200);
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", used).status, 200);
  EXPECT_EQ(Call("GET", "/api/v1/findings/1", idle).status, 401);
  EXPECT_FALSE(Token("dev@example.com").empty());
  EXPECT_EQ(Call("GET", "/v1/me", session).status, 401);  // issued under the retired pepper
  EXPECT_EQ(jwks().size(), 1u);
}

TEST_F(PeopleHttpTest, ARollingPepperRotationNeverLocksAnyoneOutOfANodeNotYetSwitched) {
  AddMember("dev@example.com", "developer");
  auto created = Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
                      R"({"label":"in use","scopes":["read:findings"]})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string used(boost::json::parse(created.body).at("key").as_string());
  const std::string used_id(boost::json::parse(created.body).at("id").as_string());
  const std::string pepper_file = dir_.path() + "/data/secrets/pepper";
  std::string old_pepper;
  std::getline(std::ifstream(pepper_file), old_pepper);
  ASSERT_GE(old_pepper.size(), 32u);
  const std::string new_pepper(64, 'f');
  server_.reset();

  // A next pepper that is the pepper itself, or the previous one, is a mistake, said without
  // echoing either.
  std::vector<std::string> cli = {
      "/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", Binary(), "keys", "list", "--org", org_};
  for (const auto& f : StorageFlags()) cli.push_back(f);
  int status = -1;
  std::string out = RunCommand(cli, &status, {{"GATEHOUSE_NEXT_PEPPER", old_pepper}});
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("the next key pepper is the pepper itself"), std::string::npos) << out;
  out = RunCommand(cli, &status,
                   {{"GATEHOUSE_PEPPER", new_pepper},
                    {"GATEHOUSE_PREVIOUS_PEPPER", old_pepper},
                    {"GATEHOUSE_NEXT_PEPPER", old_pepper}});
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("the next key pepper is the previous one"), std::string::npos) << out;
  EXPECT_EQ(out.find(old_pepper), std::string::npos) << out;

  // Step one, on every node: the new pepper is announced. Step two has begun on one node,
  // which has switched to it; the other has not yet.
  auto waiting = std::make_unique<ServerProcess>(
      config_, std::map<std::string, std::string>{{"GATEHOUSE_NEXT_PEPPER", new_pepper}});
  auto switched = std::make_unique<ServerProcess>(
      config_, std::map<std::string, std::string>{{"GATEHOUSE_PEPPER", new_pepper},
                                                  {"GATEHOUSE_PREVIOUS_PEPPER", old_pepper}});
  auto on = [](const ServerProcess& node, const std::string& method, const std::string& target,
               const std::string& credential, const std::string& body = "") {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!credential.empty()) headers.emplace_back("Authorization", "Bearer " + credential);
    return Request(node.port(), method, target, headers, body);
  };
  auto sign_in = [&](const ServerProcess& node) {
    auto r = on(node, "POST", "/v1/auth/login", "",
                R"({"email":"dev@example.com","password":")" + std::string(kPassword) + "\"}");
    EXPECT_EQ(r.status, 200) << r.body;
    return r.status == 200 ? std::string(boost::json::parse(r.body).at("token").as_string())
                           : std::string();
  };
  auto rehashed = [&](const ServerProcess& node) {
    const std::string m = on(node, "GET", "/metrics", "").body;
    const std::string name = "\ngatehouse_keys_rehashed_total ";
    const auto at = m.find(name);
    if (at == std::string::npos) return std::string("?");
    const auto from = at + name.size();
    return m.substr(from, m.find('\n', from) - from);
  };
  // Each node shows which peppers it holds, by fingerprint and never by value: the pepper the
  // switched node made current is the one the waiting node announced.
  auto fingerprint = [&](const ServerProcess& node, const std::string& role) {
    const std::string m = on(node, "GET", "/metrics", "").body;
    EXPECT_EQ(m.find(new_pepper), std::string::npos);
    EXPECT_EQ(m.find(old_pepper), std::string::npos);
    const std::string label = "gatehouse_pepper{role=\"" + role + "\",fingerprint=\"";
    const auto at = m.find(label);
    if (at == std::string::npos) return std::string("none");
    return m.substr(at + label.size(), 16);
  };
  EXPECT_EQ(fingerprint(*waiting, "next"), fingerprint(*switched, "current"));
  EXPECT_EQ(fingerprint(*waiting, "current"), fingerprint(*switched, "previous"));
  EXPECT_NE(fingerprint(*waiting, "current"), fingerprint(*waiting, "next"));
  EXPECT_EQ(fingerprint(*waiting, "previous"), "none");
  EXPECT_EQ(fingerprint(*switched, "next"), "none");
  // Each node knows the other agrees; a node that would not is refused before it listens: one
  // that retired the old pepper while the waiting node still makes with it, or one with a
  // pepper nobody announced.
  for (const ServerProcess* node : {waiting.get(), switched.get()}) {
    EXPECT_NE(on(*node, "GET", "/metrics", "").body.find("\ngatehouse_node_conflicts 0\n"),
              std::string::npos);
  }
  std::vector<std::string> serve = {
      "/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", Binary(), "serve", "--config", config_};
  for (const std::string& pepper : {new_pepper, std::string(64, 'a')}) {
    out = RunCommand(serve, &status, {{"GATEHOUSE_PEPPER", pepper}});
    EXPECT_NE(status, 0) << out;
    EXPECT_NE(out.find("this node does not agree with the other nodes"), std::string::npos) << out;
    EXPECT_NE(out.find("Rotating the pepper"), std::string::npos) << out;
    EXPECT_EQ(out.find("listening"), std::string::npos) << out;
    EXPECT_EQ(out.find(pepper), std::string::npos) << out;
    EXPECT_EQ(out.find(old_pepper), std::string::npos) << out;
  }
  // A node whose peppers agree but which makes keys with another prefix would refuse every key
  // the others make, and they its keys: refused too.
  out = RunCommand(serve, &status,
                   {{"GATEHOUSE_NEXT_PEPPER", new_pepper}, {"GATEHOUSE_KEY_PREFIX", "ks"}});
  EXPECT_NE(status, 0) << out;
  EXPECT_NE(out.find("makes keys with prefix \"sk\" where this node makes and accepts \"ks\""),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("listening"), std::string::npos) << out;
  // The operator sees the whole cluster at once: both nodes, and what each holds.
  std::vector<std::string> list_nodes = {Binary(), "nodes", "list"};
  for (const auto& f : StorageFlags()) list_nodes.push_back(f);
  out = RunCommand(list_nodes, &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\tpepper:" + fingerprint(*waiting, "current") + "\tprevious:none\tnext:" +
                     fingerprint(*switched, "current") + "\tkey_prefix:sk\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\tpepper:" + fingerprint(*switched, "current") + "\tprevious:" +
                     fingerprint(*waiting, "current") + "\tnext:none\tkey_prefix:sk\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  // The waiting node serves the key as it is; the switched node moves it; the waiting node
  // still finds it, and leaves it where it is.
  EXPECT_EQ(on(*waiting, "GET", "/api/v1/findings/1", used).status, 200);
  EXPECT_EQ(on(*switched, "GET", "/api/v1/findings/1", used).status, 200);
  EXPECT_EQ(rehashed(*switched), "1");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(on(*waiting, "GET", "/api/v1/findings/1", used).status, 200);
    std::this_thread::sleep_for(400ms);  // past the waiting node's next invalidation sync
  }
  EXPECT_EQ(rehashed(*waiting), "0");
  // Keys made on either node work on both.
  auto made_on = [&](const ServerProcess& node) {
    auto r = on(node, "POST", "/v1/orgs/" + org_ + "/keys", key_,
                R"({"label":"rolling","scopes":["read:findings"]})");
    EXPECT_EQ(r.status, 201) << r.body;
    return std::string(boost::json::parse(r.body).at("key").as_string());
  };
  for (const std::string& key : {made_on(*waiting), made_on(*switched)}) {
    EXPECT_EQ(on(*waiting, "GET", "/api/v1/findings/1", key).status, 200);
    EXPECT_EQ(on(*switched, "GET", "/api/v1/findings/1", key).status, 200);
  }
  // A sign-in on the switched node moves the password to the new pepper, and its session is
  // good on both; a sign-in on the waiting node verifies the moved password there.
  const std::string session_switched = sign_in(*switched);
  EXPECT_EQ(on(*waiting, "GET", "/v1/me", session_switched).status, 200);
  const std::string session_waiting = sign_in(*waiting);
  EXPECT_EQ(on(*switched, "GET", "/v1/me", session_waiting).status, 200);
  // The operator sees which pepper each password is keyed with: the moved one, under the new.
  std::vector<std::string> list = {Binary(), "users", "list"};
  for (const auto& f : StorageFlags()) list.push_back(f);
  const std::string users = RunCommand(list, &status);
  EXPECT_EQ(status, 0) << users;
  const auto dev_line = users.find("dev@example.com");
  ASSERT_NE(dev_line, std::string::npos) << users;
  const std::string dev = users.substr(dev_line, users.find('\n', dev_line) - dev_line);
  EXPECT_TRUE(dev.ends_with("pepper:" + fingerprint(*switched, "current"))) << users;
  // Failed sign-ins are one count across both: three on each lock the account on both.
  AddMember("guessed@example.com", "viewer");
  for (const ServerProcess* node : {waiting.get(), switched.get()}) {
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(on(*node, "POST", "/v1/auth/login", "",
                   R"({"email":"guessed@example.com","password":"not the password at all"})")
                    .status,
                401);
    }
  }
  for (const ServerProcess* node : {waiting.get(), switched.get()}) {
    auto locked =
        on(*node, "POST", "/v1/auth/login", "",
           R"({"email":"guessed@example.com","password":")" + std::string(kPassword) + "\"}");
    EXPECT_EQ(locked.status, 429) << locked.body;
  }
  // The waiting node verifies what the switched node's audit key signs: both keys published.
  auto jwks = boost::json::parse(on(*waiting, "GET", "/.well-known/jwks.json", "").body);
  EXPECT_EQ(jwks.at("keys").as_array().size(), 2u);
  auto verified = on(*switched, "POST", "/v1/orgs/" + org_ + "/audit/verify", key_);
  ASSERT_EQ(verified.status, 200) << verified.body;
  auto anchor = boost::json::parse(verified.body).at("signed_head");
  auto held = on(*waiting, "POST", "/v1/orgs/" + org_ + "/audit/verify", key_,
                 boost::json::serialize(boost::json::object{{"anchor", anchor}}));
  EXPECT_EQ(held.status, 200) << held.body;
  // A revocation on the waiting node, of a key whose row holds the new pepper's hash, takes
  // effect on both.
  EXPECT_EQ(on(*waiting, "DELETE", "/v1/orgs/" + org_ + "/keys/" + used_id, key_).status, 200);
  EXPECT_EQ(on(*waiting, "GET", "/api/v1/findings/1", used).status, 401);
  int revoked = 0;
  for (int i = 0; i < 50 && revoked != 401; ++i) {
    revoked = on(*switched, "GET", "/api/v1/findings/1", used).status;
    if (revoked != 401) std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(revoked, 401);
  waiting.reset();
  switched.reset();

  // Every node switched, and the previous pepper retired: the password the waiting node
  // verified was never moved back, and the session the switched node issued goes on.
  server_ = std::make_unique<ServerProcess>(
      config_, std::map<std::string, std::string>{{"GATEHOUSE_PEPPER", new_pepper}});
  EXPECT_FALSE(Token("dev@example.com").empty());
  EXPECT_EQ(Call("GET", "/v1/me", session_switched).status, 200);
  EXPECT_EQ(Call("GET", "/v1/me", session_waiting).status, 401);  // issued under the old one
}

TEST_F(PeopleHttpTest, TheOperatorManagesUsersFromTheCli) {
  AddMember("ops@example.com", "viewer");
  auto run = [&](std::vector<std::string> argv, std::map<std::string, std::string> env = {}) {
    argv.insert(argv.begin(), Binary());
    for (const auto& f : StorageFlags()) argv.push_back(f);
    int status = 0;
    std::string out = RunCommand(argv, &status, env);
    return std::make_pair(status, out);
  };
  auto [listed, list_out] = run({"users", "list"});
  EXPECT_EQ(listed, 0);
  EXPECT_NE(list_out.find("ops@example.com"), std::string::npos);
  std::string token = Token("ops@example.com");
  auto [weak, weak_out] =
      run({"users", "passwd", "ops@example.com"}, {{"GATEHOUSE_USER_PASSWORD", "Password1234567"}});
  EXPECT_NE(weak, 0);
  auto [set, set_out] = run({"users", "passwd", "ops@example.com"},
                            {{"GATEHOUSE_USER_PASSWORD", "cobalt finch orchard rain"}});
  EXPECT_EQ(set, 0) << set_out;
  EXPECT_EQ(Call("GET", "/v1/me", token).status, 401);  // a reset ends their sessions
  auto login = Call("POST", "/v1/auth/login", "",
                    R"({"email":"ops@example.com","password":"cobalt finch orchard rain"})");
  EXPECT_EQ(login.status, 200);
  auto [disabled, disabled_out] = run({"users", "disable", "ops@example.com"});
  EXPECT_EQ(disabled, 0) << disabled_out;
  std::string again(boost::json::parse(login.body).at("token").as_string());
  EXPECT_EQ(Call("GET", "/v1/me", again).status, 401);
  EXPECT_EQ(Call("POST", "/v1/auth/login", "",
                 R"({"email":"ops@example.com","password":"cobalt finch orchard rain"})")
                .status,
            401);
}

// A flood of sign-ins fills the small pool that checks passwords and is refused there at once
// (503 with Retry-After), while everything else keeps being served.
class SignInFloodTest : public PeopleHttpTest {
 protected:
  std::string ExtraConfig() override { return "[passwords]\nhash_workers = 1\nhash_queue = 1\n"; }
};

TEST_F(SignInFloodTest, ExcessSignInsAreRefusedAndOtherRequestsStillServed) {
  AddMember("dev@example.com", "developer");
  std::atomic<int> ok{0}, busy{0}, other{0};
  std::atomic<bool> retry_after_said{true};
  std::vector<std::thread> flood;
  for (int i = 0; i < 24; ++i) {
    flood.emplace_back([&] {
      auto r = Call("POST", "/v1/auth/login", "",
                    R"({"email":"dev@example.com","password":")" + std::string(kPassword) + "\"}");
      if (r.status == 200) {
        ++ok;
      } else if (r.status == 503) {
        ++busy;
        if (r.Header("retry-after") != "1") retry_after_said = false;
      } else {
        ++other;
      }
    });
  }
  // The store-bound control plane answers meanwhile.
  auto keys = Call("GET", "/v1/orgs/" + org_ + "/keys", key_);
  for (auto& t : flood) t.join();
  EXPECT_EQ(keys.status, 200);
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(busy.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_TRUE(retry_after_said.load());
  auto metrics = Call("GET", "/metrics", "");
  EXPECT_NE(metrics.body.find("gatehouse_costly_jobs_rejected_total"), std::string::npos);
}

}  // namespace
}  // namespace gatehouse::testing

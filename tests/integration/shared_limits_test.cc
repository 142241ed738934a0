// Rate limits shared by a cluster through Redis (issue 6): three gatehouse processes, one Redis
// started by the test. Together the nodes admit what the policy allows, not three times it; with
// Redis gone each node limits locally at its share, and says so.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <initializer_list>
#include <stdexcept>
#include <thread>

#include "support/http_client.h"
#include "support/process.h"
#include "support/redis.h"
#include "support/test_upstream.h"

namespace gatehouse::testing {
namespace {

class SharedLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    upstream_ = std::make_unique<TestUpstream>([](int fd, const std::string&, const std::string&) {
      TestUpstream::WriteAll(fd, TestUpstream::Ok("{}"));
      return true;
    });
    auto [org, key] = InitDataDir(dir_.path() + "/data");
    org_ = org;
    owner_ = key;
    std::string config = dir_.path() + "/gatehouse.toml";
    std::ofstream c(config);
    c << "data_dir = \"" << dir_.path() << "/data\"\nscopes = [\"read:findings\"]\n"
      << "[[listeners]]\naddress = \"127.0.0.1:0\"\n"
      << "[log]\naccess_log = false\n"
      << "[login]\n"
      << login_ << "[rate_limits]\nredis = \"" << redis_.Url() << "\"\nredis_timeout = \"200ms\"\n"
      << "[[routes]]\nname = \"findings\"\npath_prefix = \"/api/v1/findings\"\n"
      << "upstream = \"http://127.0.0.1:" << upstream_->port() << "\"\n"
      << "scopes = [\"read:findings\"]\n";
    c.close();
    for (int i = 0; i < 3; ++i) nodes_.push_back(std::make_unique<ServerProcess>(config));
    // Each node counts the cluster from Redis heartbeats, once a second.
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  }

  std::string NewKey(const std::string& rate_limit) {
    auto r = Request(nodes_[0]->port(), "POST", "/v1/orgs/" + org_ + "/keys",
                     {{"Authorization", "Bearer " + owner_}},
                     R"({"label":"k","scopes":["read:findings"],"rate_limit":)" + rate_limit + "}");
    EXPECT_EQ(r.status, 201) << r.body;
    auto at = r.body.find("\"key\":\"");
    return r.body.substr(at + 7, r.body.find('"', at + 7) - at - 7);
  }

  // Two clients per node, alternating the proxy and forward-auth; returns how many were admitted.
  int Hammer(const std::string& key, int per_client) {
    std::atomic<int> admitted{0}, other{0};
    std::vector<std::thread> clients;
    for (int n = 0; n < 3; ++n) {
      for (int t = 0; t < 2; ++t) {
        clients.emplace_back([&, n, t] {
          int port = nodes_[static_cast<std::size_t>(n)]->port();
          for (int i = 0; i < per_client; ++i) {
            Response r = (i + t) % 2 ? Request(port, "GET", "/api/v1/findings/1",
                                               {{"Authorization", "Bearer " + key}})
                                     : Request(port, "GET", "/v1/authz/check",
                                               {{"Authorization", "Bearer " + key},
                                                {"X-Original-URI", "/api/v1/findings/1"}});
            if (r.status == 200)
              ++admitted;
            else if (r.status != 429)
              ++other;
          }
        });
      }
    }
    for (auto& c : clients) c.join();
    EXPECT_EQ(other.load(), 0);
    return admitted.load();
  }

  std::string Metrics(int node) {
    return Request(nodes_[static_cast<std::size_t>(node)]->port(), "GET", "/metrics").body;
  }

  std::string login_ = "address_free_failures = 8\naddress_failures = 9\nstuffing_accounts = 100\n";
  RedisServer redis_;
  TempDir dir_;
  std::unique_ptr<TestUpstream> upstream_;
  std::string org_, owner_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
};

TEST_F(SharedLimitsTest, ThreeNodesTogetherAdmitWhatThePolicyAllows) {
  // 300 per hour: nothing refills during the test, so exactly 300 may pass.
  std::string key = NewKey(R"({"requests":300,"window":"1h"})");
  int admitted = Hammer(key, 100);  // 600 attempts
  EXPECT_GE(admitted, 294);
  EXPECT_LE(admitted, 306);
  for (int n = 0; n < 3; ++n) {
    std::string m = Metrics(n);
    EXPECT_NE(m.find("gatehouse_ratelimit_shared_up 1"), std::string::npos) << m;
    EXPECT_NE(m.find("gatehouse_ratelimit_fallback_decisions_total 0"), std::string::npos);
    EXPECT_NE(m.find("gatehouse_ratelimit_cluster_nodes 3"), std::string::npos);
  }
  auto ready = Request(nodes_[1]->port(), "GET", "/readyz");
  EXPECT_NE(ready.body.find("\"rate_limits\":\"shared\""), std::string::npos) << ready.body;
}

TEST_F(SharedLimitsTest, WithRedisDownEachNodeLimitsAtItsShareAndSaysSo) {
  redis_.Stop();
  std::string key = NewKey(R"({"requests":60,"window":"1h"})");
  int admitted = Hammer(key, 30);  // 180 attempts; each node may admit 60 / 3
  EXPECT_EQ(admitted, 60) << Metrics(0) << Metrics(1);
  for (int n = 0; n < 3; ++n) {
    std::string m = Metrics(n);
    EXPECT_NE(m.find("gatehouse_ratelimit_shared_up 0"), std::string::npos) << m;
    EXPECT_EQ(m.find("gatehouse_ratelimit_fallback_decisions_total 0"), std::string::npos);
    auto ready = Request(nodes_[static_cast<std::size_t>(n)]->port(), "GET", "/readyz");
    EXPECT_EQ(ready.status, 200);
    EXPECT_NE(ready.body.find("\"rate_limits\":\"local-fallback\""), std::string::npos);
    EXPECT_NE(nodes_[static_cast<std::size_t>(n)]->Output().find("Redis unreachable"),
              std::string::npos);
  }
  // Back up: the nodes share again.
  redis_.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  (void)Hammer(NewKey(R"({"requests":10,"window":"1h"})"), 2);
  EXPECT_NE(Metrics(0).find("gatehouse_ratelimit_shared_up 1"), std::string::npos);
}

TEST_F(SharedLimitsTest, ThreeNodesTogetherSpendExactlyAKeysCredits) {
  auto r = Request(nodes_[0]->port(), "POST", "/v1/orgs/" + org_ + "/keys",
                   {{"Authorization", "Bearer " + owner_}},
                   R"({"label":"q","scopes":["read:findings"],)"
                   R"("quota":{"credits":40,"refill":"monthly"}})");
  ASSERT_EQ(r.status, 201) << r.body;
  auto at = r.body.find("\"key\":\"");
  std::string key = r.body.substr(at + 7, r.body.find('"', at + 7) - at - 7);
  // 120 attempts, within one store flush: counted on each node alone, the three could spend
  // the 40 credits three times over.
  EXPECT_EQ(Hammer(key, 20), 40);
  auto refused =
      Request(nodes_[2]->port(), "GET", "/api/v1/findings/1", {{"Authorization", "Bearer " + key}});
  EXPECT_EQ(refused.status, 429);
  EXPECT_NE(refused.body.find("usage_exceeded"), std::string::npos) << refused.body;
  // What Redis counted reaches the store too: a node restarted later still refuses.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  redis_.Stop();
  nodes_[1] = std::make_unique<ServerProcess>(dir_.path() + "/gatehouse.toml");
  EXPECT_EQ(
      Request(nodes_[1]->port(), "GET", "/api/v1/findings/1", {{"Authorization", "Bearer " + key}})
          .status,
      429);
}

TEST_F(SharedLimitsTest, AnAddressBlockedByOneNodeIsBlockedByAll) {
  std::string key = NewKey(R"({"requests":1000,"window":"1h"})");
  auto from_attacker = [&](int node, const std::string& credential) {
    return RequestFrom("127.0.0.3", nodes_[static_cast<std::size_t>(node)]->port(), "GET",
                       "/api/v1/findings/1", {{"Authorization", "Bearer " + credential}});
  };
  ASSERT_EQ(from_attacker(2, key).status, 200);
  // Key enumeration against node 0: the default rule blocks after 20 refused credentials.
  for (int i = 0; i < 25; ++i) (void)from_attacker(0, "sk_live_guess" + std::to_string(i));
  EXPECT_EQ(from_attacker(0, key).status, 429);
  // Node 2 saw none of it, and learns of the block through Redis within a few seconds.
  int status = 0;
  for (int i = 0; i < 50 && status != 429; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    status = from_attacker(2, key).status;
  }
  EXPECT_EQ(status, 429);
  EXPECT_NE(nodes_[2]->Output().find("as another node of the cluster does"), std::string::npos);
  // Everyone else is served.
  EXPECT_EQ(
      Request(nodes_[2]->port(), "GET", "/api/v1/findings/1", {{"Authorization", "Bearer " + key}})
          .status,
      200);
}

// Failed sign-ins from one address are counted by the cluster: 3 on each of 3 nodes reach the
// 9-failure rule, where each node alone saw too few, and every node then refuses the address.
TEST_F(SharedLimitsTest, FailedSignInsSpreadOverTheNodesBlockTheAddressEverywhere) {
  auto sign_in = [&](int node, int attempt) {
    return RequestFrom("127.0.0.4", nodes_[static_cast<std::size_t>(node)]->port(), "POST",
                       "/v1/auth/login", {{"Content-Type", "application/json"}},
                       R"({"email":"guess)" + std::to_string(attempt) +
                           R"(@example.com","password":"not-the-password-1"})");
  };
  int attempt = 0;
  for (int round = 0; round < 3; ++round) {
    for (int node = 0; node < 3; ++node) {
      auto r = sign_in(node, attempt++);
      EXPECT_EQ(r.status, 401) << "attempt " << attempt << ": " << r.body;
    }
  }
  for (int node = 0; node < 3; ++node) {
    auto r = sign_in(node, attempt++);
    EXPECT_EQ(r.status, 429) << "node " << node << ": " << r.body;
    EXPECT_NE(r.Header("retry-after"), "");
  }
  // Another address signs in as before.
  auto other = RequestFrom("127.0.0.5", nodes_[1]->port(), "POST", "/v1/auth/login",
                           {{"Content-Type", "application/json"}},
                           R"({"email":"someone@example.com","password":"not-the-password-1"})");
  EXPECT_EQ(other.status, 401) << other.body;
}

// Credential stuffing spread over the nodes: two accounts tried through each of three nodes
// are six accounts from one address, the rule's limit, though no node saw more than two.
class SharedStuffingTest : public SharedLimitsTest {
 protected:
  SharedStuffingTest() {
    login_ = "address_free_failures = 40\naddress_failures = 50\nstuffing_accounts = 6\n";
  }
};

TEST_F(SharedStuffingTest, AccountsTriedThroughEveryNodeAreCountedByTheCluster) {
  auto sign_in = [&](int node, const std::string& email) {
    return RequestFrom("127.0.0.6", nodes_[static_cast<std::size_t>(node)]->port(), "POST",
                       "/v1/auth/login", {{"Content-Type", "application/json"}},
                       R"({"email":")" + email + R"(","password":"not-the-password-1"})");
  };
  int account = 0;
  for (int round = 0; round < 2; ++round) {
    for (int node = 0; node < 3; ++node) {
      auto r = sign_in(node, "victim" + std::to_string(account++) + "@example.com");
      if (account < 6) {  // the sixth starts the block, whatever it is answered
        EXPECT_EQ(r.status, 401) << "account " << account << ": " << r.body;
      }
    }
  }
  for (int node = 0; node < 3; ++node) {
    auto r = sign_in(node, "victim0@example.com");
    EXPECT_EQ(r.status, 429) << "node " << node << ": " << r.body;
  }
}

TEST(SharedLimitsAuth, ANodeAuthenticatesToARedisThatRequiresAPassword) {
  RedisServer redis("correct-horse-battery-staple");
  TempDir dir;
  InitDataDir(dir.path() + "/data");
  std::string config = dir.path() + "/gatehouse.toml";
  std::ofstream(config) << "data_dir = \"" << dir.path() << "/data\"\n"
                        << "[[listeners]]\naddress = \"127.0.0.1:0\"\n"
                        << "[rate_limits]\nredis = \"" << redis.Url() << "\"\n"
                        << "redis_password_file = \"" << dir.path() << "/redis-password\"\n";
  std::ofstream(dir.path() + "/redis-password") << "correct-horse-battery-staple\n";
  auto shared_mode = [](ServerProcess& node) {
    std::string body;
    for (int i = 0; i < 40; ++i) {
      body = Request(node.port(), "GET", "/readyz").body;
      if (body.find("\"rate_limits\":\"shared\"") != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return body;
  };
  {
    ServerProcess node(config);
    EXPECT_NE(shared_mode(node).find("\"rate_limits\":\"shared\""), std::string::npos);
  }
  // A wrong password: refused by Redis, said in the log (without the password), and limits
  // fall back to this node.
  {
    ServerProcess node(config, {{"GATEHOUSE_REDIS_PASSWORD", "wrong-password-123"}});
    std::string body = shared_mode(node);
    EXPECT_NE(body.find("\"rate_limits\":\"local-fallback\""), std::string::npos) << body;
    EXPECT_NE(node.Output().find("refused gatehouse's credentials"), std::string::npos);
    EXPECT_EQ(node.Output().find("wrong-password-123"), std::string::npos);
  }
}

TEST_F(SharedLimitsTest, KeyEnumerationSpreadOverTheNodesIsCountedByTheCluster) {
  std::string key = NewKey(R"({"requests":1000,"window":"1h"})");
  auto from_attacker = [&](int node, const std::string& credential) {
    return RequestFrom("127.0.0.4", nodes_[static_cast<std::size_t>(node)]->port(), "GET",
                       "/api/v1/findings/1", {{"Authorization", "Bearer " + credential}});
  };
  // 8 guesses at each node: 24 in all, past the rule's 20, though no node saw 20 itself.
  for (int i = 0; i < 8; ++i) {
    for (int n = 0; n < 3; ++n) (void)from_attacker(n, "sk_live_guess" + std::to_string(i));
  }
  for (int n = 0; n < 3; ++n) {
    int status = 0;
    for (int i = 0; i < 50 && status != 429; ++i) {
      status = from_attacker(n, key).status;
      if (status != 429) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(status, 429) << "node " << n;
  }
}

// How often `action` appears in the org's security events, once the count stops changing: the
// event is written by the audit writer of whichever node reacted, a moment later.
int SecurityEvents(int port, const std::string& org, const std::string& owner,
                   const std::string& action, int at_least) {
  auto count = [&] {
    std::string body = Request(port, "GET", "/v1/orgs/" + org + "/security-events?action=" + action,
                               {{"Authorization", "Bearer " + owner}})
                           .body;
    int seen = 0;
    const std::string quoted = "\"" + action + "\"";
    for (auto at = body.find(quoted); at != std::string::npos; at = body.find(quoted, at + 1)) {
      ++seen;
    }
    return seen;
  };
  for (int i = 0; i < 100 && count() < at_least; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // any late duplicate shows now
  return count();
}

// A burst of failures for one key, spread over the nodes: 70 refusals on each is past the
// default rule's 200 for the cluster, where no node alone saw 200. It fires once, not per node.
TEST_F(SharedLimitsTest, AKeysFailuresSpreadOverTheNodesAreCountedByTheCluster) {
  std::string key = NewKey(R"({"requests":1,"window":"1h"})");
  std::vector<std::thread> clients;
  for (int n = 0; n < 3; ++n) {
    clients.emplace_back([&, n] {
      for (int i = 0; i < 70; ++i) {
        (void)Request(nodes_[static_cast<std::size_t>(n)]->port(), "GET", "/api/v1/findings/1",
                      {{"Authorization", "Bearer " + key}});
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(SecurityEvents(nodes_[0]->port(), org_, owner_, "security.key_failures", 1), 1);
}

// A key's networks are the cluster's: its first use on a node that never saw it is news when
// the network is new to the key, and is not when another node saw the key there.
TEST_F(SharedLimitsTest, ANetworkNewToTheKeyIsNewsOnANodeThatNeverSawTheKey) {
  std::string key = NewKey(R"({"requests":1000,"window":"1h"})");
  auto use = [&](int node, const char* from) {
    return RequestFrom(from, nodes_[static_cast<std::size_t>(node)]->port(), "GET",
                       "/api/v1/findings/1", {{"Authorization", "Bearer " + key}})
        .status;
  };
  ASSERT_EQ(use(0, "127.0.0.5"), 200);  // the key's first network: learned
  ASSERT_EQ(use(1, "127.0.0.6"), 200);  // node 1's first sight of the key, on a known network
  ASSERT_EQ(use(2, "127.0.1.5"), 200);  // node 2's first sight, on a network new to the key
  EXPECT_EQ(SecurityEvents(nodes_[1]->port(), org_, owner_, "security.new_network", 1), 1);
  std::string body = Request(nodes_[1]->port(), "GET",
                             "/v1/orgs/" + org_ + "/security-events?action=security.new_network",
                             {{"Authorization", "Bearer " + owner_}})
                         .body;
  EXPECT_NE(body.find("127.0.1.0/24"), std::string::npos) << body;
  // Node 0 has not seen that network, but the cluster has: no news.
  ASSERT_EQ(use(0, "127.0.1.9"), 200);
  EXPECT_EQ(SecurityEvents(nodes_[1]->port(), org_, owner_, "security.new_network", 2), 1);
}

// A CA, a Redis server certificate it signed for 127.0.0.1 and redis.internal, a client
// certificate it signed, and a second CA that signed nothing here.
struct TestPki {
  explicit TestPki(const std::string& dir) : dir(dir) {
    Run({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", dir + "/ca.key", "-out", ca, "-days", "2", "-subj", "/CN=test-ca"});
    Run({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", dir + "/other-ca.key", "-out", other_ca, "-days", "2", "-subj",
         "/CN=other-ca"});
    Issue("redis", "subjectAltName=IP:127.0.0.1,DNS:redis.internal", server_cert, server_key);
    Issue("gatehouse", "extendedKeyUsage=clientAuth", client_cert, client_key);
  }
  void Issue(const std::string& cn, const std::string& extension, const std::string& cert,
             const std::string& key) {
    Run({"req",
         "-x509",
         "-newkey",
         "ec",
         "-pkeyopt",
         "ec_paramgen_curve:P-256",
         "-nodes",
         "-keyout",
         key,
         "-out",
         cert,
         "-days",
         "2",
         "-subj",
         "/CN=" + cn,
         "-CA",
         ca,
         "-CAkey",
         dir + "/ca.key",
         "-addext",
         extension});
  }
  static void Run(std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/bin/openssl");
    int status = -1;
    std::string out = RunCommand(args, &status);
    if (status != 0) throw std::runtime_error("openssl failed: " + out);
  }
  std::string dir;
  std::string ca = dir + "/ca.pem", other_ca = dir + "/other-ca.pem";
  std::string server_cert = dir + "/server.pem", server_key = dir + "/server.key";
  std::string client_cert = dir + "/client.pem", client_key = dir + "/client.key";
};

// What /readyz says of the rate limits once it says `want` (or after four seconds).
std::string RateLimitMode(ServerProcess& node, const std::string& want) {
  std::string body;
  for (int i = 0; i < 40; ++i) {
    body = Request(node.port(), "GET", "/readyz").body;
    if (body.find("\"rate_limits\":\"" + want + "\"") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return body;
}

// Whether the node's output says `text` within four seconds.
// Whether the node's log soon shows any one of `texts`.
bool SaysSoon(ServerProcess& node, std::initializer_list<std::string> texts) {
  for (int i = 0; i < 40; ++i) {
    const std::string out = node.Output();
    for (const auto& text : texts) {
      if (out.find(text) != std::string::npos) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}
bool SaysSoon(ServerProcess& node, const std::string& text) { return SaysSoon(node, {text}); }

class SharedLimitsTlsTest : public ::testing::Test {
 protected:
  std::string WriteConfig(const std::string& name, const std::string& tls_settings) {
    std::string path = dir_.path() + "/" + name + ".toml";
    std::ofstream(path) << "data_dir = \"" << dir_.path()
                        << "/data\"\nscopes = [\"read:findings\"]\n"
                        << "[[listeners]]\naddress = \"127.0.0.1:0\"\n"
                        << "[rate_limits]\nredis = \"" << redis_.Url() << "\"\n"
                        << "redis_timeout = \"500ms\"\n"
                        << tls_settings << "[[routes]]\nname = \"findings\"\n"
                        << "path_prefix = \"/api/v1/findings\"\n"
                        << "upstream = \"http://127.0.0.1:9\"\nscopes = [\"read:findings\"]\n";
    return path;
  }
  std::string Trusting(const std::string& ca) const {
    return "redis_tls_ca_file = \"" + ca + "\"\nredis_tls_cert_file = \"" + pki_.client_cert +
           "\"\nredis_tls_key_file = \"" + pki_.client_key + "\"\n";
  }

  TempDir dir_;
  TestPki pki_{dir_.path()};
  // Clients must present a certificate from the CA, as with Redis's own default.
  RedisServer redis_{"", RedisServer::Tls{pki_.server_cert, pki_.server_key, pki_.ca}};
  std::pair<std::string, std::string> init_ = InitDataDir(dir_.path() + "/data");
};

TEST_F(SharedLimitsTlsTest, NodesShareLimitsThroughRedisOverVerifiedTls) {
  ASSERT_EQ(redis_.Url().rfind("rediss://", 0), 0u);
  std::string config = WriteConfig("tls", Trusting(pki_.ca));
  ServerProcess a(config), b(config);
  ASSERT_NE(RateLimitMode(a, "shared").find("\"rate_limits\":\"shared\""), std::string::npos)
      << a.Output();
  ASSERT_NE(RateLimitMode(b, "shared").find("\"rate_limits\":\"shared\""), std::string::npos)
      << b.Output();
  EXPECT_NE(a.Output().find("(TLS)"), std::string::npos) << a.Output();
  const auto& [org, owner] = init_;
  auto created =
      Request(a.port(), "POST", "/v1/orgs/" + org + "/keys", {{"Authorization", "Bearer " + owner}},
              R"({"label":"k","scopes":["read:findings"],)"
              R"("rate_limit":{"requests":5,"window":"1m"}})");
  ASSERT_EQ(created.status, 201) << created.body;
  auto at = created.body.find("\"key\":\"");
  std::string key = created.body.substr(at + 7, created.body.find('"', at + 7) - at - 7);
  // Four checks on each node: together they admit the policy's five, as one node would.
  int admitted = 0, limited = 0;
  for (int i = 0; i < 8; ++i) {
    auto r =
        Request((i % 2 ? a : b).port(), "GET", "/v1/authz/check",
                {{"Authorization", "Bearer " + key}, {"X-Original-URI", "/api/v1/findings/1"}});
    admitted += r.status == 200;
    limited += r.status == 429;
  }
  EXPECT_EQ(admitted, 5);
  EXPECT_EQ(limited, 3);
}

TEST_F(SharedLimitsTlsTest, ARedisThatCannotProveItsNameIsNotUsedAndTheLogSaysWhy) {
  // Signed by a CA this node does not trust.
  {
    ServerProcess node(WriteConfig("other-ca", Trusting(pki_.other_ca)));
    EXPECT_TRUE(SaysSoon(node, "TLS certificate is not trusted")) << node.Output();
    EXPECT_NE(Request(node.port(), "GET", "/readyz").body.find("local-fallback"),
              std::string::npos);
  }
  // Trusted CA, but the certificate does not name the server the node expects.
  {
    ServerProcess node(WriteConfig(
        "wrong-name", Trusting(pki_.ca) + "redis_tls_server_name = \"cache.elsewhere\"\n"));
    EXPECT_TRUE(SaysSoon(node, "not trusted for \"cache.elsewhere\"")) << node.Output();
    EXPECT_NE(Request(node.port(), "GET", "/readyz").body.find("local-fallback"),
              std::string::npos);
  }
  // The name it does carry is accepted.
  {
    ServerProcess node(WriteConfig(
        "right-name", Trusting(pki_.ca) + "redis_tls_server_name = \"redis.internal\"\n"));
    std::string body = RateLimitMode(node, "shared");
    EXPECT_NE(body.find("\"rate_limits\":\"shared\""), std::string::npos) << node.Output();
  }
  // Without a client certificate, Redis ends the session (with TLS 1.3, after the handshake).
  // Its alert says why; but when it closes while the node's first command is unread, the kernel
  // sends a reset that can overtake the alert, and the node sees only the reset.
  {
    ServerProcess node(WriteConfig("no-client-cert", "redis_tls_ca_file = \"" + pki_.ca + "\"\n"));
    EXPECT_TRUE(SaysSoon(node, {"certificate required", "Connection reset by peer"}))
        << node.Output();
    EXPECT_NE(Request(node.port(), "GET", "/readyz").body.find("local-fallback"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace gatehouse::testing

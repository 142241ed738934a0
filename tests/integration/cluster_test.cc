// Several gatehouse processes sharing one PostgreSQL database, as a cluster runs: a key revoked
// through any node is refused by every node within 100 ms, although each holds it in its cache.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <chrono>
#include <fstream>

#include "support/http_client.h"
#include "support/postgres.h"
#include "support/process.h"

namespace gatehouse::testing {
namespace {

// The end of a long text, for failure messages.
std::string Tail(const std::string& text, std::size_t n) {
  return text.size() <= n ? text : text.substr(text.size() - n);
}

using Clock = std::chrono::steady_clock;

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int status = 0;
    std::string out = RunCommand(
        {Binary(), "migrate", "--storage", postgres_.Url(), "--app-role", "gh_app"}, &status);
    ASSERT_EQ(status, 0) << out;
    std::string storage = postgres_.Url("gh_app");
    auto [org, key] = InitDataDir(dir_.path() + "/data", storage);
    org_ = org;
    owner_ = key;
    std::string config = dir_.path() + "/gatehouse.toml";
    std::ofstream c(config);
    // One data directory for the shared pepper; the rows live in PostgreSQL.
    c << "data_dir = \"" << dir_.path() << "/data\"\n"
      << "storage = \"" << storage << "\"\nscopes = [\"read:findings\"]\n"
      << "[[listeners]]\naddress = \"127.0.0.1:0\"\n"
      << "[audit]\nqueue_capacity = 20\n"
      << "[[routes]]\nname = \"findings\"\npath_prefix = \"/api/v1/findings\"\n"
      << "upstream = \"http://127.0.0.1:1\"\nscopes = [\"read:findings\"]\n";
    c.close();
    for (int i = 0; i < 3; ++i) nodes_.push_back(std::make_unique<ServerProcess>(config));
  }

  int Check(int node, const std::string& key) {
    return Request(nodes_[static_cast<std::size_t>(node)]->port(), "GET", "/v1/authz/check",
                   {{"Authorization", "Bearer " + key}, {"X-Original-URI", "/api/v1/findings"}}, "")
        .status;
  }

  PostgresCluster postgres_;
  TempDir dir_;
  std::string org_, owner_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
};

TEST_F(ClusterTest, ARevocationThroughAnyNodeReachesEveryNodeWithin100ms) {
  for (int through = 0; through < 3; ++through) {
    auto created = Request(nodes_[0]->port(), "POST", "/v1/orgs/" + org_ + "/keys",
                           {{"Authorization", "Bearer " + owner_}},
                           R"({"label":"cluster","scopes":["read:findings"]})");
    ASSERT_EQ(created.status, 201) << created.body;
    auto v = boost::json::parse(created.body);
    std::string id(v.at("id").as_string()), key(v.at("key").as_string());
    for (int n = 0; n < 3; ++n) ASSERT_EQ(Check(n, key), 200);  // cached on every node
    for (int n = 0; n < 3; ++n) ASSERT_EQ(Check(n, key), 200);

    auto revoked =
        Request(nodes_[static_cast<std::size_t>(through)]->port(), "DELETE",
                "/v1/orgs/" + org_ + "/keys/" + id, {{"Authorization", "Bearer " + owner_}}, "");
    ASSERT_EQ(revoked.status, 200) << revoked.body;
    auto start = Clock::now();
    for (int n = 0; n < 3; ++n) {
      while (Check(n, key) != 401) {
        ASSERT_LT(Clock::now() - start, std::chrono::seconds(2))
            << "node " << n << " still says yes";
      }
      auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      EXPECT_LT(took.count(), 100) << "node " << n << ", revoked through node " << through;
      RecordProperty("node" + std::to_string(n) + "_via" + std::to_string(through) + "_ms",
                     static_cast<int>(took.count()));
    }
  }
}

TEST_F(ClusterTest, WithTheDatabaseDownNothingIsServedUnrecordedAndNothingIsA401) {
  ASSERT_EQ(Check(1, owner_), 200);  // cached on node 1
  postgres_.Stop();
  // The key is still known on node 1. Its decisions go to node 1's audit journal (on
  // PostgreSQL, always), which holds them for the database, up to the queue's capacity (20
  // here); past that the default policy refuses work it cannot record (issue 4): 503, never a
  // 401 and never an unrecorded 200.
  std::vector<std::string> journaled;
  int refused = 0;
  for (int i = 0; i < 40; ++i) {
    auto r = Request(
        nodes_[1]->port(), "GET", "/v1/authz/check",
        {{"Authorization", "Bearer " + owner_}, {"X-Original-URI", "/api/v1/findings"}}, "");
    ASSERT_TRUE(r.status == 200 || r.status == 503) << r.status << " " << r.body;
    if (r.status == 200) journaled.push_back(r.Header("x-request-id"));
    refused += r.status == 503;
  }
  EXPECT_LE(journaled.size(), 20u);
  EXPECT_GE(journaled.size(), 1u);
  EXPECT_GE(refused, 20);
  // Node 2 has never seen the key, so it needs the database: "unavailable", because "invalid"
  // would be a guess (and listing keys needs the database anyway).
  auto r = Request(nodes_[2]->port(), "GET", "/v1/orgs/" + org_ + "/keys",
                   {{"Authorization", "Bearer " + owner_}}, "");
  EXPECT_EQ(r.status, 503) << r.body << nodes_[2]->Output().substr(0, 20000);
  EXPECT_NE(r.body.find("\"code\":\"unavailable\""), std::string::npos) << r.body;

  // When the database is back, the journaled decisions reach the log.
  postgres_.Start();
  std::string log;
  auto start = Clock::now();
  for (;;) {
    auto listed = Request(nodes_[1]->port(), "GET",
                          "/v1/orgs/" + org_ + "/audit?action=auth.forward&limit=100",
                          {{"Authorization", "Bearer " + owner_}}, "");
    log = listed.body;
    bool all = listed.status == 200;
    for (const auto& id : journaled) all = all && log.find(id) != std::string::npos;
    if (all) break;
    // Generous: PostgreSQL's restart and the writer's reconnect share two cores with the ASan
    // build and the other nodes; a CI run once needed more than 10 s here.
    ASSERT_LT(Clock::now() - start, std::chrono::seconds(30)) << log << "\nnode 1 said:\n"
                                                              << Tail(nodes_[1]->Output(), 6000);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace
}  // namespace gatehouse::testing

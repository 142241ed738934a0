// A running gatehouse (real binary, port 0, temporary SQLite data directory) with an upstream
// that the test controls.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "support/http_client.h"
#include "support/postgres.h"
#include "support/process.h"
#include "support/test_upstream.h"

namespace gatehouse::testing {

class GatewayFixture : public ::testing::Test {
 protected:
  // Extra TOML appended to the generated config (more routes, limits).
  virtual std::string ExtraConfig() { return ""; }
  // Environment variables the server runs with, beyond the test's own.
  virtual std::map<std::string, std::string> ServerEnv() { return {}; }
  // The default upstream: answers at once, or after 800 ms for paths containing /slow, or
  // streams three server-sent events 300 ms apart for paths containing /events, or never
  // answers for /hang. /big is 200 000 bytes with a length, /hints sends a 103 first, and
  // /until-close ends its body by closing; /extra sends a second, unasked-for response;
  // /then-close answers as if it kept the connection, then closes it. /then-drop answers and
  // keeps it, but reads the next request on it and closes without answering, as a server whose
  // keep-alive timeout ends just as a request arrives.
  virtual bool Upstream(int fd, const std::string& head, const std::string& body) {
    if (head.find("/big") != std::string::npos) {
      TestUpstream::WriteAll(
          fd, "HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + std::string(200000, 'b'));
      return true;
    }
    if (head.find("/extra") != std::string::npos) {  // a second response nobody asked for
      TestUpstream::WriteAll(fd, TestUpstream::Ok(R"({"first":true})"));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      TestUpstream::WriteAll(fd, TestUpstream::Ok(R"({"stale":true})"));
      return true;
    }
    if (head.find("/hints") != std::string::npos) {
      TestUpstream::WriteAll(fd, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n");
      TestUpstream::WriteAll(fd, TestUpstream::Ok(R"({"hinted":true})"));
      return true;
    }
    if (head.find("/until-close") != std::string::npos) {
      TestUpstream::WriteAll(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it");
      return false;
    }
    {
      std::lock_guard lock(drop_next_mu_);
      if (drop_next_on_.erase(fd) > 0) return false;
    }
    if (head.find("/then-drop") != std::string::npos) {
      TestUpstream::WriteAll(fd, TestUpstream::Ok(R"({"then":"drop"})"));
      std::lock_guard lock(drop_next_mu_);
      drop_next_on_.insert(fd);
      return true;
    }
    if (head.find("/then-close") != std::string::npos) {
      TestUpstream::WriteAll(fd, TestUpstream::Ok(R"({"closing":true})"));
      return false;
    }
    if (head.find("/hang") != std::string::npos) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2500));
      return false;
    }
    if (head.find("/slow") != std::string::npos) {
      std::this_thread::sleep_for(std::chrono::milliseconds(800));
    }
    if (head.find("/events") != std::string::npos) {
      TestUpstream::WriteAll(fd,
                             "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n");
      for (int i = 0; i < 3; ++i) {
        std::string event = "data: token" + std::to_string(i) + "\n\n";
        char size[16];
        std::snprintf(size, sizeof(size), "%zx\r\n", event.size());
        TestUpstream::WriteAll(fd, size + event + "\r\n");
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
      }
      TestUpstream::WriteAll(fd, "0\r\n\r\n");
      return true;
    }
    TestUpstream::WriteAll(
        fd, TestUpstream::Ok(R"({"ok":true,"bytes":)" + std::to_string(body.size()) + "}"));
    return true;
  }

  // GATEHOUSE_TEST_STORAGE=postgres runs the fixture on a throwaway PostgreSQL cluster,
  // migrated by `gatehouse migrate` and served as its application role.
  static bool OnPostgres() {
    const char* s = std::getenv("GATEHOUSE_TEST_STORAGE");
    return s && std::string_view(s) == "postgres";
  }
  // Flags that point an operator command at the fixture's store.
  std::vector<std::string> StorageFlags() const {
    std::vector<std::string> f = {"--data-dir", dir_.path() + "/data"};
    if (!storage_.empty()) f.insert(f.end(), {"--storage", storage_});
    return f;
  }

  void SetUp() override {
    upstream_ = std::make_unique<TestUpstream>(
        [this](int fd, const std::string& h, const std::string& b) { return Upstream(fd, h, b); });
    if (OnPostgres()) {
      postgres_ = std::make_unique<PostgresCluster>();
      int status = 0;
      std::string out = RunCommand(
          {Binary(), "migrate", "--storage", postgres_->Url(), "--app-role", "gh_app"}, &status);
      ASSERT_EQ(status, 0) << out;
      storage_ = postgres_->Url("gh_app");
    }
    auto [org, key] = InitDataDir(dir_.path() + "/data", storage_);
    org_ = org;
    key_ = key;
    config_ = dir_.path() + "/gatehouse.toml";
    std::ofstream c(config_);
    c << "data_dir = \"" << dir_.path() << "/data\"\n";
    if (!storage_.empty()) c << "storage = \"" << storage_ << "\"\n";
    c << "scopes = [\"read:findings\", \"write:evidence\"]\n"
      << "trusted_proxies = [\"127.0.0.2/32\"]\n"
      << "[[listeners]]\naddress = \"127.0.0.1:0\"\n"
      << "[limits]\nheader_timeout = \"1s\"\nidle_timeout = \"3s\"\nbody_timeout = \"2s\"\n"
      << "max_body_bytes = 4096\nmax_header_bytes = 4096\nmax_header_count = 30\n"
      << "max_url_bytes = 1024\ndrain_timeout = \"5s\"\nmax_proxy_body_bytes = 16777216\n"
      << "[[routes]]\nname = \"findings\"\npath_prefix = \"/api/v1/findings\"\n"
      << "upstream = \"http://127.0.0.1:" << upstream_->port() << "\"\n"
      << "scopes = [\"read:findings\"]\nresponse_timeout = \"1500ms\"\n"
      << "[[routes]]\nname = \"evidence\"\npath_prefix = \"/api/v1/evidence\"\n"
      << "upstream = \"http://127.0.0.1:" << upstream_->port() << "/svc\"\n"
      << "scopes = [\"write:evidence\"]\nstrip_prefix = true\n"
      << "add_headers = { X-Route = \"evidence\" }\n"
      << "[[routes]]\nname = \"down\"\npath_prefix = \"/api/down\"\n"
      << "upstream = \"http://127.0.0.1:1\"\n"
      << ExtraConfig();
    c.close();
    server_ = std::make_unique<ServerProcess>(config_, ServerEnv());
  }

  Response Call(const std::string& method, const std::string& target, const std::string& key,
                const std::string& body = "",
                std::vector<std::pair<std::string, std::string>> headers = {}) {
    if (!key.empty()) headers.emplace_back("Authorization", "Bearer " + key);
    return Request(server_->port(), method, target, headers, body);
  }

  // Creates a key through the API and returns the secret.
  std::string NewKey(const std::string& scopes_json) {
    auto r = Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
                  R"({"label":"test","scopes":)" + scopes_json + "}");
    EXPECT_EQ(r.status, 201) << r.body;
    auto at = r.body.find("\"key\":\"");
    return r.body.substr(at + 7, r.body.find('"', at + 7) - at - 7);
  }

  TempDir dir_;
  std::unique_ptr<PostgresCluster> postgres_;  // with GATEHOUSE_TEST_STORAGE=postgres
  std::string storage_;                        // empty: SQLite in the data directory
  std::unique_ptr<TestUpstream> upstream_;
  std::mutex drop_next_mu_;
  std::set<int> drop_next_on_;  // guarded by drop_next_mu_: connections /then-drop marked
  std::unique_ptr<ServerProcess> server_;
  std::string config_, org_, key_;
};

}  // namespace gatehouse::testing

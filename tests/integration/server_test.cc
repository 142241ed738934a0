// The HTTP front door over real sockets: limits, timeouts, keep-alive, pipelining, ops
// endpoints, graceful shutdown.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "integration/fixture.h"

namespace gatehouse::testing {
namespace {

class ServerTest : public GatewayFixture {};

TEST_F(ServerTest, KeepAliveServesManyRequestsOnOneConnection) {
  Connection c(server_->port());
  for (int i = 0; i < 5; ++i) {
    c.Send(BuildRequest("GET", "/healthz", {}, ""));
    auto r = c.Read();
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.body, R"({"status":"ok"})");
    EXPECT_EQ(r.Header("content-type"), "application/json; charset=utf-8");
  }
}

TEST_F(ServerTest, PipelinedRequestsAreAnsweredInOrder) {
  Connection c(server_->port());
  c.Send(BuildRequest("GET", "/healthz", {{"X-Request-Id", "first"}}, "") +
         BuildRequest("GET", "/v1/nothing", {{"X-Request-Id", "second"}}, "") +
         BuildRequest("GET", "/healthz", {{"X-Request-Id", "third"}}, ""));
  auto a = c.Read(), b = c.Read(), d = c.Read();
  EXPECT_EQ(a.Header("x-request-id"), "first");
  EXPECT_EQ(b.Header("x-request-id"), "second");
  EXPECT_EQ(b.status, 404);
  EXPECT_EQ(d.Header("x-request-id"), "third");
}

TEST_F(ServerTest, RequestIdsAreKeptWhenSafeAndMadeOtherwise) {
  auto kept = Call("GET", "/healthz", "", "", {{"X-Request-Id", "abc-123.x"}});
  EXPECT_EQ(kept.Header("x-request-id"), "abc-123.x");
  auto replaced = Call("GET", "/healthz", "", "", {{"X-Request-Id", "bad id<script>"}});
  EXPECT_TRUE(replaced.Header("x-request-id").starts_with("req_"));
}

TEST_F(ServerTest, OversizedRequestsGetTheirStatus) {
  auto big_header = Call("GET", "/healthz", "", "", {{"X-Big", std::string(5000, 'a')}});
  EXPECT_EQ(big_header.status, 431);
  EXPECT_NE(big_header.body.find("headers_too_large"), std::string::npos);
  std::vector<std::pair<std::string, std::string>> many;
  for (int i = 0; i < 40; ++i) many.emplace_back("X-H" + std::to_string(i), "v");
  EXPECT_EQ(Call("GET", "/healthz", "", "", many).status, 431);
  EXPECT_EQ(Call("GET", "/healthz?" + std::string(2000, 'q'), "").status, 414);
  auto big_body = Call("POST", "/v1/orgs/" + org_ + "/keys", key_, std::string(10000, ' '));
  EXPECT_EQ(big_body.status, 413);
  EXPECT_NE(big_body.body.find("payload_too_large"), std::string::npos);
}

TEST_F(ServerTest, MalformedAndSmugglingRequestsAreRefused) {
  Connection c(server_->port());
  c.Send("GARBAGE\r\n\r\n");
  EXPECT_EQ(c.Read().status, 400);
  Connection d(server_->port());
  d.Send(
      "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  auto r = d.Read();
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(d.ClosedByPeer());
  EXPECT_EQ(Call("TRACE", "/healthz", "").status, 405);
  for (std::string bad : {"GET /healthz HTTP/1.1\r\n\r\n",                        // no Host
                          "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  // two
                          "GET /healthz HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
                          "GET /healthz HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
                          "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                          "Content-Length: 2\r\n\r\nab",
                          "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                          "GET /healthz HTTP/3.0\r\nHost: a\r\n\r\n"}) {
    Connection e(server_->port());
    e.Send(bad);
    auto refused = e.Read();
    EXPECT_EQ(refused.status, 400) << bad;
    EXPECT_NE(refused.body.find("\"code\":\"invalid_request\""), std::string::npos);
    EXPECT_TRUE(e.ClosedByPeer()) << bad;
  }
}

TEST_F(ServerTest, ChunkedControlPlaneBodiesAreReadAndTheNextRequestFollows) {
  Connection c(server_->port());
  std::string body = R"({"key":"sk_live_nope"})";
  char rest_size[16];
  std::snprintf(rest_size, sizeof(rest_size), "%zx", body.size() - 5);
  c.Send("POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key_ +
         "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + "5\r\n" +
         body.substr(0, 5) + "\r\n" + rest_size + "\r\n" + body.substr(5) + "\r\n0\r\n\r\n" +
         BuildRequest("GET", "/healthz", {}, ""));
  auto verdict = c.Read();
  EXPECT_EQ(verdict.status, 200) << verdict.body;
  EXPECT_NE(verdict.body.find("\"valid\":false"), std::string::npos) << verdict.body;
  EXPECT_EQ(c.Read().body, R"({"status":"ok"})");
}

TEST_F(ServerTest, SlowHeadersTimeOut) {
  Connection c(server_->port());
  auto start = std::chrono::steady_clock::now();
  c.Send("GET /healthz HTTP/1.1\r\nHost: x\r\n");  // never finished
  auto r = c.Read(std::chrono::seconds(5));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.status, 408);
  EXPECT_LT(took, std::chrono::seconds(3));
  EXPECT_TRUE(c.ClosedByPeer());
}

TEST_F(ServerTest, IdleConnectionsAreClosed) {
  Connection c(server_->port());
  EXPECT_TRUE(c.ClosedByPeer(std::chrono::seconds(6)));
}

TEST_F(ServerTest, AClientThatClosesBehindItsLastRequestIsAnsweredAndLetGo) {
  // A client may close its sending side right behind its last request, in the same packet or
  // while the connection waits for the next one. It is answered, and then let go at once, well
  // before the idle timeout (3 s here), not held as if it might still send. A reader that waits
  // for the socket's next readiness edge without trying it first sees no edge for such a close.
  const auto let_go_within = std::chrono::milliseconds(1500);
  {
    Connection c(server_->port());
    c.Send(BuildRequest("GET", "/healthz", {}, ""));
    c.CloseSending();
    EXPECT_EQ(c.Read().status, 200);
    EXPECT_TRUE(c.ClosedByPeer(let_go_within));
  }
  {
    Connection c(server_->port());
    c.Send(BuildRequest("GET", "/healthz", {}, ""));
    EXPECT_EQ(c.Read().status, 200);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // parked, waiting
    c.Send(BuildRequest("GET", "/healthz", {}, ""));
    c.CloseSending();
    EXPECT_EQ(c.Read().status, 200);
    EXPECT_TRUE(c.ClosedByPeer(let_go_within));
  }
}

TEST_F(ServerTest, ReadyzAndMetricsReport) {
  EXPECT_EQ(Call("GET", "/readyz", "").status, 200);
  Call("GET", "/v1/orgs/" + org_ + "/keys", "sk_live_bogus");
  Call("GET", "/v1/orgs/" + org_ + "/keys", key_);
  Call("GET", "/v1/orgs/" + org_ + "/keys", key_);
  // A request is counted just after its response is written, possibly on another worker
  // thread than the one that renders /metrics: give the count a moment to land.
  const std::string expected =
      "gatehouse_requests_total{route=\"GET /v1/orgs/{org}/keys\",status=\"200\"} 2";
  Response m;
  for (int i = 0; i < 50; ++i) {
    m = Call("GET", "/metrics", "");
    if (m.body.find(expected) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.Header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(m.body.find(expected), std::string::npos) << m.body;
  EXPECT_NE(m.body.find("gatehouse_auth_failures_total{reason=\"malformed\"} 1"),
            std::string::npos);
  EXPECT_NE(m.body.find("gatehouse_key_cache_hits_total 1"), std::string::npos);
  EXPECT_NE(m.body.find("gatehouse_request_duration_seconds_bucket"), std::string::npos);
}

// On jemalloc (the release binary; sanitizer builds have their own allocator and neither
// figure) /metrics shows the heap, and a cached forward-auth decision keeps to a heap budget: a
// change that copies a buffer or grows a coroutine frame on every request shows here, not only
// in `make bench`.
TEST_F(ServerTest, AForwardAuthDecisionKeepsToItsHeapBudget) {
  auto network_bytes = [&]() -> std::optional<double> {
    const std::string name = "\ngatehouse_network_thread_allocated_bytes_total ";
    auto m = Call("GET", "/metrics", "");
    auto at = m.body.find(name);
    if (at == std::string::npos) return std::nullopt;
    EXPECT_NE(m.body.find("\ngatehouse_heap_allocated_bytes "), std::string::npos);
    return std::stod(m.body.substr(at + name.size()));
  };
  if (!network_bytes()) GTEST_SKIP() << "not running on jemalloc";
  Connection c(server_->port());
  const std::string check = BuildRequest(
      "GET", "/v1/authz/check",
      {{"Authorization", "Bearer " + key_}, {"X-Original-URI", "/api/v1/findings/1"}}, "");
  auto decide = [&](int times) {
    for (int i = 0; i < times; ++i) {
      c.Send(check);
      ASSERT_EQ(c.Read().status, 200);
    }
  };
  decide(100);  // the key is cached, the connection's buffers have grown
  const double before = *network_bytes();
  constexpr int kDecisions = 1000;
  decide(kDecisions);
  const double per_decision = (*network_bytes() - before) / kDecisions;
  // 5.9 KB when this was written, audit log included (a metrics page adds ~0.1 KB a decision).
  EXPECT_LT(per_decision, 10 * 1024.0);
  EXPECT_GT(per_decision, 0.0);
}

TEST_F(ServerTest, AMetricsTokenTooShortToBeSafeStopsTheServerFromStarting) {
  int status = 0;
  std::string out = RunCommand({Binary(), "serve", "--config", config_, "--listen", "127.0.0.1:0"},
                               &status, {{"GATEHOUSE_METRICS_TOKEN", "short"}});
  EXPECT_EQ(status, 2);
  // A config file of its own, for a server of its own.
  std::string config = dir_.path() + "/guarded.toml";
  std::filesystem::copy_file(config_, config);
  ServerProcess guarded(config, {{"GATEHOUSE_METRICS_TOKEN", "scrape-token-0123456789abcdef"}});
  auto without = Request(guarded.port(), "GET", "/metrics", {}, "");
  EXPECT_EQ(without.status, 401);
  auto with = Request(guarded.port(), "GET", "/metrics",
                      {{"Authorization", "Bearer scrape-token-0123456789abcdef"}}, "");
  EXPECT_EQ(with.status, 200);
}

TEST_F(ServerTest, AccessLogHasOneLinePerRequestAndNoSecrets) {
  Call("GET", "/v1/orgs/" + org_ + "/keys?limit=5", key_);
  Call("GET", "/api/v1/findings", key_);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::string log = server_->Output();
  EXPECT_NE(log.find("\"path\":\"/v1/orgs/" + org_ + "/keys\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"path\":\"/api/v1/findings\""), std::string::npos);
  EXPECT_EQ(log.find(key_), std::string::npos);
  EXPECT_EQ(log.find("limit=5"), std::string::npos);
  // Control-plane lines name the caller too (the key id, never the key).
  auto keys = Call("GET", "/v1/orgs/" + org_ + "/keys", key_);
  auto at = keys.body.find("\"id\":\"key_");
  ASSERT_NE(at, std::string::npos);
  std::string key_id = keys.body.substr(at + 6, keys.body.find('"', at + 6) - at - 6);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  log = server_->Output();
  auto line_at = log.find("\"path\":\"/v1/orgs/" + org_ + "/keys\"");
  auto line = log.substr(log.rfind('\n', line_at) + 1,
                         log.find('\n', line_at) - log.rfind('\n', line_at) - 1);
  EXPECT_NE(line.find("\"principal\":\"" + key_id + "\""), std::string::npos) << line;
}

TEST_F(ServerTest, ShutdownDrainsInFlightRequests) {
  // The slow upstream below holds a request while SIGTERM arrives.
  Connection c(server_->port());
  c.Send(BuildRequest("GET", "/api/v1/findings/slow", {{"Authorization", "Bearer " + key_}}, ""));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  server_->Signal(SIGTERM);
  auto r = c.Read(std::chrono::seconds(5));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(server_->Wait(), 0);
}

TEST_F(ServerTest, ASigtermTheMomentTheServerSaysItListensStillStopsItCleanly) {
  // Supervisors send SIGTERM as soon as they see a process up. Before, the handler was
  // installed only after "listening" was printed, and such a signal killed the process (143).
  server_->Signal(SIGTERM);
  server_->Wait();
  for (int i = 0; i < 10; ++i) {
    server_ = std::make_unique<ServerProcess>(config_);
    server_->Signal(SIGTERM);
    ASSERT_EQ(server_->Wait(), 0) << "start " << i << ":\n" << server_->Output();
  }
}

TEST_F(ServerTest, ThreadsAreNamedForWhatTheyDo) {
  // `top -H` and perf tell the request path from the audit writer and the blocking pool only
  // by these names; a control-plane request has the blocking pool name its thread.
  Connection c(server_->port());
  c.Send(
      BuildRequest("GET", "/v1/orgs/" + org_ + "/keys", {{"Authorization", "Bearer " + key_}}, ""));
  ASSERT_EQ(c.Read().status, 200);
  std::set<std::string> names;
  const std::filesystem::path tasks =
      std::filesystem::path("/proc") / std::to_string(server_->pid()) / "task";
  for (const auto& task : std::filesystem::directory_iterator(tasks)) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    names.insert(name);
  }
  for (const char* expected : {"gh-net-0", "gh-audit", "gh-blocking", "gh-password"}) {
    EXPECT_TRUE(names.count(expected)) << expected;
  }
}

}  // namespace
}  // namespace gatehouse::testing

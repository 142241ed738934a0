// The proxy path over real sockets: identity headers, streaming both ways, pooling, failures.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "integration/fixture.h"

namespace gatehouse::testing {
namespace {

class ProxyTest : public GatewayFixture {};

TEST_F(ProxyTest, ForwardsWithTrustworthyIdentityHeadersOnly) {
  std::string reader = NewKey(R"(["read:findings"])");
  auto r = Call("GET", "/api/v1/findings/42?sort=asc", reader, "",
                {{"X-Gatehouse-Org", "org_spoofed"},
                 {"X-Gatehouse-Scopes", "admin"},
                 {"X-Request-Id", "trace-1"},
                 {"Connection", "keep-alive, X-Secret-Hop"},
                 {"X-Secret-Hop", "drop me"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Header("x-request-id"), "trace-1");
  std::string head = upstream_->last_head();
  EXPECT_NE(head.find("GET /api/v1/findings/42?sort=asc HTTP/1.1"), std::string::npos) << head;
  EXPECT_NE(head.find("X-Gatehouse-Org: " + org_), std::string::npos) << head;
  EXPECT_NE(head.find("X-Gatehouse-Scopes: read:findings"), std::string::npos);
  EXPECT_NE(head.find("X-Gatehouse-Env: live"), std::string::npos);
  EXPECT_NE(head.find("X-Request-Id: trace-1"), std::string::npos);
  EXPECT_EQ(head.find("org_spoofed"), std::string::npos);
  EXPECT_EQ(head.find("admin"), std::string::npos);
  EXPECT_EQ(head.find(reader), std::string::npos);  // the credential stays here
  EXPECT_EQ(head.find("Authorization"), std::string::npos);
  EXPECT_EQ(head.find("X-Secret-Hop"), std::string::npos);
  EXPECT_NE(head.find("X-Forwarded-For: 127.0.0.1"), std::string::npos);
}

TEST_F(ProxyTest, TheConsoleSessionCookieNeverReachesAnUpstream) {
  std::string reader = NewKey(R"(["read:findings"])");
  auto r = Call("GET", "/api/v1/findings", reader, "",
                {{"Cookie", "theme=dark; __Host-gatehouse_session=ghs_secretZq; lang=en"}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::string head = upstream_->last_head();
  EXPECT_EQ(head.find("ghs_secretZq"), std::string::npos) << head;
  EXPECT_NE(head.find("Cookie: theme=dark; lang=en"), std::string::npos) << head;
  Call("GET", "/api/v1/findings", reader, "", {{"Cookie", "__Host-gatehouse_session=ghs_x"}});
  EXPECT_EQ(upstream_->last_head().find("Cookie"), std::string::npos);
}

TEST_F(ProxyTest, AcceptsAllThreeCredentialForms) {
  std::string reader = NewKey(R"(["read:findings"])");
  EXPECT_EQ(
      Request(server_->port(), "GET", "/api/v1/findings", {{"Authorization", "ApiKey " + reader}})
          .status,
      200);
  EXPECT_EQ(Request(server_->port(), "GET", "/api/v1/findings", {{"X-API-Key", reader}}).status,
            200);
  EXPECT_EQ(
      Request(server_->port(), "GET", "/api/v1/findings", {{"Authorization", "Bearer " + reader}})
          .status,
      200);
  EXPECT_EQ(
      Request(server_->port(), "GET", "/api/v1/findings", {{"Authorization", "Basic " + reader}})
          .status,
      401);
  EXPECT_EQ(Request(server_->port(), "GET", "/api/v1/findings").status, 401);
}

TEST_F(ProxyTest, RefusesBeforeTheUpstreamSeesAnything) {
  std::string reader = NewKey(R"(["read:findings"])");
  auto forbidden = Call("POST", "/api/v1/evidence/new", reader, "{}");
  EXPECT_EQ(forbidden.status, 403);
  EXPECT_NE(forbidden.body.find("\"required\":[\"write:evidence\"]"), std::string::npos);
  EXPECT_EQ(Call("GET", "/api/v1/findings/../evidence", reader).status, 400);
  // An unauthenticated upload is answered at once, and the connection closed.
  Connection c(server_->port());
  c.Send("POST /api/v1/evidence HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
  EXPECT_EQ(c.Read().status, 401);
  EXPECT_TRUE(c.ClosedByPeer());
  EXPECT_EQ(upstream_->requests.load(), 0);
}

TEST_F(ProxyTest, StripsPrefixAndAddsRouteHeaders) {
  std::string writer = NewKey(R"(["write:evidence"])");
  auto r = Call("POST", "/api/v1/evidence/items", writer, R"({"a":1})");
  ASSERT_EQ(r.status, 200) << r.body;
  std::string head = upstream_->last_head();
  EXPECT_NE(head.find("POST /svc/items HTTP/1.1"), std::string::npos) << head;
  EXPECT_NE(head.find("X-Route: evidence"), std::string::npos);
  EXPECT_EQ(upstream_->last_body(), R"({"a":1})");
}

TEST_F(ProxyTest, StreamsLargeChunkedRequestBodies) {
  std::string writer = NewKey(R"(["write:evidence"])");
  Connection c(server_->port());
  c.Send("POST /api/v1/evidence/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + writer +
         "\r\nTransfer-Encoding: chunked\r\n\r\n");
  std::string piece(64 * 1024, 'x');
  char size[16];
  std::snprintf(size, sizeof(size), "%zx\r\n", piece.size());
  for (int i = 0; i < 80; ++i) c.Send(size + piece + "\r\n");  // 5 MiB, more than any buffer
  c.Send("0\r\n\r\n");
  auto r = c.Read(std::chrono::seconds(20));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, R"({"ok":true,"bytes":5242880})");
}

TEST_F(ProxyTest, ServerSentEventsArriveAsTheyAreWritten) {
  std::string reader = NewKey(R"(["read:findings"])");
  Connection c(server_->port());
  c.Send(
      BuildRequest("GET", "/api/v1/findings/events", {{"Authorization", "Bearer " + reader}}, ""));
  std::vector<std::chrono::steady_clock::time_point> arrivals;
  auto r = c.Read(std::chrono::seconds(5), [&](const std::string&) {
    arrivals.push_back(std::chrono::steady_clock::now());
  });
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("content-type"), "text/event-stream");
  EXPECT_EQ(r.body, "data: token0\n\ndata: token1\n\ndata: token2\n\n");
  ASSERT_GE(arrivals.size(), 3u);  // not buffered into one piece
  EXPECT_GT(arrivals.back() - arrivals.front(), std::chrono::milliseconds(450));
}

// HTTP/1.0 has no chunked framing (RFC 9112 6.1): such a client gets the data alone, as it
// arrives, and the close of the connection ends it.
TEST_F(ProxyTest, AnHttp10ClientGetsAChunkedResponseWithoutItsFraming) {
  std::string reader = NewKey(R"(["read:findings"])");
  Connection c(server_->port());
  c.Send("GET /api/v1/findings/events HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer " + reader +
         "\r\n\r\n");
  std::vector<std::string> pieces;
  auto r =
      c.Read(std::chrono::seconds(10), [&](const std::string& piece) { pieces.push_back(piece); });
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("transfer-encoding"), "");
  EXPECT_EQ(r.Header("connection"), "close");
  EXPECT_EQ(r.body, "data: token0\n\ndata: token1\n\ndata: token2\n\n");
  EXPECT_GE(pieces.size(), 2u) << "the events should arrive as they are written";
  EXPECT_TRUE(c.ClosedByPeer());
  // An HTTP/1.1 client still gets the framing.
  Connection c11(server_->port());
  c11.Send(
      BuildRequest("GET", "/api/v1/findings/events", {{"Authorization", "Bearer " + reader}}, ""));
  auto r11 = c11.Read();
  EXPECT_EQ(r11.Header("transfer-encoding"), "chunked");
  EXPECT_EQ(r11.body, r.body);
}

TEST_F(ProxyTest, PipelinedResponsesKeepTheirFramingWhateverItIs) {
  std::string reader = NewKey(R"(["read:findings"])");
  Connection c(server_->port());
  auto get = [&](const std::string& path) {
    return BuildRequest("GET", path, {{"Authorization", "Bearer " + reader}}, "");
  };
  // Chunked, long with a length (relayed in pieces), after an informational response, small,
  // then ended by the upstream closing: all on one client connection, sent at once.
  c.Send(get("/api/v1/findings/events") + get("/api/v1/findings/big") +
         get("/api/v1/findings/hints") + get("/api/v1/findings") +
         get("/api/v1/findings/until-close"));
  auto events = c.Read(std::chrono::seconds(5));
  EXPECT_EQ(events.body, "data: token0\n\ndata: token1\n\ndata: token2\n\n");
  auto big = c.Read(std::chrono::seconds(5));
  EXPECT_EQ(big.status, 200);
  EXPECT_EQ(big.body, std::string(200000, 'b'));
  auto hinted = c.Read(std::chrono::seconds(5));
  EXPECT_EQ(hinted.status, 200);
  EXPECT_EQ(hinted.body, R"({"hinted":true})");
  auto small = c.Read(std::chrono::seconds(5));
  EXPECT_EQ(small.body, R"({"ok":true,"bytes":0})");
  EXPECT_FALSE(small.Header("x-request-id").empty());
  auto last = c.Read(std::chrono::seconds(5));
  EXPECT_EQ(last.status, 200);
  EXPECT_EQ(last.Header("connection"), "close");
  EXPECT_EQ(last.body, "all of it");
  EXPECT_TRUE(c.ClosedByPeer());
}

TEST_F(ProxyTest, RequestBodiesKeepTheirFramingAndTheConnectionStaysInStep) {
  std::string writer = NewKey(R"(["write:evidence"])");
  Connection c(server_->port());
  std::string auth = "Authorization: Bearer " + writer + "\r\n";
  c.Send("POST /api/v1/evidence/a HTTP/1.1\r\nHost: x\r\n" + auth +
         "Content-Length: 7\r\n\r\n{\"a\":1}" + "POST /api/v1/evidence/b HTTP/1.1\r\nHost: x\r\n" +
         auth +
         "Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n" +
         BuildRequest("GET", "/healthz", {}, ""));
  EXPECT_EQ(c.Read().body, R"({"ok":true,"bytes":7})");
  EXPECT_EQ(c.Read().body, R"({"ok":true,"bytes":5})");
  EXPECT_EQ(upstream_->last_body(), "abcde");
  EXPECT_EQ(c.Read().body, R"({"status":"ok"})");
}

TEST_F(ProxyTest, MalformedChunkedBodiesNeverReachTheUpstreamWhole) {
  std::string writer = NewKey(R"(["write:evidence"])");
  Connection c(server_->port());
  c.Send("POST /api/v1/evidence/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + writer +
         "\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n");
  auto r = c.Read();
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(c.ClosedByPeer());
  EXPECT_EQ(upstream_->requests.load(), 0);
}

TEST_F(ProxyTest, AnUpstreamThatSpeaksOutOfTurnIsNotReused) {
  std::string reader = NewKey(R"(["read:findings"])");
  EXPECT_EQ(Call("GET", "/api/v1/findings/extra", reader).body, R"({"first":true})");
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(Call("GET", "/api/v1/findings", reader).body, R"({"ok":true,"bytes":0})");
  }
}

// Pooled connections are checked when taken only after they idled a while; one the upstream
// closed a moment ago is found out by the request that takes it, which goes again on a fresh
// connection, or, when its body streams and so cannot go again, is checked before it is sent.
TEST_F(ProxyTest, AnUpstreamThatClosesRightAfterAnsweringCostsNoRequest) {
  std::string reader = NewKey(R"(["read:findings"])");
  std::string writer = NewKey(R"(["write:evidence"])");
  Connection c(server_->port());
  // What is asserted is that a pooled connection the upstream has closed is not used again.
  // Whether its close is in yet when the next request leaves, no proxy can know: the upstream
  // thread may still be between its write and its close on a loaded machine. So each next
  // request waits until the upstream has closed.
  int closed = upstream_->closed_by_handler.load();
  auto wait_for_the_close = [&] {
    ++closed;
    for (int i = 0; i < 500 && upstream_->closed_by_handler.load() < closed; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_GE(upstream_->closed_by_handler.load(), closed);
  };
  for (int i = 0; i < 5; ++i) {
    c.Send(BuildRequest("GET", "/api/v1/findings/then-close",
                        {{"Authorization", "Bearer " + reader}}, ""));
    auto closing = c.Read();
    ASSERT_EQ(closing.status, 200);
    EXPECT_EQ(closing.body, R"({"closing":true})");
    wait_for_the_close();
    c.Send(BuildRequest("GET", "/api/v1/findings", {{"Authorization", "Bearer " + reader}}, ""));
    auto next = c.Read();
    ASSERT_EQ(next.status, 200) << next.body;
    EXPECT_EQ(next.body, R"({"ok":true,"bytes":0})");

    c.Send(BuildRequest("GET", "/api/v1/findings/then-close",
                        {{"Authorization", "Bearer " + reader}}, ""));
    ASSERT_EQ(c.Read().status, 200);
    wait_for_the_close();
    c.Send("POST /api/v1/evidence/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + writer +
           "\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    auto streamed = c.Read();
    ASSERT_EQ(streamed.status, 200) << streamed.body;
    EXPECT_EQ(streamed.body, R"({"ok":true,"bytes":5})");
  }
}

TEST_F(ProxyTest, ARequestDroppedUnansweredOnAPooledConnectionIsSentAgainOnlyWhenSafe) {
  // The upstream takes the next request on the connection it kept, then closes without an
  // answer, as one whose keep-alive timeout ends just as the request arrives. It may have
  // acted on it, so (RFC 9112 9.3.1) only an idempotent request, or one with an
  // Idempotency-Key, goes again on a fresh connection, and only with a body gatehouse still
  // holds: one that came in with its head. A body relayed as it arrives has left.
  std::string writer = NewKey(R"(["write:evidence"])");
  const std::string auth = "Authorization: Bearer " + writer + "\r\n";
  const auto after_a_drop = [&](const std::string& request) {
    Connection c(server_->port());  // a 502 ends the client's connection
    c.Send("POST /api/v1/evidence/then-drop HTTP/1.1\r\nHost: x\r\n" + auth +
           "Content-Length: 0\r\n\r\n");
    EXPECT_EQ(c.Read().body, R"({"then":"drop"})");
    const int before = upstream_->requests.load();
    c.Send(request);
    auto r = c.Read();
    return std::pair{r, upstream_->requests.load() - before};
  };
  const std::string upload = "/api/v1/evidence/upload HTTP/1.1\r\nHost: x\r\n" + auth;
  auto [put, put_requests] = after_a_drop("PUT " + upload + "Content-Length: 5\r\n\r\nhello");
  EXPECT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(put.body, R"({"ok":true,"bytes":5})");
  EXPECT_EQ(put_requests, 2);  // dropped once, then answered
  EXPECT_EQ(upstream_->last_body(), "hello");

  auto [keyed, keyed_requests] = after_a_drop("POST " + upload +
                                              "Idempotency-Key: 8e03978e\r\n"
                                              "Content-Length: 5\r\n\r\nhello");
  EXPECT_EQ(keyed.status, 200) << keyed.body;
  EXPECT_EQ(keyed_requests, 2);

  auto [post, post_requests] = after_a_drop("POST " + upload + "Content-Length: 5\r\n\r\nhello");
  EXPECT_EQ(post.status, 502);
  EXPECT_EQ(post_requests, 1);  // never twice

  auto [streamed, streamed_requests] =
      after_a_drop("PUT " + upload + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  EXPECT_EQ(streamed.status, 502);
  EXPECT_EQ(streamed_requests, 1);
}

TEST_F(ProxyTest, ReusesUpstreamConnections) {
  std::string reader = NewKey(R"(["read:findings"])");
  Connection c(server_->port());
  for (int i = 0; i < 20; ++i) {
    c.Send(BuildRequest("GET", "/api/v1/findings", {{"Authorization", "Bearer " + reader}}, ""));
    ASSERT_EQ(c.Read().status, 200);
  }
  EXPECT_EQ(upstream_->requests.load(), 20);
  EXPECT_LE(upstream_->connections.load(), 2);  // one per worker thread at most
}

TEST_F(ProxyTest, UpstreamFailuresMapToGatewayErrors) {
  std::string reader = NewKey(R"(["read:findings"])");
  auto down = Call("GET", "/api/down/x", reader);
  EXPECT_EQ(down.status, 502);
  EXPECT_NE(down.body.find("\"code\":\"upstream_unavailable\""), std::string::npos);
  auto slow = Call("GET", "/api/v1/findings/hang", reader);
  EXPECT_EQ(slow.status, 504);
  EXPECT_NE(slow.body.find("\"code\":\"upstream_timeout\""), std::string::npos);
}

TEST_F(ProxyTest, HeadRequestsCarryNoBody) {
  std::string reader = NewKey(R"(["read:findings"])");
  Connection c(server_->port());
  c.Send(BuildRequest("HEAD", "/api/v1/findings", {{"Authorization", "Bearer " + reader}}, ""));
  auto r = c.Read(std::chrono::milliseconds(1500));
  EXPECT_EQ(r.status, 200);
  c.Send(BuildRequest("GET", "/healthz", {}, ""));  // the connection is still in step
  EXPECT_EQ(c.Read().body, R"({"status":"ok"})");
}

TEST_F(ProxyTest, RevokedKeysStopAtOnce) {
  std::string reader = NewKey(R"(["read:findings"])");
  ASSERT_EQ(Call("GET", "/api/v1/findings", reader).status, 200);
  auto list = Call("GET", "/v1/orgs/" + org_ + "/keys", key_);
  auto at = list.body.find("\"id\":\"");
  std::string id = list.body.substr(at + 6, list.body.find('"', at + 6) - at - 6);
  ASSERT_EQ(Call("DELETE", "/v1/orgs/" + org_ + "/keys/" + id, key_).status, 200);
  EXPECT_EQ(Call("GET", "/api/v1/findings", reader).status, 401);
}

TEST_F(ProxyTest, TrustedProxyForwardedForIsBelievedOthersAreNot) {
  NewKey(R"(["read:findings"])");
  auto r =
      Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
           R"({"label":"office","scopes":["read:findings"],"ip_allowlist":["198.51.100.0/24"]})");
  auto at = r.body.find("\"key\":\"");
  std::string office = r.body.substr(at + 7, r.body.find('"', at + 7) - at - 7);
  // Our address is 127.0.0.1, which is not a trusted proxy: a spoofed header changes nothing.
  auto spoofed = Call("GET", "/api/v1/findings", office, "", {{"X-Forwarded-For", "198.51.100.7"}});
  EXPECT_EQ(spoofed.status, 403);
  EXPECT_NE(spoofed.body.find("ip_not_allowed"), std::string::npos);
}

// Requests over one client connection, so that one worker (and its turn counter) serves them.
std::vector<int> StatusesOnOneConnection(int port, const std::string& method,
                                         const std::string& path, const std::string& key, int n) {
  std::vector<int> out;
  Connection c(port);
  for (int i = 0; i < n; ++i) {
    c.Send(BuildRequest(method, path, {{"Authorization", "Bearer " + key}}, ""));
    out.push_back(c.Read().status);
  }
  return out;
}

// Routes with several upstream servers: the fixture's upstream on 127.0.0.1 and a second one on
// ::1 (also a check that IPv6 literals in URLs work), taken in turn; and routes with servers
// that refuse connections.
class UpstreamServersTest : public GatewayFixture {
 protected:
  // The "pair" route's upstream_fail_timeout: long enough that a loaded machine still sends a
  // few requests within it.
  static constexpr std::chrono::seconds kPairRest{2};
  std::string ExtraConfig() override {
    second_ = StartSecond(0);
    const std::string first = "\"http://127.0.0.1:" + std::to_string(upstream_->port()) + "\"";
    const std::string second = "\"http://[::1]:" + std::to_string(second_->port()) + "\"";
    return "[[routes]]\nname = \"pair\"\npath_prefix = \"/api/pair\"\nupstream = [" + first + ", " +
           second + "]\nscopes = [\"read:findings\"]\nupstream_fail_timeout = \"" +
           std::to_string(kPairRest.count()) + "s\"\n" + "upstream_max_failures = 2\n" +
           "[[routes]]\nname = \"half\"\npath_prefix = \"/api/half\"\n" +
           "upstream = [\"http://127.0.0.1:1\", " + first + "]\nscopes = [\"read:findings\"]\n" +
           "[[routes]]\nname = \"least\"\npath_prefix = \"/api/least\"\nupstream = [" + first +
           ", " + second +
           "]\nscopes = [\"read:findings\"]\nupstream_balance = \"least_requests\"\n" +
           "[[routes]]\nname = \"none\"\npath_prefix = \"/api/none\"\n" +
           "upstream = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\n" +
           "scopes = [\"read:findings\"]\n";
  }
  // Like the fixture's upstream, except that it closes without answering paths with /drop, and
  // answers paths with /sick with 503.
  std::unique_ptr<TestUpstream> StartSecond(int port) {
    return std::make_unique<TestUpstream>(
        [this](int fd, const std::string& h, const std::string& b) {
          if (h.find("/drop") != std::string::npos) return false;
          if (h.find("/sick") != std::string::npos) {
            TestUpstream::WriteAll(fd,
                                   "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
            return true;
          }
          return Upstream(fd, h, b);
        },
        port, true);
  }
  std::vector<int> Statuses(const std::string& path, const std::string& key, int n,
                            const std::string& method = "GET") {
    return StatusesOnOneConnection(server_->port(), method, path, key, n);
  }
  // Whether /metrics counts exactly one failure of the ::1 server.
  bool OneFailureOfSecond() {
    const std::string metrics = Request(server_->port(), "GET", "/metrics").body;
    return metrics.find("gatehouse_upstream_failures_total{server=\"http://[::1]:" +
                        std::to_string(second_->port()) + "\"} 1") != std::string::npos;
  }
  std::unique_ptr<TestUpstream> second_;
};

TEST_F(UpstreamServersTest, ServersAreTakenInTurnEachWithItsOwnHost) {
  std::string reader = NewKey(R"(["read:findings"])");
  for (int status : Statuses("/api/pair/x", reader, 10)) EXPECT_EQ(status, 200);
  EXPECT_EQ(upstream_->requests.load(), 5);
  EXPECT_EQ(second_->requests.load(), 5);
  EXPECT_NE(second_->last_head().find("Host: [::1]:" + std::to_string(second_->port())),
            std::string::npos)
      << second_->last_head();
  EXPECT_NE(upstream_->last_head().find("Host: 127.0.0.1:" + std::to_string(upstream_->port())),
            std::string::npos);
  // The access log says which server served each request.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::string log = server_->Output();
  EXPECT_NE(log.find("\"upstream\":\"http://[::1]:" + std::to_string(second_->port()) + "\""),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("\"upstream\":\"http://127.0.0.1:" + std::to_string(upstream_->port()) + "\""),
            std::string::npos);
}

TEST_F(UpstreamServersTest, AServerThatRefusesIsPassedOverUntilItsRestEnds) {
  std::string reader = NewKey(R"(["read:findings"])");
  // A refused connection costs the request nothing: it goes to the other server.
  for (int status : Statuses("/api/half/x", reader, 6)) EXPECT_EQ(status, 200);
  EXPECT_EQ(upstream_->requests.load(), 6);

  ASSERT_EQ(Statuses("/api/pair/x", reader, 2), (std::vector<int>{200, 200}));
  const int port = second_->port();
  // Its rest starts at the first refusal, which comes after this.
  const auto gone = std::chrono::steady_clock::now();
  second_.reset();  // the ::1 server goes away: its connections close, new ones are refused
  upstream_->requests = 0;
  for (int status : Statuses("/api/pair/x", reader, 6)) EXPECT_EQ(status, 200);
  EXPECT_EQ(upstream_->requests.load(), 6);
  const std::string metrics = Request(server_->port(), "GET", "/metrics").body;
  const std::string v6 = "server=\"http://[::1]:" + std::to_string(port) + "\"";
  EXPECT_NE(metrics.find("gatehouse_upstream_passed_over{" + v6 + "} 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("gatehouse_upstream_failures_total{" + v6 + "} 1"), std::string::npos);
  EXPECT_NE(metrics.find("gatehouse_upstream_failures_total{server=\"http://127.0.0.1:1\"} 1"),
            std::string::npos);
  // Back on its port, it is left alone while its rest (upstream_fail_timeout) lasts. Only what
  // was sent within it can show that, however slow this machine is.
  second_ = StartSecond(port);
  for (int status : Statuses("/api/pair/x", reader, 4)) EXPECT_EQ(status, 200);
  if (std::chrono::steady_clock::now() - gone < kPairRest) {
    EXPECT_EQ(second_->requests.load(), 0);
  }
  // Then it is asked in the background, while requests go on to the other server, and rejoins
  // the turn once it answers. How soon that is depends on the machine, so the test waits for it.
  const auto deadline = gone + kPairRest + std::chrono::seconds(10);
  while (second_->requests.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    for (int status : Statuses("/api/pair/x", reader, 2)) EXPECT_EQ(status, 200);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GT(second_->requests.load(), 0) << "the server never rejoined the turn";
  // Back in the turn, it takes every other request again.
  const int before = second_->requests.load();
  for (int status : Statuses("/api/pair/x", reader, 4)) EXPECT_EQ(status, 200);
  EXPECT_EQ(second_->requests.load() - before, 2);
}

TEST_F(UpstreamServersTest, ARepeatableRequestThatAServerDropsGoesToTheNextServer) {
  std::string reader = NewKey(R"(["read:findings"])");
  // Turns alternate, so the ::1 server, which drops these, is asked too; then it rests.
  for (int status : Statuses("/api/pair/drop", reader, 4)) EXPECT_EQ(status, 200);
  EXPECT_EQ(upstream_->requests.load(), 4);
  EXPECT_EQ(second_->requests.load(), 1);
  EXPECT_TRUE(OneFailureOfSecond());
}

TEST_F(UpstreamServersTest, APostThatAServerDropsIsNotRepeated) {
  std::string reader = NewKey(R"(["read:findings"])");
  auto statuses = Statuses("/api/pair/drop", reader, 2, "POST");
  std::sort(statuses.begin(), statuses.end());
  EXPECT_EQ(statuses, (std::vector<int>{200, 502}));  // the first server, then the second's drop
  EXPECT_EQ(upstream_->requests.load(), 1);
  EXPECT_EQ(second_->requests.load(), 1);
}

TEST_F(UpstreamServersTest, AServerThatAnswers503AgainAndAgainRests) {
  std::string reader = NewKey(R"(["read:findings"])");
  // Its turns come every other request; after two 503s in a row it rests.
  EXPECT_EQ(Statuses("/api/pair/sick", reader, 10),
            (std::vector<int>{200, 503, 200, 503, 200, 200, 200, 200, 200, 200}));
  EXPECT_EQ(second_->requests.load(), 2);
  EXPECT_TRUE(OneFailureOfSecond());
}

TEST_F(UpstreamServersTest, LeastRequestsSendsRequestsAwayFromAServerStillBusy) {
  std::string reader = NewKey(R"(["read:findings"])");
  // A slow request (800 ms) holds one server; meanwhile every quick one goes to the other.
  std::thread slow([&] { EXPECT_EQ(Call("GET", "/api/least/slow", reader).status, 200); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  for (int status : Statuses("/api/least/x", reader, 6)) EXPECT_EQ(status, 200);
  slow.join();
  const int busy_first = upstream_->requests.load(), busy_second = second_->requests.load();
  EXPECT_EQ(busy_first + busy_second, 7);
  EXPECT_TRUE((busy_first == 1 && busy_second == 6) || (busy_first == 6 && busy_second == 1))
      << busy_first << " " << busy_second;
  // Idle again, ties go in turn. The slow request's client has its answer, but the server may
  // not yet have finished with it: its count drops once the answer is written.
  auto in_flight = [&](const TestUpstream& u, const std::string& host) {
    const std::string metrics = Request(server_->port(), "GET", "/metrics").body;
    const std::string series = "gatehouse_upstream_requests_in_flight{server=\"http://" + host +
                               ":" + std::to_string(u.port()) + "\"} ";
    const auto at = metrics.find(series);
    return at == std::string::npos ? std::string("missing") : metrics.substr(at + series.size(), 1);
  };
  for (int i = 0; i < 500 && (in_flight(*upstream_, "127.0.0.1") != "0" ||
                              in_flight(*second_, "[::1]") != "0");
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(in_flight(*upstream_, "127.0.0.1"), "0");
  ASSERT_EQ(in_flight(*second_, "[::1]"), "0");
  for (int status : Statuses("/api/least/x", reader, 4)) EXPECT_EQ(status, 200);
  EXPECT_EQ(upstream_->requests.load() - busy_first, 2);
  EXPECT_EQ(second_->requests.load() - busy_second, 2);
}

TEST_F(UpstreamServersTest, WhenEveryServerRefusesTheClientGets502) {
  std::string reader = NewKey(R"(["read:findings"])");
  for (int i = 0; i < 3; ++i) {  // resting servers are still tried when no other is left
    auto r = Call("GET", "/api/none/x", reader);
    EXPECT_EQ(r.status, 502);
    EXPECT_NE(r.body.find("\"code\":\"upstream_unavailable\""), std::string::npos) << r.body;
  }
  EXPECT_EQ(Call("GET", "/api/half/x", reader).status, 200);
}

// Waits until an upstream has answered `rounds` more health checks than it has now, and says
// whether that happened within 10 s. Called after a change of answer, two rounds mean the
// checker has acted on it: the first check after the change saw it, and the next round starts
// only once the last one's outcome is applied. A fixed sleep would guess the machine's speed.
bool WaitForCheckRounds(const std::atomic<int>& checks, int rounds = 2) {
  const int target = checks.load() + rounds;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (checks.load() < target) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// The answer of a test upstream's /health: 503 while it is sick.
void AnswerHealthCheck(int fd, bool sick) {
  TestUpstream::WriteAll(
      fd, sick ? "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n" : TestUpstream::Ok("{}"));
}

// Active health checks: a second server on ::1 whose /health answers 503 while `sick_` is set.
class UpstreamHealthCheckTest : public GatewayFixture {
 protected:
  std::string ExtraConfig() override {
    second_ = std::make_unique<TestUpstream>(
        [this](int fd, const std::string& h, const std::string& b) {
          if (h.starts_with("GET /health ")) {
            {
              std::lock_guard lock(mu_);
              health_head_ = h;
            }
            ++checks_;
            AnswerHealthCheck(fd, sick_);
            return false;
          }
          ++served_;
          return Upstream(fd, h, b);
        },
        0, true);
    return "[[routes]]\nname = \"checked\"\npath_prefix = \"/api/checked\"\nupstream = "
           "[\"http://127.0.0.1:" +
           std::to_string(upstream_->port()) +
           "\", \"http://[::1]:" + std::to_string(second_->port()) +
           "\"]\nscopes = [\"read:findings\"]\nupstream_health_path = \"/health\"\n"
           "upstream_health_interval = \"200ms\"\nupstream_health_timeout = \"500ms\"\n";
  }
  std::vector<int> Statuses(const std::string& key, int n) {
    return StatusesOnOneConnection(server_->port(), "GET", "/api/checked/x", key, n);
  }
  std::unique_ptr<TestUpstream> second_;
  std::atomic<bool> sick_{false};
  std::atomic<int> checks_{0}, served_{0};
  std::mutex mu_;
  std::string health_head_;  // the last check's request, guarded by mu_
  std::string HealthHead() {
    std::lock_guard lock(mu_);
    return health_head_;
  }
};

TEST_F(UpstreamHealthCheckTest, AServerFailingItsCheckIsLeftOutUntilOnePasses) {
  std::string reader = NewKey(R"(["read:findings"])");
  ASSERT_TRUE(WaitForCheckRounds(checks_, 1));
  const std::string check = HealthHead();
  EXPECT_NE(check.find("GET /health HTTP/1.1\r\nHost: [::1]:" + std::to_string(second_->port())),
            std::string::npos)
      << check;
  for (int status : Statuses(reader, 4)) EXPECT_EQ(status, 200);
  EXPECT_EQ(served_.load(), 2);  // in turn while healthy

  sick_ = true;
  ASSERT_TRUE(WaitForCheckRounds(checks_));
  served_ = 0;
  for (int status : Statuses(reader, 6)) EXPECT_EQ(status, 200);
  EXPECT_EQ(served_.load(), 0);  // its traffic goes to the other server
  const std::string metrics = Request(server_->port(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("gatehouse_upstream_passed_over{server=\"http://[::1]:" +
                         std::to_string(second_->port()) + "\"} 1"),
            std::string::npos)
      << metrics;

  sick_ = false;
  ASSERT_TRUE(WaitForCheckRounds(checks_));
  for (int status : Statuses(reader, 6)) EXPECT_EQ(status, 200);
  EXPECT_EQ(served_.load(), 3);  // back in turn once a check passed
}

// A server whose packets are dropped, as a host that vanished behind a firewall looks: a
// listening socket whose accept queue is full, so that new connections neither complete nor
// get refused.
class BlackHole {
 public:
  BlackHole() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd_, 0) != 0) {
      throw std::runtime_error("black hole bind");
    }
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    for (int i = 0; i < 3; ++i) {
      int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      ::connect(c, reinterpret_cast<sockaddr*>(&addr), len);
      fillers_.push_back(c);
    }
  }
  ~BlackHole() {
    for (int c : fillers_) ::close(c);
    ::close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::vector<int> fillers_;
};

class UpstreamProbeTest : public GatewayFixture {
 protected:
  std::string ExtraConfig() override {
    hole_ = std::make_unique<BlackHole>();
    return "[[routes]]\nname = \"probed\"\npath_prefix = \"/api/probed\"\nupstream = "
           "[\"http://127.0.0.1:" +
           std::to_string(upstream_->port()) +
           "\", \"http://127.0.0.1:" + std::to_string(hole_->port()) +
           "\"]\nscopes = [\"read:findings\"]\nconnect_timeout = \"400ms\"\n"
           "upstream_fail_timeout = \"300ms\"\n";
  }
  std::unique_ptr<BlackHole> hole_;
};

TEST_F(UpstreamProbeTest, AServerThatDropsPacketsDelaysOneRequestNotOneAfterEachRest) {
  std::string reader = NewKey(R"(["read:findings"])");
  Connection c(server_->port());
  int slow = 0;
  // 2.5 s of requests: without probes, the end of each 300 ms rest would cost a request 400 ms.
  for (int i = 0; i < 40; ++i) {
    const auto start = std::chrono::steady_clock::now();
    c.Send(BuildRequest("GET", "/api/probed/x", {{"Authorization", "Bearer " + reader}}, ""));
    EXPECT_EQ(c.Read().status, 200);
    if (std::chrono::steady_clock::now() - start > std::chrono::milliseconds(300)) ++slow;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(slow, 1);  // the first time its turn came
  EXPECT_EQ(upstream_->requests.load(), 40);
}

// libnss-wrapper's preload library, which lets a process resolve names from a hosts file named
// in NSS_WRAPPER_HOSTS; empty when it is not installed.
std::string NssWrapperLibrary() {
  std::error_code ec;
  for (const auto& dir : std::filesystem::directory_iterator("/usr/lib", ec)) {
    const auto candidate = dir.path() / "libnss_wrapper.so";
    if (std::filesystem::exists(candidate, ec)) return candidate.string();
  }
  return "";
}

// A route whose upstream is one name with several addresses, as a headless Kubernetes service
// or several A records give. The server resolves names through nss_wrapper, from a hosts file
// the test writes: replicas.test is 127.0.0.1 and 127.0.0.2 (all of 127/8 is loopback), where
// two upstreams listen on one port.
class UpstreamNameTest : public GatewayFixture {
 protected:
  void SetUp() override {
    if (NssWrapperLibrary().empty()) {
      GTEST_SKIP() << "libnss-wrapper is not installed (scripts/install-deps installs it)";
    }
    GatewayFixture::SetUp();
  }
  std::string ExtraConfig() override {
    second_ = StartSecond();
    hosts_ = dir_.path() + "/hosts";
    WriteHosts({"127.0.0.1", "127.0.0.2"});
    return "[[routes]]\nname = \"replicas\"\npath_prefix = \"/api/replicas\"\n"
           "upstream = \"http://replicas.test:" +
           std::to_string(upstream_->port()) +
           "\"\nscopes = [\"read:findings\"]\nupstream_fail_timeout = \"1s\"\n"
           "dns_refresh = \"300ms\"\n";
  }
  std::map<std::string, std::string> ServerEnv() override {
    const char* asan = std::getenv("ASAN_OPTIONS");
    std::string options = asan && *asan ? std::string(asan) + ":" : "";
    // A sanitizer build insists on its runtime coming first; nss_wrapper only wraps lookups.
    // One network thread: each keeps its own addresses and lookups, and the test follows one.
    return {{"GATEHOUSE_THREADS", "1"},
            {"LD_PRELOAD", NssWrapperLibrary()},
            {"NSS_WRAPPER_HOSTS", hosts_},
            {"ASAN_OPTIONS", options + "verify_asan_link_order=0"}};
  }
  std::unique_ptr<TestUpstream> StartSecond() {
    return std::make_unique<TestUpstream>(
        [this](int fd, const std::string& h, const std::string& b) { return Upstream(fd, h, b); },
        "127.0.0.2", upstream_->port());
  }
  // Replaces the hosts file whole and dates it ahead, since nss_wrapper reloads a file whose
  // modification time changed, and two writes can fall within one tick of the clock.
  void WriteHosts(const std::vector<std::string>& addresses) {
    {
      std::ofstream out(hosts_ + ".new");
      for (const auto& a : addresses) out << a << " replicas.test\n";
    }
    std::filesystem::rename(hosts_ + ".new", hosts_);
    std::filesystem::last_write_time(
        hosts_, std::filesystem::file_time_type::clock::now() + std::chrono::seconds(++writes_));
  }
  std::vector<int> Statuses(const std::string& key, int n) {
    return StatusesOnOneConnection(server_->port(), "GET", "/api/replicas/x", key, n);
  }
  std::unique_ptr<TestUpstream> second_;
  std::string hosts_;
  int writes_ = 0;
};

TEST_F(UpstreamNameTest, RequestsTakeTheNamesAddressesInTurn) {
  std::string reader = NewKey(R"(["read:findings"])");
  for (int status : Statuses(reader, 10)) EXPECT_EQ(status, 200);
  EXPECT_EQ(upstream_->requests.load(), 5);
  EXPECT_EQ(second_->requests.load(), 5);
  EXPECT_NE(second_->last_head().find("Host: replicas.test:" + std::to_string(upstream_->port())),
            std::string::npos)
      << second_->last_head();
}

TEST_F(UpstreamNameTest, AnAddressThatRefusesIsPassedOverUntilItsRestEnds) {
  std::string reader = NewKey(R"(["read:findings"])");
  ASSERT_EQ(Statuses(reader, 2), (std::vector<int>{200, 200}));
  second_.reset();  // 127.0.0.2 goes away: its connection closes, new ones are refused
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  upstream_->requests = 0;
  // The request whose turn it was goes on to 127.0.0.1; the others go there at once.
  for (int status : Statuses(reader, 6)) EXPECT_EQ(status, 200);
  EXPECT_EQ(upstream_->requests.load(), 6);
  const std::string port = std::to_string(upstream_->port());
  EXPECT_NE(server_->Output().find("at 127.0.0.2:" + port + " failed"), std::string::npos)
      << server_->Output();
  // The server as a whole did not fail: one of its addresses answered every time.
  const std::string metrics = Request(server_->port(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("gatehouse_upstream_failures_total{server=\"http://replicas.test:" + port +
                         "\"} 0"),
            std::string::npos)
      << metrics;
  // Back, it gets its turns again once its second of rest is over.
  second_ = StartSecond();
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  for (int status : Statuses(reader, 6)) EXPECT_EQ(status, 200);
  EXPECT_GE(second_->requests.load(), 2);
}

TEST_F(UpstreamNameTest, ANewLookupMovesRequestsToTheAddressesNowListed) {
  std::string reader = NewKey(R"(["read:findings"])");
  ASSERT_EQ(Statuses(reader, 2), (std::vector<int>{200, 200}));
  WriteHosts({"127.0.0.2"});
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // past dns_refresh
  // This request starts the lookup and is served by the addresses known until then.
  ASSERT_EQ(Statuses(reader, 1), (std::vector<int>{200}));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const int before = upstream_->requests.load();
  for (int status : Statuses(reader, 6)) EXPECT_EQ(status, 200);
  EXPECT_EQ(upstream_->requests.load(), before);  // 127.0.0.1 is no longer listed
  EXPECT_GE(second_->requests.load(), 6);
}

// The same name served by two network threads, which follow one standing of its addresses.
class UpstreamNameTwoThreadsTest : public UpstreamNameTest {
 protected:
  std::map<std::string, std::string> ServerEnv() override {
    auto env = UpstreamNameTest::ServerEnv();
    env["GATEHOUSE_THREADS"] = "2";
    return env;
  }
};

TEST_F(UpstreamNameTwoThreadsTest, AnAddressThatRefusesCostsOneFailedConnectionNotOnePerThread) {
  std::string reader = NewKey(R"(["read:findings"])");
  second_.reset();  // 127.0.0.2 refuses new connections
  // Sixteen client connections, which the kernel spreads over both threads; each thread would
  // try 127.0.0.2 within its first two requests if it did not know what the other learnt.
  for (int i = 0; i < 16; ++i) EXPECT_EQ(Statuses(reader, 1), (std::vector<int>{200}));
  const std::string failed = "at 127.0.0.2:" + std::to_string(upstream_->port()) + " failed";
  const std::string output = server_->Output();
  int failures = 0;
  for (auto at = output.find(failed); at != std::string::npos; at = output.find(failed, at + 1)) {
    ++failures;
  }
  EXPECT_EQ(failures, 1) << output;
  EXPECT_EQ(upstream_->requests.load(), 16);
}

// The same name with active health checks: each of its addresses is checked on its own. Two
// network threads, so that the standing the checking thread finds reaches the other too.
class UpstreamNameCheckTest : public UpstreamNameTest {
 protected:
  // The upstreams' threads answer checks with this fixture's members: they end first, once the
  // server is gone and the checks it held open are closed.
  ~UpstreamNameCheckTest() override {
    server_.reset();
    second_.reset();
    upstream_.reset();
  }
  std::string ExtraConfig() override {
    std::string route = UpstreamNameTest::ExtraConfig();
    second_.reset();  // the same port on 127.0.0.2, with a health path that can fail
    second_ = std::make_unique<TestUpstream>(
        [this](int fd, const std::string& h, const std::string& b) {
          if (h.starts_with("GET /health ")) {
            ++second_checks_;
            AnswerCheck(fd, sick_);
            return false;
          }
          ++served_;
          return Upstream(fd, h, b);
        },
        "127.0.0.2", upstream_->port());
    return route +
           "upstream_health_path = \"/health\"\nupstream_health_interval = \"200ms\"\n"
           "upstream_health_timeout = \"500ms\"\n";
  }
  std::map<std::string, std::string> ServerEnv() override {
    auto env = UpstreamNameTest::ServerEnv();
    env["GATEHOUSE_THREADS"] = "2";
    return env;
  }
  std::string Gauge(const std::string& family) {
    const std::string metrics = Request(server_->port(), "GET", "/metrics").body;
    const std::string series =
        family + "{server=\"http://replicas.test:" + std::to_string(upstream_->port()) + "\"} ";
    const auto at = metrics.find(series);
    return at == std::string::npos
               ? "missing"
               : metrics.substr(at + series.size(), metrics.find('\n', at) - at - series.size());
  }
  bool Upstream(int fd, const std::string& h, const std::string& b) override {
    if (!h.starts_with("GET /health ")) return UpstreamNameTest::Upstream(fd, h, b);
    AnswerCheck(fd, false);  // 127.0.0.1 is never sick
    return false;
  }
  // While `hold_checks_`, a check gets no answer until the checker gives up and closes; the
  // most checks open at once is noted. A check is open until the checker closes it, not until
  // the thread holding it here notices: on a loaded machine that thread may still be asleep
  // when the checker's next check arrives, so the close is read from the kernel.
  void AnswerCheck(int fd, bool sick) {
    if (!hold_checks_) return AnswerHealthCheck(fd, sick);
    {
      std::lock_guard lock(open_mu_);
      int open = 1;
      for (int other : open_fds_) {
        char byte;
        const ssize_t r = ::recv(other, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) ++open;
      }
      open_fds_.insert(fd);
      most_open_checks_ = std::max(most_open_checks_.load(), open);
    }
    char byte;
    while (::recv(fd, &byte, 1, 0) > 0) {
    }
    std::lock_guard lock(open_mu_);
    open_fds_.erase(fd);
  }
  std::atomic<bool> sick_{false}, hold_checks_{false};
  std::atomic<int> served_{0}, most_open_checks_{0};
  std::atomic<int> second_checks_{0};  // checks 127.0.0.2 was asked
  std::mutex open_mu_;
  std::set<int> open_fds_;  // guarded by open_mu_: checks held unanswered
};

TEST_F(UpstreamNameCheckTest, EveryAddressIsCheckedAtOnce) {
  // Checked one after the other, the second address's check would start only once the first
  // had timed out (500 ms), and a name with many silent addresses would take that many timeouts
  // to be judged.
  hold_checks_ = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  hold_checks_ = false;
  EXPECT_EQ(most_open_checks_.load(), 2);
  // Neither answered in time: the server as a whole is out.
  EXPECT_NE(server_->Output().find("replicas.test:" + std::to_string(upstream_->port()) +
                                   " failed its health check (no answer in time)"),
            std::string::npos)
      << server_->Output();
}

TEST_F(UpstreamNameCheckTest, AnAddressFailingItsCheckIsLeftOutWhileItsOtherAddressesServe) {
  std::string reader = NewKey(R"(["read:findings"])");
  ASSERT_TRUE(WaitForCheckRounds(second_checks_, 1));
  for (int status : Statuses(reader, 6)) EXPECT_EQ(status, 200);
  EXPECT_EQ(served_.load(), 3);  // in turn while both pass

  sick_ = true;
  ASSERT_TRUE(WaitForCheckRounds(second_checks_));
  served_ = 0;
  for (int status : Statuses(reader, 6)) EXPECT_EQ(status, 200);
  EXPECT_EQ(served_.load(), 0);  // 127.0.0.1 takes its turns
  EXPECT_EQ(Gauge("gatehouse_upstream_addresses_out"), "1");
  EXPECT_EQ(Gauge("gatehouse_upstream_passed_over"), "0");  // the server as a whole serves
  const std::string port = std::to_string(upstream_->port());
  EXPECT_NE(
      server_->Output().find("at 127.0.0.2:" + port + " failed its health check (answered 503)"),
      std::string::npos)
      << server_->Output();

  sick_ = false;
  ASSERT_TRUE(WaitForCheckRounds(second_checks_));
  for (int status : Statuses(reader, 6)) EXPECT_EQ(status, 200);
  EXPECT_EQ(served_.load(), 3);  // back in turn once its check passed
  EXPECT_EQ(Gauge("gatehouse_upstream_addresses_out"), "0");
  EXPECT_NE(server_->Output().find("at 127.0.0.2:" + port + " passes its health check again"),
            std::string::npos);
}

// A route that lets WebSockets through, to an upstream that switches protocols, says hello,
// and then answers each piece it reads with the piece in capitals, until the client is done.
class WebSocketTest : public GatewayFixture {
 protected:
  std::string ExtraConfig() override {
    return "[[routes]]\nname = \"live\"\npath_prefix = \"/api/live\"\n"
           "upstream = \"http://127.0.0.1:" +
           std::to_string(upstream_->port()) +
           "\"\nscopes = [\"read:findings\"]\nwebsocket = true\nstream_idle_timeout = \"1s\"\n";
  }
  bool Upstream(int fd, const std::string& head, const std::string& body) override {
    if (head.find("/api/live") == std::string::npos ||
        head.find("Upgrade: websocket") == std::string::npos) {
      return GatewayFixture::Upstream(fd, head, body);
    }
    TestUpstream::WriteAll(
        fd,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "\r\nhello;");
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      std::string piece(buf, static_cast<std::size_t>(n));
      for (auto& ch : piece) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      TestUpstream::WriteAll(fd, piece);
    }
    return false;
  }

  static std::string Handshake(const std::string& key, const std::string& path = "/api/live/chat") {
    std::string r = "GET " + path +
                    " HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, Upgrade\r\n"
                    "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    if (!key.empty()) r += "Authorization: Bearer " + key + "\r\n";
    return r + "\r\n";
  }
};

// A client socket that reads whatever arrives, for the bytes after a 101.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) ADD_FAILURE() << "connect";
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~RawClient() { ::close(fd_); }
  void Send(const std::string& bytes) {
    ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  void EndSending() { ::shutdown(fd_, SHUT_WR); }
  // Reads until `want` has arrived (true) or the connection ends or goes quiet for 5 s.
  bool ReadUntil(const std::string& want) {
    while (received.find(want) == std::string::npos) {
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return false;
      received.append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }
  // True when the peer closes within the 5 s receive timeout, whatever it sends first.
  bool Closed() {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n == 0) return true;
      if (n < 0) return false;
      received.append(buf, static_cast<std::size_t>(n));
    }
  }
  std::string received;

 private:
  int fd_ = -1;
};

TEST_F(WebSocketTest, AnAuthorizedUpgradeBecomesATunnelBothWays) {
  std::string reader = NewKey(R"(["read:findings"])");
  RawClient client(server_->port());
  // The first frame rides with the handshake, as clients may send it.
  client.Send(Handshake(reader) + "first;");
  ASSERT_TRUE(client.ReadUntil("hello;FIRST;")) << client.received;
  const std::string head = client.received.substr(0, client.received.find("\r\n\r\n"));
  EXPECT_EQ(head.rfind("HTTP/1.1 101 ", 0), 0u) << head;
  EXPECT_NE(head.find("Upgrade: websocket"), std::string::npos) << head;
  EXPECT_NE(head.find("Connection: Upgrade"), std::string::npos) << head;
  EXPECT_NE(head.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), std::string::npos);
  EXPECT_NE(head.find("X-Request-Id: req_"), std::string::npos) << head;
  client.Send("second;");
  ASSERT_TRUE(client.ReadUntil("SECOND;")) << client.received;
  // The upstream got the switch asked for, the WebSocket fields, and identity, not the key.
  std::string up = upstream_->last_head();
  EXPECT_NE(up.find("Connection: Upgrade\r\nUpgrade: websocket\r\n"), std::string::npos) << up;
  EXPECT_NE(up.find("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), std::string::npos) << up;
  EXPECT_NE(up.find("X-Gatehouse-Org: " + org_), std::string::npos) << up;
  EXPECT_EQ(up.find(reader), std::string::npos) << up;
  // The client's end reaches the upstream, whose close ends the tunnel.
  client.EndSending();
  EXPECT_TRUE(client.Closed());
  // The decision is in the audit log with the status the client got.
  std::string id = head.substr(head.find("X-Request-Id: ") + 14);
  id = id.substr(0, id.find("\r\n"));
  auto events = Call("GET", "/v1/orgs/" + org_ + "/audit?action=auth.proxy", key_);
  ASSERT_EQ(events.status, 200);
  auto at = events.body.find(id);
  ASSERT_NE(at, std::string::npos) << events.body;
  std::string event = events.body.substr(events.body.rfind('{', at));
  EXPECT_NE(event.substr(0, event.find('}')).find("\"status\":101"), std::string::npos) << event;
}

TEST_F(WebSocketTest, NoCredentialNoUpgrade) {
  const int before = upstream_->requests.load();
  RawClient client(server_->port());
  client.Send(Handshake(""));
  ASSERT_TRUE(client.ReadUntil("\r\n\r\n"));
  EXPECT_EQ(client.received.rfind("HTTP/1.1 401 ", 0), 0u) << client.received;
  EXPECT_EQ(client.received.find("Upgrade: websocket"), std::string::npos);
  EXPECT_EQ(upstream_->requests.load(), before);
}

TEST_F(WebSocketTest, ARouteThatDoesNotAllowItPassesAnOrdinaryRequest) {
  std::string reader = NewKey(R"(["read:findings"])");
  RawClient client(server_->port());
  client.Send(Handshake(reader, "/api/v1/findings/ws"));
  ASSERT_TRUE(client.ReadUntil("{\"ok\":true"));
  EXPECT_EQ(client.received.rfind("HTTP/1.1 200 ", 0), 0u) << client.received;
  std::string up = upstream_->last_head();
  EXPECT_EQ(up.find("Upgrade"), std::string::npos) << up;  // a hop-by-hop field, not asked for
}

TEST_F(WebSocketTest, AGracefulDrainClosesOpenTunnelsAtOnce) {
  std::string reader = NewKey(R"(["read:findings"])");
  RawClient client(server_->port());
  client.Send(Handshake(reader));
  ASSERT_TRUE(client.ReadUntil("hello;"));
  client.Send("still here;");
  ASSERT_TRUE(client.ReadUntil("STILL HERE;"));
  auto start = std::chrono::steady_clock::now();
  server_->Signal(SIGTERM);
  EXPECT_TRUE(client.Closed());
  EXPECT_EQ(server_->Wait(), 0);
  // Well before the fixture's drain_timeout (5 s) and the route's idle timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(900));
}

TEST_F(WebSocketTest, AQuietTunnelIsClosedAfterTheRoutesIdleTimeout) {
  std::string reader = NewKey(R"(["read:findings"])");
  RawClient client(server_->port());
  client.Send(Handshake(reader));
  ASSERT_TRUE(client.ReadUntil("hello;"));
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(client.Closed());  // stream_idle_timeout = 1s on the route
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
}

}  // namespace
}  // namespace gatehouse::testing

#include "gateway/gateway.h"

#include <gtest/gtest.h>

#include "http/h1.h"

namespace gatehouse {
namespace {

TEST(Gateway, UpstreamsNeverSeeSpoofableOrHopByHopFieldsAsSent) {
  for (auto h : kIdentityHeaders) {
    EXPECT_TRUE(Gateway::ReplacedUpstream(h, true)) << h;
    std::string lower(h);
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_TRUE(Gateway::ReplacedUpstream(lower, true)) << lower;
  }
  for (std::string_view h : {"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
                             "Proxy-Authorization", "TE", "Trailer", "Upgrade"}) {
    EXPECT_TRUE(h1::IsHopByHop(h));
    EXPECT_TRUE(Gateway::ReplacedUpstream(h, true)) << h;
  }
  for (std::string_view h :
       {"Host", "Expect", "X-Request-Id", "X-Forwarded-For", "X-Forwarded-Proto"}) {
    EXPECT_TRUE(Gateway::ReplacedUpstream(h, true)) << h;
  }
  EXPECT_TRUE(Gateway::ReplacedUpstream("Authorization", false));
  EXPECT_TRUE(Gateway::ReplacedUpstream("x-api-key", false));
  EXPECT_FALSE(Gateway::ReplacedUpstream("Authorization", true));
  for (std::string_view h :
       {"Content-Type", "Content-Length", "Transfer-Encoding", "Accept", "X-Gatehouse", "Cookie"}) {
    EXPECT_FALSE(Gateway::ReplacedUpstream(h, false)) << h;
  }
}

TEST(Gateway, LongestPrefixOnSegmentBoundaries) {
  Gateway g(std::make_shared<Config>(DefaultConfig()));
  auto name = [&](std::string_view p) {
    int i = g.Match(p);
    return i < 0 ? std::string("-") : g.route(i).name;
  };
  EXPECT_EQ(name("/api/v1/findings"), "findings");
  EXPECT_EQ(name("/api/v1/findings/42"), "findings");
  EXPECT_EQ(name("/api/v1/findingsX"), "-");
  EXPECT_EQ(name("/api/echo/anything"), "echo");
  EXPECT_EQ(name("/v1/orgs"), "-");
}

TEST(Gateway, RefusesPathsThatAnUpstreamCouldReinterpret) {
  for (const char* bad : {"/api/echo/../v1/findings", "/api/./echo", "/api/echo/%2e%2e/x",
                          "/api/echo%2fx", "/api\\echo", "/api/echo/..", "/a/%2E", "/a/%00"}) {
    EXPECT_FALSE(Gateway::CheckPathIsCanonical(bad)) << bad;
  }
  EXPECT_TRUE(Gateway::CheckPathIsCanonical("/api/v1/findings/a.b/c%20d"));
}

TEST(Gateway, AuthorizesMethodsAndScopes) {
  Gateway g(std::make_shared<Config>(DefaultConfig()));
  Principal reader{"org_a", "key_1", "api_key", {"read:findings"}, "live", 0};
  int findings = g.Match("/api/v1/findings");
  EXPECT_TRUE(g.Authorize(findings, "GET", reader));
  EXPECT_TRUE(g.Authorize(findings, "HEAD", reader));
  EXPECT_EQ(g.Authorize(findings, "DELETE", reader).error().code, ErrorCode::kMethodNotAllowed);
  int evidence = g.Match("/api/v1/evidence");
  auto denied = g.Authorize(evidence, "POST", reader);
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().required, std::vector<std::string>{"write:evidence"});
  Principal admin{"org_a", "key_2", "api_key", {"admin"}, "live", 0};
  EXPECT_TRUE(g.Authorize(evidence, "POST", admin));
}

std::optional<std::string> ResponseHeader(const HttpResponse& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return std::nullopt;
}

TEST(Gateway, ANginxCheckGetsEveryOtherRefusalAsTheStatusItAskedFor) {
  HttpRequest plain;
  HttpResponse limited;
  limited.status = 429;
  Gateway::ApplyDenyStatus(plain, limited);
  EXPECT_EQ(limited.status, 429);  // not asked: the real status

  HttpRequest nginx;
  nginx.headers.emplace_back("x-gatehouse-deny-status", "403");
  Gateway::ApplyDenyStatus(nginx, limited);
  EXPECT_EQ(limited.status, 403);
  EXPECT_EQ(ResponseHeader(limited, "X-Gatehouse-Status"), "429");

  for (int status : {200, 401, 403}) {  // what auth_request understands stays as it is
    HttpResponse r;
    r.status = status;
    Gateway::ApplyDenyStatus(nginx, r);
    EXPECT_EQ(r.status, status);
    EXPECT_FALSE(ResponseHeader(r, "X-Gatehouse-Status"));
  }
  HttpRequest odd;
  odd.headers.emplace_back("x-gatehouse-deny-status", "500");
  HttpResponse unavailable;
  unavailable.status = 503;
  Gateway::ApplyDenyStatus(odd, unavailable);
  EXPECT_EQ(unavailable.status, 503);  // only 401 and 403 may be asked for
}

}  // namespace
}  // namespace gatehouse

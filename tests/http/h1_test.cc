// HTTP/1.1 framing: what gatehouse accepts, and every ambiguity it refuses (each one is a way
// to make two parsers disagree about where a message ends).
#include "http/h1.h"

#include <gtest/gtest.h>

namespace gatehouse::h1 {
namespace {

Status Request(std::string_view in, RequestHead& h, Limits limits = {}) {
  return ParseRequest(in, limits, h);
}

TEST(H1Request, ParsesLineFieldsAndFraming) {
  RequestHead h;
  std::string in =
      "POST /v1/x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Empty:\r\n"
      "Authorization:  Bearer k \r\n\r\nhello";
  ASSERT_EQ(Request(in, h), Status::kComplete);
  EXPECT_EQ(h.method, "POST");
  EXPECT_EQ(h.target, "/v1/x?y=1");
  EXPECT_EQ(h.minor_version, 1);
  EXPECT_EQ(h.framing, Framing::kLength);
  EXPECT_EQ(h.content_length, 5u);
  EXPECT_EQ(h.head_bytes, in.size() - 5);
  EXPECT_EQ(h.Find("authorization"), "Bearer k");
  EXPECT_EQ(h.Find("x-empty"), "");
  EXPECT_FALSE(h.Find("missing"));
  EXPECT_TRUE(h.keep_alive);
}

TEST(H1Request, IncompleteUntilTheBlankLine) {
  RequestHead h;
  EXPECT_EQ(Request("GET / HTTP/1.1\r\nHost: a\r\n", h), Status::kIncomplete);
  EXPECT_EQ(Request("GET / HTTP/1.1\r\nHost: a\r\n\r", h), Status::kIncomplete);
  EXPECT_EQ(Request("", h), Status::kIncomplete);
  EXPECT_EQ(Request("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", h), Status::kComplete);
  EXPECT_EQ(h.head_bytes, 31u);
}

TEST(H1Request, KeepAliveFollowsVersionAndConnection) {
  RequestHead h;
  ASSERT_EQ(Request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", h),
            Status::kComplete);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_EQ(Request("GET / HTTP/1.0\r\n\r\n", h), Status::kComplete);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_EQ(Request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", h), Status::kComplete);
  EXPECT_TRUE(h.keep_alive);
  ASSERT_EQ(Request("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-foo, close\r\n\r\n", h),
            Status::kComplete);
  EXPECT_TRUE(h.ListedInConnection().Contains("X-Foo"));
  EXPECT_FALSE(h.ListedInConnection().Contains("x-bar"));
}

TEST(H1Request, ChunkedAndExpect) {
  RequestHead h;
  ASSERT_EQ(Request("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n"
                    "Expect: 100-continue\r\n\r\n",
                    h),
            Status::kComplete);
  EXPECT_EQ(h.framing, Framing::kChunked);
  EXPECT_TRUE(h.expect_continue);
}

TEST(H1Request, RefusesAmbiguousFraming) {
  RequestHead h;
  auto with = [&](std::string fields) {
    return Request("POST / HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n", h);
  };
  EXPECT_EQ(with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), Status::kBadFraming);
  EXPECT_EQ(with("Content-Length: 5\r\nContent-Length: 6\r\n"), Status::kBadFraming);
  EXPECT_EQ(with("Content-Length: 5\r\nContent-Length: 5\r\n"), Status::kComplete);
  EXPECT_EQ(with("Content-Length: 5, 5\r\n"), Status::kBadFraming);
  EXPECT_EQ(with("Content-Length: +5\r\n"), Status::kBadFraming);
  EXPECT_EQ(with("Content-Length: 99999999999999999999\r\n"), Status::kBadFraming);
  EXPECT_EQ(with("Transfer-Encoding: gzip, chunked\r\n"), Status::kBadFraming);
  EXPECT_EQ(with("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Status::kBadFraming);
  EXPECT_EQ(with("Transfer-Encoding: identity\r\n"), Status::kBadFraming);
  EXPECT_EQ(Request("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", h),
            Status::kBadFraming);
}

TEST(H1Request, RefusesMalformedLines) {
  RequestHead h;
  for (std::string bad : std::initializer_list<std::string>{
           "GARBAGE\r\n\r\n",
           "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",                     // double space
           "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",                     // trailing space
           "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",                   // space in target
           "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",                  // control in target
           "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",                      // non-token method
           "GET / HTTX/1.1\r\nHost: a\r\n\r\n",                      // version
           "GET / HTTP/1.1\r\nHost : a\r\n\r\n",                     // space before colon
           "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",           // obs-fold
           "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",                // bare LF
           "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",                // bare CR
           std::string("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", 30),  // NUL
           "GET / HTTP/1.1\r\nNoColon\r\n\r\n", "GET / HTTP/1.1\r\n: v\r\nHost: a\r\n\r\n",
           "GET / HTTP/1.1\r\n\r\n",                        // no Host
           "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  // two Hosts
       }) {
    EXPECT_EQ(Request(bad, h), Status::kMalformed) << bad;
  }
  EXPECT_EQ(Request("GET / HTTP/2.0\r\nHost: a\r\n\r\n", h), Status::kUnsupportedVersion);
}

TEST(H1Request, EnforcesLimits) {
  RequestHead h;
  Limits small{64, 2};
  EXPECT_EQ(
      Request("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(80, 'a') + "\r\n\r\n", h, small),
      Status::kTooLarge);
  EXPECT_EQ(Request("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(80, 'a'), h, small),
            Status::kTooLarge);
  EXPECT_EQ(Request("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", h, small),
            Status::kTooManyFields);
}

TEST(H1Response, FramingFollowsStatusMethodAndFields) {
  ResponseHead r;
  Limits l;
  ASSERT_EQ(ParseResponse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", l, false, r),
            Status::kComplete);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.reason, "OK");
  EXPECT_EQ(r.framing, Framing::kLength);
  ASSERT_EQ(ParseResponse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", l, true, r),
            Status::kComplete);
  EXPECT_EQ(r.framing, Framing::kNone);
  ASSERT_EQ(ParseResponse("HTTP/1.1 204\r\n\r\n", l, false, r), Status::kComplete);
  EXPECT_EQ(r.framing, Framing::kNone);
  EXPECT_EQ(r.reason, "");
  ASSERT_EQ(ParseResponse("HTTP/1.0 200 OK\r\n\r\n", l, false, r), Status::kComplete);
  EXPECT_EQ(r.framing, Framing::kUntilClose);
  EXPECT_FALSE(r.keep_alive);
  ASSERT_EQ(ParseResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", l, false, r),
            Status::kComplete);
  EXPECT_EQ(r.framing, Framing::kChunked);
  EXPECT_EQ(ParseResponse("HTTP/1.1 2x0 OK\r\n\r\n", l, false, r), Status::kMalformed);
  EXPECT_EQ(ParseResponse("HTTP/1.1 200OK\r\n\r\n", l, false, r), Status::kMalformed);
}

TEST(H1Chunked, DecodesAcrossArbitrarySplits) {
  const std::string wire = "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
  for (std::size_t split = 0; split <= wire.size(); ++split) {
    ChunkedDecoder d;
    std::string data;
    std::size_t used = d.Feed(std::string_view(wire).substr(0, split), &data);
    if (!d.done()) used += d.Feed(std::string_view(wire).substr(used), &data);
    ASSERT_TRUE(d.done()) << split;
    EXPECT_EQ(data, "hello world");
    EXPECT_EQ(wire.substr(used), "NEXT");
    EXPECT_EQ(d.data_bytes(), 11u);
  }
}

TEST(H1Chunked, RefusesMalformedChunks) {
  for (std::string bad :
       std::initializer_list<std::string>{"x\r\n", "\r\n", "5\r\nhelloX\r\n", "5\nhello\r\n",
                                          "1234567890abcdef0\r\n", "0\r\n\x01\r\n\r\n", "-1\r\n"}) {
    ChunkedDecoder d;
    d.Feed(bad, nullptr);
    EXPECT_TRUE(d.failed()) << bad;
  }
}

}  // namespace
}  // namespace gatehouse::h1

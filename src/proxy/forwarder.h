// Streams one request to an upstream and its response back, over pooled keep-alive connections.
// Included only by http/server.cc: it is a template over the client stream type (plain or TLS)
// and pulls in Beast, which we keep out of every other translation unit.
//
// Bodies are relayed in 16 KiB pieces as they arrive, both ways, so server-sent events (AI token
// streams) reach the client as the upstream writes them. Failures before the response starts
// become JSON errors: refused or reset -> 502 upstream_unavailable, timeouts -> 504
// upstream_timeout. After the response has started, the only honest signal left is to close.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <string>
#include <unordered_map>
#include <vector>

#include "authz/principal.h"
#include "config/config.h"
#include "core/text.h"
#include "gateway/gateway.h"
#include "http/message.h"

namespace gatehouse::proxy {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
inline constexpr auto kNoThrow = net::as_tuple(net::use_awaitable);
// Upstream responses with a declared length up to this are read whole and sent in one write.
inline constexpr std::uint64_t kBufferWholeBelow = 64 * 1024;

// Per worker thread; never shared, so no locks.
class UpstreamPool {
 public:
  static constexpr std::size_t kMaxIdlePerUpstream = 256;

  struct Lease {
    std::unique_ptr<beast::tcp_stream> stream;
    bool reused = false;
  };

  net::awaitable<std::pair<Lease, Error>> Acquire(const RouteConfig& route, bool allow_reuse) {
    Target& t = targets_[route.upstream_authority];
    while (allow_reuse && !t.idle.empty()) {
      auto s = std::move(t.idle.back());
      t.idle.pop_back();
      if (s->socket().is_open()) co_return std::pair{Lease{std::move(s), true}, Error{}};
    }
    auto ex = co_await net::this_coro::executor;
    if (t.endpoints.empty()) {
      tcp::resolver resolver(ex);
      auto [ec, results] = co_await resolver.async_resolve(
          route.upstream_host, std::to_string(route.upstream_port), kNoThrow);
      if (ec || results.empty()) {
        co_return std::pair{
            Lease{},
            Error{ErrorCode::kUpstreamUnavailable, "upstream host cannot be resolved", {}, {}}};
      }
      for (const auto& r : results) t.endpoints.push_back(r.endpoint());
    }
    auto stream = std::make_unique<beast::tcp_stream>(ex);
    stream->expires_after(route.connect_timeout);
    auto [ec, ep] = co_await stream->async_connect(t.endpoints, kNoThrow);
    if (ec) {
      if (ec == beast::error::timeout) {
        co_return std::pair{Lease{}, Error{ErrorCode::kUpstreamTimeout,
                                           "upstream did not accept the connection in time",
                                           {},
                                           {}}};
      }
      co_return std::pair{
          Lease{},
          Error{ErrorCode::kUpstreamUnavailable, "upstream refused the connection", {}, {}}};
    }
    stream->socket().set_option(tcp::no_delay(true));
    co_return std::pair{Lease{std::move(stream), false}, Error{}};
  }

  void Release(const RouteConfig& route, std::unique_ptr<beast::tcp_stream> s) {
    Target& t = targets_[route.upstream_authority];
    if (t.idle.size() < kMaxIdlePerUpstream) {
      s->expires_never();
      t.idle.push_back(std::move(s));
    }
  }

  void CloseAll() {
    for (auto& [k, t] : targets_) {
      for (auto& s : t.idle) {
        beast::error_code ec;
        s->socket().close(ec);
      }
      t.idle.clear();
    }
  }

 private:
  struct Target {
    std::vector<tcp::endpoint> endpoints;
    std::vector<std::unique_ptr<beast::tcp_stream>> idle;
  };
  std::unordered_map<std::string, Target> targets_;
};

// Removes hop-by-hop headers, including any the Connection header names (RFC 9110 §7.6.1).
// Transfer-Encoding and Content-Length stay: they describe the body framing we relay as is.
template <class Fields>
void StripHopByHop(Fields& f) {
  std::string listed(f[http::field::connection]);
  std::size_t start = 0;
  while (start < listed.size()) {
    std::size_t end = listed.find(',', start);
    if (end == std::string::npos) end = listed.size();
    std::string token = listed.substr(start, end - start);
    while (!token.empty() && token.front() == ' ') token.erase(0, 1);
    while (!token.empty() && token.back() == ' ') token.pop_back();
    if (!token.empty() && !EqualsIgnoreCase(token, "transfer-encoding") &&
        !EqualsIgnoreCase(token, "content-length")) {
      f.erase(token);
    }
    start = end + 1;
  }
  for (auto field : {http::field::connection, http::field::keep_alive,
                     http::field::proxy_authenticate, http::field::proxy_authorization,
                     http::field::te, http::field::trailer, http::field::upgrade}) {
    f.erase(field);
  }
  f.erase("Proxy-Connection");
}

struct ForwardContext {
  const RouteConfig* route = nullptr;
  const Principal* principal = nullptr;
  std::string_view request_id;
  std::string_view client_ip;
  std::string_view peer_ip;
  bool client_tls = false;
  const LimitsConfig* limits = nullptr;
};

struct ForwardResult {
  int status = 0;                 // what the client got (or would have got)
  bool response_started = false;  // false: the caller must send `error`
  bool client_reusable = false;   // the client connection may serve another request
  Error error;
};

inline std::string UpstreamTarget(const RouteConfig& route, std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  std::string_view query = target.substr(path.size());
  std::string out = route.upstream_base_path;
  if (route.strip_prefix) {
    path.remove_prefix(std::min(path.size(), route.path_prefix.size()));
    if (!path.starts_with('/')) out += '/';
  }
  out += path;
  if (out.empty()) out = "/";
  out += query;
  return out;
}

// Relays the request body (if any) from the client to the upstream, piece by piece.
template <class ClientStream>
net::awaitable<beast::error_code> RelayRequestBody(ClientStream& client,
                                                   beast::flat_buffer& client_buf,
                                                   beast::tcp_stream& upstream,
                                                   http::request_parser<http::buffer_body>& p,
                                                   http::request_serializer<http::buffer_body>& sr,
                                                   Millis idle) {
  char buf[16 * 1024];
  while (!p.is_done()) {
    p.get().body().data = buf;
    p.get().body().size = sizeof(buf);
    beast::get_lowest_layer(client).expires_after(idle);
    auto [rec, rn] = co_await http::async_read_some(client, client_buf, p, kNoThrow);
    if (rec && rec != http::error::need_buffer) co_return rec;
    p.get().body().size = sizeof(buf) - p.get().body().size;
    p.get().body().data = buf;
    p.get().body().more = !p.is_done();
    if (p.get().body().size == 0 && !p.is_done()) continue;
    upstream.expires_after(idle);
    auto [wec, wn] = co_await http::async_write(upstream, sr, kNoThrow);
    if (wec && wec != http::error::need_buffer) co_return wec;
  }
  if (!sr.is_done()) {
    p.get().body().data = nullptr;
    p.get().body().size = 0;
    p.get().body().more = false;
    upstream.expires_after(idle);
    auto [wec, wn] = co_await http::async_write(upstream, sr, kNoThrow);
    if (wec && wec != http::error::need_buffer) co_return wec;
  }
  co_return beast::error_code{};
}

template <class ClientStream>
net::awaitable<ForwardResult> Forward(ClientStream& client, beast::flat_buffer& client_buf,
                                      http::request_parser<http::empty_body>& header_parser,
                                      const ForwardContext& ctx, UpstreamPool& pool) {
  const RouteConfig& route = *ctx.route;
  ForwardResult result;
  http::request_parser<http::buffer_body> p(std::move(header_parser));
  p.body_limit(ctx.limits->max_proxy_body_bytes);
  auto& req = p.get();
  const bool head = req.method() == http::verb::head;
  const bool client_keep_alive = req.keep_alive();
  const bool has_body = !p.is_done();

  // Build the upstream request in place: the client's headers minus what must not pass.
  std::string original_target(req.target());
  StripHopByHop(req);
  for (auto h : kIdentityHeaders) req.erase(h);
  req.erase("X-Request-Id");
  req.erase(http::field::expect);
  if (!route.forward_credential) {
    req.erase(http::field::authorization);
    req.erase("X-API-Key");
  }
  req.target(UpstreamTarget(route, original_target));
  req.set(http::field::host, route.upstream_authority);
  for (auto& [name, value] : Gateway::IdentityHeaders(*ctx.principal)) req.set(name, value);
  req.set("X-Request-Id", ctx.request_id);
  // X-Forwarded-For: a trusted proxy's list is kept and extended; anyone else's is replaced.
  std::string xff(req["X-Forwarded-For"]);
  if (ctx.client_ip == ctx.peer_ip || xff.empty())
    xff = std::string(ctx.peer_ip);
  else
    xff += ", " + std::string(ctx.peer_ip);
  req.set("X-Forwarded-For", xff);
  req.set("X-Forwarded-Proto", ctx.client_tls ? "https" : "http");
  for (const auto& [name, value] : route.add_headers) req.set(name, value);
  req.version(11);
  req.keep_alive(true);

  if (has_body && p.content_length() && *p.content_length() > ctx.limits->max_proxy_body_bytes) {
    result.error = Error{ErrorCode::kPayloadTooLarge, "request body is too large", {}, {}};
    result.status = 413;
    co_return result;
  }

  // A pooled connection may have been closed by the upstream while idle; that shows only when
  // we use it. Without a body the request can be replayed once on a fresh connection.
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto [lease, err] = co_await pool.Acquire(route, attempt == 0);
    if (!lease.stream) {
      result.error = err;
      result.status = ErrorStatus(err.code);
      co_return result;
    }
    beast::tcp_stream& up = *lease.stream;
    bool retryable = lease.reused && !has_body;

    http::request_serializer<http::buffer_body> sr{req};
    req.body().data = nullptr;
    req.body().size = 0;
    req.body().more = has_body;
    up.expires_after(route.response_timeout);
    auto [hec, hn] = co_await http::async_write_header(up, sr, kNoThrow);
    if (hec) {
      if (retryable) continue;
      result.error = Error{ErrorCode::kUpstreamUnavailable, "upstream connection failed", {}, {}};
      result.status = 502;
      co_return result;
    }
    if (has_body) {
      auto bec =
          co_await RelayRequestBody(client, client_buf, up, p, sr, route.stream_idle_timeout);
      if (bec) {
        if (bec == http::error::body_limit) {
          result.error = Error{ErrorCode::kPayloadTooLarge, "request body is too large", {}, {}};
          result.status = 413;
        } else {
          result.error =
              Error{ErrorCode::kUpstreamUnavailable, "request body relay failed", {}, {}};
          result.status = 502;
        }
        co_return result;
      }
    } else if (!sr.is_done()) {
      auto [wec, wn] = co_await http::async_write(up, sr, kNoThrow);
      (void)wn;
      if (wec && wec != http::error::need_buffer) {
        if (retryable) continue;
        result.error = Error{ErrorCode::kUpstreamUnavailable, "upstream connection failed", {}, {}};
        result.status = 502;
        co_return result;
      }
    }

    beast::flat_buffer up_buf;
    http::response_parser<http::empty_body> hrp;
    hrp.header_limit(64 * 1024);
    hrp.eager(false);
    if (head) hrp.skip(true);
    up.expires_after(route.response_timeout);
    auto [rec, rn] = co_await http::async_read_header(up, up_buf, hrp, kNoThrow);
    if (rec) {
      if (retryable && (rec == http::error::end_of_stream || rec == net::error::connection_reset ||
                        rec == net::error::eof)) {
        continue;
      }
      if (rec == beast::error::timeout) {
        result.error =
            Error{ErrorCode::kUpstreamTimeout, "upstream did not answer in time", {}, {}};
        result.status = 504;
      } else {
        result.error =
            Error{ErrorCode::kUpstreamUnavailable, "upstream sent no valid response", {}, {}};
        result.status = 502;
      }
      co_return result;
    }
    const bool upstream_keep_alive = hrp.get().keep_alive();
    result.status = static_cast<int>(hrp.get().result_int());
    auto finish_headers = [&](auto& res) {
      StripHopByHop(res);
      res.set("X-Request-Id", ctx.request_id);
      res.keep_alive(client_keep_alive);
    };

    // A small response with a declared length is read whole and sent in one write; anything
    // else (chunked, event streams, large bodies) is relayed piece by piece as it arrives.
    bool small =
        hrp.content_length() && *hrp.content_length() <= kBufferWholeBelow &&
        hrp.get()[http::field::content_type].find("text/event-stream") == std::string_view::npos;
    if (hrp.is_done() || small) {
      http::response_parser<http::string_body> rp(std::move(hrp));
      if (!rp.is_done()) {
        up.expires_after(route.stream_idle_timeout);
        auto [bec, bn] = co_await http::async_read(up, up_buf, rp, kNoThrow);
        if (bec) {
          result.error =
              Error{ErrorCode::kUpstreamUnavailable, "upstream response was cut short", {}, {}};
          result.status = 502;
          co_return result;
        }
      }
      auto& res = rp.get();
      finish_headers(res);
      result.response_started = true;
      beast::get_lowest_layer(client).expires_after(route.stream_idle_timeout);
      http::response_serializer<http::string_body> csr{res};
      if (head) {
        auto [wec, wn] = co_await http::async_write_header(client, csr, kNoThrow);
        if (wec) co_return result;
      } else {
        auto [wec, wn] = co_await http::async_write(client, csr, kNoThrow);
        if (wec) co_return result;
      }
      if (upstream_keep_alive && up_buf.size() == 0) pool.Release(route, std::move(lease.stream));
      result.client_reusable = client_keep_alive && p.is_done();
      co_return result;
    }

    http::response_parser<http::buffer_body> rp(std::move(hrp));
    rp.body_limit(boost::none);
    auto& res = rp.get();
    finish_headers(res);
    result.response_started = true;

    http::response_serializer<http::buffer_body> csr{res};
    char buf[16 * 1024];
    res.body().data = nullptr;
    res.body().size = 0;
    res.body().more = !rp.is_done();
    beast::get_lowest_layer(client).expires_after(route.stream_idle_timeout);
    auto [cwec, cwn] = co_await http::async_write_header(client, csr, kNoThrow);
    if (cwec) co_return result;
    while (!rp.is_done()) {
      res.body().data = buf;
      res.body().size = sizeof(buf);
      up.expires_after(route.stream_idle_timeout);
      auto [uec, un] = co_await http::async_read_some(up, up_buf, rp, kNoThrow);
      if (uec && uec != http::error::need_buffer) co_return result;  // closes the client too
      res.body().size = sizeof(buf) - res.body().size;
      res.body().data = buf;
      res.body().more = !rp.is_done();
      if (res.body().size == 0 && !rp.is_done()) continue;
      beast::get_lowest_layer(client).expires_after(route.stream_idle_timeout);
      auto [wec, wn] = co_await http::async_write(client, csr, kNoThrow);
      if (wec && wec != http::error::need_buffer) co_return result;
    }
    if (!csr.is_done()) {
      res.body().data = nullptr;
      res.body().size = 0;
      res.body().more = false;
      auto [wec, wn] = co_await http::async_write(client, csr, kNoThrow);
      if (wec && wec != http::error::need_buffer) co_return result;
    }
    if (upstream_keep_alive && rp.is_done() && up_buf.size() == 0) {
      pool.Release(route, std::move(lease.stream));
    }
    result.client_reusable = client_keep_alive && p.is_done();
    co_return result;
  }
  result.error = Error{ErrorCode::kUpstreamUnavailable, "upstream connection failed", {}, {}};
  result.status = 502;
  co_return result;
}

}  // namespace gatehouse::proxy

#include "http/server.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <type_traits>
#include <unordered_set>

#include "core/random.h"
#include "core/text.h"
#include "proxy/forwarder.h"

namespace gatehouse {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using proxy::kNoThrow;

namespace {

struct Worker {
  net::io_context ioc{1};
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  // Connections waiting for their next request; touched only on this worker's thread.
  std::unordered_set<beast::tcp_stream*> idle;
  proxy::UpstreamPool upstreams;
  std::thread thread;
};

// What one request was, for the access log and metrics.
struct Exchange {
  std::string request_id;
  std::string method;
  std::string path;
  std::string client_ip;
  std::string principal;
  std::size_t slot = 0;
  int status = 0;
  std::chrono::steady_clock::time_point start;
};

Result<std::shared_ptr<ssl::context>> MakeTlsContext(const ListenerConfig& l) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(
      native, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
  // TLS 1.2: forward-secret AEAD suites only. TLS 1.3 suites are all AEAD already.
  SSL_CTX_set_cipher_list(native,
                          "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                          "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                          "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305");
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(l.tls_cert_file, ec);
  if (ec) {
    return Fail(ErrorCode::kInvalidArgument,
                "cannot load TLS certificate " + l.tls_cert_file + ": " + ec.message());
  }
  ctx->use_private_key_file(l.tls_key_file, ssl::context::pem, ec);
  if (ec) {
    return Fail(ErrorCode::kInvalidArgument,
                "cannot load TLS key " + l.tls_key_file + ": " + ec.message());
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    return Fail(ErrorCode::kInvalidArgument, "TLS key does not match the certificate");
  }
  return ctx;
}

std::string ClientAddress(const Config& cfg, std::string_view peer,
                          const http::request_header<>& h) {
  if (cfg.trusted_proxy_cidrs.empty() || !AllowedBy(cfg.trusted_proxy_cidrs, peer)) {
    return std::string(peer);
  }
  auto it = h.find("X-Forwarded-For");
  if (it == h.end()) return std::string(peer);
  // Walk from the right: the first address not itself a trusted proxy is the client.
  std::string_view list = it->value();
  while (!list.empty()) {
    auto comma = list.rfind(',');
    std::string_view item = comma == std::string_view::npos ? list : list.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!ParseIp(item)) return std::string(peer);
    if (!AllowedBy(cfg.trusted_proxy_cidrs, item)) return std::string(item);
    if (comma == std::string_view::npos) return std::string(item);
    list = list.substr(0, comma);
  }
  return std::string(peer);
}

// Cancels a pending read when its deadline passes, leaving the socket open so that the client
// still gets its 408. (beast::tcp_stream's own timeout closes the socket; it stays armed a little
// later as a backstop.) The handler holds only shared state: everything runs on one thread, and
// `done` is set before the guarded stream can go away.
class ReadWatchdog {
 public:
  ReadWatchdog(beast::tcp_stream& stream, Millis deadline)
      : state_(std::make_shared<State>(State{&stream, false, false})),
        timer_(stream.get_executor()) {
    stream.expires_after(deadline + std::chrono::seconds(1));
    timer_.expires_after(deadline);
    timer_.async_wait([st = state_](const boost::system::error_code& ec) {
      if (ec || st->done) return;
      st->fired = true;
      boost::system::error_code ignored;
      st->stream->socket().cancel(ignored);
    });
  }
  ~ReadWatchdog() {
    state_->done = true;
    timer_.cancel();
  }
  bool fired() const { return state_->fired; }

 private:
  struct State {
    beast::tcp_stream* stream;
    bool fired;
    bool done;
  };
  std::shared_ptr<State> state_;
  net::steady_timer timer_;
};

}  // namespace

class Server::Impl {
 public:
  explicit Impl(Parts parts)
      : parts_(std::move(parts)),
        cfg_(*parts_.config),
        blocking_(static_cast<std::size_t>(std::max(1, parts_.blocking_threads))) {
    if (parts_.access_log) {
      access_ = spdlog::get("access");
      if (!access_) {
        access_ = spdlog::stdout_logger_mt("access");
        access_->set_pattern("%v");
      }
    }
    // Metrics slots: router routes first, then gateway routes.
    std::vector<std::string> labels;
    std::size_t slot = 1;
    for (auto& r : parts_.router->mutable_routes()) {
      r.metrics_index = slot++;
      labels.push_back(r.method + " " + r.pattern);
    }
    gateway_slot_base_ = slot;
    if (parts_.gateway) {
      for (const auto& r : cfg_.routes) labels.push_back("proxy:" + r.name);
    }
    parts_.metrics->DefineRoutes(std::move(labels));
  }

  Result<void> Start() {
    int n = parts_.threads > 0
                ? parts_.threads
                : (cfg_.threads > 0
                       ? cfg_.threads
                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    for (int i = 0; i < n; ++i) workers_.push_back(std::make_unique<Worker>());
    for (std::size_t li = 0; li < parts_.listeners.size(); ++li) {
      const auto& l = parts_.listeners[li];
      std::shared_ptr<ssl::context> tls;
      if (l.tls()) {
        auto ctx = MakeTlsContext(l);
        if (!ctx) return tl::unexpected(ctx.error());
        tls = *ctx;
      }
      tls_.push_back(tls);
      std::uint16_t port = l.port;
      for (auto& w : workers_) {
        boost::system::error_code ec;
        auto acc = std::make_unique<tcp::acceptor>(w->ioc);
        tcp::endpoint ep(net::ip::make_address(l.host, ec), port);
        if (ec) return Fail(ErrorCode::kInvalidArgument, "bad listen host " + l.host);
        acc->open(ep.protocol(), ec);
        if (!ec) acc->set_option(net::socket_base::reuse_address(true), ec);
        if (!ec) {
          int one = 1;
          if (::setsockopt(acc->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) !=
              0) {
            ec = boost::system::error_code(errno, boost::system::system_category());
          }
        }
        if (!ec) acc->bind(ep, ec);
        if (!ec) acc->listen(net::socket_base::max_listen_connections, ec);
        if (ec) {
          return Fail(ErrorCode::kUnavailable, "cannot listen on " + l.host + ":" +
                                                   std::to_string(port) + ": " + ec.message());
        }
        // Port 0: the first acceptor picks the port, the others share it.
        port = acc->local_endpoint().port();
        w->acceptors.push_back(std::move(acc));
      }
      ports_.push_back(port);
    }
    for (auto& w : workers_) {
      for (std::size_t li = 0; li < w->acceptors.size(); ++li) {
        net::co_spawn(w->ioc, AcceptLoop(*w, *w->acceptors[li], li), net::detached);
      }
      Worker* wp = w.get();
      w->thread = std::thread([wp] {
        auto guard = net::make_work_guard(wp->ioc);
        wp->ioc.run();
      });
    }
    return {};
  }

  std::vector<std::uint16_t> ports() const { return ports_; }

  Result<void> ReloadTls() {
    for (std::size_t li = 0; li < parts_.listeners.size(); ++li) {
      if (!parts_.listeners[li].tls()) continue;
      auto ctx = MakeTlsContext(parts_.listeners[li]);
      if (!ctx) return tl::unexpected(ctx.error());
      std::lock_guard lock(tls_mu_);
      tls_[li] = *ctx;
    }
    return {};
  }

  void Shutdown() {
    std::lock_guard lock(shutdown_mu_);
    if (stopped_) return;
    draining_.store(true);
    for (auto& w : workers_) {
      net::post(w->ioc, [wp = w.get()] {
        for (auto& a : wp->acceptors) {
          boost::system::error_code ec;
          a->close(ec);
        }
        CloseIdle(*wp);
      });
    }
    auto deadline = std::chrono::steady_clock::now() + cfg_.limits.drain_timeout;
    while (in_flight_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      for (auto& w : workers_) net::post(w->ioc, [wp = w.get()] { CloseIdle(*wp); });
    }
    for (auto& w : workers_) {
      net::post(w->ioc, [wp = w.get()] { wp->upstreams.CloseAll(); });
      w->ioc.stop();
    }
    for (auto& w : workers_) {
      if (w->thread.joinable()) w->thread.join();
    }
    blocking_.join();
    stopped_ = true;
  }

  void RunUntilSignalled(std::function<void()> periodic, Millis period) {
    net::io_context sig_ioc{1};
    net::signal_set signals(sig_ioc, SIGINT, SIGTERM, SIGHUP);
    std::function<void(const boost::system::error_code&, int)> on_signal;
    on_signal = [&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        if (auto r = ReloadTls(); !r)
          spdlog::error("TLS reload failed, keeping the old certificate: {}", r.error().message);
        else
          spdlog::info("TLS certificates reloaded");
        signals.async_wait(on_signal);
        return;
      }
      spdlog::info("signal {}: draining", sig);
      sig_ioc.stop();
    };
    signals.async_wait(on_signal);
    net::steady_timer timer(sig_ioc);
    std::function<void(const boost::system::error_code&)> tick;
    tick = [&](const boost::system::error_code& ec) {
      if (ec) return;
      if (periodic) periodic();
      timer.expires_after(period);
      timer.async_wait(tick);
    };
    timer.expires_after(period);
    timer.async_wait(tick);
    sig_ioc.run();
    Shutdown();
    if (periodic) periodic();
  }

 private:
  static void CloseIdle(Worker& w) {
    for (auto* s : w.idle) {
      boost::system::error_code ec;
      s->socket().shutdown(tcp::socket::shutdown_both, ec);
      s->socket().close(ec);
    }
    w.idle.clear();
  }

  net::awaitable<void> AcceptLoop(Worker& w, tcp::acceptor& acc, std::size_t listener) {
    for (;;) {
      auto [ec, sock] = co_await acc.async_accept(kNoThrow);
      if (ec) {
        if (ec == net::error::operation_aborted || draining_.load() || !acc.is_open()) co_return;
        // Out of descriptors or similar: back off instead of spinning.
        net::steady_timer t(w.ioc, std::chrono::milliseconds(50));
        co_await t.async_wait(kNoThrow);
        continue;
      }
      if (static_cast<std::size_t>(parts_.metrics->connections_open.load()) >=
          cfg_.limits.max_connections) {
        parts_.metrics->connections_rejected.fetch_add(1);
        boost::system::error_code ignored;
        sock.close(ignored);
        continue;
      }
      boost::system::error_code opt_ec;
      sock.set_option(tcp::no_delay(true), opt_ec);
      std::shared_ptr<ssl::context> tls;
      {
        std::lock_guard lock(tls_mu_);
        tls = tls_[listener];
      }
      if (tls)
        net::co_spawn(w.ioc, ServeTls(w, std::move(sock), tls), net::detached);
      else
        net::co_spawn(w.ioc, ServePlain(w, std::move(sock)), net::detached);
    }
  }

  net::awaitable<void> ServePlain(Worker& w, tcp::socket sock) {
    std::string peer = PeerAddress(sock);
    beast::tcp_stream stream(std::move(sock));
    co_await ServeConnection(w, stream, peer, false);
  }

  net::awaitable<void> ServeTls(Worker& w, tcp::socket sock, std::shared_ptr<ssl::context> ctx) {
    std::string peer = PeerAddress(sock);
    beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(sock)), *ctx);
    beast::get_lowest_layer(stream).expires_after(cfg_.limits.header_timeout);
    auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, kNoThrow);
    if (ec) co_return;  // failed handshakes (old TLS versions, plain HTTP) just close
    co_await ServeConnection(w, stream, peer, true);
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(1));
    auto [sec] = co_await stream.async_shutdown(kNoThrow);
    (void)sec;
  }

  static std::string PeerAddress(const tcp::socket& s) {
    boost::system::error_code ec;
    auto ep = s.remote_endpoint(ec);
    if (ec) return "0.0.0.0";
    auto a = ep.address();
    if (a.is_v6() && a.to_v6().is_v4_mapped()) {
      return net::ip::make_address_v4(net::ip::v4_mapped, a.to_v6()).to_string();
    }
    return a.to_string();
  }

  template <class Stream>
  net::awaitable<bool> Write(Stream& stream, HttpResponse&& r, Exchange& ex, bool keep_alive,
                             bool head, bool no_store) {
    // Every header here is gatehouse's own, so the head is written straight into one string
    // and sent with the body in a single gather write: Beast's field container and serializer
    // cost an allocation per header and most of a microsecond per response.
    std::string text;
    text.reserve(256 + r.headers.size() * 64);
    text += "HTTP/1.1 ";
    text += std::to_string(r.status);
    text += ' ';
    text += http::obsolete_reason(static_cast<http::status>(r.status));
    text += "\r\n";
    bool has_type = false;
    for (const auto& [k, v] : r.headers) {
      // Defence in depth: a header that could split the response is dropped, never sent.
      if (!IsHttpToken(k) || v.find_first_of("\r\n") != std::string::npos) continue;
      if (EqualsIgnoreCase(k, "content-type")) has_type = true;
      text += k;
      text += ": ";
      text += v;
      text += "\r\n";
    }
    if (!has_type && (!r.body.empty() || r.status >= 400)) {
      text += "Content-Type: application/json; charset=utf-8\r\n";
    }
    text += "X-Request-Id: ";
    text += ex.request_id;
    text += "\r\n";
    if (no_store) text += "Cache-Control: no-store\r\n";
    text += "X-Content-Type-Options: nosniff\r\nContent-Length: ";
    text += std::to_string(r.body.size());
    text += keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
    ex.status = r.status;
    beast::get_lowest_layer(stream).expires_after(cfg_.limits.body_timeout);
    std::array<net::const_buffer, 2> buffers{net::buffer(text),
                                             net::buffer(r.body.data(), head ? 0 : r.body.size())};
    auto [ec, n] = co_await net::async_write(stream, buffers, kNoThrow);
    co_return !ec;
  }

  void Finish(Exchange& ex) {
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - ex.start).count();
    parts_.metrics->ObserveRequest(ex.slot, ex.status, seconds);
    if (!access_) return;
    // Attacker-controlled fields are JSON-escaped by the serializer; the query string, which may
    // carry secrets, is never logged.
    boost::json::object line;
    line["ts"] = std::chrono::duration_cast<std::chrono::microseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    line["request_id"] = ex.request_id;
    line["method"] = ex.method;
    line["path"] = ex.path;
    line["status"] = ex.status;
    line["duration_ms"] = seconds * 1000.0;
    line["client_ip"] = ex.client_ip;
    if (!ex.principal.empty()) line["principal"] = ex.principal;
    access_->info(boost::json::serialize(line));
  }

  // Writes the JSON error and finishes the exchange. Returns whether the connection may go on.
  template <class Stream>
  net::awaitable<bool> SendError(Stream& stream, const Error& error, Exchange& ex, bool keep_alive,
                                 bool head = false) {
    if (ex.request_id.empty()) ex.request_id = "req_" + RandomBase62(20);
    HttpResponse r = ErrorResponse(error, ex.request_id);
    bool ok = co_await Write(stream, std::move(r), ex, keep_alive, head, true);
    Finish(ex);
    co_return ok&& keep_alive;
  }

  // A refused proxy request: an unread request body poisons the connection, so it closes then.
  template <class Stream>
  net::awaitable<bool> Refuse(Stream& stream, const Error& error, Exchange& ex,
                              bool keep_alive_requested, bool body_pending, bool head) {
    bool keep = keep_alive_requested && !body_pending && !draining_.load();
    co_return co_await SendError(stream, error, ex, keep, head);
  }

  template <class Stream>
  net::awaitable<HttpResponse> Dispatch(const RouteEntry& route, HttpRequest& req) {
    if (route.fast) {
      if (auto r = route.fast(req)) co_return std::move(*r);
    }
    if (route.kind == HandlerKind::kInline) co_return route.handler(req);
    Result<HttpResponse> r = co_await Offload([&] { return route.handler(req); }, req.request_id);
    if (!r) co_return ErrorResponse(r.error(), req.request_id);
    co_return std::move(*r);
  }

  // Runs a blocking function on the blocking pool and returns what it returned. Errors:
  // kUnavailable when the pool's queue is full (never an unbounded wait), kInternal when the
  // function threw (logged here; the caller answers with a generic 500).
  template <typename F, typename R = std::invoke_result_t<F&>>
  net::awaitable<Result<R>> Offload(F&& f, const std::string& request_id) {
    auto& m = *parts_.metrics;
    if (static_cast<std::size_t>(m.blocking_jobs_queued.fetch_add(1)) >=
        cfg_.limits.max_blocking_jobs) {
      m.blocking_jobs_queued.fetch_sub(1);
      m.blocking_jobs_rejected.fetch_add(1);
      co_return Fail(ErrorCode::kUnavailable, "server is busy; try again");
    }
    Result<R> out = Fail(ErrorCode::kInternal, "internal error");
    try {
      out = co_await net::co_spawn(
          blocking_, [&]() -> net::awaitable<R> { co_return f(); }, net::use_awaitable);
    } catch (const std::exception& e) {
      spdlog::error("request {} failed: {}", request_id, e.what());
    }
    m.blocking_jobs_queued.fetch_sub(1);
    co_return out;
  }

  template <class Stream>
  net::awaitable<void> ServeConnection(Worker& w, Stream& stream, const std::string& peer,
                                       bool tls) {
    auto& metrics = *parts_.metrics;
    metrics.connections_open.fetch_add(1);
    beast::flat_buffer buffer;
    auto& lowest = beast::get_lowest_layer(stream);
    for (;;) {
      if (draining_.load()) break;
      if (buffer.size() == 0) {
        // Idle keep-alive: wait for the first byte of the next request.
        lowest.expires_after(cfg_.limits.idle_timeout);
        w.idle.insert(&lowest);
        auto [ec, n] = co_await stream.async_read_some(buffer.prepare(4096), kNoThrow);
        w.idle.erase(&lowest);
        if (ec) break;
        buffer.commit(n);
      }
      in_flight_.fetch_add(1);
      bool keep = co_await ServeOne(w, stream, buffer, peer, tls);
      in_flight_.fetch_sub(1);
      if (!keep) break;
    }
    boost::system::error_code ec;
    lowest.socket().shutdown(tcp::socket::shutdown_send, ec);
    metrics.connections_open.fetch_sub(1);
  }

  // One request/response. Returns whether the connection may carry another.
  template <class Stream>
  net::awaitable<bool> ServeOne(Worker& w, Stream& stream, beast::flat_buffer& buffer,
                                const std::string& peer, bool tls) {
    auto& lowest = beast::get_lowest_layer(stream);
    Exchange ex;
    ex.start = std::chrono::steady_clock::now();
    ex.client_ip = peer;
    http::request_parser<http::empty_body> hp;
    hp.header_limit(static_cast<std::uint32_t>(cfg_.limits.max_header_bytes));
    hp.eager(false);
    std::optional<ReadWatchdog> watchdog;
    // Usually the whole header is already buffered, and parsing it cannot block: no timer then.
    std::string_view buffered(static_cast<const char*>(buffer.data().data()), buffer.size());
    if (buffered.find("\r\n\r\n") == std::string_view::npos) {
      watchdog.emplace(lowest, cfg_.limits.header_timeout);
    }
    auto [ec, n] = co_await http::async_read_header(stream, buffer, hp, kNoThrow);
    bool timed_out = watchdog && watchdog->fired();
    watchdog.reset();
    // g++ 12 mis-destroys temporaries inside co_await expressions, so errors are named locals
    // and coroutines only ever receive lvalues.
    std::optional<Error> early;
    if (ec) {
      if (timed_out) {
        early = Error{ErrorCode::kRequestTimeout, "request headers took too long", {}, {}};
        co_return co_await SendError(stream, *early, ex, false);
      }
      if (ec == http::error::end_of_stream || ec == net::error::eof ||
          ec == net::error::connection_reset || ec == net::error::operation_aborted) {
        co_return false;
      }
      if (ec == http::error::header_limit) {
        early = Error{ErrorCode::kHeadersTooLarge, "request headers are too large", {}, {}};
      } else if (ec == beast::error::timeout) {
        early = Error{ErrorCode::kRequestTimeout, "request headers took too long", {}, {}};
      } else {
        early = Error{ErrorCode::kInvalidArgument, "malformed HTTP request", {}, {}};
      }
      co_return co_await SendError(stream, *early, ex, false);
    }
    auto& h = hp.get();
    ex.method = std::string(h.method_string());
    std::string_view target = h.target();
    std::string_view path = target.substr(0, target.find('?'));
    ex.path = std::string(path.substr(0, 256));
    auto rid = h.find("X-Request-Id");
    ex.request_id = rid != h.end() && IsSafeRequestId(rid->value()) ? std::string(rid->value())
                                                                    : "req_" + RandomBase62(20);
    ex.client_ip = ClientAddress(cfg_, peer, h);
    std::size_t header_count = static_cast<std::size_t>(std::distance(h.begin(), h.end()));
    if (header_count > cfg_.limits.max_header_count) {
      early = Error{ErrorCode::kHeadersTooLarge, "too many request headers", {}, {}};
    } else if (target.size() > cfg_.limits.max_url_bytes) {
      early = Error{ErrorCode::kUriTooLong, "request URL is too long", {}, {}};
    } else if (!target.starts_with('/')) {
      early = Error{ErrorCode::kInvalidArgument, "request target must be a path", {}, {}};
    } else if (h.method() == http::verb::trace || h.method() == http::verb::connect) {
      early = Error{ErrorCode::kMethodNotAllowed, "method not allowed", {}, {}};
    }
    if (early) co_return co_await SendError(stream, *early, ex, false);
    const bool keep_alive_requested = h.keep_alive();
    const bool head = h.method() == http::verb::head;
    if (h[http::field::expect] == "100-continue" && !hp.is_done()) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      auto [cec, cn] = co_await net::async_write(
          stream, net::buffer(kContinue.data(), kContinue.size()), kNoThrow);
      if (cec) co_return false;
    }

    // Gateway routes: stream to the upstream.
    int groute = parts_.gateway ? parts_.gateway->Match(path) : -1;
    if (groute >= 0) {
      co_return co_await ServeProxy(w, stream, buffer, hp, ex, groute, peer, tls,
                                    keep_alive_requested);
    }

    // Control plane: read the whole (bounded) body, then dispatch.
    if (hp.content_length() && *hp.content_length() > cfg_.limits.max_body_bytes) {
      early = Error{ErrorCode::kPayloadTooLarge, "request body is too large", {}, {}};
      co_return co_await SendError(stream, *early, ex, false);
    }
    http::request_parser<http::string_body> p(std::move(hp));
    p.body_limit(cfg_.limits.max_body_bytes);
    if (!p.is_done()) {
      watchdog.emplace(lowest, cfg_.limits.body_timeout);
      auto [bec, bn] = co_await http::async_read(stream, buffer, p, kNoThrow);
      bool body_timed_out = watchdog->fired();
      watchdog.reset();
      if (body_timed_out) {
        early = Error{ErrorCode::kRequestTimeout, "request body took too long", {}, {}};
      } else if (bec == http::error::body_limit) {
        early = Error{ErrorCode::kPayloadTooLarge, "request body is too large", {}, {}};
      } else if (bec == beast::error::timeout) {
        early = Error{ErrorCode::kRequestTimeout, "request body took too long", {}, {}};
      } else if (bec) {
        early = Error{ErrorCode::kInvalidArgument, "malformed request body", {}, {}};
      }
      if (early) co_return co_await SendError(stream, *early, ex, false);
    }
    auto& msg = p.get();
    HttpRequest req;
    req.method = msg.method_string();
    req.target = msg.target();
    req.path = path;
    req.query = target.size() > path.size() ? target.substr(path.size() + 1) : std::string_view{};
    req.headers.reserve(16);
    for (const auto& f : msg) req.headers.emplace_back(f.name_string(), f.value());
    req.body = msg.body();
    req.client_ip = ex.client_ip;
    req.request_id = ex.request_id;

    HttpResponse res;
    auto match = parts_.router->Find(req);
    if (!match.route) {
      res = ErrorResponse(match.error, ex.request_id);
      if (!match.allow.empty()) res.SetHeader("Allow", match.allow);
    } else {
      ex.slot = match.route->metrics_index;
      res = co_await Dispatch<Stream>(*match.route, req);
    }
    if (auto p_it =
            std::find_if(res.headers.begin(), res.headers.end(),
                         [](const auto& kv) { return kv.first == "X-Gatehouse-Principal"; });
        p_it != res.headers.end()) {
      ex.principal = p_it->second;
    }
    bool keep = keep_alive_requested && !draining_.load();
    bool ok = co_await Write(stream, std::move(res), ex, keep, head, path.starts_with("/v1/"));
    Finish(ex);
    co_return ok&& keep;
  }

  template <class Stream>
  net::awaitable<bool> ServeProxy(Worker& w, Stream& stream, beast::flat_buffer& buffer,
                                  http::request_parser<http::empty_body>& hp, Exchange& ex,
                                  int groute, const std::string& peer, bool tls,
                                  bool keep_alive_requested) {
    auto& h = hp.get();
    std::string_view target = h.target();
    std::string_view path = target.substr(0, target.find('?'));
    ex.slot = gateway_slot_base_ + static_cast<std::size_t>(groute);
    // An unread request body poisons the connection: answer and close.
    bool body_pending = !hp.is_done();
    const bool head = h.method() == http::verb::head;
    if (auto canonical = Gateway::CheckPathIsCanonical(path); !canonical) {
      co_return co_await Refuse(stream, canonical.error(), ex, keep_alive_requested, body_pending,
                                head);
    }
    // Authenticate from headers alone: an unauthenticated client never gets to upload a body.
    HttpRequest req;
    req.method = h.method_string();
    req.target = target;
    req.path = path;
    req.query = target.size() > path.size() ? target.substr(path.size() + 1) : std::string_view{};
    for (const auto& f : h) req.headers.emplace_back(f.name_string(), f.value());
    req.client_ip = ex.client_ip;
    req.request_id = ex.request_id;
    std::optional<Result<Principal>> principal = parts_.authenticator->TryFast(req);
    if (!principal) {
      // Not cached: the store decides, off the network thread.
      Result<Result<Principal>> slow =
          co_await Offload([&] { return parts_.authenticator->Authenticate(req); }, ex.request_id);
      if (slow)
        principal = std::move(*slow);
      else
        principal = Result<Principal>(tl::unexpected(slow.error()));
    }
    if (!*principal) {
      co_return co_await Refuse(stream, principal->error(), ex, keep_alive_requested, body_pending,
                                head);
    }
    ex.principal = (*principal)->id;
    if (auto ok = parts_.gateway->Authorize(groute, req.method, **principal); !ok) {
      co_return co_await Refuse(stream, ok.error(), ex, keep_alive_requested, body_pending, head);
    }
    proxy::ForwardContext ctx;
    ctx.route = &parts_.gateway->route(groute);
    ctx.principal = &**principal;
    ctx.request_id = ex.request_id;
    ctx.client_ip = ex.client_ip;
    ctx.peer_ip = peer;
    ctx.client_tls = tls;
    ctx.limits = &cfg_.limits;
    proxy::ForwardResult fr = co_await proxy::Forward(stream, buffer, hp, ctx, w.upstreams);
    if (!fr.response_started) {
      parts_.metrics->upstream_errors.fetch_add(1);
      // The body may be half read; never reuse this connection.
      co_return co_await Refuse(stream, fr.error, ex, keep_alive_requested, true, head);
    }
    ex.status = fr.status;
    Finish(ex);
    co_return fr.client_reusable && !draining_.load();
  }

  Parts parts_;
  const Config& cfg_;
  std::vector<std::unique_ptr<Worker>> workers_;
  net::thread_pool blocking_;
  std::shared_ptr<spdlog::logger> access_;
  std::size_t gateway_slot_base_ = 0;
  std::vector<std::uint16_t> ports_;
  std::mutex tls_mu_;
  std::vector<std::shared_ptr<ssl::context>> tls_;  // guarded by tls_mu_
  std::atomic<bool> draining_{false};
  std::atomic<std::int64_t> in_flight_{0};
  std::mutex shutdown_mu_;
  bool stopped_ = false;
};

Server::Server(Parts parts) : impl_(std::make_unique<Impl>(std::move(parts))) {}
Server::~Server() { impl_->Shutdown(); }
Result<void> Server::Start() { return impl_->Start(); }
std::vector<std::uint16_t> Server::ports() const { return impl_->ports(); }
Result<void> Server::ReloadTls() { return impl_->ReloadTls(); }
void Server::Shutdown() { impl_->Shutdown(); }
void Server::RunUntilSignalled(std::function<void()> periodic, Millis period) {
  impl_->RunUntilSignalled(std::move(periodic), period);
}

}  // namespace gatehouse

#include "http/server.h"

#include "audit/details.h"
#include "audit/journal.h"
#include "core/heap_stats.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <type_traits>

#include "core/cidr.h"
#include "core/random.h"
#include "core/text.h"
#include "core/thread_name.h"
#include "http/connection.h"
#include "http/h1.h"
#include "proxy/forwarder.h"

namespace gatehouse {

namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using proxy::kNoThrow;

namespace {

// How often each worker checks its sockets' deadlines: the granularity of every timeout.
constexpr Millis kSweepEvery{50};
// Reads ask for this much room at a time; request heads grow the buffer up to their limit.
constexpr std::size_t kReadPiece = 4096;

// Member order is destruction order, reversed, and it matters: the io_context destroys the
// coroutine frames still suspended in it, whose deadlines unregister from `watches`, so
// `watches` must outlive it; sockets (acceptors, pooled upstream connections) need their
// io_context alive when they close, so they go first.
// A request waiting for its audit event to be durable.
struct AuditTicket {
  explicit AuditTicket(net::any_io_executor ex) : timer(ex) {}
  net::steady_timer timer;
  bool done = false;
  bool durable = false;

  // On the worker's thread: records the writer's verdict and wakes the waiting request.
  void Resolve(bool ok) {
    done = true;
    durable = ok;
    timer.cancel();
  }
};

// The audit writer's verdicts for one worker's requests. The writer thread appends here and
// posts one drain per batch, not one handler per request.
struct AuditCompletions {
  std::mutex mu;
  std::vector<std::pair<std::shared_ptr<AuditTicket>, bool>> ready;     // guarded by mu
  std::vector<std::pair<std::shared_ptr<AuditTicket>, bool>> draining;  // worker thread only
};

// The events one turn of a worker's loop decided, journaled together by a handler posted
// behind the turn's completions: one write() for the lot (AuditWriter::SubmitRecords). Worker
// thread only.
struct AuditRecordBatch {
  struct Outcome {
    bool journaled = false;  // SubmitRecords ran
    AuditWriter::Admission admission = AuditWriter::Admission::kFailed;
    // With fsync (kQueued): resolved once the fdatasync that covers the batch ended; every
    // request of the batch waits on its timer.
    std::shared_ptr<AuditTicket> synced;
  };
  std::string records;  // framed by EncodeJournalRecord
  std::size_t count = 0;
  std::shared_ptr<Outcome> outcome;  // one per batch, held by each of its requests
};

struct Worker {
  // jemalloc's count of the bytes this thread allocated (null: not on jemalloc, or the thread
  // ended); guarded by Server::Impl's allocated_mu_, read for /metrics.
  const std::uint64_t* allocated = nullptr;
  io::WatchList watches;  // touched only on this worker's thread
  net::io_context ioc{1};
  AuditCompletions audit_done;
  AuditRecordBatch audit_records;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  proxy::UpstreamPool upstreams;
  std::thread thread;
};

// An answer another thread (the Redis one) gives, waited for on the connection's own thread:
// the cluster's rate-limit decision, or its count of a key's credits.
template <class T>
struct CallbackTicket {
  explicit CallbackTicket(net::any_io_executor ex) : timer(ex) {}
  net::steady_timer timer;
  bool done = false;
  T value{};
};

// Calls `start` with a callback that may run once on any thread, and resumes here with its value.
template <class T, class Start>
net::awaitable<T> AwaitCallback(Start start) {
  auto ticket = std::make_shared<CallbackTicket<T>>(co_await net::this_coro::executor);
  auto executor = ticket->timer.get_executor();
  start([ticket, executor](T value) {
    net::post(executor, [ticket, value = std::move(value)]() mutable {
      ticket->value = std::move(value);
      ticket->done = true;
      ticket->timer.cancel();
    });
  });
  if (!ticket->done) {
    ticket->timer.expires_after(std::chrono::hours(1));
    co_await ticket->timer.async_wait(kNoThrow);
  }
  co_return std::move(ticket->value);
}

// What one request was, for the access log and metrics. Views point into the connection's
// buffers and live until Finish().
struct Exchange {
  std::array<char, 24> request_id_storage{};
  std::string_view request_id;
  std::string_view method;
  std::string_view path;
  std::string_view client_ip;
  std::string_view principal;             // lives as long as the exchange
  std::string_view org;                   // the principal's (or the refused key's) org, when known
  const h1::RequestHead* head = nullptr;  // once read; valid until Finish()
  const UpstreamServer* upstream = nullptr;  // the proxy's last attempt went to it
  // A 401 for a real key or session gone stale (RefusedAsStale): `principal` is then that key.
  bool stale_credential = false;
  std::size_t slot = 0;
  int status = 0;
  std::chrono::steady_clock::time_point start;
  // Added to an error response (rate-limit headers with a 429); empty for almost every request.
  std::vector<std::pair<std::string, std::string>> extra_headers;

  void MakeRequestId() {
    std::memcpy(request_id_storage.data(), "req_", 4);
    FillRandomBase62(std::span<char>(request_id_storage.data() + 4, 20));
    request_id = std::string_view(request_id_storage.data(), 24);
  }
};

// Everything a connection keeps between its requests, so that a request allocates nothing.
struct ConnectionState {
  ConnectionState(io::WatchList& watches, tcp::socket* socket, std::string peer_address)
      : deadline(watches, socket), peer(std::move(peer_address)) {}
  io::Deadline deadline;
  std::string peer;
  io::InputBuffer in;
  h1::RequestHead head;
  std::string head_copy;  // the head of a request with a body, which outlives `in`'s contents
  std::string body;
  std::string out;
  std::string rate_headers;  // the admitted request's RateLimit-* lines, reused
  HttpRequest request;
  // The request being served. Kept here rather than in ServeOne's coroutine frame, which must
  // stay under the size that Asio's frame cache recycles (2040 bytes); a larger frame is a
  // malloc per request and evicts the cached frames of the calls it makes.
  Exchange exchange;
};

// The client's address: the peer's, unless the peer is a trusted proxy, then the first
// X-Forwarded-For entry (from the right) that is not itself a trusted proxy.
std::string_view ClientAddress(const Config& cfg, std::string_view peer,
                               const h1::RequestHead& head) {
  if (cfg.trusted_proxy_cidrs.empty() || !AllowedBy(cfg.trusted_proxy_cidrs, peer)) return peer;
  auto header = head.Find("x-forwarded-for");
  if (!header) return peer;
  std::string_view list = *header;
  while (!list.empty()) {
    auto comma = list.rfind(',');
    std::string_view item = comma == std::string_view::npos ? list : list.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!ParseIp(item)) return peer;
    if (!AllowedBy(cfg.trusted_proxy_cidrs, item)) return item;
    if (comma == std::string_view::npos) return item;
    list = list.substr(0, comma);
  }
  return peer;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "";
  }
}

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

}  // namespace

class Server::Impl {
 public:
  explicit Impl(Parts parts)
      : parts_(std::move(parts)),
        cfg_(*parts_.config),
        blocking_(static_cast<std::size_t>(std::max(1, parts_.blocking_threads))),
        costly_(static_cast<std::size_t>(std::max(1, parts_.costly_threads))) {
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
    signals_ = std::make_unique<net::signal_set>(sig_ioc_, SIGINT, SIGTERM, SIGHUP);
    int n = parts_.threads > 0
                ? parts_.threads
                : (cfg_.threads > 0
                       ? cfg_.threads
                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    upstream_health_ = std::make_unique<proxy::UpstreamHealth>(cfg_.routes);
    for (int i = 0; i < n; ++i) {
      workers_.push_back(std::make_unique<Worker>());
      workers_.back()->upstreams.ShareHealth(upstream_health_.get());
    }
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
    // Before any thread serves /metrics, which reads the list these add to.
    if (parts_.gateway && !cfg_.routes.empty()) RegisterUpstreamMetrics();
    if (ThisThreadAllocatedCounter()) {
      parts_.metrics->AddReading(
          "gatehouse_network_thread_allocated_bytes_total",
          "Bytes the network threads allocated since the start (jemalloc's count): the heap "
          "traffic of the request paths.",
          "counter", [this] { return static_cast<double>(NetworkThreadAllocatedBytes()); });
    }
    for (std::size_t wi = 0; wi < workers_.size(); ++wi) {
      auto& w = workers_[wi];
      for (std::size_t li = 0; li < w->acceptors.size(); ++li) {
        net::co_spawn(w->ioc, AcceptLoop(*w, *w->acceptors[li], li), net::detached);
      }
      net::co_spawn(w->ioc, SweepLoop(*w), net::detached);
      if (w == workers_.front() && parts_.gateway) {
        for (const auto& route : cfg_.routes) {
          if (route.upstream_health_path.empty()) continue;
          for (const auto& server : route.upstreams) {
            net::co_spawn(w->ioc, HealthCheckLoop(*w, route, server), net::detached);
          }
        }
      }
      Worker* wp = w.get();
      w->thread = std::thread([this, wp, wi] {
        NameThisThread(fmt::format("gh-net-{}", wi));
        current_worker_ = wp;
        {
          std::lock_guard lock(allocated_mu_);
          wp->allocated = ThisThreadAllocatedCounter();
        }
        auto guard = net::make_work_guard(wp->ioc);
        wp->ioc.run();
        std::lock_guard lock(allocated_mu_);
        if (wp->allocated) allocated_by_ended_ += *wp->allocated;
        wp->allocated = nullptr;
      });
    }
    return {};
  }

  void RegisterUpstreamMetrics() {
    const auto now = [] { return io::CoarseNow().time_since_epoch().count(); };
    AddUpstreamServerFamily(
        "gatehouse_upstream_failures_total",
        "Times an upstream server was found failing: a new connection refused, timed out or "
        "failed TLS, a request dropped unanswered on a new connection, or upstream_max_failures "
        "502/503/504 answers in a row.",
        "counter", [](const proxy::UpstreamHealth::Server& s) {
          return static_cast<double>(s.failures.load(std::memory_order_relaxed));
        });
    AddUpstreamServerFamily(
        "gatehouse_upstream_passed_over",
        "1 while an upstream server rests after a failed connection (upstream_fail_timeout): "
        "routes with other servers send its requests to them.",
        "gauge", [now](const proxy::UpstreamHealth::Server& s) {
          return s.failed_until.load(std::memory_order_relaxed) > now() ? 1.0 : 0.0;
        });
    AddUpstreamServerFamily(
        "gatehouse_upstream_requests_in_flight",
        "Requests this node has sent to an upstream server and not yet finished, as the "
        "least_requests balance sees them; counted on least_requests routes only.",
        "gauge", [](const proxy::UpstreamHealth::Server& s) {
          return static_cast<double>(s.in_flight.load(std::memory_order_relaxed));
        });
    AddUpstreamServerFamily(
        "gatehouse_upstream_addresses_out",
        "Addresses of an upstream server's name that failed their last active health check "
        "(upstream_health_path): every worker leaves them out while another address passes.",
        "gauge", [](const proxy::UpstreamHealth::Server& s) {
          return static_cast<double>(s.CheckedOutCount());
        });
  }

  // One family with a value per upstream server, labelled by its URL.
  template <class ValueOf>
  void AddUpstreamServerFamily(const char* name, const char* help, const char* type,
                               ValueOf value_of) {
    auto* health = upstream_health_.get();
    parts_.metrics->AddFamily(name, help, type, [health, value_of] {
      Metrics::LabeledValues out;
      health->ForEach([&](const proxy::UpstreamHealth::Server& s) {
        out.emplace_back(Metrics::Label("server", s.url), value_of(s));
      });
      return out;
    });
  }

  std::uint64_t NetworkThreadAllocatedBytes() {
    std::lock_guard lock(allocated_mu_);
    std::uint64_t total = allocated_by_ended_;
    for (const auto& w : workers_) {
      // Written by its own thread on every allocation: read as an atomic, never torn.
      if (w->allocated)
        total += std::atomic_ref(*const_cast<std::uint64_t*>(w->allocated))
                     .load(std::memory_order_relaxed);
    }
    return total;
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
    costly_.join();
    stopped_ = true;
  }

  void RunUntilSignalled(std::function<void()> periodic, Millis period) {
    net::io_context& sig_ioc = sig_ioc_;
    if (!signals_) signals_ = std::make_unique<net::signal_set>(sig_ioc, SIGINT, SIGTERM, SIGHUP);
    net::signal_set& signals = *signals_;
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
  static void CloseIdle(Worker& w) { w.watches.CloseIdle(); }

  static net::awaitable<void> SweepLoop(Worker& w) {
    net::steady_timer timer(w.ioc);
    for (;;) {
      timer.expires_after(kSweepEvery);
      auto [ec] = co_await timer.async_wait(kNoThrow);
      if (ec) co_return;
      w.watches.Sweep(io::CoarseNow());
    }
  }

  // Active health checks of one of a route's servers, on the first worker: the results are
  // shared. A check starts every interval, or as soon as the one before ends when that took
  // longer: overlapping checks of one server would race to set its standing.
  net::awaitable<void> HealthCheckLoop(Worker& w, const RouteConfig& route,
                                       const UpstreamServer& server) {
    net::steady_timer timer(w.ioc);
    for (;;) {
      timer.expires_after(route.upstream_health_interval);
      co_await w.upstreams.Check(route, server, w.watches);
      if (draining_.load()) co_return;
      auto [ec] = co_await timer.async_wait(kNoThrow);
      if (ec || draining_.load()) co_return;
    }
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
    ConnectionState conn(w.watches, &sock, PeerAddress(sock));
    co_await ServeConnection(w, sock, sock, conn, false);
  }

  net::awaitable<void> ServeTls(Worker& w, tcp::socket sock, std::shared_ptr<ssl::context> ctx) {
    ssl::stream<tcp::socket> stream(std::move(sock), *ctx);
    tcp::socket& lowest = stream.next_layer();
    ConnectionState conn(w.watches, &lowest, PeerAddress(lowest));
    conn.deadline.Arm(cfg_.limits.header_timeout);
    auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, kNoThrow);
    if (ec) co_return;  // failed handshakes (old TLS versions, plain HTTP) just close
    co_await ServeConnection(w, stream, lowest, conn, true);
    conn.deadline.Arm(std::chrono::seconds(1));
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

  // The status line, the handler's headers and X-Request-Id, into `text`. Returns whether the
  // handler set a Content-Type.
  static bool StartHead(std::string& text, const HttpResponse& r, const Exchange& ex) {
    text.clear();
    text += "HTTP/1.1 ";
    text += std::to_string(r.status);
    text += ' ';
    text += ReasonPhrase(r.status);
    text += "\r\n";
    bool has_type = false;
    for (const auto& [k, v] : r.headers) {
      // Defence in depth: a header that could split the response is dropped, never sent.
      if (!IsHttpToken(k) || ContainsLineBreak(v)) continue;
      if (EqualsIgnoreCase(k, "content-type")) has_type = true;
      proxy::AppendField(text, k, v);
    }
    proxy::AppendField(text, "X-Request-Id", ex.request_id);
    return has_type;
  }

  // Writes one response of gatehouse's own: every header here is ours, so the head is written
  // straight into one string and sent with the body in a single gather write.
  template <class Stream>
  net::awaitable<bool> Write(Stream& stream, ConnectionState& conn, const HttpResponse& r,
                             Exchange& ex, bool keep_alive, bool head, bool no_store) {
    std::string& text = conn.out;
    bool has_type = StartHead(text, r, ex);
    if (!has_type && (!r.body.empty() || r.status >= 400)) {
      text += "Content-Type: application/json; charset=utf-8\r\n";
    }
    if (no_store) text += "Cache-Control: no-store\r\n";
    text += "X-Content-Type-Options: nosniff\r\nContent-Length: ";
    text += std::to_string(r.body.size());
    text += keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
    ex.status = r.status;
    conn.deadline.Arm(cfg_.limits.body_timeout);
    std::array<net::const_buffer, 2> buffers{net::buffer(text),
                                             net::buffer(r.body.data(), head ? 0 : r.body.size())};
    auto [ec, n] = co_await net::async_write(stream, buffers, kNoThrow);
    conn.deadline.Disarm();
    co_return !ec;
  }

  // A streamed body (HttpResponse::stream): chunked, each piece produced on the blocking pool.
  template <class Stream>
  net::awaitable<bool> WriteStreamed(Stream& stream, ConnectionState& conn, HttpResponse& r,
                                     Exchange& ex, bool keep_alive) {
    std::string& text = conn.out;
    StartHead(text, r, ex);
    text +=
        "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
        "Transfer-Encoding: chunked\r\n";
    text += keep_alive ? "\r\n" : "Connection: close\r\n\r\n";
    ex.status = r.status;
    conn.deadline.Arm(cfg_.limits.body_timeout);
    auto [hec, hn] = co_await net::async_write(stream, net::buffer(text), kNoThrow);
    conn.deadline.Disarm();
    if (hec) co_return false;
    std::string piece;
    const std::string request_id(ex.request_id);
    for (;;) {
      Result<Result<bool>> more = co_await Offload([&] { return r.stream(piece); }, request_id);
      if (!more || !*more) {
        spdlog::error("request {}: streamed response failed part way: {}", ex.request_id,
                      !more ? more.error().message : more->error().message);
        co_return false;  // no final chunk: the client sees the body was cut
      }
      if (!**more && piece.empty()) break;
      if (!piece.empty()) {
        char size[20];
        int len = std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
        std::array<net::const_buffer, 3> buffers{net::buffer(size, static_cast<std::size_t>(len)),
                                                 net::buffer(piece), net::buffer("\r\n", 2)};
        conn.deadline.Arm(cfg_.limits.body_timeout);
        auto [ec, n] = co_await net::async_write(stream, buffers, kNoThrow);
        conn.deadline.Disarm();
        if (ec) co_return false;
      }
      if (!**more) break;
    }
    conn.deadline.Arm(cfg_.limits.body_timeout);
    auto [tec, tn] = co_await net::async_write(stream, net::buffer("0\r\n\r\n", 5), kNoThrow);
    conn.deadline.Disarm();
    co_return !tec;
  }

  void Finish(Exchange& ex) {
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - ex.start).count();
    parts_.metrics->ObserveRequest(ex.slot, ex.status, seconds);
    if (parts_.threats) {
      // Asked of 401s only, so that other requests pay nothing for it. A stale credential
      // guesses nothing: its 401 counts against its key (ex.principal) instead.
      const bool guessed = ex.status == 401 && !ex.stale_credential && ex.head &&
                           (ex.head->Find("authorization") || ex.head->Find("x-api-key"));
      parts_.threats->Observe(ex.client_ip, ex.status, ex.principal, ex.org, guessed);
    }
    if (!access_) return;
    // Attacker-controlled fields are JSON-escaped by the serializer; the query string, which may
    // carry secrets, is never logged.
    boost::json::object line;
    line["ts"] = std::chrono::duration_cast<std::chrono::microseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    line["request_id"] = ex.request_id;
    line["method"] = ex.method;
    line["path"] = ex.path.substr(0, 256);
    line["status"] = ex.status;
    line["duration_ms"] = seconds * 1000.0;
    line["client_ip"] = ex.client_ip;
    if (!ex.principal.empty()) line["principal"] = ex.principal;
    if (ex.upstream) line["upstream"] = ex.upstream->url;
    access_->info(boost::json::serialize(line));
  }

  // Completes `event` from the exchange and waits, on this connection's thread, until the
  // audit writer has it on disk. An error (the queue is full, or the store keeps failing) means
  // the request must be answered with that error instead: nothing is served unrecorded.
  static void DrainAuditCompletions(Worker& w) {
    AuditCompletions& c = w.audit_done;
    {
      std::lock_guard lock(c.mu);
      c.draining.swap(c.ready);
    }
    for (auto& [ticket, durable] : c.draining) ticket->Resolve(durable);
    c.draining.clear();
  }

  // The writer's verdict on `ticket`, handed to the worker's thread: appended to its list, and
  // one drain posted for however many verdicts arrive before it runs.
  static AuditWriter::Done ResolveOnWorker(Worker* worker, std::shared_ptr<AuditTicket> ticket) {
    return [ticket = std::move(ticket), worker](bool durable) {
      if (!worker) {  // not on a worker thread (never expected): answer through the timer's own
        net::post(ticket->timer.get_executor(), [ticket, durable] { ticket->Resolve(durable); });
        return;
      }
      AuditCompletions& c = worker->audit_done;
      bool first = false;
      {
        std::lock_guard lock(c.mu);
        first = c.ready.empty();
        c.ready.emplace_back(ticket, durable);
      }
      if (first) net::post(worker->ioc, [worker] { DrainAuditCompletions(*worker); });
    };
  }

  static void JournalAuditRecords(Worker& w, AuditWriter& writer) {
    AuditRecordBatch& batch = w.audit_records;
    if (batch.count == 0) return;
    if (!writer.AnswersAtOnce()) {
      // Set once, before anyone waits: expires_after would cancel waits already begun.
      batch.outcome->synced = std::make_shared<AuditTicket>(w.ioc.get_executor());
      batch.outcome->synced->timer.expires_after(std::chrono::hours(1));
    }
    batch.outcome->admission = writer.SubmitRecords(
        batch.records, batch.count,
        batch.outcome->synced ? ResolveOnWorker(&w, batch.outcome->synced) : AuditWriter::Done{});
    batch.outcome->journaled = true;
    batch.outcome.reset();
    batch.records.clear();
    batch.count = 0;
  }

  // The worker whose thread is running; set once per worker thread.
  static thread_local Worker* current_worker_;

  net::awaitable<std::optional<Error>> RecordDecision(AuditEvent event, const Exchange& ex,
                                                      const h1::RequestHead& head, int status) {
    AuditWriter* writer = parts_.audit;
    if (!writer) co_return std::nullopt;
    event.at = std::chrono::duration_cast<std::chrono::microseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    event.status = status;
    event.result.assign(ResultOfStatus(status));
    event.client_ip.assign(ex.client_ip);
    event.user_agent = ValidUtf8(head.Find("user-agent").value_or(""), 256);
    event.request_id.assign(ex.request_id);
    Worker* worker = current_worker_;
    if (writer->Journals() && worker) {
      // The journal has it once written (with fsync: once flushed), so this turn's decisions
      // go in with one write(), and with fsync wait for one fdatasync together.
      AuditRecordBatch& batch = worker->audit_records;
      if (batch.count == 0) {
        batch.outcome = std::make_shared<AuditRecordBatch::Outcome>();
        net::post(worker->ioc, [worker, writer] { JournalAuditRecords(*worker, *writer); });
      }
      EncodeJournalRecord(event, batch.records);
      ++batch.count;
      auto outcome = batch.outcome;
      // The io_context runs handlers in the order posted, so the batch is written by the time
      // this resumes; were it not, it is written now. Either way, before the answer.
      co_await net::post(co_await net::this_coro::executor, net::use_awaitable);
      if (!outcome->journaled) JournalAuditRecords(*worker, *writer);
      if (outcome->admission != AuditWriter::Admission::kQueued)
        co_return RefusalOf(outcome->admission);
      const std::shared_ptr<AuditTicket>& synced = outcome->synced;
      if (!synced->done) co_await synced->timer.async_wait(kNoThrow);
      if (!synced->durable) co_return RefusalOf(AuditWriter::Admission::kFailed);
      co_return std::nullopt;
    }
    if (writer->AnswersAtOnce()) co_return RefusalOf(writer->Submit(std::move(event), nullptr));
    auto ticket = std::make_shared<AuditTicket>(co_await net::this_coro::executor);
    auto admission = writer->Submit(std::move(event), ResolveOnWorker(worker, ticket));
    if (admission != AuditWriter::Admission::kQueued) co_return RefusalOf(admission);
    if (!ticket->done) {
      ticket->timer.expires_after(std::chrono::hours(1));
      co_await ticket->timer.async_wait(kNoThrow);
    }
    if (!ticket->durable) co_return RefusalOf(AuditWriter::Admission::kFailed);
    co_return std::nullopt;
  }

  // What a request whose event the audit writer would not take is answered: nothing is served
  // that is not recorded (kDropped: overflow = "drop" lets it through, counted).
  static std::optional<Error> RefusalOf(AuditWriter::Admission admission) {
    switch (admission) {
      case AuditWriter::Admission::kRejected:
        return Error{ErrorCode::kUnavailable, "the audit log is behind; try again", {}, {}};
      case AuditWriter::Admission::kFailed:
        return Error{ErrorCode::kUnavailable, "the audit log cannot be written; try again", {}, {}};
      default:
        return std::nullopt;
    }
  }

  // Redis's verdict (or the local fallback's), waited for on this connection's thread.
  net::awaitable<RateVerdict> DecideShared(const LimitChecks& checks) {
    co_return co_await AwaitCallback<RateVerdict>(
        [&](auto done) { parts_.limits->DecideShared(checks.span(), std::move(done)); });
  }

  // Large request bodies are checked against their route's schema on the blocking pool (503
  // when its queue is full), so that one big body does not hold up the worker's connections.
  class OffloadedBodyChecker final : public proxy::BodyChecker {
   public:
    OffloadedBodyChecker(Impl& impl, std::string_view request_id)
        : impl_(impl), request_id_(request_id) {}
    net::awaitable<Result<void>> Check(const JsonSchema& schema, const std::string& body) override {
      const std::string request_id(request_id_);  // only here: this is not the common path
      auto outcome = co_await impl_.Offload([&] { return schema.ValidateBody(body); }, request_id);
      if (!outcome) co_return tl::unexpected(outcome.error());
      co_return std::move(*outcome);
    }

   private:
    Impl& impl_;
    std::string_view request_id_;
  };

  // The proxy's wait: the event carries the upstream's status, and the client sees nothing
  // until it is durable.
  class ProxyGate final : public proxy::ResponseGate {
   public:
    ProxyGate(Impl& impl, const Exchange& ex, const h1::RequestHead& head, AuditEvent event)
        : impl_(impl), ex_(ex), head_(head), event_(std::move(event)) {}
    net::awaitable<std::optional<Error>> Pass(int status) override {
      passed_ = true;
      co_return co_await impl_.RecordDecision(std::move(event_), ex_, head_, status);
    }
    bool passed() const { return passed_; }
    AuditEvent& event() { return event_; }

   private:
    Impl& impl_;
    const Exchange& ex_;
    const h1::RequestHead& head_;
    AuditEvent event_;
    bool passed_ = false;
  };

  // Writes the JSON error and finishes the exchange. Returns whether the connection may go on.
  template <class Stream>
  net::awaitable<bool> SendError(Stream& stream, ConnectionState& conn, const Error& error,
                                 Exchange& ex, bool keep_alive, bool head = false) {
    if (ex.request_id.empty()) ex.MakeRequestId();
    HttpResponse r = ErrorResponse(error, ex.request_id);
    for (auto& h : ex.extra_headers) r.headers.push_back(std::move(h));
    bool ok = co_await Write(stream, conn, r, ex, keep_alive, head, true);
    Finish(ex);
    co_return ok&& keep_alive;
  }

  // A refused request: an unread request body poisons the connection, so it closes then.
  template <class Stream>
  net::awaitable<bool> Refuse(Stream& stream, ConnectionState& conn, const Error& error,
                              Exchange& ex, bool body_pending) {
    bool keep = conn.head.keep_alive && !body_pending && !draining_.load();
    bool head = conn.head.method == "HEAD";
    co_return co_await SendError(stream, conn, error, ex, keep, head);
  }

  // Refuse, once the refusal's event is durable (or with 503 when it cannot be recorded).
  template <class Stream>
  net::awaitable<bool> RefuseRecorded(Stream& stream, ConnectionState& conn, const Error& error,
                                      Exchange& ex, bool body_pending, AuditEvent event) {
    int status = ErrorStatus(error.code);
    std::optional<Error> unrecorded =
        co_await RecordDecision(std::move(event), ex, conn.head, status);
    if (unrecorded) co_return co_await Refuse(stream, conn, *unrecorded, ex, body_pending);
    co_return co_await Refuse(stream, conn, error, ex, body_pending);
  }

  net::awaitable<HttpResponse> Dispatch(const RouteEntry& route, HttpRequest& req) {
    if (route.fast) {
      if (auto r = route.fast(req)) co_return std::move(*r);
    }
    if (route.kind == HandlerKind::kInline) co_return route.handler(req);
    if (route.kind == HandlerKind::kCostly) {
      auto& m = *parts_.metrics;
      if (static_cast<std::size_t>(m.costly_jobs_queued.fetch_add(1)) >= parts_.max_costly_jobs) {
        m.costly_jobs_queued.fetch_sub(1);
        m.costly_jobs_rejected.fetch_add(1);
        Error busy{
            ErrorCode::kUnavailable, "too many sign-ins at once; try again shortly", {}, {}, 1};
        co_return ErrorResponse(busy, req.request_id);
      }
      Result<HttpResponse> out = Fail(ErrorCode::kInternal, "internal error");
      try {
        out = co_await net::co_spawn(
            costly_, [&]() -> net::awaitable<HttpResponse> { co_return route.handler(req); },
            net::use_awaitable);
      } catch (const std::exception& e) {
        spdlog::error("request {} failed: {}", req.request_id, e.what());
      }
      m.costly_jobs_queued.fetch_sub(1);
      if (!out) co_return ErrorResponse(out.error(), req.request_id);
      co_return std::move(*out);
    }
    Result<HttpResponse> r = co_await Offload([&] { return route.handler(req); }, req.request_id);
    if (!r) co_return ErrorResponse(r.error(), req.request_id);
    co_return std::move(*r);
  }

  // asio's pool starts its threads itself, so each names itself on its first job: one flag per
  // thread here, not one per Offload instantiation.
  static void NameBlockingThread() {
    static thread_local bool named = false;
    if (named) return;
    named = true;
    NameThisThread("gh-blocking");
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
          blocking_,
          [&]() -> net::awaitable<R> {
            NameBlockingThread();
            co_return f();
          },
          net::use_awaitable);
    } catch (const std::exception& e) {
      spdlog::error("request {} failed: {}", request_id, e.what());
    }
    m.blocking_jobs_queued.fetch_sub(1);
    co_return out;
  }

  template <class Stream>
  net::awaitable<void> ServeConnection(Worker& w, Stream& stream, tcp::socket& sock,
                                       ConnectionState& conn, bool tls) {
    auto& metrics = *parts_.metrics;
    metrics.connections_open.fetch_add(1);
    for (;;) {
      if (draining_.load()) break;
      if (conn.in.empty()) {
        // Idle keep-alive: wait for the first byte of the next request.
        conn.in.ShrinkIfIdle(kReadPiece);
        auto space = conn.in.Prepare(kReadPiece, kReadPiece);
        conn.deadline.Arm(cfg_.limits.idle_timeout);
        conn.deadline.SetIdle(true);
        auto [ec, n] =
            co_await stream.async_read_some(net::buffer(space.data(), space.size()), kNoThrow);
        conn.deadline.SetIdle(false);
        if (ec) break;
        conn.in.Commit(n);
      }
      in_flight_.fetch_add(1);
      bool keep = co_await ServeOne(w, stream, conn, tls);
      in_flight_.fetch_sub(1);
      if (!keep) break;
    }
    boost::system::error_code ec;
    sock.shutdown(tcp::socket::shutdown_send, ec);
    metrics.connections_open.fetch_sub(1);
  }

  // Reads until a whole request head is buffered and parsed into conn.head. Returns the error to
  // answer with, if any; `closed` when the client went away (nothing to answer).
  template <class Stream>
  net::awaitable<std::optional<Error>> ReadHead(Stream& stream, ConnectionState& conn,
                                                bool& closed) {
    const h1::Limits limits{cfg_.limits.max_header_bytes, cfg_.limits.max_header_count};
    bool armed = false;
    for (;;) {
      switch (h1::ParseRequest(conn.in.data(), limits, conn.head)) {
        case h1::Status::kComplete:
          conn.deadline.Disarm();
          co_return std::nullopt;
        case h1::Status::kIncomplete:
          break;
        case h1::Status::kTooLarge:
          co_return Error{ErrorCode::kHeadersTooLarge, "request headers are too large", {}, {}};
        case h1::Status::kTooManyFields:
          co_return Error{ErrorCode::kHeadersTooLarge, "too many request headers", {}, {}};
        case h1::Status::kUnsupportedVersion:
          co_return Error{
              ErrorCode::kInvalidArgument, "only HTTP/1.0 and HTTP/1.1 are served", {}, {}};
        case h1::Status::kBadFraming:
          co_return Error{ErrorCode::kInvalidArgument,
                          "ambiguous or unsupported body framing (Content-Length, "
                          "Transfer-Encoding)",
                          {},
                          {}};
        case h1::Status::kMalformed:
          co_return Error{ErrorCode::kInvalidArgument, "malformed HTTP request", {}, {}};
      }
      // The header timeout runs from the first byte, however slowly the rest trickles in.
      if (!armed) {
        conn.deadline.Arm(cfg_.limits.header_timeout);
        armed = true;
      }
      auto space = conn.in.Prepare(kReadPiece, cfg_.limits.max_header_bytes + 4);
      auto [ec, n] =
          co_await stream.async_read_some(net::buffer(space.data(), space.size()), kNoThrow);
      if (ec) {
        if (conn.deadline.fired()) {
          co_return Error{ErrorCode::kRequestTimeout, "request headers took too long", {}, {}};
        }
        closed = true;
        co_return std::nullopt;
      }
      conn.in.Commit(n);
    }
  }

  // Moves a request's head out of the input buffer, so that its body can be read into it.
  static void DetachHead(ConnectionState& conn) {
    conn.head_copy.assign(conn.in.data().substr(0, conn.head.head_bytes));
    conn.in.Consume(conn.head.head_bytes);
    const h1::Limits unlimited{conn.head_copy.size() + 1, conn.head.fields.size() + 1};
    (void)h1::ParseRequest(conn.head_copy, unlimited, conn.head);
  }

  // Reads a whole control-plane body into conn.body.
  template <class Stream>
  net::awaitable<std::optional<Error>> ReadBody(Stream& stream, ConnectionState& conn) {
    const std::size_t max = cfg_.limits.max_body_bytes;
    conn.body.clear();
    conn.deadline.Arm(cfg_.limits.body_timeout);
    std::optional<Error> failure;
    if (conn.head.framing == h1::Framing::kLength) {
      const auto want = static_cast<std::size_t>(conn.head.content_length);
      std::size_t have = std::min(want, conn.in.size());
      conn.body.assign(conn.in.data().substr(0, have));
      conn.in.Consume(have);
      conn.body.resize(want);
      while (have < want) {
        auto [ec, n] = co_await stream.async_read_some(
            net::buffer(conn.body.data() + have, want - have), kNoThrow);
        if (ec) {
          failure = conn.deadline.fired()
                        ? Error{ErrorCode::kRequestTimeout, "request body took too long", {}, {}}
                        : Error{ErrorCode::kInvalidArgument, "request body was cut short", {}, {}};
          break;
        }
        have += n;
      }
    } else if (conn.head.framing == h1::Framing::kChunked) {
      h1::ChunkedDecoder decoder;
      for (;;) {
        conn.in.Consume(decoder.Feed(conn.in.data(), &conn.body));
        if (decoder.failed()) {
          failure = Error{ErrorCode::kInvalidArgument, "malformed chunked request body", {}, {}};
          break;
        }
        if (decoder.data_bytes() > max) {
          failure = Error{ErrorCode::kPayloadTooLarge, "request body is too large", {}, {}};
          break;
        }
        if (decoder.done()) break;
        auto space = conn.in.Prepare(kReadPiece, kReadPiece * 4);
        auto [ec, n] =
            co_await stream.async_read_some(net::buffer(space.data(), space.size()), kNoThrow);
        if (ec) {
          failure = conn.deadline.fired()
                        ? Error{ErrorCode::kRequestTimeout, "request body took too long", {}, {}}
                        : Error{ErrorCode::kInvalidArgument, "request body was cut short", {}, {}};
          break;
        }
        conn.in.Commit(n);
      }
    }
    conn.deadline.Disarm();
    co_return failure;
  }

  // The plain request the router and handlers see, built from the parsed head.
  static void FillRequest(ConnectionState& conn, const Exchange& ex) {
    HttpRequest& req = conn.request;
    const h1::RequestHead& h = conn.head;
    req.method = h.method;
    req.target = h.target;
    req.path = h.target.substr(0, h.target.find('?'));
    req.query = h.target.size() > req.path.size() ? h.target.substr(req.path.size() + 1)
                                                  : std::string_view{};
    req.headers.clear();
    for (const auto& f : h.fields) req.headers.emplace_back(f.name, f.value);
    req.body = {};
    req.client_ip.assign(ex.client_ip);
    req.request_id.assign(ex.request_id);
    req.path_params.clear();
    req.principal_id.clear();
    req.audit.reset();
    req.stale_credential = false;
  }

  // One request/response. Returns whether the connection may carry another.
  template <class Stream>
  net::awaitable<bool> ServeOne(Worker& w, Stream& stream, ConnectionState& conn, bool tls) {
    Exchange& ex = conn.exchange;
    ex = Exchange{};
    ex.start = std::chrono::steady_clock::now();
    ex.client_ip = conn.peer;
    bool closed = false;
    // g++ 12 mis-destroys temporaries inside co_await expressions, so errors are named locals
    // and coroutines only ever receive lvalues.
    std::optional<Error> early = co_await ReadHead(stream, conn, closed);
    if (closed) co_return false;
    if (early) co_return co_await SendError(stream, conn, *early, ex, false);
    h1::RequestHead& h = conn.head;
    const bool has_body = h.framing != h1::Framing::kNone;
    if (has_body) DetachHead(conn);
    ex.method = h.method;
    ex.path = h.target.substr(0, h.target.find('?'));
    auto rid = h.Find("x-request-id");
    if (rid && IsSafeRequestId(*rid))
      ex.request_id = *rid;
    else
      ex.MakeRequestId();
    ex.client_ip = ClientAddress(cfg_, conn.peer, h);
    ex.head = &h;
    if (h.target.size() > cfg_.limits.max_url_bytes) {
      early = Error{ErrorCode::kUriTooLong, "request URL is too long", {}, {}};
    } else if (!h.target.starts_with('/')) {
      early = Error{ErrorCode::kInvalidArgument, "request target must be a path", {}, {}};
    } else if (h.method == "TRACE" || h.method == "CONNECT") {
      early = Error{ErrorCode::kMethodNotAllowed, "method not allowed", {}, {}};
    }
    if (early) co_return co_await SendError(stream, conn, *early, ex, false);
    // An address blocked for abuse gets the cheapest answer there is: before any route,
    // credential or body, and the connection closes.
    if (parts_.threats) {
      if (long blocked = parts_.threats->BlockedFor(ex.client_ip); blocked > 0) {
        Error e = cfg_.threats.blocked_status == 403
                      ? Error{ErrorCode::kIpNotAllowed,
                              "this address is blocked for a while after repeated abuse",
                              {},
                              {}}
                      : Error{ErrorCode::kResourceExhausted,
                              "this address is blocked for a while after repeated abuse",
                              {},
                              {},
                              blocked};
        co_return co_await SendError(stream, conn, e, ex, false);
      }
    }

    // Gateway routes: stream to the upstream.
    int groute = parts_.gateway ? parts_.gateway->Match(ex.path) : -1;
    if (groute >= 0) co_return co_await ServeProxy(w, stream, conn, ex, groute, tls);

    // Control plane: read the whole (bounded) body, then dispatch.
    if (has_body) {
      if (h.framing == h1::Framing::kLength && h.content_length > cfg_.limits.max_body_bytes) {
        early = Error{ErrorCode::kPayloadTooLarge, "request body is too large", {}, {}};
        co_return co_await SendError(stream, conn, *early, ex, false);
      }
      if (h.expect_continue) {
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        auto [cec, cn] = co_await net::async_write(
            stream, net::buffer(kContinue.data(), kContinue.size()), kNoThrow);
        if (cec) co_return false;
      }
      early = co_await ReadBody(stream, conn);
      if (early) co_return co_await SendError(stream, conn, *early, ex, false);
    }
    FillRequest(conn, ex);
    HttpRequest& req = conn.request;
    if (has_body) req.body = conn.body;

    HttpResponse res;
    auto match = parts_.router->Find(req);
    if (!match.route) {
      res = ErrorResponse(match.error, ex.request_id);
      if (!match.allow.empty()) res.SetHeader("Allow", match.allow);
    } else {
      ex.slot = match.route->metrics_index;
      res = co_await Dispatch(*match.route, req);
    }
    std::string decision_org;  // for threat detection, which sees the exchange at Finish
    if (req.audit) {
      decision_org = req.audit->org_id;
      std::optional<Error> unrecorded =
          co_await RecordDecision(std::move(*req.audit), ex, h, res.status);
      if (unrecorded) res = ErrorResponse(*unrecorded, ex.request_id);
    }
    // Views into the final response: set only once `res` can no longer be replaced.
    ex.principal = req.principal_id;
    ex.org = decision_org;
    ex.stale_credential = req.stale_credential;
    for (const auto& [k, v] : res.headers) {
      if (k == "X-Gatehouse-Principal") ex.principal = v;  // forward-auth's verdict
    }

    bool keep = h.keep_alive && !draining_.load();
    bool ok = false;
    if (res.stream && h.method != "HEAD") {
      ok = co_await WriteStreamed(stream, conn, res, ex, keep);
    } else {
      ok = co_await Write(stream, conn, res, ex, keep, h.method == "HEAD",
                          ex.path.starts_with("/v1/"));
    }
    Finish(ex);
    if (!has_body) conn.in.Consume(h.head_bytes);
    co_return ok&& keep;
  }

  template <class Stream>
  net::awaitable<bool> ServeProxy(Worker& w, Stream& stream, ConnectionState& conn, Exchange& ex,
                                  int groute, bool tls) {
    const h1::RequestHead& h = conn.head;
    ex.slot = gateway_slot_base_ + static_cast<std::size_t>(groute);
    // An unread request body poisons the connection: refusals close it.
    const bool has_body = h.framing != h1::Framing::kNone;
    bool ok = false;
    if (auto canonical = Gateway::CheckPathIsCanonical(ex.path); !canonical) {
      ok = co_await Refuse(stream, conn, canonical.error(), ex, has_body);
    } else {
      // Authenticate from the head alone: an unauthenticated client never gets to upload a body.
      FillRequest(conn, ex);
      HttpRequest& req = conn.request;
      AuthSubject subject;
      std::optional<Result<Principal>> principal = parts_.authenticator->TryFast(req, &subject);
      if (!principal) {
        // Not cached: the store decides, off the network thread.
        Result<Result<Principal>> slow = co_await Offload(
            [&] { return parts_.authenticator->Authenticate(req, &subject); }, req.request_id);
        if (slow)
          principal = std::move(*slow);
        else
          principal = Result<Principal>(tl::unexpected(slow.error()));
      }
      // Only the audit log reads decision events: without it, none is built.
      std::string resource;
      if (parts_.audit) resource = "route:" + parts_.gateway->route(groute).path_prefix;
      ex.org =
          *principal ? std::string_view((*principal)->org_id) : std::string_view(subject.org_id);
      if (!*principal) {
        const Error& denied = principal->error();
        if (RefusedAsStale(subject.reason)) {
          ex.stale_credential = true;
          ex.principal = subject.key_id;
        }
        AuditEvent event = DecisionEvent(subject.org_id, subject.key_id, "auth.proxy", resource);
        event.details = DetailsOf(
            {{"reason", subject.reason.empty() ? ErrorCodeName(denied.code) : subject.reason}});
        ok = co_await RefuseRecorded(stream, conn, denied, ex, has_body, std::move(event));
      } else if (auto allowed = parts_.gateway->Authorize(groute, req.method, **principal);
                 !allowed) {
        ex.principal = (*principal)->id;
        AuditEvent event =
            DecisionEvent((*principal)->org_id, (*principal)->id, "auth.proxy", resource);
        event.details = DetailsOf({{"reason", ErrorCodeName(allowed.error().code)}});
        ok = co_await RefuseRecorded(stream, conn, allowed.error(), ex, has_body, std::move(event));
      } else if (auto body_ok =
                     parts_.gateway->CheckBody(groute, req, has_body,
                                               h.framing == h1::Framing::kLength
                                                   ? std::optional<std::uint64_t>(h.content_length)
                                                   : std::nullopt);
                 !body_ok) {
        // Input validation at the edge: refused before any limit is spent or byte forwarded.
        ex.principal = (*principal)->id;
        AuditEvent event =
            DecisionEvent((*principal)->org_id, (*principal)->id, "auth.proxy", resource);
        event.details = DetailsOf({{"reason", ErrorCodeName(body_ok.error().code)}});
        ok = co_await RefuseRecorded(stream, conn, body_ok.error(), ex, has_body, std::move(event));
      } else {
        ex.principal = (*principal)->id;
        LimitChecks checks;
        RateVerdict verdict;
        if (parts_.limits) {
          checks = parts_.limits->Collect(**principal, &parts_.gateway->route(groute));
          if (!checks.empty()) {
            if (parts_.limits->shared()) {
              verdict = co_await DecideShared(checks);
            } else {
              verdict = parts_.limits->DecideHere(checks.span());
            }
            parts_.limits->Count(verdict, checks.span());
          }
        }
        // Then the key's credits: spent only by a request every limit admitted.
        QuotaOutcome spent;
        const Principal& who = **principal;
        if (verdict.allowed && parts_.quotas && who.key_quota.enabled()) {
          const std::uint32_t cost = parts_.gateway->route(groute).cost;
          if (parts_.quotas->shared()) {
            spent = co_await AwaitCallback<QuotaOutcome>([&](auto done) {
              parts_.quotas->SpendAsync(who.id, who.org_id, who.key_quota, who.credits_used,
                                        who.credits_period, cost, ex.client_ip, std::move(done));
            });
          } else {
            spent = parts_.quotas->Spend(who.id, who.org_id, who.key_quota, who.credits_used,
                                         who.credits_period, cost, ex.client_ip);
          }
        }
        if (!verdict.allowed) {
          AuditEvent event = DecisionEvent(who.org_id, who.id, "auth.proxy", resource);
          const LimitCheck& tripped = checks.items[static_cast<std::size_t>(verdict.refused_by)];
          event.details = DetailsOf({{"reason", "rate_limited"}, {"limit", tripped.dimension}});
          AppendRateLimitHeaders(verdict, checks.span(), ex.extra_headers);
          Error refusal = RefusalError(verdict, checks.span());
          ok = co_await RefuseRecorded(stream, conn, refusal, ex, has_body, std::move(event));
        } else if (!spent.allowed) {
          AuditEvent event = DecisionEvent(who.org_id, who.id, "auth.proxy", resource);
          event.details = DetailsOf({{"reason", "usage_exceeded"}});
          Error refusal = QuotaService::RefusalError(spent, who.key_quota);
          ok = co_await RefuseRecorded(stream, conn, refusal, ex, has_body, std::move(event));
        } else {
          if (parts_.threats && (*principal)->kind == "api_key") {
            parts_.threats->KeyUsed((*principal)->id, (*principal)->org_id, ex.client_ip);
          }
          conn.rate_headers.clear();
          AppendRateLimitLines(verdict, checks.span(), conn.rate_headers);
          ProxyGate gate(*this, ex, h,
                         parts_.audit ? DecisionEvent((*principal)->org_id, (*principal)->id,
                                                      "auth.proxy", std::move(resource))
                                      : AuditEvent{});
          ok = co_await Forward(w, stream, conn, ex, **principal, groute, tls, gate);
        }
      }
    }
    if (!has_body) conn.in.Consume(h.head_bytes);
    co_return ok;
  }

  template <class Stream>
  net::awaitable<bool> Forward(Worker& w, Stream& stream, ConnectionState& conn, Exchange& ex,
                               const Principal& principal, int groute, bool tls, ProxyGate& gate) {
    const h1::RequestHead& h = conn.head;
    if (h.framing != h1::Framing::kNone && h.expect_continue) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      auto [cec, cn] = co_await net::async_write(
          stream, net::buffer(kContinue.data(), kContinue.size()), kNoThrow);
      if (cec) co_return false;
    }
    proxy::ForwardContext ctx;
    if (parts_.audit) ctx.gate = &gate;
    OffloadedBodyChecker checker(*this, ex.request_id);
    ctx.body_checker = &checker;
    ctx.route = &parts_.gateway->route(groute);
    ctx.principal = &principal;
    ctx.request_id = ex.request_id;
    ctx.client_ip = ex.client_ip;
    ctx.peer_ip = conn.peer;
    ctx.client_tls = tls;
    ctx.limits = &cfg_.limits;
    ctx.extra_response_headers = conn.rate_headers;
    ctx.upstream_used = &ex.upstream;
    proxy::ClientSide<Stream> client{stream, conn.in, conn.deadline, h, conn.out};
    proxy::ForwardResult fr = co_await proxy::Forward(client, ctx, w.upstreams, w.watches);
    conn.deadline.Disarm();
    if (!fr.response_started) {
      if (fr.error.code == ErrorCode::kUpstreamUnavailable ||
          fr.error.code == ErrorCode::kUpstreamTimeout) {
        parts_.metrics->upstream_errors.fetch_add(1);
      }
      // Unless the body was read to its end (a schema refusal), it may be half read: never
      // reuse the connection then. A failure before the upstream answered is recorded here;
      // one from the gate was (or could not be) recorded there.
      const bool body_pending = !fr.client_reusable;
      if (!gate.passed()) {
        gate.event().details = DetailsOf({{"reason", ErrorCodeName(fr.error.code)}});
        co_return co_await RefuseRecorded(stream, conn, fr.error, ex, body_pending,
                                          std::move(gate.event()));
      }
      co_return co_await Refuse(stream, conn, fr.error, ex, body_pending);
    }
    ex.status = fr.status;
    Finish(ex);
    co_return fr.client_reusable && !draining_.load();
  }

  Parts parts_;
  const Config& cfg_;
  std::unique_ptr<proxy::UpstreamHealth> upstream_health_;  // before workers_: they point to it
  // Caught from Start() on, before anything says "listening": a SIGTERM sent the moment a
  // supervisor sees the server up is held for RunUntilSignalled, which then drains, instead of
  // killing the process with requests in flight.
  net::io_context sig_ioc_{1};
  std::unique_ptr<net::signal_set> signals_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex allocated_mu_;
  std::uint64_t allocated_by_ended_ = 0;  // guarded by allocated_mu_
  net::thread_pool blocking_;
  net::thread_pool costly_;
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

thread_local Worker* Server::Impl::current_worker_ = nullptr;

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

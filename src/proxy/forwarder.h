// Sends one request to an upstream and its response back, over pooled keep-alive connections.
// Included only by http/server.cc: it is a template over the client stream type (plain or TLS)
// and pulls in Asio, which we keep out of every other translation unit.
//
// Heads are parsed and rebuilt with http/h1.h; bodies are relayed as they arrive, with their
// framing kept (Content-Length or chunked, followed byte by byte so the end is known), so
// server-sent events (AI token streams) reach the client as the upstream writes them. Small
// responses with a known length are read whole and sent with their head in one write. Failures
// before the response starts become JSON errors: refused or reset -> 502 upstream_unavailable,
// timeouts -> 504 upstream_timeout. After the response has started, the only honest signal left
// is to close.
#pragma once

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <charconv>

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "authz/principal.h"
#include "config/config.h"
#include "core/text.h"
#include "core/tls_client.h"
#include "gateway/gateway.h"
#include "http/connection.h"
#include "http/cookies.h"
#include "http/h1.h"
#include "http/message.h"
#include "proxy/resolution.h"
#include "schema/json_schema.h"

namespace gatehouse::proxy {

namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
inline constexpr auto kNoThrow = net::as_tuple(net::use_awaitable);
// Upstream responses with a declared length up to this are read whole and sent in one write.
inline constexpr std::uint64_t kBufferWholeBelow = 64 * 1024;
inline constexpr std::size_t kMaxUpstreamHead = 64 * 1024;
inline constexpr std::size_t kRelayPiece = 16 * 1024;

// Which upstream servers failed a new connection lately, shared by every worker thread, so that
// a server that refuses is passed over by all of them at once. Every server of the config is
// entered at the start and nothing is added later: lookups need no lock.
class UpstreamHealth {
 public:
  struct Server {
    std::string url;
    // Steady-clock nanoseconds until which the server is passed over (0: in good standing).
    std::atomic<std::int64_t> failed_until{0};
    std::atomic<std::uint64_t> failures{0};        // new connections that failed, for /metrics
    std::atomic<std::uint32_t> failed_answers{0};  // 502, 503 or 504 in a row
    std::atomic<std::int64_t> in_flight{0};        // counted for least_requests routes only

    // The standing of the addresses of the server's name, which every worker follows: those
    // that failed their last active health check are out until one passes, and one that failed
    // a new connection rests until a steady-clock time (ns). Workers copy it when
    // `addresses_version` moved, so a request costs one atomic load, and a dead address costs
    // one failed connection, not one per worker.
    struct AddressStanding {
      std::vector<tcp::endpoint> checked_out;
      std::vector<std::pair<tcp::endpoint, std::int64_t>> resting;
    };
    AddressStanding Addresses() const {
      std::lock_guard lock(addresses_mu_);
      return addresses_;
    }
    std::size_t CheckedOutCount() const {
      std::lock_guard lock(addresses_mu_);
      return addresses_.checked_out.size();
    }
    // True when the list changed.
    bool SetCheckedOut(std::vector<tcp::endpoint> out) {
      std::lock_guard lock(addresses_mu_);
      if (out == addresses_.checked_out) return false;
      addresses_.checked_out = std::move(out);
      addresses_version.fetch_add(1, std::memory_order_release);
      return true;
    }
    // Rests `endpoint` until `until`; rests over by `now` are dropped meanwhile.
    void RestAddress(const tcp::endpoint& endpoint, std::int64_t until, std::int64_t now) {
      std::lock_guard lock(addresses_mu_);
      auto& resting = addresses_.resting;
      std::erase_if(resting, [&](const auto& r) { return r.first == endpoint || r.second <= now; });
      resting.emplace_back(endpoint, until);
      addresses_version.fetch_add(1, std::memory_order_release);
    }
    // `endpoint` took a new connection: its rest, if any, is over.
    void AddressAnswered(const tcp::endpoint& endpoint) {
      std::lock_guard lock(addresses_mu_);
      if (std::erase_if(addresses_.resting, [&](const auto& r) { return r.first == endpoint; })) {
        addresses_version.fetch_add(1, std::memory_order_release);
      }
    }
    std::atomic<std::uint64_t> addresses_version{0};

   private:
    mutable std::mutex addresses_mu_;
    AddressStanding addresses_;  // guarded by addresses_mu_
  };

  explicit UpstreamHealth(const std::vector<RouteConfig>& routes) {
    for (const auto& r : routes) {
      for (const auto& s : r.upstreams) {
        auto [it, fresh] = servers_.try_emplace(s.pool_key);
        if (fresh) it->second.url = s.url;
      }
    }
  }
  // Null for a server that was not configured at the start.
  Server* Of(const UpstreamServer& server) {
    auto it = servers_.find(server.pool_key);
    return it == servers_.end() ? nullptr : &it->second;
  }
  template <class F>
  void ForEach(F&& f) const {
    for (const auto& [key, s] : servers_) f(s);
  }

 private:
  std::unordered_map<std::string, Server> servers_;
};

// One connection to an upstream: TCP, with TLS over it for an https:// upstream. It is itself
// the stream reads and writes go through, whichever it is.
struct UpstreamConnection {
  explicit UpstreamConnection(const net::any_io_executor& ex) : socket(ex) {}
  tcp::socket socket;
  std::unique_ptr<ssl::stream<tcp::socket&>> tls;

  using executor_type = tcp::socket::executor_type;
  executor_type get_executor() { return socket.get_executor(); }
  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    if (tls) return tls->async_read_some(buffers, std::forward<Token>(token));
    return socket.async_read_some(buffers, std::forward<Token>(token));
  }
  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    if (tls) return tls->async_write_some(buffers, std::forward<Token>(token));
    return socket.async_write_some(buffers, std::forward<Token>(token));
  }

  io::InputBuffer in;
  h1::ResponseHead head;  // reused, so that parsing a response allocates nothing
  std::chrono::steady_clock::time_point idle_since;
  const UpstreamServer* server = nullptr;    // which of its route's servers it reaches
  tcp::endpoint peer;                        // which of that server's addresses
  UpstreamHealth::Server* health = nullptr;  // that server's shared standing (null: none kept)
};

// Per worker thread; never shared, so no locks. A route with several upstream servers takes
// them in turn, request by request; a server that failed a new connection rests for the route's
// upstream_fail_timeout (kept in UpstreamHealth, which every configured server is in).
class UpstreamPool {
 public:
  void ShareHealth(UpstreamHealth* health) { health_ = health; }

  static constexpr std::size_t kMaxIdlePerUpstream = 256;
  static constexpr std::chrono::milliseconds kCheckIdleAfter{50};
  // Beyond a probe's own timeouts (connect and TLS), before another worker may probe again.
  static constexpr std::chrono::milliseconds kProbeMargin{1000};

  struct Lease {
    std::unique_ptr<UpstreamConnection> conn;
    bool reused = false;
  };

  // A connection to the route's next server: a pooled one when it has one idle, else a new one.
  // A new connection that fails (nothing was sent on it) moves on to the next server. Servers
  // that failed lately are tried only when none of the others answered: one of them may be back,
  // and refusing without asking would be a guess.
  // `must_be_alive`: the request cannot be replayed (its body streams), so a pooled connection
  // is checked however briefly it idled.
  net::awaitable<std::pair<Lease, Error>> Acquire(const RouteConfig& route, bool allow_reuse,
                                                  io::WatchList& watches,
                                                  bool must_be_alive = false) {
    // Idle ages (kCheckIdleAfter), rests and DNS refresh intervals are tens of ms and more: the
    // coarse clock serves, without a TSC read per request.
    const auto now = io::CoarseNow();
    const std::size_t n = route.upstreams.size();
    std::size_t first = n == 1 ? 0 : turns_[&route]++ % n;
    if (n > 1 && route.upstream_balance == RouteConfig::Balance::kLeastRequests) {
      first = FewestInFlight(route, first, now.time_since_epoch().count());
    }
    Error last{ErrorCode::kUpstreamUnavailable, "the route has no upstream", {}, {}};
    for (int pass = 0; pass < 2; ++pass) {
      for (std::size_t k = 0; k < n; ++k) {
        const UpstreamServer& server = route.upstreams[(first + k) % n];
        Target& t = TargetOf(server);
        const std::int64_t until = FailedUntil(t);
        bool resting = until > now.time_since_epoch().count();
        if (!resting && until != 0 && n > 1) {
          // Its rest is over. It is tried in the background, and requests keep going to the
          // others until it answers: none waits out connect_timeout on a server that may still
          // be down (one whose packets are dropped is only seen to be down that way).
          if (ClaimProbe(t, until, now + 2 * route.connect_timeout + kProbeMargin)) {
            net::co_spawn(co_await net::this_coro::executor, Probe(route, server, watches),
                          net::detached);
          }
          resting = true;
        }
        if (resting != (pass == 1)) continue;
        if (LookUpDue(route, t, now)) {
          // Requests go on to the known addresses while the name is looked up again.
          t.looking_up = true;
          net::co_spawn(co_await net::this_coro::executor, LookUp(server, t), net::detached);
        }
        SyncAddresses(t);
        const std::size_t address = AddressInTurn(t, now.time_since_epoch().count());
        if (allow_reuse) {
          if (auto c = TakeIdle(t, address, now, must_be_alive)) {
            co_return std::pair{Lease{std::move(c), true}, Error{}};
          }
        }
        auto [conn, err] = co_await Connect(route, server, t, watches, now, address);
        if (conn) {
          if (until != 0 && until != kOutUntilChecked) SetFailedUntil(t, 0);
          co_return std::pair{Lease{std::move(conn), false}, Error{}};
        }
        Rest(route, server, t, io::CoarseNow(), err.message, resting);  // the connect took time
        last = std::move(err);
      }
    }
    co_return std::pair{Lease{}, std::move(last)};
  }

  // An active health check of one server (the route's upstream_health_path): a new connection,
  // `GET <path>`, and a 2xx or 3xx within upstream_health_timeout. A server that fails is left
  // out of the turn until a check passes; one that passes is back in at once. When the server's
  // name lists several addresses, each is checked on its own: one that fails is left out of
  // every worker's turn while the others serve, and the server is out only when all fail.
  net::awaitable<void> Check(const RouteConfig& route, const UpstreamServer& server,
                             io::WatchList& watches) {
    Target& t = TargetOf(server);
    auto now = io::CoarseNow();
    if (LookUpDue(route, t, now)) {
      t.looking_up = true;  // this worker may serve no requests that would look it up
      co_await LookUp(server, t);
      now = io::CoarseNow();
    }
    std::string failed;
    if (t.addresses.size() > 1 && t.shared) {
      failed = co_await CheckEachAddress(route, server, t, watches);
    } else {
      auto [conn, err] = co_await Connect(route, server, t, watches, now,
                                          AddressInTurn(t, now.time_since_epoch().count()));
      if (conn) {
        failed = co_await AskHealth(route, server, *conn, watches);
      } else {
        failed = err.message;
      }
    }
    const bool was_out = FailedUntil(t) == kOutUntilChecked;
    if (failed.empty()) {
      if (FailedUntil(t) != 0) SetFailedUntil(t, 0);
      if (was_out)
        spdlog::info("proxy: route {}: {} passes its health check again", route.name, server.url);
      co_return;
    }
    if (!was_out) {
      spdlog::warn("proxy: route {}: {} failed its health check ({}); left out until one passes",
                   route.name, server.url, failed);
      if (t.shared) t.shared->failures.fetch_add(1, std::memory_order_relaxed);
    }
    SetFailedUntil(t, kOutUntilChecked);
  }

  // The server dropped a request on a new connection before answering: it rests as if it had
  // refused the connection.
  void Dropped(const RouteConfig& route, const UpstreamServer& server) {
    Target& t = TargetOf(server);
    const auto now = io::CoarseNow();
    Rest(route, server, t, now, "closed the connection before answering",
         FailedUntil(t) > now.time_since_epoch().count());
  }

  // The server answered with `status`. Gateway failures in a row (502, 503, 504: the server is
  // up, but what is behind it is not) rest it once there are upstream_max_failures of them; any
  // other answer ends the run.
  void Answered(const RouteConfig& route, UpstreamConnection& conn, int status) {
    if (!conn.health || route.upstream_max_failures == 0) return;
    std::atomic<std::uint32_t>& run = conn.health->failed_answers;
    if (status < 502 || status > 504) {
      if (run.load(std::memory_order_relaxed) != 0) run.store(0, std::memory_order_relaxed);
      return;
    }
    if (run.fetch_add(1, std::memory_order_relaxed) + 1 < route.upstream_max_failures) return;
    run.store(0, std::memory_order_relaxed);
    Target& t = TargetOf(*conn.server);
    const auto now = io::CoarseNow();
    Rest(route, *conn.server, t, now,
         "answered " + std::to_string(route.upstream_max_failures) + " requests in a row with " +
             std::to_string(status),
         FailedUntil(t) > now.time_since_epoch().count());
  }

  // Pools a connection whose last response ended cleanly. An idle upstream connection has
  // nothing to say; one that did (bytes nobody asked for, such as a 408 sent at the upstream's
  // idle timeout, or its close) must never be used, or a request could read a stale response.
  //
  // It is checked when taken rather than watched while idle: a watch costs an epoll_ctl on
  // every request, and under load a connection is taken again within microseconds, before any
  // upstream's idle timeout (seconds) can have fired. One that idled for kCheckIdleAfter or
  // longer gets a non-blocking peek. A close that lands inside that window shows as a failed
  // first read, and such a request is replayed on a fresh connection (or, when its body
  // streams and cannot be replayed, the connection is checked however young).
  void Release(std::unique_ptr<UpstreamConnection> c) {
    Address* a = AddressOf(TargetOf(*c->server), c->peer);
    // An address the name no longer resolves to: its connections are not kept.
    if (!a || a->idle.size() >= kMaxIdlePerUpstream) return;
    c->in.ShrinkIfIdle(16 * 1024);
    c->idle_since = io::CoarseNow();
    a->idle.push_back(std::move(c));
  }

  void CloseAll() {
    for (auto& [k, t] : targets_) {
      for (auto& a : t.addresses) {
        for (auto& c : a.idle) {
          boost::system::error_code ec;
          c->socket.close(ec);
        }
        a.idle.clear();
      }
    }
  }

 private:
  struct Address;
  struct Target;

  // Of the servers not resting, the one with the fewest requests in flight, looking from `first`
  // so that ties go in turn; `first` when all rest.
  std::size_t FewestInFlight(const RouteConfig& route, std::size_t first, std::int64_t now) {
    const std::size_t n = route.upstreams.size();
    std::size_t best = first;
    std::int64_t fewest = std::numeric_limits<std::int64_t>::max();
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (first + k) % n;
      Target& t = TargetOf(route.upstreams[i]);
      if (!t.shared || FailedUntil(t) > now) continue;
      const std::int64_t load = t.shared->in_flight.load(std::memory_order_relaxed);
      if (load < fewest) {
        fewest = load;
        best = i;
      }
    }
    return best;
  }
  // The standing of a server that failed an active health check: out until one passes.
  static constexpr std::int64_t kOutUntilChecked = std::numeric_limits<std::int64_t>::max();

  // Empty when the server answered the health check with 2xx or 3xx; else what went wrong.
  static net::awaitable<std::string> AskHealth(const RouteConfig& route,
                                               const UpstreamServer& server,
                                               UpstreamConnection& conn, io::WatchList& watches) {
    io::Deadline deadline(watches, &conn.socket);
    deadline.Arm(route.upstream_health_timeout);
    const std::string request =
        "GET " + route.upstream_health_path + " HTTP/1.1\r\nHost: " + server.authority +
        "\r\nUser-Agent: gatehouse-health-check\r\nConnection: close\r\n\r\n";
    auto [wec, wn] = co_await net::async_write(conn, net::buffer(request), kNoThrow);
    if (wec) co_return deadline.fired() ? "no answer in time" : "the connection failed";
    h1::ResponseHead head;
    const h1::Limits limits{kMaxUpstreamHead, 200};
    for (;;) {
      const auto st = h1::ParseResponse(conn.in.data(), limits, false, head);
      if (st == h1::Status::kComplete) {
        if (head.status >= 200) break;
        conn.in.Consume(head.head_bytes);  // 1xx
        continue;
      }
      if (st != h1::Status::kIncomplete) co_return "no valid HTTP response";
      auto space = conn.in.Prepare(4096, kMaxUpstreamHead + 4);
      auto [rec, rn] =
          co_await conn.async_read_some(net::buffer(space.data(), space.size()), kNoThrow);
      if (rec) {
        co_return deadline.fired() ? "no answer in time" : "the connection closed unanswered";
      }
      conn.in.Commit(rn);
    }
    if (head.status >= 400) co_return "answered " + std::to_string(head.status);
    co_return "";
  }

  // Checks every address of the server's name at once, and shares which failed: one after the
  // other, a name with many silent addresses would take that many timeouts to be judged.
  // Returns why the last of them failed when all did (the server is then out as a whole), else
  // an empty string.
  net::awaitable<std::string> CheckEachAddress(const RouteConfig& route,
                                               const UpstreamServer& server, Target& t,
                                               io::WatchList& watches) {
    std::vector<tcp::endpoint> addresses;
    addresses.reserve(t.addresses.size());
    for (const auto& a : t.addresses) addresses.push_back(a.endpoint);
    const auto executor = co_await net::this_coro::executor;
    using Check = decltype(net::co_spawn(
        executor, CheckAddress(route, server, t, watches, addresses.front()), net::deferred));
    std::vector<Check> checks;
    checks.reserve(addresses.size());
    for (const auto& endpoint : addresses) {
      checks.push_back(net::co_spawn(executor, CheckAddress(route, server, t, watches, endpoint),
                                     net::deferred));
    }
    auto [order, exceptions, results] =
        co_await net::experimental::make_parallel_group(std::move(checks))
            .async_wait(net::experimental::wait_for_all(), net::use_awaitable);
    std::vector<tcp::endpoint> out;
    std::vector<std::string> why;
    for (std::size_t i = 0; i < addresses.size(); ++i) {
      if (exceptions[i]) std::rethrow_exception(exceptions[i]);
      if (results[i].empty()) continue;
      out.push_back(addresses[i]);
      why.push_back(std::move(results[i]));
    }
    const std::vector<tcp::endpoint> before = t.shared->Addresses().checked_out;
    const bool all_failed = out.size() == addresses.size();
    if (t.shared->SetCheckedOut(out) && !all_failed) {
      for (std::size_t i = 0; i < out.size(); ++i) {
        if (std::find(before.begin(), before.end(), out[i]) != before.end()) continue;
        spdlog::warn(
            "proxy: route {}: {} at {} failed its health check ({}); its other addresses serve "
            "until one passes",
            route.name, server.url, FormatEndpoint(out[i]), why[i]);
        t.shared->failures.fetch_add(1, std::memory_order_relaxed);
      }
      for (const auto& endpoint : before) {
        if (std::find(out.begin(), out.end(), endpoint) != out.end()) continue;
        spdlog::info("proxy: route {}: {} at {} passes its health check again", route.name,
                     server.url, FormatEndpoint(endpoint));
      }
    }
    SyncAddresses(t);
    co_return all_failed ? why.back() : std::string();
  }

  // One address's check: why it failed, or an empty string.
  net::awaitable<std::string> CheckAddress(const RouteConfig& route, const UpstreamServer& server,
                                           Target& t, io::WatchList& watches,
                                           tcp::endpoint endpoint) {
    auto attempt = co_await ConnectTo(route, server, t, watches, endpoint);
    // Not a conditional expression: g++ 12 mishandles co_await inside one.
    std::string failed = std::move(attempt.error.message);
    if (attempt.conn) failed = co_await AskHealth(route, server, *attempt.conn, watches);
    co_return failed;
  }

  // Copies the standing of the server's addresses, as the workers last shared it, into this
  // worker's (`force`: even when unchanged, after a lookup replaced the addresses).
  static void SyncAddresses(Target& t, bool force = false) {
    if (!t.shared) return;
    const std::uint64_t version = t.shared->addresses_version.load(std::memory_order_acquire);
    if (version == t.addresses_seen && !force) return;
    t.addresses_seen = version;
    const UpstreamHealth::Server::AddressStanding standing = t.shared->Addresses();
    for (auto& a : t.addresses) {
      a.checked_out = std::find(standing.checked_out.begin(), standing.checked_out.end(),
                                a.endpoint) != standing.checked_out.end();
      a.failed_until = 0;
      for (const auto& [endpoint, until] : standing.resting) {
        if (endpoint == a.endpoint) a.failed_until = until;
      }
    }
  }

  void Rest(const RouteConfig& route, const UpstreamServer& server, Target& t,
            io::SteadyClock::time_point now, std::string_view why, bool resting) {
    if (route.upstreams.size() > 1 && !resting) {
      spdlog::warn("proxy: route {}: {} failed ({}); others are preferred for {} ms", route.name,
                   server.url, why, route.upstream_fail_timeout.count());
    }
    if (t.shared) t.shared->failures.fetch_add(1, std::memory_order_relaxed);
    // Out until a health check passes already: a rest would let it back sooner.
    if (FailedUntil(t) == kOutUntilChecked) return;
    SetFailedUntil(t, (now + route.upstream_fail_timeout).time_since_epoch().count());
  }

  std::unique_ptr<UpstreamConnection> TakeIdle(Target& t, std::size_t address,
                                               io::SteadyClock::time_point now,
                                               bool must_be_alive) {
    if (address >= t.addresses.size()) return nullptr;
    auto& idle = t.addresses[address].idle;
    while (!idle.empty()) {
      auto c = std::move(idle.back());
      idle.pop_back();
      if ((must_be_alive || now - c->idle_since >= kCheckIdleAfter) && !StillQuiet(*c)) continue;
      return c;
    }
    return nullptr;
  }

  // A new connection to `server`: its name looked up if it never was, then TCP to the address
  // in turn (`address`), then TLS for https. An address that does not take the connection is
  // passed over for the route's upstream_fail_timeout while the name has others, and the next
  // one is tried; the server fails only when none of its addresses took it.
  net::awaitable<std::pair<std::unique_ptr<UpstreamConnection>, Error>> Connect(
      const RouteConfig& route, const UpstreamServer& server, Target& t, io::WatchList& watches,
      io::SteadyClock::time_point now, std::size_t address) {
    using Result = std::pair<std::unique_ptr<UpstreamConnection>, Error>;
    const bool had_addresses = !t.addresses.empty();  // else `address` was chosen from none
    if (!t.resolution.known()) {
      if (t.addresses.empty()) {
        boost::system::error_code not_literal;
        net::ip::make_address(server.host, not_literal);
        t.resolution = UpstreamResolution(!not_literal);
      }
      if (!co_await LookUp(server, t)) {
        co_return Result{
            nullptr,
            Error{ErrorCode::kUpstreamUnavailable, "upstream host cannot be resolved", {}, {}}};
      }
    }
    if (!had_addresses || address >= t.addresses.size()) {
      address = AddressInTurn(t, now.time_since_epoch().count());
    }
    // The order is fixed before the first attempt: another request on this worker may look the
    // name up again (and replace t.addresses) while this one waits for a connection.
    std::vector<tcp::endpoint> order;
    order.reserve(t.addresses.size());
    const std::int64_t now_ns = now.time_since_epoch().count();
    const std::size_t n = t.addresses.size();
    for (int pass = 0; pass < 2; ++pass) {  // those that failed lately last
      for (std::size_t k = 0; k < n; ++k) {
        const Address& a = t.addresses[(address + k) % n];
        const bool passed_over = a.failed_until > now_ns || a.checked_out;
        if (passed_over == (pass == 1)) order.push_back(a.endpoint);
      }
    }
    Error last{ErrorCode::kUpstreamUnavailable, "upstream refused the connection", {}, {}};
    for (const tcp::endpoint& endpoint : order) {
      auto attempt = co_await ConnectTo(route, server, t, watches, endpoint);
      if (attempt.conn || !attempt.refused) {
        co_return Result{std::move(attempt.conn), std::move(attempt.error)};
      }
      last = std::move(attempt.error);
    }
    co_return Result{nullptr, std::move(last)};
  }

  struct Attempt {
    std::unique_ptr<UpstreamConnection> conn;
    Error error;
    bool refused = false;  // TCP did not connect: another address of the name may
  };
  // A new connection to one address of the server's name, with TLS for https. An address that
  // does not take it is passed over by every worker for the route's upstream_fail_timeout.
  net::awaitable<Attempt> ConnectTo(const RouteConfig& route, const UpstreamServer& server,
                                    Target& t, io::WatchList& watches,
                                    const tcp::endpoint& endpoint) {
    auto conn = std::make_unique<UpstreamConnection>(co_await net::this_coro::executor);
    conn->server = &server;
    conn->health = t.shared;
    conn->peer = endpoint;
    io::Deadline deadline(watches, &conn->socket);
    deadline.Arm(route.connect_timeout);
    auto [ec] = co_await conn->socket.async_connect(endpoint, kNoThrow);
    Address* a = AddressOf(t, endpoint);
    if (ec) {
      t.resolution.ConnectFailed();
      Error error =
          deadline.fired()
              ? Error{ErrorCode::kUpstreamTimeout,
                      "upstream did not accept the connection in time",
                      {},
                      {}}
              : Error{ErrorCode::kUpstreamUnavailable, "upstream refused the connection", {}, {}};
      const auto after = io::CoarseNow();  // the attempt took time
      if (a && t.addresses.size() > 1 && a->failed_until <= after.time_since_epoch().count()) {
        spdlog::warn("proxy: {} at {} failed ({}); its other addresses are preferred for {} ms",
                     server.url, FormatEndpoint(endpoint), error.message,
                     route.upstream_fail_timeout.count());
      }
      if (a) {
        a->failed_until = (after + route.upstream_fail_timeout).time_since_epoch().count();
        if (t.shared) {
          t.shared->RestAddress(endpoint, a->failed_until, after.time_since_epoch().count());
        }
      }
      co_return Attempt{nullptr, std::move(error), true};
    }
    if (a && a->failed_until != 0) {
      a->failed_until = 0;
      if (t.shared) t.shared->AddressAnswered(endpoint);
    }
    boost::system::error_code opt_ec;
    conn->socket.set_option(tcp::no_delay(true), opt_ec);
    if (route.upstream_tls) {
      if (auto failed = co_await StartTls(route, server, *conn, deadline)) {
        co_return Attempt{nullptr, std::move(*failed), false};
      }
    }
    co_return Attempt{std::move(conn), Error{}, false};
  }

  // The name was looked up, dns_refresh ago or more, and no lookup of it is under way.
  static bool LookUpDue(const RouteConfig& route, const Target& t,
                        io::SteadyClock::time_point now) {
    return t.resolution.known() && !t.looking_up && t.resolution.Due(now, route.dns_refresh);
  }

  // Looks the server's name up; false when it has no known addresses after all. A failed lookup
  // keeps the addresses already known.
  static net::awaitable<bool> LookUp(const UpstreamServer& server, Target& t) {
    tcp::resolver resolver(co_await net::this_coro::executor);
    auto [ec, results] =
        co_await resolver.async_resolve(server.host, std::to_string(server.port), kNoThrow);
    const auto now = io::CoarseNow();
    t.looking_up = false;
    if (ec || results.empty()) {
      t.resolution.LookupFailed(now);
      if (t.resolution.known()) {
        spdlog::warn("proxy: looking up {} failed ({}); keeping its last known addresses",
                     server.host, ec ? ec.message() : "no addresses");
      }
      co_return t.resolution.known();
    }
    std::vector<tcp::endpoint> found;
    for (const auto& r : results) found.push_back(r.endpoint());
    KeepAddresses(t, found);
    SyncAddresses(t, true);
    t.resolution.Resolved(now);
    co_return true;
  }

  // The address whose turn it is among those of the server's name, passing over those that
  // failed lately or failed their health check while one has not.
  static std::size_t AddressInTurn(Target& t, std::int64_t now) {
    const std::size_t n = t.addresses.size();
    if (n <= 1) return 0;
    const std::size_t first = t.address_turn++ % n;
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (first + k) % n;
      if (t.addresses[i].failed_until <= now && !t.addresses[i].checked_out) return i;
    }
    return first;
  }
  static Address* AddressOf(Target& t, const tcp::endpoint& endpoint) {
    for (auto& a : t.addresses) {
      if (a.endpoint == endpoint) return &a;
    }
    return nullptr;
  }
  // The addresses a new lookup found. Those already known keep their idle connections and
  // their standing (a failed address that is still listed stays passed over); connections to
  // addresses no longer listed are closed.
  static void KeepAddresses(Target& t, const std::vector<tcp::endpoint>& found) {
    std::vector<Address> next;
    next.reserve(found.size());
    for (const auto& endpoint : found) {
      bool listed = false;
      for (const auto& a : next) listed = listed || a.endpoint == endpoint;
      if (listed) continue;
      if (Address* known = AddressOf(t, endpoint)) {
        next.push_back(std::move(*known));
      } else {
        next.push_back(Address{endpoint, {}, 0});
      }
    }
    t.addresses = std::move(next);
  }
  static std::string FormatEndpoint(const tcp::endpoint& e) {
    const std::string host = e.address().to_string();
    return (e.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(e.port());
  }

  // True when the upstream has sent nothing and not closed: a peek that would block.
  static bool StillQuiet(UpstreamConnection& c) {
    if (!c.socket.is_open()) return false;
    char byte = 0;
    ssize_t n = ::recv(c.socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  struct SessionFree {
    void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
  };
  // One address the server's name resolved to, with its idle connections. New connections,
  // and so requests, take the addresses in turn: a name that lists several replicas (a headless
  // Kubernetes service, several A records) spreads its load over them. An address that failed
  // a new connection is passed over until failed_until (steady-clock ns); one that failed its
  // health check, until one passes. Both are shared by every worker (UpstreamHealth::Server).
  struct Address {
    tcp::endpoint endpoint;
    std::vector<std::unique_ptr<UpstreamConnection>> idle;
    std::int64_t failed_until = 0;
    bool checked_out = false;
  };
  struct Target {
    std::vector<Address> addresses;
    std::size_t address_turn = 0;
    UpstreamResolution resolution;
    bool looking_up = false;            // a lookup runs in the background
    std::unique_ptr<ssl::context> tls;  // https:// only, made at the first connection
    // The newest session the upstream gave (a TLS 1.3 ticket or a 1.2 session), which the next
    // new connection offers, once, so that its handshake resumes instead of starting over.
    std::unique_ptr<SSL_SESSION, SessionFree> session;
    // Until then (steady-clock ns) the server is passed over while the route has others: a new
    // connection to it failed. Shared by the workers when `shared` is set.
    std::int64_t failed_until = 0;
    UpstreamHealth::Server* shared = nullptr;
    std::uint64_t addresses_seen = 0;  // shared->addresses_version last copied
  };
  // Takes the probe of a server whose rest ended at `until`, holding it out of turn until
  // `hold`; false when another worker took it first.
  static bool ClaimProbe(Target& t, std::int64_t until, io::SteadyClock::time_point hold) {
    const std::int64_t held = hold.time_since_epoch().count();
    if (!t.shared) {
      t.failed_until = held;
      return true;
    }
    return t.shared->failed_until.compare_exchange_strong(until, held, std::memory_order_relaxed);
  }
  // A new connection to a server whose rest is over: it rejoins the turn (and its connection
  // the pool) when this succeeds, and rests again when it fails.
  net::awaitable<void> Probe(const RouteConfig& route, const UpstreamServer& server,
                             io::WatchList& watches) {
    Target& t = TargetOf(server);
    const auto now = io::CoarseNow();
    auto [conn, err] = co_await Connect(route, server, t, watches, now,
                                        AddressInTurn(t, now.time_since_epoch().count()));
    if (conn) {
      SetFailedUntil(t, 0);
      spdlog::info("proxy: route {}: {} answers again", route.name, server.url);
      Release(std::move(conn));
      co_return;
    }
    Rest(route, server, t, io::CoarseNow(), err.message, true);
  }

  static std::int64_t FailedUntil(const Target& t) {
    return t.shared ? t.shared->failed_until.load(std::memory_order_relaxed) : t.failed_until;
  }
  static void SetFailedUntil(Target& t, std::int64_t until) {
    if (t.shared) {
      t.shared->failed_until.store(until, std::memory_order_relaxed);
    } else {
      t.failed_until = until;
    }
  }

  // OpenSSL shows each new session here (for TLS 1.3, when its ticket arrives, after the
  // handshake); the context's app data is its target, on this worker's thread. A copy is kept:
  // the connection's own is marked unusable when the connection ends without a close_notify,
  // which is how upstream connections end here.
  static int RememberSession(SSL* ssl, SSL_SESSION* session) {
    auto* t = static_cast<Target*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
    t->session.reset(SSL_SESSION_dup(session));
    return 0;  // OpenSSL keeps its own reference
  }

  Target& TargetOf(const UpstreamServer& server) {
    auto [it, fresh] = targets_.try_emplace(server.pool_key);
    if (fresh && health_) it->second.shared = health_->Of(server);
    return it->second;
  }

  // The TLS handshake on a fresh connection, with the certificate verified for the route's
  // server name (or the URL's host). Returns the error the request gets when it fails.
  net::awaitable<std::optional<Error>> StartTls(const RouteConfig& route,
                                                const UpstreamServer& server,
                                                UpstreamConnection& conn, io::Deadline& deadline) {
    Target& t = TargetOf(server);
    if (!t.tls) {
      auto native_ctx = MakeClientTlsContext(
          {route.upstream_tls_ca_file, route.upstream_tls_cert_file, route.upstream_tls_key_file});
      if (!native_ctx) {
        spdlog::error("proxy: TLS to {}: {}", server.url, native_ctx.error().message);
        co_return Error{ErrorCode::kUpstreamUnavailable, "upstream TLS is not set up", {}, {}};
      }
      auto ctx = std::make_unique<ssl::context>(*native_ctx);  // takes it over
      SSL_CTX_set_session_cache_mode(ctx->native_handle(),
                                     SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
      SSL_CTX_sess_set_new_cb(ctx->native_handle(), &RememberSession);
      SSL_CTX_set_app_data(ctx->native_handle(), &t);  // map nodes never move
      t.tls = std::move(ctx);
    }
    conn.tls = std::make_unique<ssl::stream<tcp::socket&>>(conn.socket, *t.tls);
    SSL* native = conn.tls->native_handle();
    if (t.session) {
      SSL_set_session(native, t.session.get());
      t.session.reset();  // a ticket is offered once (RFC 8446 C.4)
    }
    const std::string& name =
        route.upstream_tls_server_name.empty() ? server.host : route.upstream_tls_server_name;
    ExpectPeerName(native, name);
    deadline.Arm(route.connect_timeout);
    auto [ec] = co_await conn.tls->async_handshake(ssl::stream_base::client, kNoThrow);
    if (!ec) co_return std::nullopt;
    if (deadline.fired()) {
      co_return Error{
          ErrorCode::kUpstreamTimeout, "upstream did not finish the TLS handshake in time", {}, {}};
    }
    const long verdict = SSL_get_verify_result(native);
    if (verdict != X509_V_OK) {
      spdlog::warn("proxy: {}'s TLS certificate is not trusted for \"{}\": {}", server.url, name,
                   X509_verify_cert_error_string(verdict));
      co_return Error{
          ErrorCode::kUpstreamUnavailable, "upstream's TLS certificate is not trusted", {}, {}};
    }
    spdlog::warn("proxy: the TLS handshake with {} failed: {}", server.url, ec.message());
    co_return Error{ErrorCode::kUpstreamUnavailable, "upstream TLS handshake failed", {}, {}};
  }
  std::unordered_map<std::string, Target> targets_;
  std::unordered_map<const RouteConfig*, std::size_t> turns_;  // routes with several servers
  UpstreamHealth* health_ = nullptr;
};

// Consulted once the upstream's status is known and before any byte reaches the client (the
// audit log's durability wait). An error means the response must not be sent.
class ResponseGate {
 public:
  virtual ~ResponseGate() = default;
  virtual net::awaitable<std::optional<Error>> Pass(int status) = 0;
};

// Checks a large request body against its route's schema away from the network thread (the
// server's blocking pool); smaller ones are checked in place.
class BodyChecker {
 public:
  virtual ~BodyChecker() = default;
  virtual net::awaitable<Result<void>> Check(const JsonSchema& schema, const std::string& body) = 0;
};
// Bodies up to this size are validated on the network thread: a few tens of microseconds.
inline constexpr std::size_t kCheckInPlaceBelow = 64 * 1024;
// A request body of at most this many bytes that came in with its head is held whole, so that
// the request can be sent again (see Forward).
inline constexpr std::uint64_t kHoldArrivedBodyBelow = 64 * 1024;

struct ForwardContext {
  ResponseGate* gate = nullptr;
  BodyChecker* body_checker = nullptr;  // null: every body is checked in place
  const RouteConfig* route = nullptr;
  const Principal* principal = nullptr;
  std::string_view request_id;
  std::string_view client_ip;
  std::string_view peer_ip;
  bool client_tls = false;
  const LimitsConfig* limits = nullptr;
  // Set to the server each attempt goes to (the access log names the last); null: not wanted.
  const UpstreamServer** upstream_used = nullptr;
  // Header lines ("Name: value\r\n") for the client's response head: the rate-limit state.
  // Replaces the upstream's own RateLimit-* fields when set.
  std::string_view extra_response_headers;
};

// The route's own body limit, or the deployment's.
inline std::uint64_t MaxBody(const ForwardContext& ctx) {
  const std::uint64_t global = ctx.limits->max_proxy_body_bytes;
  const std::uint64_t route = ctx.route->max_body_bytes;
  return route > 0 && route < global ? route : global;
}

struct ForwardResult {
  int status = 0;                 // what the client got (or would have got)
  bool response_started = false;  // false: the caller must send `error`
  // The client connection may serve another request; on a failure before the response, the
  // request body was read to its end.
  bool client_reusable = false;
  Error error;
};

// The client side of one proxied request. For a request with a body, the head lives outside
// `in` (the session copied it), and `in` starts at the body.
template <class Stream>
struct ClientSide {
  Stream& stream;
  io::InputBuffer& in;
  io::Deadline& deadline;
  const h1::RequestHead& head;
  std::string& scratch;  // reused for both heads gatehouse writes
};

inline void AppendUpstreamTarget(const RouteConfig& route, const UpstreamServer& server,
                                 std::string_view target, std::string& out) {
  std::string_view path = target.substr(0, target.find('?'));
  std::string_view query = target.substr(path.size());
  std::size_t start = out.size();
  out += server.base_path;
  if (route.strip_prefix) {
    path.remove_prefix(std::min(path.size(), route.path_prefix.size()));
    if (!path.starts_with('/')) out += '/';
  }
  out += path;
  if (out.size() == start) out += '/';
  out += query;
}

inline void AppendField(std::string& out, std::string_view name, std::string_view value) {
  out += name;
  out += std::string_view(": ");
  out += value;
  out += std::string_view("\r\n");
}

// The request head the upstream receives: the client's fields minus hop-by-hop ones, spoofable
// identity and forwarding fields and (unless the route says otherwise) the credential; then
// gatehouse's own.
// `whole_body_length`: the body was read whole (and its chunked framing undone), so it goes
// with this Content-Length in place of the client's framing fields.
// `upgrade`: the protocol the client asked to switch to, which the route lets through.
inline void BuildUpstreamHead(const h1::RequestHead& head, const ForwardContext& ctx,
                              const UpstreamServer& server, std::string& out,
                              std::optional<std::size_t> whole_body_length = std::nullopt,
                              std::string_view upgrade = {}) {
  const RouteConfig& route = *ctx.route;
  const h1::ConnectionTokens listed = head.ListedInConnection();
  out.clear();
  out += head.method;
  out += ' ';
  AppendUpstreamTarget(route, server, head.target, out);
  out += " HTTP/1.1\r\n";
  for (const auto& f : head.fields) {
    std::string_view n = f.name;
    if (h1::IsHopByHop(n) || listed.Contains(n) || IsIdentityHeader(n) ||
        EqualsIgnoreCase(n, "host") || EqualsIgnoreCase(n, "expect") ||
        EqualsIgnoreCase(n, "x-request-id") || EqualsIgnoreCase(n, "x-forwarded-for") ||
        EqualsIgnoreCase(n, "x-forwarded-proto")) {
      continue;
    }
    if (!route.forward_credential &&
        (EqualsIgnoreCase(n, "authorization") || EqualsIgnoreCase(n, "x-api-key"))) {
      continue;
    }
    if (whole_body_length &&
        (EqualsIgnoreCase(n, "content-length") || EqualsIgnoreCase(n, "transfer-encoding"))) {
      continue;
    }
    // The console's session cookie is sent by browsers to every path of the host, proxied
    // routes included; it is a credential for gatehouse alone.
    if (!route.forward_credential && EqualsIgnoreCase(n, "cookie") &&
        f.value.find(kSessionCookieName) != std::string_view::npos) {
      std::string rest = WithoutCookie(f.value, kSessionCookieName);
      if (!rest.empty()) AppendField(out, n, rest);
      continue;
    }
    bool replaced = false;
    for (const auto& [name, value] : route.add_headers)
      replaced = replaced || EqualsIgnoreCase(n, name);
    if (replaced) continue;
    AppendField(out, n, f.value);
  }
  AppendField(out, "Host", server.authority);
  Gateway::AppendIdentityHeaders(*ctx.principal, out);
  AppendField(out, "X-Request-Id", ctx.request_id);
  // X-Forwarded-For: a trusted proxy's list is kept and extended; anyone else's is replaced.
  auto xff = head.Find("x-forwarded-for");
  out += "X-Forwarded-For: ";
  if (ctx.client_ip != ctx.peer_ip && xff && !xff->empty()) {
    out += *xff;
    out += ", ";
  }
  out += ctx.peer_ip;
  out += "\r\n";
  AppendField(out, "X-Forwarded-Proto", ctx.client_tls ? "https" : "http");
  for (const auto& [name, value] : route.add_headers) AppendField(out, name, value);
  if (whole_body_length) AppendField(out, "Content-Length", std::to_string(*whole_body_length));
  if (!upgrade.empty()) {
    AppendField(out, "Connection", "Upgrade");
    AppendField(out, "Upgrade", upgrade);
  }
  out += "\r\n";
}

// Whether `value`, a comma-separated Upgrade field, offers `protocol` (any version of it).
inline bool OffersProtocol(std::string_view value, std::string_view protocol) {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (EqualsIgnoreCase(item.substr(0, item.find('/')), protocol)) return true;
  }
  return false;
}

// Whether the request asks for a WebSocket (RFC 6455 §4.1) on a route that lets it through:
// an HTTP/1.1 GET without a body, with Upgrade named in Connection.
inline bool WantsWebSocket(const h1::RequestHead& head, const RouteConfig& route) {
  return route.websocket && head.method == "GET" && head.minor_version == 1 &&
         head.framing == h1::Framing::kNone && head.ListedInConnection().Contains("upgrade") &&
         OffersProtocol(head.Find("upgrade").value_or(""), "websocket");
}

// The response head the client receives: the upstream's, minus hop-by-hop fields, with
// gatehouse's request id.
// `unchunked`: the body goes out without its chunked framing (to an HTTP/1.0 client), so the
// Transfer-Encoding field is dropped and the close of the connection ends the body.
// `upgrade`: a 101's protocol, named again after the hop-by-hop fields went.
inline void BuildClientHead(const h1::ResponseHead& res, std::string_view request_id, bool close,
                            std::string& out, std::string_view extra = {}, bool unchunked = false,
                            std::string_view upgrade = {}) {
  const h1::ConnectionTokens listed = res.ListedInConnection();
  out.clear();
  out += std::string_view("HTTP/1.1 ");
  char status[12];
  out.append(status, std::to_chars(status, status + sizeof(status), res.status).ptr);
  out += ' ';
  out += res.reason;
  out += "\r\n";
  for (const auto& f : res.fields) {
    if (h1::IsHopByHop(f.name) || listed.Contains(f.name) ||
        EqualsIgnoreCase(f.name, "x-request-id") ||
        (unchunked && EqualsIgnoreCase(f.name, "transfer-encoding"))) {
      continue;
    }
    if (!extra.empty() && f.name.size() > 10 &&
        EqualsIgnoreCase(f.name.substr(0, 10), "ratelimit-")) {
      continue;
    }
    AppendField(out, f.name, f.value);
  }
  out += extra;
  AppendField(out, "X-Request-Id", request_id);
  if (!upgrade.empty()) {
    AppendField(out, "Connection", "Upgrade");
    AppendField(out, "Upgrade", upgrade);
  } else if (close) {
    out += "Connection: close\r\n";
  }
  out += "\r\n";
}

// How far a relay of `framing` has got; the bytes of `in` that belong to the message.
struct BodyTracker {
  h1::Framing framing;
  std::uint64_t remaining = 0;  // kLength
  h1::ChunkedDecoder chunked;

  // Bytes at the front of `in` that are this body's. Sets failed() on a malformed chunk. With
  // `data`, a chunked body's data (without its framing) is appended there.
  std::size_t Take(std::string_view in, std::string* data = nullptr) {
    switch (framing) {
      case h1::Framing::kNone:
        return 0;
      case h1::Framing::kLength: {
        auto n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, in.size()));
        remaining -= n;
        return n;
      }
      case h1::Framing::kChunked:
        return chunked.Feed(in, data);
      case h1::Framing::kUntilClose:
        return in.size();
    }
    return 0;
  }
  bool done() const {
    switch (framing) {
      case h1::Framing::kNone:
        return true;
      case h1::Framing::kLength:
        return remaining == 0;
      case h1::Framing::kChunked:
        return chunked.done();
      case h1::Framing::kUntilClose:
        return false;
    }
    return true;
  }
  bool failed() const { return framing == h1::Framing::kChunked && chunked.failed(); }
  std::uint64_t bytes_seen(std::uint64_t declared) const {
    return framing == h1::Framing::kChunked ? chunked.data_bytes() : declared - remaining;
  }
};

inline ForwardResult Failure(ErrorCode code, std::string message) {
  ForwardResult r;
  r.error = Error{code, std::move(message), {}, {}};
  r.status = ErrorStatus(code);
  return r;
}

// Reads more of the request body into client.in; a failure says why it stopped coming.
template <class Stream>
net::awaitable<std::optional<ForwardResult>> ReadMoreBody(ClientSide<Stream>& client, Millis idle) {
  auto space = client.in.Prepare(kRelayPiece, kRelayPiece * 2);
  client.deadline.Arm(idle);
  auto [ec, n] =
      co_await client.stream.async_read_some(net::buffer(space.data(), space.size()), kNoThrow);
  if (ec) {
    if (client.deadline.fired())
      co_return Failure(ErrorCode::kRequestTimeout, "request body took too long");
    co_return Failure(ErrorCode::kUpstreamUnavailable, "the client stopped sending the body");
  }
  client.in.Commit(n);
  co_return std::nullopt;
}

// Relays the rest of the request body, whose first bytes already went with the head. Returns an
// error only before the response started, which is always the case here.
template <class Stream>
net::awaitable<std::optional<ForwardResult>> RelayRequestBody(ClientSide<Stream>& client,
                                                              BodyTracker& body,
                                                              UpstreamConnection& up,
                                                              io::Deadline& up_deadline,
                                                              const ForwardContext& ctx) {
  const std::uint64_t max = MaxBody(ctx);
  const Millis idle = ctx.route->stream_idle_timeout;
  while (!body.done()) {
    if (auto cut = co_await ReadMoreBody(client, idle)) co_return cut;
    std::size_t n = body.Take(client.in.data());
    if (body.failed()) co_return Failure(ErrorCode::kInvalidArgument, "malformed chunked body");
    if (body.bytes_seen(client.head.content_length) > max)
      co_return Failure(ErrorCode::kPayloadTooLarge, "request body is too large");
    up_deadline.Arm(idle);
    auto [wec, wn] =
        co_await net::async_write(up, net::buffer(client.in.data().data(), n), kNoThrow);
    client.in.Consume(n);
    if (wec) co_return Failure(ErrorCode::kUpstreamUnavailable, "request body relay failed");
  }
  co_return std::nullopt;
}

// Reads the rest of the request body into `body`, its chunked framing undone, held to the
// route's size limit as it arrives.
template <class Stream>
net::awaitable<std::optional<ForwardResult>> ReadWholeBody(ClientSide<Stream>& client,
                                                           const ForwardContext& ctx,
                                                           std::string& body) {
  const h1::RequestHead& head = client.head;
  const std::uint64_t max = MaxBody(ctx);
  const Millis idle = ctx.route->stream_idle_timeout;
  BodyTracker tracker{head.framing, head.content_length, {}};
  if (head.framing == h1::Framing::kLength)
    body.reserve(static_cast<std::size_t>(head.content_length));
  for (;;) {
    std::string_view available = client.in.data();
    std::size_t n = 0;
    if (head.framing == h1::Framing::kChunked) {
      n = tracker.chunked.Feed(available, &body);
    } else {
      n = tracker.Take(available);
      body.append(available.data(), n);
    }
    client.in.Consume(n);
    if (tracker.failed()) co_return Failure(ErrorCode::kInvalidArgument, "malformed chunked body");
    if (tracker.bytes_seen(head.content_length) > max)
      co_return Failure(ErrorCode::kPayloadTooLarge, "request body is too large");
    if (tracker.done()) co_return std::nullopt;
    if (auto cut = co_await ReadMoreBody(client, idle)) co_return cut;
  }
}

// One direction of a WebSocket tunnel: bytes from `from` to `to` as they come. A side that has
// been quiet for `idle` has its deadline fire, which ends the tunnel.
template <class From, class To>
net::awaitable<boost::system::error_code> Pump(From& from, io::Deadline& from_deadline, To& to,
                                               io::Deadline& to_deadline, Millis idle,
                                               const bool& over) {
  std::unique_ptr<char[]> buffer(new char[kRelayPiece]);
  while (!over) {
    from_deadline.Arm(idle);
    auto [ec, n] = co_await from.async_read_some(net::buffer(buffer.get(), kRelayPiece), kNoThrow);
    if (ec) co_return ec;
    to_deadline.Arm(idle);
    auto [wec, wn] = co_await net::async_write(to, net::buffer(buffer.get(), n), kNoThrow);
    if (wec) co_return wec;
  }
  co_return net::error::operation_aborted;
}

// After a 101: relays both ways until either side ends. The upstream's end closes the client;
// the client's clean end (FIN) is passed on as a half-close, so the upstream can finish.
template <class Stream>
net::awaitable<void> Tunnel(ClientSide<Stream>& client, UpstreamConnection& up,
                            io::Deadline& up_deadline, Millis idle) {
  using namespace net::experimental::awaitable_operators;
  bool over = false;
  auto to_client = [&]() -> net::awaitable<void> {
    (void)co_await Pump(up, up_deadline, client.stream, client.deadline, idle, over);
    over = true;
    boost::system::error_code ignored;
    client.stream.lowest_layer().cancel(ignored);
  };
  auto to_upstream = [&]() -> net::awaitable<void> {
    auto ec = co_await Pump(client.stream, client.deadline, up, up_deadline, idle, over);
    boost::system::error_code ignored;
    if (ec == net::error::eof && !over) {
      up.socket.shutdown(tcp::socket::shutdown_send, ignored);
    } else {
      over = true;
      up.socket.cancel(ignored);
    }
  };
  // A graceful drain closes idle connections; a tunnel counts as one, or every open WebSocket
  // would hold the drain for all of its timeout.
  client.deadline.SetIdle(true);
  co_await (to_client() && to_upstream());
  client.deadline.SetIdle(false);
}

inline bool MethodCarriesContent(std::string_view method) {
  return method == "POST" || method == "PUT" || method == "PATCH";
}

// A request on its way to a server or back, counted while this lives (least_requests routes).
class InFlight {
 public:
  explicit InFlight(UpstreamHealth::Server* server) : server_(server) {
    if (server_) server_->in_flight.fetch_add(1, std::memory_order_relaxed);
  }
  ~InFlight() {
    if (server_) server_->in_flight.fetch_sub(1, std::memory_order_relaxed);
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  UpstreamHealth::Server* server_;
};

// RFC 9110 9.2.2: repeating the request has the effect of sending it once.
inline bool IsIdempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE";
}

template <class Stream>
net::awaitable<ForwardResult> Forward(ClientSide<Stream>& client, const ForwardContext& ctx,
                                      UpstreamPool& pool, io::WatchList& watches) {
  const RouteConfig& route = *ctx.route;
  const h1::RequestHead& head = client.head;
  const bool is_head = head.method == "HEAD";
  const bool has_body = head.framing != h1::Framing::kNone;
  const bool client_keep_alive = head.keep_alive;
  if (head.framing == h1::Framing::kLength && head.content_length > MaxBody(ctx)) {
    co_return Failure(ErrorCode::kPayloadTooLarge, "request body is too large");
  }
  // A route with a JSON Schema checks the whole body before any of it leaves.
  std::string whole_body;
  const bool whole = route.json_schema && (has_body || MethodCarriesContent(head.method));
  if (whole) {
    if (has_body) {
      auto failed = co_await ReadWholeBody(client, ctx, whole_body);
      if (failed) co_return std::move(*failed);
    }
    Result<void> valid;
    if (ctx.body_checker && whole_body.size() >= kCheckInPlaceBelow) {
      valid = co_await ctx.body_checker->Check(*route.json_schema, whole_body);
    } else {
      valid = route.json_schema->ValidateBody(whole_body);
    }
    if (!valid) {
      ForwardResult r;
      r.error = std::move(valid.error());
      r.status = ErrorStatus(r.error.code);
      r.client_reusable = true;  // the body was read to its end
      co_return r;
    }
  }
  // A small body that came in with its head, as most API calls' do, is held whole too, so that
  // a request sent on a pooled connection its upstream closed at that moment can be sent again
  // on a fresh one (nginx buffers request bodies for the same reason). A larger body, or one still
  // arriving, is relayed as it comes, and cannot be.
  const bool arrived_whole = !whole && head.framing == h1::Framing::kLength &&
                             head.content_length <= kHoldArrivedBodyBelow &&
                             client.in.data().size() >= head.content_length;
  if (arrived_whole) {
    auto failed = co_await ReadWholeBody(client, ctx, whole_body);
    if (failed) co_return std::move(*failed);
  }
  const bool held = whole || arrived_whole;
  std::string& out = client.scratch;
  const bool websocket = WantsWebSocket(head, route);

  // A pooled connection may have been closed by the upstream while idle; that shows only when
  // we use it. Without a body (or with one held whole) the request is replayed on a fresh
  // connection: always when the write failed, else only when it may be repeated. On a route with
  // several servers, a request whose method allows repeating it (RFC 9110 9.2.2) and whose server
  // dropped it unanswered on a new connection goes to the next server, as with nginx's
  // proxy_next_upstream: at most once to each. A timeout is not retried: the server may still be
  // working on it (a model's completion, billed).
  const bool replayable = !has_body || held;
  // RFC 9112 9.3.1: once its upstream may have read it, a request is sent again only when its
  // method is idempotent, or its client made it safe to repeat with an Idempotency-Key.
  const bool repeatable = IsIdempotent(head.method) || head.Find("idempotency-key").has_value();
  const std::size_t servers = route.upstreams.size();
  std::size_t failovers = 0;
  bool allow_reuse = true;
  for (std::size_t attempt = 0; attempt < 2 + servers; ++attempt) {
    auto [lease, err] = co_await pool.Acquire(route, allow_reuse, watches, has_body && !held);
    if (!lease.conn) {
      ForwardResult r;
      r.error = err;
      r.status = ErrorStatus(err.code);
      co_return r;
    }
    UpstreamConnection& up = *lease.conn;
    if (ctx.upstream_used) *ctx.upstream_used = up.server;
    InFlight in_flight(route.upstream_balance == RouteConfig::Balance::kLeastRequests ? up.health
                                                                                      : nullptr);
    // Built per attempt: a replay may go to another of the route's servers (Host, base path).
    if (held) {
      BuildUpstreamHead(head, ctx, *up.server, out, whole_body.size());
    } else {
      BuildUpstreamHead(head, ctx, *up.server, out, std::nullopt, websocket ? "websocket" : "");
    }
    io::Deadline up_deadline(watches, &up.socket);
    // Sent again, with a body only if held whole, when the upstream surely never read it (the
    // write failed), or when it may have and repeating it is safe.
    const bool retry_unsent =
        replayable && (lease.reused || (repeatable && failovers + 1 < servers));
    const bool retry_unanswered = retry_unsent && repeatable;
    // The request was lost before any answer. A pooled connection was stale: the next one is
    // fresh. A new one was dropped by its server, which rests; the next server's pooled
    // connections are as good as any.
    const bool pooled = lease.reused;  // clang 14 cannot capture a structured binding
    auto lost = [&] {
      if (pooled) {
        allow_reuse = false;
      } else {
        pool.Dropped(route, *up.server);
        ++failovers;
        allow_reuse = true;
      }
    };

    // The head, with whatever body bytes have already arrived, in one write.
    BodyTracker request_body{held ? h1::Framing::kNone : head.framing, head.content_length, {}};
    std::size_t first = request_body.Take(client.in.data());
    if (request_body.failed())
      co_return Failure(ErrorCode::kInvalidArgument, "malformed chunked body");
    // A chunked body that arrived with its head is held to the limit before any of it leaves.
    if (request_body.bytes_seen(head.content_length) > MaxBody(ctx))
      co_return Failure(ErrorCode::kPayloadTooLarge, "request body is too large");
    up_deadline.Arm(route.response_timeout);
    std::array<net::const_buffer, 2> head_and_body{
        net::buffer(out),
        held ? net::buffer(whole_body) : net::buffer(client.in.data().data(), first)};
    // Sent once this loop turn's other completions have run, so that the requests of every
    // client that turn woke reach their upstreams together: an upstream then wakes once for
    // them all instead of once each (on a loaded 2-core machine it slept a third as often,
    // and both it and this thread spent less per request; bench/RESULTS.md).
    co_await net::post(co_await net::this_coro::executor, net::use_awaitable);
    auto [hec, hn] = co_await net::async_write(up, head_and_body, kNoThrow);
    client.in.Consume(first);
    if (hec) {
      lost();
      if (retry_unsent) continue;
      co_return Failure(ErrorCode::kUpstreamUnavailable, "upstream connection failed");
    }
    if (has_body && !held) {
      auto failed = co_await RelayRequestBody(client, request_body, up, up_deadline, ctx);
      if (failed) co_return std::move(*failed);
    }

    // The response head; informational responses before it are dropped.
    h1::ResponseHead& res = up.head;
    res.status = 0;
    h1::Limits limits{kMaxUpstreamHead, 200};
    up_deadline.Arm(route.response_timeout);
    bool received_any = false;
    for (;;) {
      auto st = h1::ParseResponse(up.in.data(), limits, is_head, res);
      if (st == h1::Status::kComplete) {
        if (res.status >= 200) break;
        if (res.status == 101) {
          if (websocket && OffersProtocol(res.Find("upgrade").value_or(""), "websocket")) break;
          co_return Failure(ErrorCode::kUpstreamUnavailable,
                            "upstream switched to a protocol the client did not ask for");
        }
        up.in.Consume(res.head_bytes);
        continue;
      }
      if (st != h1::Status::kIncomplete) {
        co_return Failure(ErrorCode::kUpstreamUnavailable, "upstream sent no valid response");
      }
      auto space = up.in.Prepare(4096, kMaxUpstreamHead + 4);
      auto [rec, rn] =
          co_await up.async_read_some(net::buffer(space.data(), space.size()), kNoThrow);
      if (rec) {
        if (up_deadline.fired()) {
          co_return Failure(ErrorCode::kUpstreamTimeout, "upstream did not answer in time");
        }
        if (!received_any) lost();
        if (retry_unanswered && !received_any) break;
        co_return Failure(ErrorCode::kUpstreamUnavailable, "upstream sent no valid response");
      }
      received_any = true;
      up.in.Commit(rn);
    }
    if (res.status < 200 && res.status != 101) continue;  // dropped unanswered: retry
    pool.Answered(route, up, res.status);

    if (ctx.gate) {
      std::optional<Error> refused = co_await ctx.gate->Pass(res.status);
      if (refused) {
        ForwardResult r;
        r.error = *refused;
        r.status = ErrorStatus(refused->code);
        co_return r;
      }
    }
    ForwardResult result;
    result.status = res.status;
    if (res.status == 101) {
      // The switch, with whatever the upstream sent after it; then what the client sent after
      // its request head (its first frames), and from there on, bytes both ways.
      BuildClientHead(res, ctx.request_id, false, out, ctx.extra_response_headers, false,
                      "websocket");
      result.response_started = true;
      client.deadline.Arm(route.stream_idle_timeout);
      std::string_view early_down = up.in.data().substr(res.head_bytes);
      std::array<net::const_buffer, 2> switched{net::buffer(out), net::buffer(early_down)};
      auto [wec, wn] = co_await net::async_write(client.stream, switched, kNoThrow);
      up.in.Consume(up.in.size());
      if (wec) co_return result;
      std::string_view early_up = client.in.data().substr(head.head_bytes);
      if (!early_up.empty()) {
        up_deadline.Arm(route.stream_idle_timeout);
        auto [uec, un] = co_await net::async_write(up, net::buffer(early_up), kNoThrow);
        if (uec) co_return result;
      }
      co_await Tunnel(client, up, up_deadline, route.stream_idle_timeout);
      co_return result;  // neither connection carries anything else
    }
    const bool until_close = res.framing == h1::Framing::kUntilClose;
    // An HTTP/1.0 client cannot read chunked framing (RFC 9112 §6.1): it gets the data alone,
    // and the close of the connection marks the end.
    const bool unchunk = res.framing == h1::Framing::kChunked && head.minor_version == 0;
    const bool close_client = !client_keep_alive || until_close || unchunk;
    BodyTracker body{res.framing, res.content_length, {}};
    const std::size_t head_bytes = res.head_bytes;
    const bool event_stream =
        res.Find("content-type").value_or("").find("text/event-stream") != std::string_view::npos;

    // Small, with a known length: read it whole, then one write of head and body.
    if (res.framing == h1::Framing::kNone ||
        (res.framing == h1::Framing::kLength && res.content_length <= kBufferWholeBelow &&
         !event_stream)) {
      const std::size_t total = head_bytes + static_cast<std::size_t>(res.content_length);
      const std::size_t want = res.framing == h1::Framing::kNone ? head_bytes : total;
      up_deadline.Arm(route.stream_idle_timeout);
      while (up.in.size() < want) {
        // Prepare may move the buffer: the head is rebuilt from a fresh parse below.
        auto space = up.in.Prepare(want - up.in.size(), want);
        auto [bec, bn] =
            co_await up.async_read_some(net::buffer(space.data(), space.size()), kNoThrow);
        if (bec)
          co_return Failure(ErrorCode::kUpstreamUnavailable, "upstream response was cut short");
        up.in.Commit(bn);
      }
      if (h1::ParseResponse(up.in.data(), limits, is_head, res) != h1::Status::kComplete) {
        co_return Failure(ErrorCode::kUpstreamUnavailable, "upstream sent no valid response");
      }
      BuildClientHead(res, ctx.request_id, close_client, out, ctx.extra_response_headers);
      result.response_started = true;
      client.deadline.Arm(route.stream_idle_timeout);
      std::array<net::const_buffer, 2> whole{
          net::buffer(out), net::buffer(up.in.data().data() + head_bytes, want - head_bytes)};
      auto [wec, wn] = co_await net::async_write(client.stream, whole, kNoThrow);
      up.in.Consume(want);
      if (wec) co_return result;
      if (res.keep_alive && up.in.empty()) pool.Release(std::move(lease.conn));
      result.client_reusable = !close_client;
      co_return result;
    }

    // Everything else is relayed piece by piece as it arrives.
    BuildClientHead(res, ctx.request_id, close_client, out, ctx.extra_response_headers, unchunk);
    up.in.Consume(head_bytes);
    std::string data;  // unchunk: the data of the bytes taken, which go out instead of them
    auto piece = [&](std::size_t taken) {
      return unchunk ? net::buffer(data) : net::buffer(up.in.data().data(), taken);
    };
    std::size_t n = body.Take(up.in.data(), unchunk ? &data : nullptr);
    result.response_started = true;
    client.deadline.Arm(route.stream_idle_timeout);
    std::array<net::const_buffer, 2> first_piece{net::buffer(out), piece(n)};
    auto [cwec, cwn] = co_await net::async_write(client.stream, first_piece, kNoThrow);
    up.in.Consume(n);
    if (cwec || body.failed()) co_return result;
    while (!body.done()) {
      auto space = up.in.Prepare(kRelayPiece, kRelayPiece * 2);
      up_deadline.Arm(route.stream_idle_timeout);
      auto [uec, un] =
          co_await up.async_read_some(net::buffer(space.data(), space.size()), kNoThrow);
      if (uec) {
        // The end of a close-delimited body; anything else cut the response short, and closing
        // the client is the only way left to say so.
        if (until_close && uec == net::error::eof) break;
        co_return result;
      }
      up.in.Commit(un);
      data.clear();
      n = body.Take(up.in.data(), unchunk ? &data : nullptr);
      if (body.failed()) co_return result;
      client.deadline.Arm(route.stream_idle_timeout);
      auto [wec, wn] = co_await net::async_write(client.stream, piece(n), kNoThrow);
      up.in.Consume(n);
      if (wec) co_return result;
    }
    if (res.keep_alive && !until_close && up.in.empty()) {
      pool.Release(std::move(lease.conn));
    }
    result.client_reusable = !close_client;
    co_return result;
  }
  co_return Failure(ErrorCode::kUpstreamUnavailable, "upstream connection failed");
}

}  // namespace gatehouse::proxy

// The HTTP/1.1 front door. Asio stays behind this header (and proxy/forwarder.h, which
// only server.cc includes), so the rest of gatehouse compiles without them.
//
// Threads: one io_context per worker thread, each with its own SO_REUSEPORT acceptor per
// listener, so a connection lives on one thread from accept to close and needs no locks. Store
// calls run on a separate bounded blocking pool; a full pool answers 503 instead of queueing
// without limit.
//
// Every read is bounded: header bytes and count, URL length, body size, and separate idle,
// header and body timeouts, so a slow client cannot hold a connection. Shutdown() stops
// accepting, lets in-flight requests finish (up to limits.drain_timeout), closes idle keep-alive
// connections, then stops.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "audit/writer.h"
#include "authz/authenticator.h"
#include "config/config.h"
#include "gateway/gateway.h"
#include "http/router.h"
#include "limits/limit_service.h"
#include "limits/quota_service.h"
#include "limits/threat_detector.h"
#include "metrics/metrics.h"

namespace gatehouse {

class Server {
 public:
  struct Parts {
    std::shared_ptr<const Config> config;
    Router* router = nullptr;                // required
    Gateway* gateway = nullptr;              // null: no proxy routes (the demo upstream)
    Authenticator* authenticator = nullptr;  // required with a gateway
    LimitService* limits = nullptr;          // null: no rate limits
    ThreatDetector* threats = nullptr;       // null: no threat detection
    QuotaService* quotas = nullptr;          // null: usage quotas are not spent
    Metrics* metrics = nullptr;              // required
    AuditWriter* audit = nullptr;            // null: decisions are not recorded (tests only)
    std::vector<ListenerConfig> listeners;   // which addresses this server binds
    int threads = 0;                         // 0: config threads, else one per core
    int blocking_threads = 4;
    int costly_threads = 2;            // kCostly handlers (sign-in) at once
    std::size_t max_costly_jobs = 32;  // kCostly handlers waiting or running; more get 503
    bool access_log = true;
  };

  explicit Server(Parts parts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds every listener and starts the worker threads. Errors name the address.
  Result<void> Start();
  // The bound port of each listener, in order (useful with port 0).
  std::vector<std::uint16_t> ports() const;

  // Re-reads TLS certificate and key files; new connections use them, open ones keep theirs.
  // On error the old certificate stays and the error is returned.
  Result<void> ReloadTls();

  // Graceful stop; returns when every worker thread has ended. Idempotent.
  void Shutdown();

  // Blocks until SIGINT or SIGTERM (then Shutdown()), reloading TLS on SIGHUP, and running
  // `periodic` every `period` on a helper thread meanwhile (e.g. flushing key usage).
  void RunUntilSignalled(std::function<void()> periodic, Millis period);

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace gatehouse

// When a route's upstream name is looked up again. getaddrinfo says nothing of a record's TTL,
// so, like nginx's `resolver ... valid=`, a name is looked up again once its addresses are
// older than the route's `dns_refresh` (30 s by default), and at once after a connection to
// them failed: the service may have moved. The first lookup is made by the first request that
// needs a connection; later ones run in the background, started by the first request after
// they are due, while requests go on to the addresses known. Connections to an address the
// name no longer lists are closed instead of pooled. A failed lookup keeps the addresses
// already known (a DNS outage must not become an upstream outage) and is retried after another
// `dns_refresh`. An upstream given as an IP address is never looked up again.
#pragma once

#include <chrono>

namespace gatehouse::proxy {

class UpstreamResolution {
 public:
  using Clock = std::chrono::steady_clock;

  explicit UpstreamResolution(bool literal_address = false) : literal_(literal_address) {}

  // Whether the name must be looked up before the next new connection.
  bool Due(Clock::time_point now, std::chrono::milliseconds refresh) const {
    if (!known_) return true;
    if (literal_) return false;
    return suspect_ || now - checked_at_ >= refresh;
  }
  void Resolved(Clock::time_point now) {
    known_ = true;
    suspect_ = false;
    checked_at_ = now;
  }
  // The lookup failed: the known addresses (if any) stay in use until the next refresh.
  void LookupFailed(Clock::time_point now) {
    suspect_ = false;
    checked_at_ = now;
  }
  void ConnectFailed() { suspect_ = true; }
  bool known() const { return known_; }

 private:
  bool literal_;
  bool known_ = false;
  bool suspect_ = false;
  Clock::time_point checked_at_{};
};

}  // namespace gatehouse::proxy

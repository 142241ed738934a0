// Every counter gatehouse exports, declared in one place and rendered as Prometheus text at
// /metrics. Route slots are fixed at start (control-plane patterns plus configured gateway
// routes), so recording a request is a few relaxed atomic increments and never allocates.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace gatehouse {

class Metrics {
 public:
  Metrics() { DefineRoutes({}); }

  // Called once by the server before it starts, with one label per route slot; slot 0 is
  // reserved for requests that matched no route. Not thread-safe: nothing may be recording yet.
  void DefineRoutes(std::vector<std::string> route_labels);

  void ObserveRequest(std::size_t route_slot, int status, double seconds);

  enum class AuthFailure {
    kMissing,
    kMalformed,
    kUnknown,
    kExpired,
    kRevoked,
    kIpDenied,
    kForbidden,
    kOrgMismatch,
    kCount
  };
  void CountAuthFailure(AuthFailure reason) {
    auth_failures_[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
  }

  std::atomic<std::int64_t> connections_open{0};
  std::atomic<std::uint64_t> connections_rejected{0};
  std::atomic<std::int64_t> blocking_jobs_queued{0};
  std::atomic<std::uint64_t> blocking_jobs_rejected{0};
  std::atomic<std::int64_t> costly_jobs_queued{0};
  std::atomic<std::uint64_t> costly_jobs_rejected{0};
  std::atomic<std::uint64_t> upstream_errors{0};

  // Values owned elsewhere (the verifier's cache counters), read at render time.
  // `type` is "gauge" or "counter".
  void AddReading(std::string name, std::string help, std::string type,
                  std::function<double()> read);

  // A family of readings told apart by labels, read at render time: each item is its label
  // text (made with Label) and its value.
  using LabeledValues = std::vector<std::pair<std::string, double>>;
  void AddFamily(std::string name, std::string help, std::string type,
                 std::function<LabeledValues()> read);
  // `name="value"`, the value escaped as the text format asks (backslash, quote, newline).
  static std::string Label(std::string_view name, std::string_view value);

  std::string Render() const;
  std::size_t route_count() const { return labels_.size(); }

 private:
  static constexpr std::array<int, 23> kStatuses = {200, 201, 204, 206, 301, 302, 304, 400,
                                                    401, 403, 404, 405, 408, 409, 413, 414,
                                                    415, 429, 431, 500, 502, 503, 504};
  static constexpr std::size_t kStatusSlots = kStatuses.size() + 1;  // last: any other
  static constexpr std::array<double, 14> kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5};
  struct RouteCounters {
    std::array<std::atomic<std::uint64_t>, kStatusSlots> by_status{};
    std::array<std::atomic<std::uint64_t>, kBuckets.size() + 1> latency{};  // last: +Inf
    std::atomic<std::uint64_t> latency_sum_us{0};
  };
  struct Gauge {
    std::string name, help, type;
    std::function<double()> read;
  };

  std::vector<std::string> labels_;
  std::unique_ptr<RouteCounters[]> routes_;
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(AuthFailure::kCount)>
      auth_failures_{};
  std::vector<Gauge> gauges_;
  struct Family {
    std::string name, help, type;
    std::function<LabeledValues()> read;
  };
  std::vector<Family> families_;
};

}  // namespace gatehouse

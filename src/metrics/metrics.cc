#include "metrics/metrics.h"

#include <fmt/format.h>

namespace gatehouse {

std::string Metrics::Label(std::string_view name, std::string_view value) {
  std::string out(name);
  out += "=\"";
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

void Metrics::DefineRoutes(std::vector<std::string> route_labels) {
  labels_.clear();
  labels_.push_back(Label("route", "unmatched"));
  for (const auto& l : route_labels) labels_.push_back(Label("route", l));
  routes_ = std::make_unique<RouteCounters[]>(labels_.size());
}

void Metrics::ObserveRequest(std::size_t slot, int status, double seconds) {
  if (slot >= labels_.size()) slot = 0;
  RouteCounters& r = routes_[slot];
  std::size_t s = kStatusSlots - 1;
  for (std::size_t i = 0; i < kStatuses.size(); ++i) {
    if (kStatuses[i] == status) {
      s = i;
      break;
    }
  }
  r.by_status[s].fetch_add(1, std::memory_order_relaxed);
  std::size_t b = kBuckets.size();
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      b = i;
      break;
    }
  }
  r.latency[b].fetch_add(1, std::memory_order_relaxed);
  r.latency_sum_us.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void Metrics::AddFamily(std::string name, std::string help, std::string type,
                        std::function<LabeledValues()> read) {
  families_.push_back(Family{std::move(name), std::move(help), std::move(type), std::move(read)});
}

void Metrics::AddReading(std::string name, std::string help, std::string type,
                         std::function<double()> read) {
  gauges_.push_back(Gauge{std::move(name), std::move(help), std::move(type), std::move(read)});
}

std::string Metrics::Render() const {
  fmt::memory_buffer out;
  auto line = [&]<typename... A>(fmt::format_string<A...> f, A&&... a) {
    fmt::format_to(std::back_inserter(out), f, std::forward<A>(a)...);
  };
  line("# HELP gatehouse_requests_total Requests answered, by route and status.\n");
  line("# TYPE gatehouse_requests_total counter\n");
  for (std::size_t i = 0; i < labels_.size(); ++i) {
    for (std::size_t s = 0; s < kStatusSlots; ++s) {
      auto n = routes_[i].by_status[s].load(std::memory_order_relaxed);
      if (n == 0) continue;
      std::string status = s < kStatuses.size() ? std::to_string(kStatuses[s]) : "other";
      line("gatehouse_requests_total{{{},status=\"{}\"}} {}\n", labels_[i], status, n);
    }
  }
  line(
      "# HELP gatehouse_request_duration_seconds Time from request headers read to response "
      "written.\n");
  line("# TYPE gatehouse_request_duration_seconds histogram\n");
  for (std::size_t i = 0; i < labels_.size(); ++i) {
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b <= kBuckets.size(); ++b) {
      cumulative += routes_[i].latency[b].load(std::memory_order_relaxed);
      if (b < kBuckets.size()) {
        line("gatehouse_request_duration_seconds_bucket{{{},le=\"{}\"}} {}\n", labels_[i],
             kBuckets[b], cumulative);
      } else {
        line("gatehouse_request_duration_seconds_bucket{{{},le=\"+Inf\"}} {}\n", labels_[i],
             cumulative);
      }
    }
    line("gatehouse_request_duration_seconds_sum{{{}}} {}\n", labels_[i],
         static_cast<double>(routes_[i].latency_sum_us.load(std::memory_order_relaxed)) / 1e6);
    line("gatehouse_request_duration_seconds_count{{{}}} {}\n", labels_[i], cumulative);
  }
  static constexpr const char* kReasons[] = {"missing", "malformed", "unknown",   "expired",
                                             "revoked", "ip_denied", "forbidden", "org_mismatch"};
  line("# HELP gatehouse_auth_failures_total Refused credentials, by reason.\n");
  line("# TYPE gatehouse_auth_failures_total counter\n");
  for (std::size_t i = 0; i < auth_failures_.size(); ++i) {
    line("gatehouse_auth_failures_total{{reason=\"{}\"}} {}\n", kReasons[i],
         auth_failures_[i].load(std::memory_order_relaxed));
  }
  auto counter = [&](const char* name, const char* help, const char* type, auto value) {
    line("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
  };
  counter("gatehouse_connections_open", "Client connections open now.", "gauge",
          connections_open.load());
  counter("gatehouse_connections_rejected_total", "Connections closed at accept (limit).",
          "counter", connections_rejected.load());
  counter("gatehouse_blocking_jobs_queued", "Store calls waiting for or on the blocking pool.",
          "gauge", blocking_jobs_queued.load());
  counter("gatehouse_blocking_jobs_rejected_total", "Requests refused with 503: pool full.",
          "counter", blocking_jobs_rejected.load());
  counter("gatehouse_costly_jobs_queued", "Sign-ins and other password checks waiting or running.",
          "gauge", costly_jobs_queued.load());
  counter("gatehouse_costly_jobs_rejected_total",
          "Sign-ins refused with 503: the password-checking pool was full.", "counter",
          costly_jobs_rejected.load());
  counter("gatehouse_upstream_errors_total", "Proxied requests that failed upstream.", "counter",
          upstream_errors.load());
  for (const auto& g : gauges_) {
    line("# HELP {} {}\n# TYPE {} {}\n{} {}\n", g.name, g.help, g.name, g.type, g.name, g.read());
  }
  for (const auto& f : families_) {
    line("# HELP {} {}\n# TYPE {} {}\n", f.name, f.help, f.name, f.type);
    for (const auto& [labels, value] : f.read()) line("{}{{{}}} {}\n", f.name, labels, value);
  }
  return fmt::to_string(out);
}

}  // namespace gatehouse

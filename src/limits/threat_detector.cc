#include "limits/threat_detector.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "audit/details.h"
#include "core/cidr.h"
#include "limits/gcra_table.h"

namespace gatehouse {

std::optional<std::uint64_t> NetworkHash(std::string_view ip, int v4_bits, int v6_bits) {
  auto b = NetworkOf(ip, v4_bits, v6_bits);
  if (!b) return std::nullopt;
  return SubjectHash("net", std::string_view(reinterpret_cast<const char*>(b->data()), b->size()));
}

ThreatDetector::ThreatDetector(const ThreatsConfig& config, const Clock& clock, Sink sink)
    : config_(config), clock_(clock), sink_(std::move(sink)) {}

long ThreatDetector::BlockedFor(std::string_view ip) {
  if (blocked_count_.load(std::memory_order_relaxed) == 0) return 0;
  auto h = NetworkHash(ip, 32, 64);
  if (!h) return 0;
  UnixMicros now = clock_.Now();
  Shard& s = ShardOf(*h);
  std::lock_guard lock(s.mu);
  auto it = s.blocked.find(*h);
  if (it == s.blocked.end() || it->second <= now) return 0;
  blocked_requests_.fetch_add(1, std::memory_order_relaxed);
  return static_cast<long>((it->second - now + kMicrosPerSecond - 1) / kMicrosPerSecond);
}

bool ThreatDetector::Count(std::unordered_map<std::uint64_t, Counter>& map, std::uint64_t subject,
                           const ThreatRule& rule, UnixMicros now, std::uint32_t* count) {
  if (!map.contains(subject)) Bound(map);
  Counter& c = map[subject];
  if (now - c.window_start >= ToMicros(config_.window)) c = Counter{now, 0, false};
  ++c.count;
  *count = c.count;
  if (c.fired || c.count < static_cast<std::uint32_t>(rule.threshold)) return false;
  c.fired = true;
  return true;
}

void ThreatDetector::Block(std::string_view ip, UnixMicros now) {
  auto h = NetworkHash(ip, 32, 64);
  if (!h) return;
  const UnixMicros until = now + ToMicros(config_.block_duration);
  {
    Shard& s = ShardOf(*h);
    std::lock_guard lock(s.mu);
    auto [it, inserted] = s.blocked.insert_or_assign(*h, until);
    (void)it;
    if (inserted) blocked_count_.fetch_add(1, std::memory_order_relaxed);
  }
  blocks_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(own_mu_);
  own_blocks_[std::string(ip)] = until;
}

bool ThreatDetector::AdoptBlock(std::string_view ip, UnixMicros until) {
  auto h = NetworkHash(ip, 32, 64);
  if (!h || until <= clock_.Now()) return false;
  Shard& s = ShardOf(*h);
  std::lock_guard lock(s.mu);
  auto [it, inserted] = s.blocked.try_emplace(*h, until);
  if (inserted) {
    blocked_count_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  const bool later = until > it->second;
  if (later) it->second = until;
  return false;
}

std::vector<std::pair<std::string, UnixMicros>> ThreatDetector::OwnBlocks() {
  const UnixMicros now = clock_.Now();
  std::lock_guard lock(own_mu_);
  std::erase_if(own_blocks_, [&](const auto& kv) { return kv.second <= now; });
  return {own_blocks_.begin(), own_blocks_.end()};
}

void ThreatDetector::React(const ThreatRule& rule, std::string_view name, std::string_view org_id,
                           std::string_view actor, std::string_view ip, std::uint32_t count,
                           std::string_view extra_key, std::string_view extra_value) {
  const bool block = rule.reaction == "block";
  if (rule.shadow) {
    shadow_actions_.fetch_add(1, std::memory_order_relaxed);
  } else if (block) {
    Block(ip, clock_.Now());
  }
  std::string count_text = std::to_string(count);
  std::string window = fmt::format("{}s", config_.window.count() / 1000);
  std::vector<std::pair<std::string_view, std::string_view>> fields = {
      {"rule", name},
      {"count", count_text},
      {"window", window},
      {"reaction", rule.reaction},
      {"mode", rule.shadow ? "shadow" : "enforce"}};
  if (block) fields.emplace_back(rule.shadow ? "would" : "done", "block");
  if (rule.reaction == "notify") fields.emplace_back("notify", "pending");
  if (!extra_key.empty()) fields.emplace_back(extra_key, extra_value);
  AuditEvent e = DecisionEvent(org_id, actor, "security." + std::string(name),
                               "address:" + std::string(ip), DetailsOf(fields));
  e.client_ip.assign(ip);
  e.at = clock_.Now();
  e.status = 0;
  e.result = rule.shadow ? "shadow" : "detected";
  events_.fetch_add(1, std::memory_order_relaxed);
  spdlog::warn("security: {} from {} ({} in {}){}", name, ip, count, window,
               rule.shadow ? " [shadow]" : (block ? " - address blocked" : ""));
  if (sink_) sink_(std::move(e));
}

void ThreatDetector::Observe(std::string_view ip, int status, std::string_view principal_id,
                             std::string_view org_id) {
  if (status != 401 && status != 403 && status != 429) return;
  UnixMicros now = clock_.Now();
  auto address = NetworkHash(ip, 32, 64);
  if (address) {
    bool fire_invalid = false, fire_failures = false;
    std::uint32_t invalid_count = 0, failure_count = 0;
    const bool count_invalid = status == 401 && config_.invalid_keys.threshold > 0;
    if (count_invalid && shared_increment_) {
      CountInvalidInCluster(ip, *address);
    }
    {
      Shard& s = ShardOf(*address);
      std::lock_guard lock(s.mu);
      if (count_invalid && !shared_increment_) {
        fire_invalid = Count(s.invalid, *address, config_.invalid_keys, now, &invalid_count);
      }
      if (config_.address_failures.threshold > 0) {
        fire_failures =
            Count(s.address_failures, *address, config_.address_failures, now, &failure_count);
      }
    }
    if (fire_invalid) React(config_.invalid_keys, "invalid_keys", "", "", ip, invalid_count);
    if (fire_failures) {
      React(config_.address_failures, "address_failures", "", "", ip, failure_count);
    }
  }
  if (!principal_id.empty() && !org_id.empty() && config_.key_failures.threshold > 0) {
    const std::uint64_t key = SubjectHash("key", principal_id);
    bool fire = false;
    std::uint32_t count = 0;
    {
      Shard& s = ShardOf(key);
      std::lock_guard lock(s.mu);
      fire = Count(s.key_failures, key, config_.key_failures, now, &count);
    }
    if (fire) React(config_.key_failures, "key_failures", org_id, principal_id, ip, count);
  }
}

void ThreatDetector::CountInvalidInCluster(std::string_view ip, std::uint64_t address) {
  const auto window_ms = static_cast<std::int64_t>(config_.window.count());
  shared_increment_(
      "gh:th:invalid_keys:" + AddressBucket(ip, 32, 64), window_ms,
      [this, ip = std::string(ip), address](std::optional<std::int64_t> count) {
        const auto threshold = static_cast<std::int64_t>(config_.invalid_keys.threshold);
        if (count) {
          // Exactly one node sees the count reach the threshold: it reacts for the cluster.
          if (*count == threshold) {
            React(config_.invalid_keys, "invalid_keys", "", "", ip,
                  static_cast<std::uint32_t>(*count));
          }
          return;
        }
        bool fire = false;
        std::uint32_t local = 0;
        {
          Shard& s = ShardOf(address);
          std::lock_guard lock(s.mu);
          fire = Count(s.invalid, address, config_.invalid_keys, clock_.Now(), &local);
        }
        if (fire) React(config_.invalid_keys, "invalid_keys", "", "", ip, local);
      });
}

void ThreatDetector::KeyUsed(std::string_view key_id, std::string_view org_id,
                             std::string_view ip) {
  if (config_.new_network.threshold <= 0) return;
  auto net = NetworkHash(ip, 24, 48);
  if (!net) return;
  const std::uint64_t key = SubjectHash("key", key_id);
  bool is_new = false;
  {
    Shard& s = ShardOf(key);
    std::lock_guard lock(s.mu);
    auto it = s.networks.find(key);
    if (it == s.networks.end()) {
      Bound(s.networks);
      Networks n;
      n.seen[0] = *net;
      n.size = 1;
      s.networks.emplace(key, n);  // the first network this node sees is learned, not reported
      return;
    }
    Networks& n = it->second;
    if (std::find(n.seen.begin(), n.seen.begin() + n.size, *net) != n.seen.begin() + n.size) {
      return;
    }
    is_new = true;
    if (n.size < n.seen.size()) {
      n.seen[n.size++] = *net;
    } else {
      n.seen[n.next] = *net;
      n.next = static_cast<std::uint8_t>((n.next + 1) % n.seen.size());
    }
  }
  if (is_new) {
    std::string network = AddressBucket(ip, 24, 48);
    React(config_.new_network, "new_network", org_id, key_id, ip, 1, "network", network);
  }
}

void ThreatDetector::Sweep() {
  UnixMicros now = clock_.Now();
  UnixMicros window = ToMicros(config_.window);
  for (auto& s : shards_) {
    std::lock_guard lock(s.mu);
    for (auto* map : {&s.invalid, &s.address_failures, &s.key_failures}) {
      std::erase_if(*map, [&](const auto& kv) { return now - kv.second.window_start >= window; });
    }
    std::size_t before = s.blocked.size();
    std::erase_if(s.blocked, [&](const auto& kv) { return kv.second <= now; });
    blocked_count_.fetch_sub(before - s.blocked.size(), std::memory_order_relaxed);
  }
}

}  // namespace gatehouse

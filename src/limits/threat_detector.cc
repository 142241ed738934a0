#include "limits/threat_detector.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>

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
    : config_(config), clock_(clock), sink_(std::move(sink)) {
  static std::atomic<std::uint64_t> instances{0};
  instance_ = instances.fetch_add(1, std::memory_order_relaxed) + 1;
}

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

namespace {
// How long the cluster remembers a key's networks after it was last seen on a new one, and how
// many it keeps (a random one makes room).
constexpr std::int64_t kNetworkMemoryMs = 30LL * 24 * 3600 * 1000;
constexpr std::int64_t kMaxNetworksPerKey = 64;
}  // namespace

bool ThreatDetector::CountHere(CounterMap Shard::*map, std::uint64_t subject,
                               const ThreatRule& rule, std::uint32_t* count) {
  Shard& s = ShardOf(subject);
  std::lock_guard lock(s.mu);
  return Count(s.*map, subject, rule, clock_.Now(), count);
}

void ThreatDetector::Observe(std::string_view ip, int status, std::string_view principal_id,
                             std::string_view org_id, bool guessed) {
  if (status != 401 && status != 403 && status != 429) return;
  // Counted by the cluster when there is one; only then is a subject's name needed as text.
  auto count = [&](const ThreatRule& rule, std::string_view name, CounterMap Shard::*map,
                   std::uint64_t subject, auto redis_key, std::string_view org,
                   std::string_view actor) {
    if (cluster_.increment) {
      CountInCluster(rule, name, map, subject, redis_key(), org, actor, ip);
      return;
    }
    std::uint32_t n = 0;
    if (CountHere(map, subject, rule, &n)) React(rule, name, org, actor, ip, n);
  };
  if (auto address = NetworkHash(ip, 32, 64)) {
    auto bucket = [&](std::string_view rule) {
      return [ip, rule] { return fmt::format("gh:th:{}:{}", rule, AddressBucket(ip, 32, 64)); };
    };
    if (status == 401 && guessed && config_.invalid_keys.threshold > 0) {
      count(config_.invalid_keys, "invalid_keys", &Shard::invalid, *address, bucket("invalid_keys"),
            "", "");
    }
    if (config_.address_failures.threshold > 0) {
      count(config_.address_failures, "address_failures", &Shard::address_failures, *address,
            bucket("address_failures"), "", "");
    }
  }
  if (!principal_id.empty() && !org_id.empty() && config_.key_failures.threshold > 0) {
    count(
        config_.key_failures, "key_failures", &Shard::key_failures,
        SubjectHash("key", principal_id),
        [principal_id] { return fmt::format("gh:th:key_failures:{}", principal_id); }, org_id,
        principal_id);
  }
}

void ThreatDetector::CountInCluster(const ThreatRule& rule, std::string_view name,
                                    CounterMap Shard::*map, std::uint64_t subject,
                                    std::string redis_key, std::string_view org_id,
                                    std::string_view actor, std::string_view ip) {
  const UnixMicros window = ToMicros(config_.window);
  {
    Shard& s = ShardOf(subject);
    std::lock_guard lock(s.mu);
    auto it = (s.*map).find(subject);
    // The cluster's count passed the threshold this window: the rule fired, nothing to ask.
    if (it != (s.*map).end() && it->second.fired &&
        clock_.Now() - it->second.window_start < window) {
      return;
    }
  }
  cluster_.increment(
      std::move(redis_key), static_cast<std::int64_t>(config_.window.count()),
      [this, &rule, name, map, subject, window, org = std::string(org_id),
       actor = std::string(actor), ip = std::string(ip)](std::optional<std::int64_t> count) {
        const auto threshold = static_cast<std::int64_t>(rule.threshold);
        if (count) {
          if (*count >= threshold) {
            Shard& s = ShardOf(subject);
            std::lock_guard lock(s.mu);
            if (!(s.*map).contains(subject)) Bound(s.*map);
            Counter& c = (s.*map)[subject];
            const UnixMicros now = clock_.Now();
            if (now - c.window_start >= window) c = Counter{now, 0, false};
            c.fired = true;
          }
          // Exactly one node sees the count reach the threshold: it reacts for the cluster.
          if (*count == threshold) {
            React(rule, name, org, actor, ip, static_cast<std::uint32_t>(*count));
          }
          return;
        }
        std::uint32_t local = 0;
        if (CountHere(map, subject, rule, &local)) React(rule, name, org, actor, ip, local);
      });
}

void ThreatDetector::KeyUsed(std::string_view key_id, std::string_view org_id,
                             std::string_view ip) {
  if (config_.new_network.threshold <= 0) return;
  // Most requests repeat a key and address pair this thread has seen: a per-thread memo of
  // pairs already learned spares them the address parse, a keyed hash and a shard lock (7% of
  // a forward-auth request's own CPU). A pair leaves it only when its slot is reused. The
  // address, which a client chooses, is hashed with the process's secret key, so that nobody
  // can pick one whose pair looks like a learned one; key ids are ours, random.
  struct Memo {
    std::uint64_t owner = 0;  // the detector's instance number: tests make several
    std::array<std::uint64_t, 4096> pairs{};
  };
  thread_local Memo memo;
  if (memo.owner != instance_) memo = Memo{instance_, {}};
  const std::size_t key_part = std::hash<std::string_view>{}(key_id);
  const std::uint64_t pair = (key_part ^ SubjectHash("key-address", ip)) | 1;
  std::uint64_t& slot = memo.pairs[key_part % memo.pairs.size()];
  if (slot == pair) return;
  slot = pair;
  auto net = NetworkHash(ip, 24, 48);
  if (!net) return;
  const std::uint64_t key = SubjectHash("key", key_id);
  bool first_here = false;
  {
    Shard& s = ShardOf(key);
    std::lock_guard lock(s.mu);
    auto it = s.networks.find(key);
    if (it == s.networks.end()) {
      Bound(s.networks);
      Networks n;
      n.seen[0] = *net;
      n.size = 1;
      s.networks.emplace(key, n);
      first_here = true;
    } else {
      Networks& n = it->second;
      if (std::find(n.seen.begin(), n.seen.begin() + n.size, *net) != n.seen.begin() + n.size) {
        return;
      }
      if (n.size < n.seen.size()) {
        n.seen[n.size++] = *net;
      } else {
        n.seen[n.next] = *net;
        n.next = static_cast<std::uint8_t>((n.next + 1) % n.seen.size());
      }
    }
  }
  // New to this node: the cluster knows whether it is new to the key.
  if (cluster_.remember) {
    AskClusterAboutNetwork(std::string(key_id), std::string(org_id), std::string(ip), !first_here);
    return;
  }
  // Alone, the first network this node sees is learned, not reported.
  if (!first_here) {
    React(config_.new_network, "new_network", org_id, key_id, ip, 1, "network",
          AddressBucket(ip, 24, 48));
  }
}

void ThreatDetector::AskClusterAboutNetwork(std::string key_id, std::string org_id, std::string ip,
                                            bool known_here_before) {
  std::string network = AddressBucket(ip, 24, 48);
  std::string redis_key = "gh:th:networks:" + key_id;
  cluster_.remember(
      std::move(redis_key), network, kNetworkMemoryMs, kMaxNetworksPerKey,
      [this, key_id = std::move(key_id), org_id = std::move(org_id), ip = std::move(ip), network,
       known_here_before](std::optional<Cluster::Remembered> r) {
        // The key's first network in the cluster is learned; one the cluster had not seen it on
        // is reported. Without an answer, this node's own knowledge decides.
        const bool report = r ? r->added && r->before > 0 : known_here_before;
        if (report) {
          React(config_.new_network, "new_network", org_id, key_id, ip, 1, "network", network);
        }
      });
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

// Threat detection (issue 6): counts what attackers who hold, steal or guess credentials leave
// behind, and reacts as configured.
//
//   invalid_keys      refused credentials (401) from one address: key enumeration, guessing;
//   address_failures  401/403/429 answers to one address;
//   key_failures      401/403/429 answers to one key (a stolen key probing, a broken client);
//   new_network       a key used from a network (IPv4 /24, IPv6 /48) it was not seen on before.
//
// Each rule fires once per subject per window. Reactions: "record" a security event (an audit
// event "security.<rule>" in the key's org, or in the system chain for address rules),
// "notify" (the same, marked for delivery), or "block" the address for block_duration (and
// record). In shadow mode a rule records what it would have done and does nothing else.
//
// Counts live in this node's memory, bounded by max_tracked; Observe and KeyUsed allocate
// nothing on the common paths, and BlockedFor costs one atomic load while nothing is blocked.
// In a cluster, blocks are shared: each node hands its own (OwnBlocks) to the others through
// Redis once a second, and adopts theirs (AdoptBlock), so an address blocked by one node is
// blocked by all within about a second. Refused credentials per address (invalid_keys) are
// counted by the cluster too (ShareCountsThrough), so spreading a key enumeration over the nodes
// behind a load balancer does not multiply its allowance; the other rules count per node.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "config/config.h"
#include "store/records.h"

namespace gatehouse {

class ThreatDetector {
 public:
  using Sink = std::function<void(AuditEvent)>;
  ThreatDetector(const ThreatsConfig& config, const Clock& clock, Sink sink);

  // Seconds the address stays blocked (0: not blocked). Called before any other work.
  long BlockedFor(std::string_view ip);

  // Every answered request: the client's address, the status, and the key or user that made it
  // with its org (empty when none was established).
  void Observe(std::string_view ip, int status, std::string_view principal_id,
               std::string_view org_id);

  // An admitted use of a key from `ip`.
  void KeyUsed(std::string_view key_id, std::string_view org_id, std::string_view ip);

  // Forgets expired blocks and finished windows; the periodic housekeeping calls it.
  void Sweep();

  // Adds one to the cluster's count under `key` for a window of `window_ms`, and answers the
  // count (nullopt: it could not; this node counts alone then). `done` may run on any thread.
  using SharedIncrement =
      std::function<void(std::string key, std::int64_t window_ms,
                         std::function<void(std::optional<std::int64_t>)> done)>;
  void ShareCountsThrough(SharedIncrement increment) { shared_increment_ = std::move(increment); }

  // The blocks this node imposed that are still in force: (address, until).
  std::vector<std::pair<std::string, UnixMicros>> OwnBlocks();
  // A block another node imposed. Returns true when it is news here.
  bool AdoptBlock(std::string_view ip, UnixMicros until);

  std::uint64_t events() const { return events_.load(std::memory_order_relaxed); }
  std::uint64_t blocks() const { return blocks_.load(std::memory_order_relaxed); }
  std::uint64_t shadow_actions() const { return shadow_actions_.load(std::memory_order_relaxed); }
  std::uint64_t blocked_requests() const {
    return blocked_requests_.load(std::memory_order_relaxed);
  }

 private:
  struct Counter {
    UnixMicros window_start = 0;
    std::uint32_t count = 0;
    bool fired = false;
  };
  struct Networks {
    std::array<std::uint64_t, 8> seen{};
    std::uint8_t size = 0;
    std::uint8_t next = 0;  // the slot a new network replaces once all are taken
  };
  static constexpr std::size_t kShards = 16;
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::uint64_t, Counter> invalid, address_failures, key_failures;
    std::unordered_map<std::uint64_t, Networks> networks;
    std::unordered_map<std::uint64_t, UnixMicros> blocked;  // address bucket -> until
  };

  // Counts one event for `subject` under `rule`; true when the rule fires now.
  bool Count(std::unordered_map<std::uint64_t, Counter>& map, std::uint64_t subject,
             const ThreatRule& rule, UnixMicros now, std::uint32_t* count);
  void React(const ThreatRule& rule, std::string_view name, std::string_view org_id,
             std::string_view actor, std::string_view ip, std::uint32_t count,
             std::string_view extra_key = {}, std::string_view extra_value = {});
  void Block(std::string_view ip, UnixMicros now);
  void CountInvalidInCluster(std::string_view ip, std::uint64_t address);
  Shard& ShardOf(std::uint64_t h) { return shards_[h % kShards]; }
  template <typename Map>
  void Bound(Map& map) {
    if (map.size() >= config_.max_tracked / kShards) map.clear();  // a bound, not an LRU
  }

  const ThreatsConfig& config_;
  const Clock& clock_;
  Sink sink_;
  std::array<Shard, kShards> shards_;
  SharedIncrement shared_increment_;
  std::mutex own_mu_;
  std::unordered_map<std::string, UnixMicros> own_blocks_;  // guarded by own_mu_
  std::atomic<std::size_t> blocked_count_{0};
  std::atomic<std::uint64_t> events_{0}, blocks_{0}, shadow_actions_{0}, blocked_requests_{0};
};

// A hash of the network an address belongs to (IPv4 /v4_bits, IPv6 /v6_bits), without
// allocating; nullopt for a malformed address.
std::optional<std::uint64_t> NetworkHash(std::string_view ip, int v4_bits, int v6_bits);

}  // namespace gatehouse

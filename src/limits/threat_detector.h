// Threat detection (issue 6): counts what attackers who hold, steal or guess credentials leave
// behind, and reacts as configured.
//
//   invalid_keys      unknown keys or tokens (401 to a request that sent one) from one address:
//                     key enumeration, guessing. A revoked or expired credential is no guess:
//                     its 401 counts under key_failures (RefusedAsStale);
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
// blocked by all within about a second. Every rule also counts in the cluster (ShareThrough):
// spreading a key enumeration or a burst of failures over the nodes behind a load balancer does
// not multiply its allowance, and a key's networks are the cluster's, so a stolen key's first use
// on a node that never saw the key is still news. Once a rule fired for a subject, a node stops
// asking Redis about it for the rest of the window, so a flood of 429s is no flood of Redis
// calls. When Redis cannot answer, a node counts and learns alone.
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
  // with its org (empty when none was established; for a 401 to a stale credential, that key).
  // `guessed`: the request carried a key or token (an Authorization or X-API-Key header) that
  // is no known credential. Only a 401 to one counts as an invalid key: a client that sends
  // none (a probe, a browser whose page polls) or a stale one guesses nothing, and blocking it
  // would block everyone behind its address; its 401s still count as address failures.
  void Observe(std::string_view ip, int status, std::string_view principal_id,
               std::string_view org_id, bool guessed = true);

  // An admitted use of a key from `ip`.
  void KeyUsed(std::string_view key_id, std::string_view org_id, std::string_view ip);

  // Forgets expired blocks and finished windows; the periodic housekeeping calls it.
  void Sweep();

  // The cluster's shared state (Redis). Each call answers through `done`, which may run on any
  // thread, with nullopt when it could not (this node decides alone then).
  struct Cluster {
    // Adds one to the count under `key`, a window of `window_ms` from its first increment.
    std::function<void(std::string key, std::int64_t window_ms,
                       std::function<void(std::optional<std::int64_t>)> done)>
        increment;
    // Adds `member` to the set under `key` (kept `ttl_ms` from its last addition, and at most
    // `max_members`); answers whether it was new and how many the set had before.
    struct Remembered {
      bool added = false;
      std::int64_t before = 0;
    };
    std::function<void(std::string key, std::string member, std::int64_t ttl_ms,
                       std::int64_t max_members,
                       std::function<void(std::optional<Remembered>)> done)>
        remember;
  };
  void ShareThrough(Cluster cluster) { cluster_ = std::move(cluster); }

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
  using CounterMap = std::unordered_map<std::uint64_t, Counter>;
  // One event for `subject` under `rule`, counted by the cluster (or here, when it cannot be).
  void CountInCluster(const ThreatRule& rule, std::string_view name, CounterMap Shard::*map,
                      std::uint64_t subject, std::string redis_key, std::string_view org_id,
                      std::string_view actor, std::string_view ip);
  // Counts here; true when the rule fires now (reacting is the caller's).
  bool CountHere(CounterMap Shard::*map, std::uint64_t subject, const ThreatRule& rule,
                 std::uint32_t* count);
  void AskClusterAboutNetwork(std::string key_id, std::string org_id, std::string ip,
                              bool known_here_before);
  Shard& ShardOf(std::uint64_t h) { return shards_[h % kShards]; }
  template <typename Map>
  void Bound(Map& map) {
    if (map.size() >= config_.max_tracked / kShards) map.clear();  // a bound, not an LRU
  }

  const ThreatsConfig& config_;
  const Clock& clock_;
  Sink sink_;
  std::array<Shard, kShards> shards_;
  Cluster cluster_;
  std::mutex own_mu_;
  std::unordered_map<std::string, UnixMicros> own_blocks_;  // guarded by own_mu_
  std::atomic<std::size_t> blocked_count_{0};
  std::atomic<std::uint64_t> events_{0}, blocks_{0}, shadow_actions_{0}, blocked_requests_{0};
  std::uint64_t instance_ = 0;  // numbers the per-thread memo of KeyUsed
};

// A hash of the network an address belongs to (IPv4 /v4_bits, IPv6 /v6_bits), without
// allocating; nullopt for a malformed address.
std::optional<std::uint64_t> NetworkHash(std::string_view ip, int v4_bits, int v6_bits);

}  // namespace gatehouse

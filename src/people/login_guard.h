// Sign-in throttling by client address, in memory; in a cluster with Redis (ShareThrough) the
// failures from an address are counted by all nodes together and a block is seen by every node.
// Accounts are throttled in the store, across nodes. Past `address_free_failures` in a window, each
// failure makes the address wait longer (1 s, 2 s, 4 s… up to `address_max_delay`); then two rules
// end in a temporary block of the address:
//   - too many failures from one address in a window;
//   - failures against many different accounts from one address in a window: credential
//     stuffing, which per-account limits alone never notice (in a cluster, the accounts are
//     counted by all nodes together too).
// Memory is bounded: at most kMaxAddresses addresses are tracked, the stalest forgotten first,
// each with at most `address_failures` entries of 16 bytes. IPv6 clients are tracked by their
// /64, since one host can use any address in it.
//
// Thread-safety: safe for concurrent use.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "config/config.h"
#include "core/clock.h"

namespace gatehouse {

class LoginGuard {
 public:
  static constexpr std::size_t kMaxAddresses = 100'000;

  LoginGuard(const LoginConfig& config, const Clock& clock);

  struct Block {
    UnixMicros until = 0;
    bool stuffing = false;
  };
  // When the address may not try now.
  std::optional<Block> Blocked(std::string_view address);
  // A failed sign-in for `subject` (an email's keyed hash). Returns the block it started, if any.
  std::optional<Block> Failure(std::string_view address, std::string_view subject);

  // The cluster's view, through Redis. Each call waits for its answer (sign-ins run off the
  // network threads); nullopt means the cluster could not answer, and this node decides alone.
  struct Cluster {
    // Counts one failure of `key` in a window of `window_ms`; the cluster's total.
    std::function<std::optional<std::int64_t>(std::string key, std::int64_t window_ms)> count;
    // Adds `account` (a keyed hash, never an email) to the set under `key`, which lasts
    // `window_ms` from its first member; the number of accounts in it.
    std::function<std::optional<std::int64_t>(std::string key, std::string account,
                                              std::int64_t window_ms)>
        accounts;
    // Keeps `key` blocked until `until` (Unix microseconds).
    std::function<void(std::string key, UnixMicros until)> block;
    // Until when `key` is blocked (0: it is not).
    std::function<std::optional<UnixMicros>(std::string key)> blocked_until;
  };
  void ShareThrough(Cluster cluster) { cluster_ = std::move(cluster); }

 private:
  struct Entry {
    std::deque<std::pair<UnixMicros, std::uint64_t>> failures;  // within the window, by account
    UnixMicros blocked_until = 0;
    bool stuffing = false;
    UnixMicros last_seen = 0;
  };
  void Forget(Entry& e, UnixMicros now) const;
  static std::string KeyOf(std::string_view address);
  static std::string ClusterKey(std::string_view address_key, std::string_view what);
  void EvictStalest();
  // The address's entry, made (evicting the stalest when full) if it has none. Under mu_.
  Entry& EntryFor(std::string key);

  LoginConfig config_;
  const Clock& clock_;
  Cluster cluster_;  // set before serving
  std::mutex mu_;
  std::unordered_map<std::string, Entry> addresses_;
};

}  // namespace gatehouse

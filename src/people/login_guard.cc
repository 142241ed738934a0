#include "people/login_guard.h"

#include "core/cidr.h"

#include <algorithm>
#include <functional>
#include <set>

namespace gatehouse {

namespace {}  // namespace

LoginGuard::LoginGuard(const LoginConfig& config, const Clock& clock)
    : config_(config), clock_(clock) {}

std::string LoginGuard::KeyOf(std::string_view address) { return AddressBucket(address, 32, 64); }

void LoginGuard::Forget(Entry& e, UnixMicros now) const {
  UnixMicros oldest = now - ToMicros(config_.window);
  while (!e.failures.empty() && e.failures.front().first <= oldest) e.failures.pop_front();
}

void LoginGuard::EvictStalest() {
  // Rare (only with 100k addresses tracked): a linear pass is cheaper than keeping an index.
  auto stalest = addresses_.begin();
  UnixMicros now = clock_.Now();
  for (auto it = addresses_.begin(); it != addresses_.end(); ++it) {
    if (it->second.blocked_until > now) continue;  // an active block is never forgotten early
    if (stalest->second.blocked_until > now || it->second.last_seen < stalest->second.last_seen) {
      stalest = it;
    }
  }
  addresses_.erase(stalest);
}

std::optional<LoginGuard::Block> LoginGuard::Blocked(std::string_view address) {
  std::string key = KeyOf(address);
  {
    std::lock_guard lock(mu_);
    auto it = addresses_.find(key);
    if (it != addresses_.end() && it->second.blocked_until > clock_.Now()) {
      return Block{it->second.blocked_until, it->second.stuffing};
    }
  }
  // Another node may have blocked it; what it says is kept here for the rest of the block.
  if (!cluster_.blocked_until) return std::nullopt;
  auto until = cluster_.blocked_until(ClusterKey(key, "block"));
  if (!until || *until <= clock_.Now()) return std::nullopt;
  std::lock_guard lock(mu_);
  Entry& e = EntryFor(std::move(key));
  e.blocked_until = std::max(e.blocked_until, *until);
  e.last_seen = clock_.Now();
  return Block{e.blocked_until, e.stuffing};
}

LoginGuard::Entry& LoginGuard::EntryFor(std::string key) {
  auto it = addresses_.find(key);
  if (it == addresses_.end()) {
    if (addresses_.size() >= kMaxAddresses) EvictStalest();
    it = addresses_.emplace(std::move(key), Entry{}).first;
  }
  return it->second;
}

std::string LoginGuard::ClusterKey(std::string_view address_key, std::string_view what) {
  return "gh:login:" + std::string(what) + ":" + std::string(address_key);
}

std::optional<LoginGuard::Block> LoginGuard::Failure(std::string_view address,
                                                     std::string_view subject) {
  std::string key = KeyOf(address);
  // The cluster's count first, outside the lock: it waits for Redis.
  std::optional<std::int64_t> cluster_failures, cluster_accounts;
  const std::int64_t window_ms = ToMicros(config_.window) / 1000;
  if (cluster_.count) cluster_failures = cluster_.count(ClusterKey(key, "failures"), window_ms);
  if (cluster_.accounts) {
    cluster_accounts =
        cluster_.accounts(ClusterKey(key, "accounts"), std::string(subject), window_ms);
  }
  std::optional<Block> started;
  {
    std::lock_guard lock(mu_);
    UnixMicros now = clock_.Now();
    Entry& e = EntryFor(key);
    e.last_seen = now;
    Forget(e, now);
    e.failures.emplace_back(now, std::hash<std::string_view>{}(subject));
    std::set<std::uint64_t> accounts;
    for (const auto& f : e.failures) accounts.insert(f.second);
    const auto failures = std::max<std::int64_t>(static_cast<std::int64_t>(e.failures.size()),
                                                 cluster_failures.value_or(0));
    const auto distinct = std::max<std::int64_t>(static_cast<std::int64_t>(accounts.size()),
                                                 cluster_accounts.value_or(0));
    bool stuffing = distinct >= config_.stuffing_accounts;
    bool flood = failures >= config_.address_failures;
    if (stuffing || flood) {
      e.blocked_until = now + ToMicros(config_.address_lock);
      e.stuffing = stuffing;
      e.failures.clear();
      started = Block{e.blocked_until, stuffing};
    } else {
      // Before the block, growing delays: each failure past the free ones makes the address
      // wait twice as long as the last, up to address_max_delay.
      auto past_free = failures - config_.address_free_failures;
      if (past_free > 0) {
        UnixMicros delay = std::min(kMicrosPerSecond << std::min<std::int64_t>(past_free - 1, 30),
                                    ToMicros(config_.address_max_delay));
        e.blocked_until = now + delay;
        e.stuffing = false;
      }
    }
  }
  if (started && cluster_.block) cluster_.block(ClusterKey(key, "block"), started->until);
  return started;
}

}  // namespace gatehouse

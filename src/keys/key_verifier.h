// Turns a presented API key into a verdict, as cheaply as the key allows:
//
//   1. shape and checksum (KeyFormat::Check): garbage never reaches the cache or the store;
//   2. HMAC-SHA-256(pepper, key), then a bounded in-memory cache keyed by that hash;
//   3. on a miss, the store (blocking; callers on network threads use TryCached first);
//   4. during a pepper rotation, a key the store does not know under the current pepper is
//      looked up under the next one (moved there by a node already switched; it stays) and
//      under the previous one (found there, it is stored again under the current one, so that
//      the previous pepper can be retired once the keys still in use have moved).
//
// Cached entries keep expiry and revocation times, so an expired key is refused the moment it
// expires; Invalidate() drops an entry at once when a key is revoked or rotated. Well-formed keys
// that the store does not know are cached negatively for a short time, so that an enumeration
// attack costs the store one lookup per distinct key per TTL, not one per request.
//
// last_used_at is recorded in the cache entry and written to the store in batches by
// FlushUsage(), never once per request.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <array>
#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/cidr.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/error.h"
#include "keys/key_format.h"
#include "limits/rate_policy.h"
#include "limits/usage_quota.h"
#include "store/store.h"

namespace gatehouse {

// What the verifier knows of a key; immutable once built, shared between cache and callers.
struct KeyFacts {
  std::string key_id;
  std::string org_id;
  std::string environment;
  std::vector<std::string> scopes;
  std::optional<UnixMicros> expires_at;
  std::optional<UnixMicros> revoked_at;
  std::vector<Cidr> ip_allowlist;
  bool ip_allowlist_shadow = false;  // count and record refusals, refuse nothing
  RatePolicy rate_limit;             // the key's own; requests 0: the configured default
  UsageQuota quota;                  // credits per period; credits 0: none
  std::int64_t credits_used = 0;     // in credits_period, as the store knew when this was built
  std::int64_t credits_period = 0;
};

// What the verifier reads with a key on a cache miss, besides the key itself.
struct KeyPolicyLoad {
  bool ip_allowlist_shadow = false;
  RatePolicy rate_limit;
  UsageQuota quota;
  std::int64_t credits_used = 0;
  std::int64_t credits_period = 0;
};

enum class KeyStatus { kValid, kMalformed, kNotFound, kExpired, kRevoked };
std::string_view KeyStatusName(KeyStatus s);

struct KeyVerdict {
  KeyStatus status = KeyStatus::kNotFound;
  std::shared_ptr<const KeyFacts> facts;  // set for kValid, kExpired and kRevoked
  UnixMicros judged_at = 0;               // the time expiry was judged at (with facts)
};

class KeyVerifier {
 public:
  struct Options {
    std::size_t cache_capacity = 100'000;
    UnixMicros negative_ttl = 30 * kMicrosPerSecond;
    // The key's own rate limit and quota, read with the key on a cache miss; null: none.
    std::function<Result<KeyPolicyLoad>(std::string_view org_id, std::string_view key_id)>
        load_policy = nullptr;
    // Invalidations that are not keys' ("org:<id>": an org's policy changed).
    std::function<void(std::string_view)> on_other_invalidation = nullptr;
  };

  KeyVerifier(KeyFormat format, HmacSha256Key pepper, Store& store, const Clock& clock,
              Options options);

  // Never blocks. nullopt means the answer needs the store: call Verify() off the network thread.
  std::optional<KeyVerdict> TryCached(std::string_view key, std::string_view client_ip);

  // May block on the store. Errors only when the store fails (kUnavailable/kInternal); every
  // verdict about the key itself is a value.
  Result<KeyVerdict> Verify(std::string_view key, std::string_view client_ip);

  // Keys hashed with `previous` (the pepper before a rotation) are found too, and each moves
  // to the current pepper when first verified. Call before verifying anything.
  void AcceptPreviousPepper(HmacSha256Key previous) {
    previous_pepper_.emplace(std::move(previous));
  }
  // Keys hashed with `next` (the pepper other nodes have switched to already) are found too,
  // and stay as they are. Call before verifying anything.
  void AcceptNextPepper(HmacSha256Key next) { next_pepper_.emplace(std::move(next)); }
  // Keys moved to the current pepper by this process.
  std::uint64_t keys_rehashed() const { return rehashed_.load(std::memory_order_relaxed); }

  // The stored form of a key: hex HMAC-SHA-256 with the pepper.
  std::string HashKey(std::string_view key) const;

  // Forget a key at once (revocation, rotation). Safe to call for hashes not in the cache.
  void Invalidate(std::string_view key_hash_hex);

  // Writes the latest use of every key seen since the last flush.
  Result<void> FlushUsage();

  // Drops every cached key that was revoked or rotated (by any process) since the last call.
  // The first call only learns where the log ends: the cache starts empty, so history is moot.
  Result<void> SyncInvalidations();

  const KeyFormat& format() const { return format_; }
  std::uint64_t cache_hits() const { return hits_.load(std::memory_order_relaxed); }
  std::uint64_t cache_misses() const { return misses_.load(std::memory_order_relaxed); }
  std::size_t cache_size() const;

 private:
  struct Entry {
    std::shared_ptr<const KeyFacts> facts;  // null: negative entry
    UnixMicros negative_until = 0;
    UnixMicros last_used_at = 0;  // 0: not used since the last flush
    std::string last_used_ip;
    // The hash the store holds, when it is not the one the entry is cached under (a key moved
    // to the next pepper): revocation invalidates that one, and must still find this entry.
    std::optional<Digest32> stored_as;
  };
  struct DigestHash {
    std::size_t operator()(const Digest32& d) const {
      std::size_t h;
      std::memcpy(&h, d.data(), sizeof(h));  // already uniform: it is an HMAC output
      return h;
    }
  };
  static constexpr std::size_t kShards = 16;
  struct Shard {
    std::mutex mu;
    std::unordered_map<Digest32, Entry, DigestHash> map;
    std::vector<KeyUsage> evicted_usage;  // usage of entries evicted before a flush
  };

  KeyVerdict Judge(const std::shared_ptr<const KeyFacts>& facts, UnixMicros now) const;
  // The store's record under the previous pepper, moved to `current_hash`. kNotFound when there
  // is no previous pepper or no such key; `moved` false when another process moved it first.
  Result<ApiKeyRecord> FindUnderPreviousPepper(std::string_view key,
                                               const std::string& current_hash, bool& moved);
  // The store's record whose row holds exactly `hash` (under another pepper than the current).
  Result<ApiKeyRecord> FindStoredAs(const std::string& hash);
  // The store's record under the next pepper, judged as if under `current_hash`; `stored_as`
  // gets the hash the row holds. kNotFound when there is no next pepper or no such key.
  Result<ApiKeyRecord> FindUnderNextPepper(std::string_view key, const std::string& current_hash,
                                           std::optional<Digest32>& stored_as);
  // Drops the entry cached under `cached`; with `stored_as`, only if its row holds that hash.
  void Forget(const Digest32& cached, const std::optional<Digest32>& stored_as);
  // Under the entry's shard lock: forgets that `entry`, cached under `cached`, is stored as
  // another hash.
  void DropAlias(const Digest32& cached, const Entry& entry);
  Shard& ShardFor(const Digest32& d) { return shards_[d[8] % kShards]; }
  void Insert(const Digest32& d, Entry entry);

  KeyFormat format_;
  HmacSha256Key pepper_;
  std::optional<HmacSha256Key> previous_pepper_;
  std::optional<HmacSha256Key> next_pepper_;
  // The hash the store holds → the hash the entry is cached under, for entries whose differ.
  // Taken inside a shard's lock, never around one.
  std::mutex aliases_mu_;
  std::unordered_map<Digest32, Digest32, DigestHash> aliases_;
  Store& store_;
  const Clock& clock_;
  Options options_;
  std::array<Shard, kShards> shards_;
  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> misses_{0};
  std::atomic<std::uint64_t> rehashed_{0};
  std::mutex sync_mu_;
  std::optional<std::int64_t> invalidation_seq_;  // guarded by sync_mu_
};

// Builds the facts the verifier caches from a stored record.
std::shared_ptr<const KeyFacts> FactsFromRecord(const ApiKeyRecord& record);

}  // namespace gatehouse

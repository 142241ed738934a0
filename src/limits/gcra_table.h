// In-process GCRA state: one 16-byte slot (subject hash, TAT) per subject that is currently
// limited, in 64 independently locked open-addressing shards. A decision locks one shard, probes
// a few slots and allocates nothing.
//
// Memory stays bounded: a slot whose TAT has passed carries no information (see rate_policy.h),
// so growth first reclaims those; a shard never grows past its share of `max_subjects`. When a
// shard is full of live subjects (millions of distinct keys inside one window), the slot closest
// to idle in the probe run is given to the newcomer and counted as an eviction. That subject
// then starts afresh: the limiter errs by admitting one extra burst, never by refusing.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <vector>

#include "limits/rate_policy.h"

namespace gatehouse {

// A limited subject: the dimension ("key", "org", …), a scope within it (a route's name) and
// its id, hashed with a per-process secret key (SipHash), so that nobody can choose ids that
// collide.
std::uint64_t SubjectHash(std::string_view dimension, std::string_view scope, std::string_view id);
inline std::uint64_t SubjectHash(std::string_view dimension, std::string_view id) {
  return SubjectHash(dimension, {}, id);
}

struct GcraOutcome {
  bool allowed = false;
  std::uint32_t remaining = 0;  // requests still admitted right now, after this one
  UnixMicros retry_after = 0;   // refused: until this request would be admitted
  UnixMicros reset = 0;         // until the subject is back to its full burst
};

// The GCRA step on one TAT, shared by the local table and the tests of the Redis script.
GcraOutcome GcraStep(UnixMicros& tat, const RatePolicy& policy, UnixMicros now, std::uint32_t cost);

class GcraTable {
 public:
  explicit GcraTable(std::size_t max_subjects = 2'000'000);

  // Admits (and records) or refuses one request of `cost` for the subject.
  GcraOutcome Take(std::uint64_t subject, const RatePolicy& policy, UnixMicros now,
                   std::uint32_t cost = 1);
  // What Take would answer, changing nothing.
  GcraOutcome Peek(std::uint64_t subject, const RatePolicy& policy, UnixMicros now,
                   std::uint32_t cost = 1);
  // Gives back an admitted request (another limit refused it after all).
  void Refund(std::uint64_t subject, const RatePolicy& policy, std::uint32_t cost = 1);

  // Forgets idle subjects in every shard; the periodic housekeeping calls it.
  void Sweep(UnixMicros now);

  std::size_t size() const;
  std::size_t capacity_bytes() const;
  std::uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

 private:
  struct Slot {
    std::uint64_t subject = 0;  // 0: empty
    UnixMicros tat = 0;
  };
  struct alignas(64) Shard {
    mutable std::mutex mu;
    std::vector<Slot> slots;  // power of two
    std::size_t used = 0;
    UnixMicros reclaim_after = 0;
  };
  static constexpr UnixMicros kReclaimPause = 100'000;
  static constexpr std::size_t kShards = 64;
  static constexpr std::size_t kInitialSlots = 64;
  static constexpr std::size_t kMaxProbe = 32;

  Shard& ShardOf(std::uint64_t subject) { return shards_[subject % kShards]; }
  // The slot holding `subject`, or the one to put it in (possibly evicting); never null.
  Slot* Locate(Shard& s, std::uint64_t subject, UnixMicros now);
  Slot* Find(Shard& s, std::uint64_t subject);
  void Rebuild(Shard& s, std::size_t slots, UnixMicros now);

  std::array<Shard, kShards> shards_;
  std::size_t max_slots_per_shard_;
  std::atomic<std::uint64_t> evictions_{0};
};

}  // namespace gatehouse

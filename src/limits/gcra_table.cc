#include "limits/gcra_table.h"

#include <sodium.h>

#include <algorithm>
#include <bit>
#include <cstring>

namespace gatehouse {

namespace {

const unsigned char* HashKey() {
  static const auto key = [] {
    std::array<unsigned char, crypto_shorthash_KEYBYTES> k{};
    if (sodium_init() < 0) std::abort();
    randombytes_buf(k.data(), k.size());
    return k;
  }();
  return key.data();
}

}  // namespace

std::uint64_t SubjectHash(std::string_view dimension, std::string_view scope, std::string_view id) {
  // Each part's length goes first, so that no two different triples read the same.
  unsigned char buf[256];
  std::size_t n = 0;
  auto put = [&](std::string_view part) {
    std::uint64_t len = part.size();
    if (part.size() > 64) {  // long parts are hashed first
      crypto_shorthash(reinterpret_cast<unsigned char*>(&len),
                       reinterpret_cast<const unsigned char*>(part.data()), part.size(), HashKey());
      buf[n++] = 0xff;
      std::memcpy(buf + n, &len, sizeof len);
      n += sizeof len;
      return;
    }
    buf[n++] = static_cast<unsigned char>(part.size());
    std::memcpy(buf + n, part.data(), part.size());
    n += part.size();
  };
  put(dimension);
  put(scope);
  put(id);
  std::uint64_t out = 0;
  crypto_shorthash(reinterpret_cast<unsigned char*>(&out), buf, n, HashKey());
  return out == 0 ? 1 : out;  // 0 marks an empty slot
}

GcraOutcome GcraStep(UnixMicros& tat, const RatePolicy& policy, UnixMicros now,
                     std::uint32_t cost) {
  const UnixMicros t = policy.interval();
  const UnixMicros limit = policy.tolerance() + t;  // how far ahead of now TAT may run
  const UnixMicros start = std::max(tat, now);
  const UnixMicros next = start + t * static_cast<UnixMicros>(cost);
  GcraOutcome o;
  if (next - now > limit) {
    o.allowed = false;
    o.retry_after = next - now - limit;
    o.remaining = 0;
    o.reset = start - now;
    return o;
  }
  tat = next;
  o.allowed = true;
  o.remaining = static_cast<std::uint32_t>((limit - (next - now)) / t);
  o.reset = next - now;
  return o;
}

GcraTable::GcraTable(std::size_t max_subjects) {
  // Half-full at most, so the probe runs stay short.
  std::size_t per_shard = std::max<std::size_t>(kInitialSlots, 2 * max_subjects / kShards);
  max_slots_per_shard_ = std::bit_ceil(per_shard);
  for (auto& s : shards_) s.slots.assign(kInitialSlots, Slot{});
}

GcraTable::Slot* GcraTable::Find(Shard& s, std::uint64_t subject) {
  const std::size_t mask = s.slots.size() - 1;
  std::size_t i = (subject / kShards) & mask;
  for (std::size_t probe = 0; probe <= mask; ++probe, i = (i + 1) & mask) {
    Slot& slot = s.slots[i];
    if (slot.subject == subject) return &slot;
    if (slot.subject == 0) return nullptr;
  }
  return nullptr;
}

void GcraTable::Rebuild(Shard& s, std::size_t size, UnixMicros now) {
  std::vector<Slot> old;
  old.swap(s.slots);
  s.slots.assign(size, Slot{});
  s.used = 0;
  const std::size_t mask = size - 1;
  for (const Slot& slot : old) {
    if (slot.subject == 0 || slot.tat <= now) continue;
    std::size_t i = (slot.subject / kShards) & mask;
    while (s.slots[i].subject != 0) i = (i + 1) & mask;
    s.slots[i] = slot;
    ++s.used;
  }
}

GcraTable::Slot* GcraTable::Locate(Shard& s, std::uint64_t subject, UnixMicros now) {
  if (Slot* found = Find(s, subject)) return found;
  if (2 * (s.used + 1) > s.slots.size() &&
      (s.slots.size() < max_slots_per_shard_ || now >= s.reclaim_after)) {
    // Reclaim idle slots first; grow only if the live ones alone need it. At the size cap the
    // scan is rationed, so that a flood of new subjects cannot make every request O(n).
    s.reclaim_after = now + kReclaimPause;
    std::size_t live = 0;
    for (const Slot& slot : s.slots) live += (slot.subject != 0 && slot.tat > now);
    std::size_t size = s.slots.size();
    while (2 * (live + 1) > size && size < max_slots_per_shard_) size *= 2;
    Rebuild(s, size, now);
  }
  const std::size_t mask = s.slots.size() - 1;
  std::size_t i = (subject / kShards) & mask;
  Slot* stalest = nullptr;
  // Never fuller than 3/4, so that a miss always ends at an empty slot soon.
  const bool may_fill = 4 * (s.used + 1) <= 3 * s.slots.size();
  Slot* first_empty = nullptr;
  // Below the size cap a subject always gets a slot of its own; at the cap, one of the next
  // kMaxProbe slots.
  const std::size_t probes = s.slots.size() < max_slots_per_shard_ ? s.slots.size() : kMaxProbe;
  for (std::size_t probe = 0; probe < probes; ++probe, i = (i + 1) & mask) {
    Slot& slot = s.slots[i];
    if (slot.subject == 0) {
      if (!may_fill) {
        if (!first_empty) first_empty = &slot;
        continue;
      }
      slot.subject = subject;
      slot.tat = 0;
      ++s.used;
      return &slot;
    }
    if (!stalest || slot.tat < stalest->tat) stalest = &slot;
  }
  if (!stalest) {  // nothing to evict nearby: the table is crowded elsewhere
    first_empty->subject = subject;
    first_empty->tat = 0;
    ++s.used;
    return first_empty;
  }
  // Full of live subjects at the size cap. Reusing an occupied slot keeps every probe run
  // intact (no slot becomes empty), at the price of the stalest subject's state.
  if (stalest->tat > now) evictions_.fetch_add(1, std::memory_order_relaxed);
  stalest->subject = subject;
  stalest->tat = 0;
  return stalest;
}

GcraOutcome GcraTable::Take(std::uint64_t subject, const RatePolicy& policy, UnixMicros now,
                            std::uint32_t cost) {
  Shard& s = ShardOf(subject);
  std::lock_guard lock(s.mu);
  Slot* slot = Locate(s, subject, now);
  return GcraStep(slot->tat, policy, now, cost);
}

GcraOutcome GcraTable::Peek(std::uint64_t subject, const RatePolicy& policy, UnixMicros now,
                            std::uint32_t cost) {
  Shard& s = ShardOf(subject);
  UnixMicros tat = 0;
  {
    std::lock_guard lock(s.mu);
    if (Slot* slot = Find(s, subject)) tat = slot->tat;
  }
  return GcraStep(tat, policy, now, cost);
}

void GcraTable::Refund(std::uint64_t subject, const RatePolicy& policy, std::uint32_t cost) {
  Shard& s = ShardOf(subject);
  std::lock_guard lock(s.mu);
  if (Slot* slot = Find(s, subject)) slot->tat -= policy.interval() * cost;
}

void GcraTable::Sweep(UnixMicros now) {
  for (auto& s : shards_) {
    std::lock_guard lock(s.mu);
    std::size_t live = 0;
    for (const Slot& slot : s.slots) live += (slot.subject != 0 && slot.tat > now);
    if (live == s.used) continue;
    std::size_t size = s.slots.size();
    while (size > kInitialSlots && 8 * live < size) size /= 2;  // give memory back too
    Rebuild(s, size, now);
  }
}

std::size_t GcraTable::size() const {
  std::size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.used;
  }
  return n;
}

std::size_t GcraTable::capacity_bytes() const {
  std::size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.slots.capacity() * sizeof(Slot);
  }
  return n;
}

}  // namespace gatehouse

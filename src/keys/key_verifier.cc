#include "keys/key_verifier.h"

#include <spdlog/spdlog.h>

#include <cstring>

namespace gatehouse {

std::string_view KeyStatusName(KeyStatus s) {
  switch (s) {
    case KeyStatus::kValid:
      return "valid";
    case KeyStatus::kMalformed:
      return "not_found";  // a malformed key is, to callers, unknown
    case KeyStatus::kNotFound:
      return "not_found";
    case KeyStatus::kExpired:
      return "expired";
    case KeyStatus::kRevoked:
      return "revoked";
  }
  return "not_found";
}

std::shared_ptr<const KeyFacts> FactsFromRecord(const ApiKeyRecord& r) {
  auto f = std::make_shared<KeyFacts>();
  f->key_id = r.id;
  f->org_id = r.org_id;
  f->environment = r.environment;
  f->scopes = r.scopes;
  f->expires_at = r.expires_at;
  f->revoked_at = r.revoked_at;
  for (const auto& c : r.ip_allowlist) {
    // Stored lists were validated on the way in; an unparsable one denies everything rather
    // than silently allowing every address.
    auto parsed = Cidr::Parse(c);
    if (parsed)
      f->ip_allowlist.push_back(*parsed);
    else
      f->ip_allowlist.push_back(*Cidr::Parse("::/128"));
  }
  return f;
}

KeyVerifier::KeyVerifier(KeyFormat format, HmacSha256Key pepper, Store& store, const Clock& clock,
                         Options options)
    : format_(std::move(format)),
      pepper_(std::move(pepper)),
      store_(store),
      clock_(clock),
      options_(options) {}

std::string KeyVerifier::HashKey(std::string_view key) const { return HexEncode(pepper_.Mac(key)); }

KeyVerdict KeyVerifier::Judge(const std::shared_ptr<const KeyFacts>& facts, UnixMicros now) const {
  if (facts->revoked_at) return {KeyStatus::kRevoked, facts, now};
  if (facts->expires_at && *facts->expires_at <= now) return {KeyStatus::kExpired, facts, now};
  return {KeyStatus::kValid, facts, now};
}

std::optional<KeyVerdict> KeyVerifier::TryCached(std::string_view key, std::string_view client_ip) {
  if (!format_.Check(key)) return KeyVerdict{KeyStatus::kMalformed, nullptr};
  Digest32 d = pepper_.Mac(key);
  UnixMicros now = clock_.Now();
  Shard& shard = ShardFor(d);
  std::lock_guard lock(shard.mu);
  auto it = shard.map.find(d);
  if (it == shard.map.end()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  Entry& e = it->second;
  if (!e.facts) {
    if (e.negative_until > now) {
      hits_.fetch_add(1, std::memory_order_relaxed);
      return KeyVerdict{KeyStatus::kNotFound, nullptr};
    }
    shard.map.erase(it);
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  KeyVerdict v = Judge(e.facts, now);
  if (v.status == KeyStatus::kValid) {
    e.last_used_at = now;
    if (e.last_used_ip != client_ip) e.last_used_ip.assign(client_ip);
  }
  return v;
}

void KeyVerifier::Insert(const Digest32& d, Entry entry) {
  if (options_.cache_capacity == 0) return;
  Shard& shard = ShardFor(d);
  std::lock_guard lock(shard.mu);
  std::size_t per_shard = std::max<std::size_t>(1, options_.cache_capacity / kShards);
  if (shard.map.size() >= per_shard && !shard.map.contains(d)) {
    // Any victim will do: a bounded cache matters more here than a perfect LRU, and an evicted
    // key costs one store lookup.
    auto victim = shard.map.begin();
    if (victim->second.facts && victim->second.last_used_at != 0) {
      shard.evicted_usage.push_back(
          {victim->second.facts->key_id, victim->second.last_used_at, victim->second.last_used_ip});
    }
    DropAlias(victim->first, victim->second);
    shard.map.erase(victim);
  }
  const std::optional<Digest32> stored_as = entry.stored_as;
  auto [it, inserted] = shard.map.try_emplace(d, std::move(entry));
  (void)it;
  if (inserted && stored_as) {
    std::lock_guard alias_lock(aliases_mu_);
    aliases_[*stored_as] = d;
  }
}

void KeyVerifier::DropAlias(const Digest32& cached, const Entry& entry) {
  if (!entry.stored_as) return;
  std::lock_guard alias_lock(aliases_mu_);
  auto it = aliases_.find(*entry.stored_as);
  if (it != aliases_.end() && it->second == cached) aliases_.erase(it);
}

Result<KeyVerdict> KeyVerifier::Verify(std::string_view key, std::string_view client_ip) {
  if (auto cached = TryCached(key, client_ip)) return *cached;
  Digest32 d = pepper_.Mac(key);
  std::string hash = HexEncode(d);
  UnixMicros now = clock_.Now();
  auto record = store_.FindKeyByHash(hash);
  // Cached only when the store holds the key under `hash`: revocation invalidates the hash it
  // finds stored, so an entry under another would outlive it.
  bool cacheable = true;
  std::optional<Digest32> stored_as;
  if (!record && record.error().code == ErrorCode::kNotFound && next_pepper_) {
    record = FindUnderNextPepper(key, hash, stored_as);
  }
  if (!record && record.error().code == ErrorCode::kNotFound && previous_pepper_) {
    record = FindUnderPreviousPepper(key, hash, cacheable);
  }
  if (!record) {
    if (record.error().code != ErrorCode::kNotFound) return tl::unexpected(record.error());
    Insert(d, Entry{nullptr, now + options_.negative_ttl, 0, {}, {}});
    return KeyVerdict{KeyStatus::kNotFound, nullptr};
  }
  // The store matched on the hash; compare again in constant time so that a lookup that matched
  // by accident (collation, truncation in some backend) can never admit a key.
  if (!ConstantTimeEquals(record->key_hash, hash)) return KeyVerdict{KeyStatus::kNotFound, nullptr};
  auto built = FactsFromRecord(*record);
  if (options_.load_policy) {
    auto policy = options_.load_policy(record->org_id, record->id);
    if (!policy) return tl::unexpected(policy.error());
    auto& f = *std::const_pointer_cast<KeyFacts>(built);
    f.ip_allowlist_shadow = policy->ip_allowlist_shadow;
    f.rate_limit = policy->rate_limit;
    f.quota = policy->quota;
    f.credits_used = policy->credits_used;
    f.credits_period = policy->credits_period;
  }
  std::shared_ptr<const KeyFacts> facts = std::move(built);
  KeyVerdict v = Judge(facts, now);
  Entry e{facts, 0, 0, {}, stored_as};
  if (v.status == KeyStatus::kValid) {
    e.last_used_at = now;
    e.last_used_ip = std::string(client_ip);
  }
  if (cacheable) Insert(d, std::move(e));
  return v;
}

Result<ApiKeyRecord> KeyVerifier::FindUnderPreviousPepper(std::string_view key,
                                                          const std::string& current_hash,
                                                          bool& moved) {
  moved = false;
  const std::string old_hash = HexEncode(previous_pepper_->Mac(key));
  auto record = FindStoredAs(old_hash);
  if (!record) return record;
  auto replaced = store_.ReplaceKeyHash(record->org_id, record->id, old_hash, current_hash);
  if (!replaced) return tl::unexpected(replaced.error());
  if (*replaced) {
    moved = true;
    rehashed_.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("keys: {} moved to the current pepper", record->id);
  }
  // Judged as found either way: the key is the same key, whichever pepper its row holds now.
  record->key_hash = current_hash;
  return record;
}

Result<ApiKeyRecord> KeyVerifier::FindStoredAs(const std::string& hash) {
  auto record = store_.FindKeyByHash(hash);
  // Compared again in constant time, as Verify does for the current pepper's hash.
  if (record && !ConstantTimeEquals(record->key_hash, hash)) {
    return Fail(ErrorCode::kNotFound, "API key not found");
  }
  return record;
}

Result<ApiKeyRecord> KeyVerifier::FindUnderNextPepper(std::string_view key,
                                                      const std::string& current_hash,
                                                      std::optional<Digest32>& stored_as) {
  const Digest32 next = next_pepper_->Mac(key);
  auto record = FindStoredAs(HexEncode(next));
  if (!record) return record;
  // Left where it is: this node moving it back would undo what the switched nodes did.
  stored_as = next;
  record->key_hash = current_hash;
  return record;
}

void KeyVerifier::Invalidate(std::string_view key_hash_hex) {
  if (key_hash_hex.size() != 64) {
    if (options_.on_other_invalidation) options_.on_other_invalidation(key_hash_hex);
    return;
  }
  Digest32 d{};
  for (std::size_t i = 0; i < 32; ++i) {
    auto nib = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return 0;
    };
    d[i] = static_cast<unsigned char>(nib(key_hash_hex[2 * i]) << 4 | nib(key_hash_hex[2 * i + 1]));
  }
  Forget(d, std::nullopt);
  // An entry cached under another hash than the one its row holds (found under the next
  // pepper) is known by the stored one.
  std::optional<Digest32> cached;
  {
    std::lock_guard alias_lock(aliases_mu_);
    if (auto alias = aliases_.find(d); alias != aliases_.end()) {
      cached = alias->second;
      aliases_.erase(alias);
    }
  }
  if (cached) Forget(*cached, d);
}

void KeyVerifier::Forget(const Digest32& cached, const std::optional<Digest32>& stored_as) {
  Shard& shard = ShardFor(cached);
  std::lock_guard lock(shard.mu);
  auto it = shard.map.find(cached);
  if (it == shard.map.end()) return;
  // Cached again since under the same hash, for another stored row: not this invalidation's.
  if (stored_as && it->second.stored_as != stored_as) return;
  if (it->second.facts && it->second.last_used_at != 0) {
    shard.evicted_usage.push_back(
        {it->second.facts->key_id, it->second.last_used_at, it->second.last_used_ip});
  }
  DropAlias(cached, it->second);
  shard.map.erase(it);
}

Result<void> KeyVerifier::FlushUsage() {
  std::vector<KeyUsage> batch;
  for (auto& shard : shards_) {
    std::lock_guard lock(shard.mu);
    for (auto& u : shard.evicted_usage) batch.push_back(std::move(u));
    shard.evicted_usage.clear();
    for (auto& [d, e] : shard.map) {
      if (e.facts && e.last_used_at != 0) {
        batch.push_back({e.facts->key_id, e.last_used_at, e.last_used_ip});
        e.last_used_at = 0;
      }
    }
  }
  auto r = store_.RecordKeyUsage(batch);
  if (!r) {
    // Keep the sightings for the next flush rather than lose them, up to a bound: last-used
    // times are a convenience, and an outage must not grow memory without limit.
    std::lock_guard lock(shards_[0].mu);
    for (auto& u : batch) {
      if (shards_[0].evicted_usage.size() >= options_.cache_capacity) break;
      shards_[0].evicted_usage.push_back(std::move(u));
    }
  }
  return r;
}

Result<void> KeyVerifier::SyncInvalidations() {
  std::lock_guard lock(sync_mu_);
  if (!invalidation_seq_) {
    auto latest = store_.LatestKeyInvalidation();
    if (!latest) return tl::unexpected(latest.error());
    invalidation_seq_ = *latest;
    return {};
  }
  for (;;) {
    auto batch = store_.KeyInvalidationsSince(*invalidation_seq_, 1000);
    if (!batch) return tl::unexpected(batch.error());
    for (const auto& inv : *batch) {
      Invalidate(inv.key_hash);
      invalidation_seq_ = inv.seq;
    }
    if (batch->size() < 1000) return {};
  }
}

std::size_t KeyVerifier::cache_size() const {
  std::size_t n = 0;
  for (auto& shard : shards_) {
    std::lock_guard lock(const_cast<std::mutex&>(shard.mu));
    n += shard.map.size();
  }
  return n;
}

}  // namespace gatehouse

#include "keys/key_verifier.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "support/domain_env.h"

namespace gatehouse {
namespace {

using testing::DomainEnv;

TEST(KeyVerifier, GarbageNeverReachesTheCacheOrStore) {
  DomainEnv env;
  auto v = env.verifier->TryCached("sk_live_notakey", "1.2.3.4");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->status, KeyStatus::kMalformed);
  EXPECT_EQ(env.verifier->cache_hits() + env.verifier->cache_misses(), 0u);
}

TEST(KeyVerifier, MissThenHitAndUsageIsBatched) {
  DomainEnv env;
  auto org = env.NewOrg("Acme");
  const std::string& key = org.owner_key.secret;
  EXPECT_FALSE(env.verifier->TryCached(key, "10.0.0.1"));  // not cached yet
  auto v = env.verifier->Verify(key, "10.0.0.1");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->status, KeyStatus::kValid);
  EXPECT_EQ(v->facts->org_id, org.org.id);
  auto hit = env.verifier->TryCached(key, "10.0.0.2");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->status, KeyStatus::kValid);
  // No write per request: the store learns of the use only at a flush.
  EXPECT_FALSE(env.keys->Get(org.org.id, org.owner_key.record.id)->last_used_at);
  ASSERT_TRUE(env.verifier->FlushUsage());
  auto rec = env.keys->Get(org.org.id, org.owner_key.record.id);
  ASSERT_TRUE(rec->last_used_at);
  EXPECT_EQ(rec->last_used_ip, "10.0.0.2");
}

TEST(KeyVerifier, ExpiryTakesEffectAtTheExactMicrosecond) {
  DomainEnv env;
  auto org = env.NewOrg("Acme");
  NewKeyParams p;
  p.label = "short";
  p.expires_in = "1h";
  auto k = env.keys->Create(KeyService::Operator(org.org.id), org.org.id, p);
  ASSERT_TRUE(k);
  ASSERT_EQ(env.verifier->Verify(k->secret, "")->status, KeyStatus::kValid);
  env.clock.Advance(std::chrono::microseconds(3600LL * kMicrosPerSecond - 1));
  EXPECT_EQ(env.verifier->TryCached(k->secret, "")->status, KeyStatus::kValid);
  env.clock.Advance(std::chrono::microseconds(1));
  EXPECT_EQ(env.verifier->TryCached(k->secret, "")->status, KeyStatus::kExpired);
}

TEST(KeyVerifier, RevocationDropsTheCachedKeyAtOnce) {
  DomainEnv env;
  auto org = env.NewOrg("Acme");
  const auto& key = org.owner_key.secret;
  ASSERT_EQ(env.verifier->Verify(key, "")->status, KeyStatus::kValid);
  ASSERT_TRUE(env.keys->Revoke(org.org.id, org.owner_key.record.id));
  EXPECT_EQ(env.verifier->Verify(key, "")->status, KeyStatus::kRevoked);
}

TEST(KeyVerifier, UnknownKeysAreCachedNegativelyForTheTtl) {
  DomainEnv env;
  std::string unknown = env.verifier->format().Generate(KeyEnvironment::kLive);
  EXPECT_EQ(env.verifier->Verify(unknown, "")->status, KeyStatus::kNotFound);
  auto again = env.verifier->TryCached(unknown, "");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, KeyStatus::kNotFound);
  env.clock.Advance(std::chrono::seconds(31));
  EXPECT_FALSE(env.verifier->TryCached(unknown, ""));
}

TEST(KeyVerifier, CacheStaysWithinItsCapacity) {
  DomainEnv env;
  for (int i = 0; i < 5000; ++i) {
    (void)env.verifier->Verify(env.verifier->format().Generate(KeyEnvironment::kLive), "");
  }
  EXPECT_LE(env.verifier->cache_size(), 1000u);
}

TEST(KeyVerifier, RevocationByAnotherProcessReachesThisCache) {
  auto dir = std::filesystem::temp_directory_path() / ("gh-verifier-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string db = (dir / "db").string();
  DomainEnv node_a(DefaultConfig(), db);
  DomainEnv node_b(DefaultConfig(), db);  // same pepper, same file: another process
  auto org = node_a.NewOrg("Acme");
  ASSERT_TRUE(node_b.verifier->SyncInvalidations());  // learns where the log ends
  ASSERT_EQ(node_b.verifier->Verify(org.owner_key.secret, "")->status, KeyStatus::kValid);
  ASSERT_TRUE(node_a.keys->Revoke(org.org.id, org.owner_key.record.id));
  auto stale = node_b.verifier->TryCached(org.owner_key.secret, "");
  ASSERT_TRUE(stale);
  EXPECT_EQ(stale->status, KeyStatus::kValid);
  ASSERT_TRUE(node_b.verifier->SyncInvalidations());
  EXPECT_EQ(node_b.verifier->Verify(org.owner_key.secret, "")->status, KeyStatus::kRevoked);
  std::filesystem::remove_all(dir);
}

TEST(KeyVerifier, AfterAPepperRotationAKeyInUseMovesToTheNewPepper) {
  DomainEnv env;
  auto org = env.NewOrg("Acme");
  const std::string& key = org.owner_key.secret;
  const std::string old_hash = org.owner_key.record.key_hash;
  const HmacSha256Key old_pepper(DomainEnv::kPepper);
  const HmacSha256Key new_pepper("a-new-pepper-0123456789abcdef012345");
  auto verifier = [&](std::optional<HmacSha256Key> previous) {
    auto v = std::make_unique<KeyVerifier>(env.verifier->format(), new_pepper, *env.store,
                                           env.clock, KeyVerifier::Options{});
    if (previous) v->AcceptPreviousPepper(*previous);
    return v;
  };
  // The new pepper alone knows no key made before it.
  EXPECT_EQ(verifier(std::nullopt)->Verify(key, "")->status, KeyStatus::kNotFound);

  // A process still on the old pepper holds the key in its cache.
  KeyVerifier before(env.verifier->format(), old_pepper, *env.store, env.clock, {});
  ASSERT_TRUE(before.SyncInvalidations());
  ASSERT_EQ(before.Verify(key, "")->status, KeyStatus::kValid);

  auto rotating = verifier(old_pepper);
  ASSERT_TRUE(rotating->SyncInvalidations());  // learns where the log ends
  auto v = rotating->Verify(key, "");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->status, KeyStatus::kValid);
  EXPECT_EQ(v->facts->key_id, org.owner_key.record.id);
  EXPECT_EQ(rotating->keys_rehashed(), 1u);
  EXPECT_EQ(env.keys->Get(org.org.id, org.owner_key.record.id)->key_hash, rotating->HashKey(key));
  EXPECT_EQ(rotating->TryCached(key, "")->status, KeyStatus::kValid);
  // Moved once: the pepper before is no longer needed for it, nor does it find it any more.
  EXPECT_EQ(verifier(std::nullopt)->Verify(key, "")->status, KeyStatus::kValid);
  // The move is logged like a revocation: the old process drops the entry under the old hash,
  // so that it can never outlive a revocation logged under the new one.
  EXPECT_TRUE(before.TryCached(key, ""));
  ASSERT_TRUE(before.SyncInvalidations());
  EXPECT_FALSE(before.TryCached(key, ""));
  EXPECT_EQ(before.Verify(key, "")->status, KeyStatus::kNotFound);
  EXPECT_EQ(rotating->Verify(key, "")->status, KeyStatus::kValid);
  EXPECT_EQ(rotating->keys_rehashed(), 1u);
  // Its revocation reaches the cache that holds it under the new hash.
  ASSERT_TRUE(env.keys->Revoke(org.org.id, org.owner_key.record.id));
  ASSERT_TRUE(rotating->SyncInvalidations());
  EXPECT_EQ(rotating->Verify(key, "")->status, KeyStatus::kRevoked);
  // A key neither pepper made is unknown, and cached so.
  std::string unknown = env.verifier->format().Generate(KeyEnvironment::kLive);
  EXPECT_EQ(rotating->Verify(unknown, "")->status, KeyStatus::kNotFound);
  EXPECT_EQ(rotating->TryCached(unknown, "")->status, KeyStatus::kNotFound);
  EXPECT_NE(old_hash, rotating->HashKey(key));
}

TEST(KeyVerifier, DuringARollingRotationANodeNotYetSwitchedFindsMovedKeysAndLeavesThemMoved) {
  DomainEnv env;
  auto org = env.NewOrg("Acme");
  const std::string& key = org.owner_key.secret;
  const HmacSha256Key old_pepper(DomainEnv::kPepper);
  const HmacSha256Key new_pepper("a-new-pepper-0123456789abcdef012345");
  // The new pepper is announced to this node; another node has switched to it.
  KeyVerifier announced(env.verifier->format(), old_pepper, *env.store, env.clock, {});
  announced.AcceptNextPepper(new_pepper);
  KeyVerifier switched(env.verifier->format(), new_pepper, *env.store, env.clock, {});
  switched.AcceptPreviousPepper(old_pepper);
  ASSERT_TRUE(announced.SyncInvalidations());  // learns where the log ends
  ASSERT_TRUE(switched.SyncInvalidations());
  ASSERT_EQ(announced.Verify(key, "")->status, KeyStatus::kValid);  // cached as it is stored

  ASSERT_EQ(switched.Verify(key, "")->status, KeyStatus::kValid);
  ASSERT_EQ(switched.keys_rehashed(), 1u);
  ASSERT_TRUE(announced.SyncInvalidations());  // the move, logged under the old hash
  EXPECT_FALSE(announced.TryCached(key, ""));
  // Found under the next pepper, cached, and not moved back.
  auto v = announced.Verify(key, "");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->status, KeyStatus::kValid);
  EXPECT_EQ(v->facts->key_id, org.owner_key.record.id);
  EXPECT_EQ(announced.keys_rehashed(), 0u);
  EXPECT_EQ(env.keys->Get(org.org.id, org.owner_key.record.id)->key_hash, switched.HashKey(key));
  EXPECT_EQ(announced.TryCached(key, "")->status, KeyStatus::kValid);
  EXPECT_EQ(switched.Verify(key, "")->status, KeyStatus::kValid);
  EXPECT_EQ(switched.keys_rehashed(), 1u);  // nothing to move again
  // The cache entry sits under this node's hash, the row holds the new one: a revocation,
  // logged under the stored hash, must still reach it.
  ASSERT_TRUE(env.keys->Revoke(org.org.id, org.owner_key.record.id));
  EXPECT_EQ(announced.TryCached(key, "")->status, KeyStatus::kValid);  // not synced yet
  ASSERT_TRUE(announced.SyncInvalidations());
  EXPECT_FALSE(announced.TryCached(key, ""));
  EXPECT_EQ(announced.Verify(key, "")->status, KeyStatus::kRevoked);
  ASSERT_TRUE(switched.SyncInvalidations());
  EXPECT_EQ(switched.Verify(key, "")->status, KeyStatus::kRevoked);
}

}  // namespace
}  // namespace gatehouse

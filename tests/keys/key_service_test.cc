#include "keys/key_service.h"

#include <gtest/gtest.h>

#include "support/domain_env.h"

namespace gatehouse {
namespace {

using testing::DomainEnv;

Principal WithScopes(const std::string& org, std::vector<std::string> scopes) {
  return Principal{org, "key_creator", "api_key", std::move(scopes), "live", 0, {}, {}};
}

TEST(KeyService, StoresOnlyAPepperedHash) {
  DomainEnv env;
  auto org = env.NewOrg("Acme");
  const auto& rec = org.owner_key.record;
  EXPECT_EQ(rec.key_hash.size(), 64u);
  EXPECT_EQ(rec.key_hash, env.verifier->HashKey(org.owner_key.secret));
  EXPECT_EQ(org.owner_key.secret.find(rec.key_hash), std::string::npos);
  EXPECT_EQ(env.keys->Masked(rec),
            "sk_live_\u2022\u2022\u2022\u2022" +
                org.owner_key.secret.substr(org.owner_key.secret.size() - 4));
}

TEST(KeyService, NeverGrantsMoreThanTheCreatorHolds) {
  DomainEnv env;
  auto org = env.NewOrg("Acme");
  NewKeyParams p;
  p.label = "child";
  p.scopes = {"read:findings", "write:evidence"};
  auto creator = WithScopes(org.org.id, {"keys:write", "read:findings"});
  auto r = env.keys->Create(creator, org.org.id, p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kPermissionDenied);
  EXPECT_EQ(r.error().required, std::vector<std::string>{"write:evidence"});
  p.scopes = {"read:findings"};
  EXPECT_TRUE(env.keys->Create(creator, org.org.id, p));
}

TEST(KeyService, ValidatesEveryField) {
  DomainEnv env;
  auto org = env.NewOrg("Acme");
  auto op = KeyService::Operator(org.org.id);
  auto expect_field = [&](NewKeyParams p, const std::string& field) {
    auto r = env.keys->Create(op, org.org.id, p);
    ASSERT_FALSE(r) << field;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << field;
    EXPECT_EQ(r.error().field, field);
  };
  NewKeyParams ok;
  ok.label = "fine";
  NewKeyParams p = ok;
  p.label = "";
  expect_field(p, "label");
  p = ok;
  p.label = "bad\nlabel";
  expect_field(p, "label");
  p = ok;
  p.scopes = {"launch:missiles"};
  expect_field(p, "scopes");
  p = ok;
  p.scopes = {"read:findings", "read:findings"};
  expect_field(p, "scopes");
  p = ok;
  p.environment = "prod";
  expect_field(p, "environment");
  p = ok;
  p.expires_in = "20y";
  expect_field(p, "expires_in");
  p = ok;
  p.expires_in = "0d";
  expect_field(p, "expires_in");
  p = ok;
  p.expires_at = "2001-01-01T00:00:00Z";
  expect_field(p, "expires_at");
  p = ok;
  p.expires_in = "1d";
  p.expires_at = "2099-01-01T00:00:00Z";
  expect_field(p, "expires_at");
  p = ok;
  p.ip_allowlist = {"10.0.0.0/33"};
  expect_field(p, "ip_allowlist");
  EXPECT_EQ(env.keys->List(org.org.id, {})->keys.size(), 1u);  // only the owner key
}

TEST(KeyService, RotationKeepsSettingsAndGivesTheOldKeyAGracePeriod) {
  DomainEnv env;
  auto org = env.NewOrg("Acme");
  auto op = KeyService::Operator(org.org.id);
  NewKeyParams p;
  p.label = "svc";
  p.scopes = {"read:findings"};
  p.ip_allowlist = {"10.0.0.0/8"};
  auto old = *env.keys->Create(op, org.org.id, p);
  ASSERT_EQ(env.verifier->Verify(old.secret, "10.1.1.1")->status, KeyStatus::kValid);
  auto fresh = env.keys->Rotate(op, org.org.id, old.record.id, 3600 * kMicrosPerSecond);
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->record.scopes, old.record.scopes);
  EXPECT_EQ(fresh->record.ip_allowlist, old.record.ip_allowlist);
  EXPECT_EQ(fresh->record.rotated_from, old.record.id);
  EXPECT_NE(fresh->secret, old.secret);
  EXPECT_EQ(env.verifier->Verify(old.secret, "")->status, KeyStatus::kValid);
  EXPECT_EQ(env.verifier->Verify(fresh->secret, "")->status, KeyStatus::kValid);
  env.clock.Advance(std::chrono::seconds(3600));
  EXPECT_EQ(env.verifier->Verify(old.secret, "")->status, KeyStatus::kExpired);
  EXPECT_EQ(env.verifier->Verify(fresh->secret, "")->status, KeyStatus::kValid);
  // An expired key cannot be rotated again.
  auto again = env.keys->Rotate(op, org.org.id, old.record.id, 0);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kAlreadyExists);
}

TEST(KeyService, ListsNewestFirstWithCursors) {
  DomainEnv env;
  auto org = env.NewOrg("Acme");
  auto op = KeyService::Operator(org.org.id);
  for (int i = 0; i < 7; ++i) {
    env.clock.Advance(std::chrono::seconds(1));
    NewKeyParams p;
    p.label = "k" + std::to_string(i);
    ASSERT_TRUE(env.keys->Create(op, org.org.id, p));
  }
  KeyListQuery q;
  q.limit = 3;
  std::vector<std::string> labels;
  for (;;) {
    auto page = env.keys->List(org.org.id, q);
    ASSERT_TRUE(page);
    for (auto& k : page->keys) labels.push_back(k.label);
    if (page->next_cursor.empty()) break;
    q.cursor = page->next_cursor;
  }
  ASSERT_EQ(labels.size(), 8u);
  EXPECT_EQ(labels.front(), "k6");
  EXPECT_EQ(labels.back(), "Owner key");
}

}  // namespace
}  // namespace gatehouse

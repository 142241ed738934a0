#include "keys/key_format.h"

#include <gtest/gtest.h>

#include <set>

#include "core/crypto.h"

namespace gatehouse {
namespace {

TEST(KeyFormat, GeneratesKeysThatPassTheirOwnCheck) {
  KeyFormat f("sk");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string k = f.Generate(i % 2 ? KeyEnvironment::kLive : KeyEnvironment::kTest);
    ASSERT_TRUE(seen.insert(k).second);
    ASSERT_EQ(k.size(), 8 + 32 + 6u);
    auto env = f.Check(k);
    ASSERT_TRUE(env) << k;
    EXPECT_EQ(*env, i % 2 ? KeyEnvironment::kLive : KeyEnvironment::kTest);
    EXPECT_EQ(k.substr(k.size() - 6), Base62Fixed6(Crc32(k.substr(0, k.size() - 6))));
  }
}

TEST(KeyFormat, ChecksumCatchesEverySingleCharacterChange) {
  KeyFormat f("sk");
  std::string k = f.Generate(KeyEnvironment::kLive);
  for (std::size_t i = 8; i < k.size(); ++i) {
    std::string bad = k;
    bad[i] = bad[i] == 'a' ? 'b' : 'a';
    EXPECT_FALSE(f.Check(bad)) << i;
  }
}

TEST(KeyFormat, RefusesTruncatedPrefixedWrongAndOversizedKeys) {
  KeyFormat f("sk");
  std::string k = f.Generate(KeyEnvironment::kLive);
  EXPECT_FALSE(f.Check(k.substr(0, k.size() - 1)));
  EXPECT_FALSE(f.Check(k + "0"));
  EXPECT_FALSE(f.Check("pk" + k.substr(2)));
  EXPECT_FALSE(f.Check("sk_prod_" + k.substr(8)));
  EXPECT_FALSE(f.Check(""));
  EXPECT_FALSE(f.Check(std::string(10000, 'a')));
  std::string with_symbol = k;
  with_symbol[12] = '-';
  EXPECT_FALSE(f.Check(with_symbol));
  auto err = f.Check("garbage");
  ASSERT_FALSE(err);
  EXPECT_EQ(err.error().code, ErrorCode::kUnauthenticated);
}

TEST(KeyFormat, HonoursAConfiguredPrefix) {
  KeyFormat f("aiia_key");
  std::string k = f.Generate(KeyEnvironment::kLive);
  EXPECT_TRUE(k.starts_with("aiia_key_live_"));
  EXPECT_TRUE(f.Check(k));
  EXPECT_FALSE(KeyFormat("sk").Check(k));
}

TEST(KeyFormat, MasksWithTheLastFourCharacters) {
  KeyFormat f("sk");
  EXPECT_EQ(f.Mask(KeyEnvironment::kLive, "abcd"), "sk_live_\u2022\u2022\u2022\u2022abcd");
}

}  // namespace
}  // namespace gatehouse

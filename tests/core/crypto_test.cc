#include "core/crypto.h"

#include <gtest/gtest.h>
#include <openssl/hmac.h>
#include <zlib.h>

#include <map>
#include <set>

#include "core/random.h"

namespace gatehouse {
namespace {

TEST(HmacSha256Key, MatchesRfc4231TestCase2) {
  HmacSha256Key key("Jefe");
  EXPECT_EQ(HexEncode(key.Mac("what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(HmacSha256Key, MatchesOpenSslForLongKeysAndManyLengths) {
  std::string long_key(131, '\xaa');  // longer than a block: hashed first (RFC 2104)
  HmacSha256Key key(long_key);
  for (std::size_t n : {0u, 1u, 55u, 56u, 63u, 64u, 65u, 200u}) {
    std::string msg(n, 'x');
    unsigned char expect[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), long_key.data(), static_cast<int>(long_key.size()),
         reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), expect, &len);
    EXPECT_EQ(HexEncode(key.Mac(msg)), HexEncode(expect, 32)) << n;
  }
}

TEST(ConstantTimeEquals, ComparesContentAndLength) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(Crc32, MatchesTheStandardCheckValue) { EXPECT_EQ(Crc32("123456789"), 0xCBF43926u); }

// The table-driven path (short inputs) and zlib's (long ones) agree with zlib at every length
// around the switch and every alignment of the tail.
TEST(Crc32, AgreesWithZlibAtEveryLength) {
  std::string data;
  std::uint32_t x = 2463534242u;  // xorshift: reproducible bytes, all 256 values
  for (int i = 0; i < 1200; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    data.push_back(static_cast<char>(x & 0xFF));
  }
  for (std::size_t n = 0; n <= data.size(); ++n) {
    const auto expected = static_cast<std::uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(n)));
    ASSERT_EQ(Crc32(std::string_view(data).substr(0, n)), expected) << "length " << n;
  }
}

TEST(Base62Fixed6, EncodesTheFullRange) {
  EXPECT_EQ(Base62Fixed6(0), "000000");
  EXPECT_EQ(Base62Fixed6(61), "00000z");
  EXPECT_EQ(Base62Fixed6(62), "000010");
  EXPECT_EQ(Base62Fixed6(0xFFFFFFFFu), "4gfFC3");
}

TEST(Random, Base62IsUniformEnoughAndNeverRepeats) {
  std::set<std::string> seen;
  std::map<char, int> counts;
  for (int i = 0; i < 10000; ++i) {
    std::string s = RandomBase62(22);
    ASSERT_EQ(s.size(), 22u);
    ASSERT_TRUE(seen.insert(s).second);
    for (char c : s) counts[c]++;
  }
  EXPECT_EQ(counts.size(), 62u);
  for (auto& [c, n] : counts) {
    // 220000 draws over 62 characters: ~3548 each; a modulo bias would skew the first ones.
    EXPECT_GT(n, 3000) << c;
    EXPECT_LT(n, 4100) << c;
  }
}

TEST(Random, IdsHaveTheirPrefix) {
  std::string id = NewId("key");
  EXPECT_EQ(id.substr(0, 4), "key_");
  EXPECT_EQ(id.size(), 24u);
}

TEST(PepperedKey, TheCurrentPepperMakesAndEitherPepperMatchesDuringARotation) {
  constexpr std::string_view kOld = "old-pepper-0123456789abcdef0123456789";
  constexpr std::string_view kNew = "new-pepper-0123456789abcdef0123456789";
  PepperedKey before(Peppers{kOld}, "purpose-v1");
  PepperedKey rotating(Peppers{kNew, kOld}, "purpose-v1");
  PepperedKey after(Peppers{kNew}, "purpose-v1");
  const std::string old_mac = before.Hex("token");
  EXPECT_TRUE(before.OtherHexes("token").empty());
  EXPECT_EQ(rotating.OtherHexes("token"), std::vector<std::string>{old_mac});
  EXPECT_EQ(rotating.Hex("token"), after.Hex("token"));
  EXPECT_NE(rotating.Hex("token"), old_mac);
  EXPECT_TRUE(rotating.Matches("token", old_mac));
  EXPECT_TRUE(rotating.Matches("token", after.Hex("token")));
  EXPECT_FALSE(rotating.Matches("other", old_mac));
  EXPECT_FALSE(after.Matches("token", old_mac));
  // Another purpose of the same pepper is another key.
  EXPECT_NE(PepperedKey(Peppers{kOld}, "purpose-v2").Hex("token"), old_mac);
}

TEST(PepperedKey, ANodeNotYetSwitchedMatchesWhatTheNextPepperMadeButMakesUnderItsOwn) {
  constexpr std::string_view kOld = "old-pepper-0123456789abcdef0123456789";
  constexpr std::string_view kNew = "new-pepper-0123456789abcdef0123456789";
  PepperedKey announced(Peppers{kOld, {}, kNew}, "purpose-v1");
  PepperedKey switched(Peppers{kNew, kOld}, "purpose-v1");
  // Each finds what the other made, and each makes under its own current pepper.
  EXPECT_TRUE(announced.Matches("token", switched.Hex("token")));
  EXPECT_TRUE(switched.Matches("token", announced.Hex("token")));
  EXPECT_EQ(announced.Hex("token"), PepperedKey(Peppers{kOld}, "purpose-v1").Hex("token"));
  EXPECT_EQ(announced.OtherHexes("token"), std::vector<std::string>{switched.Hex("token")});
  // Previous and next together (a rotation announced before the last one finished): all three.
  constexpr std::string_view kNewer = "newer-pepper-0123456789abcdef0123456789";
  PepperedKey both(Peppers{kNew, kOld, kNewer}, "purpose-v1");
  EXPECT_EQ(both.OtherHexes("token").size(), 2u);
  EXPECT_TRUE(both.Matches("token", announced.Hex("token")));
  EXPECT_TRUE(both.Matches("token", PepperedKey(Peppers{kNewer}, "purpose-v1").Hex("token")));
  EXPECT_FALSE(PepperedKey(Peppers{kNewer}, "purpose-v1").Matches("token", announced.Hex("token")));
}

}  // namespace
}  // namespace gatehouse

#include "core/signing.h"

#include <gtest/gtest.h>

#include <string>

namespace gatehouse {
namespace {

Digest32 FromHex(std::string_view hex) {
  Digest32 out{};
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<unsigned char>(std::stoi(std::string(hex.substr(2 * i, 2)), nullptr, 16));
  }
  return out;
}

// RFC 8032 section 7.1, TEST 1 (empty message), which RFC 8037 appendix A uses as its JWK.
constexpr std::string_view kRfc8032Seed =
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

TEST(Ed25519Signer, MatchesRfc8032Test1AndRfc8037Jwk) {
  Ed25519Signer signer(FromHex(kRfc8032Seed));
  EXPECT_EQ(HexEncode(signer.public_key().data(), signer.public_key().size()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  const Ed25519Signature sig = signer.Sign("");
  EXPECT_EQ(HexEncode(sig.data(), sig.size()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
            "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
  // RFC 8037 A.2 (the key's x) and A.3 (its RFC 7638 thumbprint).
  EXPECT_EQ(signer.key_id(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
  EXPECT_EQ(
      signer.JwksJson(),
      R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",)"
      R"("kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k","use":"sig","alg":"EdDSA"}]})");
}

TEST(Ed25519Signer, WipesTheSeedItWasGiven) {
  Digest32 seed = FromHex(kRfc8032Seed);
  Ed25519Signer signer(std::move(seed));
  // The seed's bytes are the secret key: after construction only the signer holds them.
  EXPECT_EQ(seed, Digest32{});  // NOLINT(bugprone-use-after-move): the wipe is what is tested
  EXPECT_EQ(signer.key_id(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

TEST(Ed25519Signer, VerifiesItsOwnSignaturesAndNothingElse) {
  Ed25519Signer signer(FromHex(kRfc8032Seed));
  Ed25519Signer other(Digest32{});
  const Ed25519Signature sig = signer.Sign("gatehouse-audit-head-v1\norg_a\n7\nabc");
  EXPECT_TRUE(VerifyEd25519(signer.public_key(), "gatehouse-audit-head-v1\norg_a\n7\nabc", sig));
  EXPECT_FALSE(VerifyEd25519(signer.public_key(), "gatehouse-audit-head-v1\norg_a\n8\nabc", sig));
  EXPECT_FALSE(VerifyEd25519(other.public_key(), "gatehouse-audit-head-v1\norg_a\n7\nabc", sig));
  Ed25519Signature flipped = sig;
  flipped[10] ^= 1;
  EXPECT_FALSE(
      VerifyEd25519(signer.public_key(), "gatehouse-audit-head-v1\norg_a\n7\nabc", flipped));
}

TEST(Base64Url, EncodesRfc4648VectorsWithoutPaddingAndRefusesWhatItDoesNotWrite) {
  // RFC 4648 section 10, with the padding that base64url omits.
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
      {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
  for (auto [plain, encoded] : vectors) {
    EXPECT_EQ(Base64UrlEncode(reinterpret_cast<const unsigned char*>(plain.data()), plain.size()),
              encoded);
    EXPECT_EQ(Base64UrlDecode(encoded), std::string(plain));
  }
  const unsigned char high[] = {0xfb, 0xff};
  EXPECT_EQ(Base64UrlEncode(high, 2), "-_8");  // the URL-safe alphabet, not + and /
  EXPECT_EQ(Base64UrlDecode("-_8"), std::string("\xfb\xff"));
  EXPECT_FALSE(Base64UrlDecode("+/8"));
  EXPECT_FALSE(Base64UrlDecode("Zg=="));  // padding
  EXPECT_FALSE(Base64UrlDecode("Zh"));    // trailing bits that no encoder writes
  EXPECT_FALSE(Base64UrlDecode("Z"));
  EXPECT_FALSE(Base64UrlDecode("Zm9v YmFy"));
}

}  // namespace
}  // namespace gatehouse

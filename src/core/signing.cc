#include "core/signing.h"

#include <sodium.h>

#include <algorithm>
#include <cstdlib>

namespace gatehouse {

std::string Base64UrlEncode(const unsigned char* data, std::size_t size) {
  constexpr int kVariant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_ENCODED_LEN(size, kVariant), '\0');
  sodium_bin2base64(out.data(), out.size(), data, size, kVariant);
  out.resize(out.size() - 1);  // the encoder's terminating NUL
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  std::string out(text.size() / 4 * 3 + 3, '\0');
  std::size_t written = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &written, &end,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(written);
  return out;
}

Ed25519Signer::Ed25519Signer(Digest32&& seed) {
  if (sodium_init() < 0) std::abort();
  crypto_sign_seed_keypair(public_key_.data(), secret_key_.data(), seed.data());
  sodium_memzero(seed.data(), seed.size());
  key_id_ = Ed25519KeyId(public_key_);
}

std::string Ed25519KeyId(const Ed25519PublicKey& key) {
  // RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
  const std::string x = Base64UrlEncode(key.data(), key.size());
  const Digest32 thumbprint = Sha256(R"({"crv":"Ed25519","kty":"OKP","x":")" + x + "\"}");
  return Base64UrlEncode(thumbprint.data(), thumbprint.size());
}

std::string Ed25519Jwks(const std::vector<Ed25519PublicKey>& keys) {
  std::string out = R"({"keys":[)";
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (i > 0) out += ',';
    out += R"({"kty":"OKP","crv":"Ed25519","x":")" +
           Base64UrlEncode(keys[i].data(), keys[i].size()) + R"(","kid":")" +
           Ed25519KeyId(keys[i]) + R"(","use":"sig","alg":"EdDSA"})";
  }
  return out + "]}";
}

std::optional<Ed25519PublicKey> Ed25519KeyFromJwkX(std::string_view x) {
  if (sodium_init() < 0) std::abort();
  const auto raw = Base64UrlDecode(x);
  Ed25519PublicKey key{};
  if (!raw || raw->size() != key.size()) return std::nullopt;
  std::copy(raw->begin(), raw->end(), key.begin());
  if (crypto_core_ed25519_is_valid_point(key.data()) != 1) return std::nullopt;
  return key;
}

Ed25519Signer::~Ed25519Signer() { sodium_memzero(secret_key_.data(), secret_key_.size()); }

Ed25519Signature Ed25519Signer::Sign(std::string_view message) const {
  Ed25519Signature signature{};
  crypto_sign_detached(signature.data(), nullptr,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                       secret_key_.data());
  return signature;
}

bool VerifyEd25519(const Ed25519PublicKey& key, std::string_view message,
                   const Ed25519Signature& signature) {
  if (sodium_init() < 0) std::abort();
  return crypto_sign_verify_detached(signature.data(),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(), key.data()) == 0;
}

}  // namespace gatehouse

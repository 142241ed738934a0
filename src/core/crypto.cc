// SHA256_Init and friends are deprecated in OpenSSL 3 in favour of EVP, but EVP contexts cannot
// be copied without a heap allocation, and the key-verification hot path copies one per request.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "core/crypto.h"

#include <openssl/crypto.h>
#include <zlib.h>

#include <cstring>

namespace gatehouse {

// The one-shot SHA256() of OpenSSL 3 looks the algorithm up on every call (a lock and a hash
// table), which costs more than hashing an audit event's few hundred bytes.
Digest32 Sha256(std::string_view data) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, data.data(), data.size());
  Digest32 out{};
  SHA256_Final(out.data(), &ctx);
  return out;
}

HmacSha256Key::HmacSha256Key(std::string_view key) {
  std::array<unsigned char, SHA256_CBLOCK> block{};
  if (key.size() > block.size()) {
    Digest32 k = Sha256(key);
    std::memcpy(block.data(), k.data(), k.size());
  } else {
    std::memcpy(block.data(), key.data(), key.size());
  }
  std::array<unsigned char, SHA256_CBLOCK> ipad{};
  std::array<unsigned char, SHA256_CBLOCK> opad{};
  for (std::size_t i = 0; i < block.size(); ++i) {
    ipad[i] = block[i] ^ 0x36;
    opad[i] = block[i] ^ 0x5c;
  }
  SHA256_Init(&inner_);
  SHA256_Update(&inner_, ipad.data(), ipad.size());
  SHA256_Init(&outer_);
  SHA256_Update(&outer_, opad.data(), opad.size());
  OPENSSL_cleanse(block.data(), block.size());
  OPENSSL_cleanse(ipad.data(), ipad.size());
  OPENSSL_cleanse(opad.data(), opad.size());
}

HmacSha256Key::~HmacSha256Key() {
  OPENSSL_cleanse(&inner_, sizeof(inner_));
  OPENSSL_cleanse(&outer_, sizeof(outer_));
}

Digest32 HmacSha256Key::Mac(std::string_view message) const {
  Digest32 inner_digest{};
  SHA256_CTX ctx = inner_;
  SHA256_Update(&ctx, message.data(), message.size());
  SHA256_Final(inner_digest.data(), &ctx);
  Digest32 out{};
  ctx = outer_;
  SHA256_Update(&ctx, inner_digest.data(), inner_digest.size());
  SHA256_Final(out.data(), &ctx);
  OPENSSL_cleanse(&ctx, sizeof(ctx));
  return out;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::uint32_t Crc32(std::string_view data) {
  return static_cast<std::uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
}

std::string Base62Fixed6(std::uint32_t value) {
  static constexpr char kDigits[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string out(6, '0');
  for (int i = 5; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = kDigits[value % 62];
    value /= 62;
  }
  return out;
}

void HexEncodeInto(std::string& out, const unsigned char* data, std::size_t size) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.resize(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out[2 * i] = kHex[data[i] >> 4];
    out[2 * i + 1] = kHex[data[i] & 0xf];
  }
}

std::string HexEncode(const unsigned char* data, std::size_t size) {
  std::string out;
  HexEncodeInto(out, data, size);
  return out;
}

void SecureZero(std::string& secret) {
  if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
  secret.clear();
}

std::string DeriveSubkey(std::string_view secret, std::string_view purpose) {
  return HexEncode(HmacSha256Key(secret).Mac(purpose));
}

}  // namespace gatehouse

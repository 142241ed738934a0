// SHA256_Init and friends are deprecated in OpenSSL 3 in favour of EVP, but EVP contexts cannot
// be copied without a heap allocation, and the key-verification hot path copies one per request.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "core/crypto.h"

#include <openssl/crypto.h>
#include <zlib.h>

#include <array>
#include <bit>
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

namespace {
// CRC-32 (IEEE 802.3, reflected), eight bytes per step with eight tables. Every request's key
// checksum is one: on a 50-byte key this takes 23 ns where zlib's crc32 takes 80 ns (zlib works
// bytewise below its braiding threshold). zlib wins from about 500 bytes, so it takes those.
using CrcTables = std::array<std::array<std::uint32_t, 256>, 8>;
constexpr CrcTables MakeCrcTables() {
  CrcTables t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (std::size_t s = 1; s < 8; ++s) {
    for (std::size_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
  return t;
}
constexpr CrcTables kCrcTables = MakeCrcTables();
constexpr std::size_t kZlibCrcFrom = 512;
static_assert(std::endian::native == std::endian::little, "Crc32 loads words little-endian");
}  // namespace

std::uint32_t Crc32(std::string_view data) {
  if (data.size() >= kZlibCrcFrom) {
    return static_cast<std::uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
  }
  const auto& t = kCrcTables;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t n = data.size();
  std::uint32_t c = 0xFFFFFFFFu;
  for (; n >= 8; p += 8, n -= 8) {
    std::uint32_t lo = 0, hi = 0;
    std::memcpy(&lo, p, 4);  // little-endian: the byte order the tables are built for
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
        t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
  }
  for (; n > 0; ++p, --n) c = t[0][(c ^ *p) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
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

std::string PepperFingerprint(std::string_view pepper) {
  return DeriveSubkey(pepper, "gatehouse-password-pepper-tag-v1").substr(0, 16);
}

PepperedKey::PepperedKey(const Peppers& peppers, std::string_view purpose)
    : current_(DeriveSubkey(peppers.current, purpose)) {
  for (std::string_view other : {peppers.previous, peppers.next}) {
    if (!other.empty()) others_.emplace_back(DeriveSubkey(other, purpose));
  }
}

std::string PepperedKey::Hex(std::string_view message) const {
  return HexEncode(current_.Mac(message));
}

std::vector<std::string> PepperedKey::OtherHexes(std::string_view message) const {
  std::vector<std::string> out;
  out.reserve(others_.size());
  for (const auto& key : others_) out.push_back(HexEncode(key.Mac(message)));
  return out;
}

bool PepperedKey::Matches(std::string_view message, std::string_view presented) const {
  bool match = ConstantTimeEquals(Hex(message), presented);
  for (const auto& other : OtherHexes(message)) match |= ConstantTimeEquals(other, presented);
  return match;
}

}  // namespace gatehouse

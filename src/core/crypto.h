// Thin wrappers over OpenSSL for the primitives gatehouse uses: SHA-256, HMAC-SHA-256,
// constant-time comparison, CRC32 and base62/hex encodings.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <openssl/sha.h>

namespace gatehouse {

using Digest32 = std::array<unsigned char, 32>;

Digest32 Sha256(std::string_view data);

// HMAC-SHA-256 with the key's pad blocks absorbed once at construction, so that each Mac()
// costs two SHA-256 compressions and no allocation. Copyable; Mac() is const and thread-safe.
class HmacSha256Key {
 public:
  explicit HmacSha256Key(std::string_view key);
  ~HmacSha256Key();
  HmacSha256Key(const HmacSha256Key&) = default;
  HmacSha256Key& operator=(const HmacSha256Key&) = default;

  Digest32 Mac(std::string_view message) const;

 private:
  SHA256_CTX inner_;
  SHA256_CTX outer_;
};

// A key for one purpose, derived from a deployment secret (the pepper), so that one key never
// serves two purposes: hex HMAC-SHA-256(secret, purpose).
std::string DeriveSubkey(std::string_view secret, std::string_view purpose);

// A purpose's subkey (DeriveSubkey) of the current pepper and, while a pepper rotation is under
// way, of the previous one, for tokens stored or checked as an HMAC: what was made before the
// rotation is still found until the previous pepper is retired.
class PepperedKey {
 public:
  // `previous_pepper` empty: no rotation under way.
  PepperedKey(std::string_view pepper, std::string_view previous_pepper, std::string_view purpose);

  // Hex HMAC under the current pepper: what new records store.
  std::string Hex(std::string_view message) const;
  // The same under the previous pepper; nullopt when none.
  std::optional<std::string> PreviousHex(std::string_view message) const;
  // Whether `presented` is the hex HMAC of `message` under either pepper, in constant time.
  bool Matches(std::string_view message, std::string_view presented) const;

 private:
  HmacSha256Key current_;
  std::optional<HmacSha256Key> previous_;
};

// Compares in time that depends only on the lengths, never on where the inputs differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

std::uint32_t Crc32(std::string_view data);

// Fixed-width base62 of a 32-bit value, most significant digit first; 6 digits hold 2^32.
std::string Base62Fixed6(std::uint32_t value);

std::string HexEncode(const unsigned char* data, std::size_t size);
// The same into `out`, which keeps its capacity (hot loops).
void HexEncodeInto(std::string& out, const unsigned char* data, std::size_t size);
inline std::string HexEncode(const Digest32& d) { return HexEncode(d.data(), d.size()); }

// Overwrites a secret so that it does not linger in freed memory.
void SecureZero(std::string& secret);

}  // namespace gatehouse

// Thin wrappers over OpenSSL for the primitives gatehouse uses: SHA-256, HMAC-SHA-256,
// constant-time comparison, CRC32 and base62/hex encodings.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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

// The deployment's peppers while one is being rotated. `current` keys everything stored from
// now on. `previous` (empty: none) is the one before it: what it keyed is still found, and API
// keys and password hashes move away from it as they are used. `next` (empty: none) is the one
// that becomes current once every node has it: what it keyed is found, and nothing moves to it
// or from it. Announcing the next pepper on every node before any node makes it current is what
// lets nodes switch one at a time: a node already switched moves records to its new pepper, and
// a node not yet switched still finds them.
struct Peppers {
  explicit Peppers(std::string_view current_pepper, std::string_view previous_pepper = {},
                   std::string_view next_pepper = {})
      : current(current_pepper), previous(previous_pepper), next(next_pepper) {}
  std::string_view current;
  std::string_view previous;
  std::string_view next;
};

// 16 hex digits that name a pepper without revealing it: what /metrics shows of each pepper a
// node holds, so that an operator sees a rotation's step done on every node, and the tag a
// password hash carries of the pepper that keyed it.
std::string PepperFingerprint(std::string_view pepper);

// A purpose's subkey (DeriveSubkey) of the current pepper and, while a pepper rotation is under
// way, of the previous and next ones, for tokens stored or checked as an HMAC: what was made
// under any of them is found until that pepper is retired.
class PepperedKey {
 public:
  PepperedKey(const Peppers& peppers, std::string_view purpose);

  // Hex HMAC under the current pepper: what new records store.
  std::string Hex(std::string_view message) const;
  // The same under the previous and the next pepper, those configured: where else to look.
  std::vector<std::string> OtherHexes(std::string_view message) const;
  // Whether `presented` is the hex HMAC of `message` under any of the peppers, in constant time.
  bool Matches(std::string_view message, std::string_view presented) const;

 private:
  HmacSha256Key current_;
  std::vector<HmacSha256Key> others_;
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

// The API key format of DESIGN.md:
//
//   <prefix>_<env>_<32 base62 random characters><6 base62 characters: CRC32 of all before it>
//   sk_live_4f9XkQ...Zr2aBc0dq1
//
// The checksum lets secret scanners recognise a real key offline and lets gatehouse refuse
// garbage without touching the cache or the store.
#pragma once

#include <string>
#include <string_view>

#include "core/error.h"

namespace gatehouse {

enum class KeyEnvironment { kLive, kTest };

std::string_view EnvironmentName(KeyEnvironment env);
Result<KeyEnvironment> ParseEnvironment(std::string_view name);

class KeyFormat {
 public:
  static constexpr std::size_t kRandomChars = 32;  // ~190 bits
  static constexpr std::size_t kChecksumChars = 6;
  static constexpr std::size_t kMaxKeyLength = 128;

  // `prefix` is validated by the config loader: 1-32 characters of [a-z0-9_], not ending in '_'.
  explicit KeyFormat(std::string prefix) : prefix_(std::move(prefix)) {}

  std::string Generate(KeyEnvironment env) const;

  // Checks shape and checksum only. Attacker-controlled input; any failure is kUnauthenticated
  // with one generic message, so that the answer never hints at what was wrong.
  Result<KeyEnvironment> Check(std::string_view key) const;

  // "sk_live_••••abcd": enough to recognise a key in a list, never enough to use it.
  std::string Mask(KeyEnvironment env, std::string_view last4) const;

  const std::string& prefix() const { return prefix_; }

 private:
  std::string prefix_;
};

// The last four characters of a key, kept in the clear for the masked listing. They are part of
// the checksum, so they reveal nothing of the random part.
inline std::string_view KeyLast4(std::string_view key) {
  return key.size() >= 4 ? key.substr(key.size() - 4) : key;
}

}  // namespace gatehouse

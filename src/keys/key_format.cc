#include "keys/key_format.h"

#include <array>

#include "core/crypto.h"
#include "core/random.h"

namespace gatehouse {

namespace {
// A table, since every request's key is checked a character at a time.
constexpr std::array<bool, 256> kBase62 = [] {
  std::array<bool, 256> table{};
  for (char c :
       std::string_view("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")) {
    table[static_cast<unsigned char>(c)] = true;
  }
  return table;
}();
bool IsBase62(char c) { return kBase62[static_cast<unsigned char>(c)]; }
}  // namespace

std::string_view EnvironmentName(KeyEnvironment env) {
  return env == KeyEnvironment::kLive ? "live" : "test";
}

Result<KeyEnvironment> ParseEnvironment(std::string_view name) {
  if (name == "live") return KeyEnvironment::kLive;
  if (name == "test") return KeyEnvironment::kTest;
  return FailField("environment", "environment must be \"live\" or \"test\"");
}

std::string KeyFormat::Generate(KeyEnvironment env) const {
  std::string key = prefix_;
  key += '_';
  key += EnvironmentName(env);
  key += '_';
  key += RandomBase62(kRandomChars);
  key += Base62Fixed6(Crc32(key));
  return key;
}

Result<KeyEnvironment> KeyFormat::Check(std::string_view key) const {
  auto invalid = [] { return Fail(ErrorCode::kUnauthenticated, "invalid API key"); };
  if (key.size() > kMaxKeyLength) return invalid();
  if (key.size() < prefix_.size() + 6 + kRandomChars + kChecksumChars) return invalid();
  if (key.compare(0, prefix_.size(), prefix_) != 0 || key[prefix_.size()] != '_') return invalid();
  std::string_view rest = key.substr(prefix_.size() + 1);
  KeyEnvironment env;
  if (rest.starts_with("live_"))
    env = KeyEnvironment::kLive;
  else if (rest.starts_with("test_"))
    env = KeyEnvironment::kTest;
  else
    return invalid();
  std::string_view body = rest.substr(5);
  for (char c : body) {
    if (!IsBase62(c)) return invalid();
  }
  std::string_view signed_part = key.substr(0, key.size() - kChecksumChars);
  std::string expected = Base62Fixed6(Crc32(signed_part));
  if (key.substr(key.size() - kChecksumChars) != expected) return invalid();
  return env;
}

std::string KeyFormat::Mask(KeyEnvironment env, std::string_view last4) const {
  std::string out = prefix_;
  out += '_';
  out += EnvironmentName(env);
  out += "_\u2022\u2022\u2022\u2022";
  out += last4;
  return out;
}

}  // namespace gatehouse

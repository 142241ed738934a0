// What a new password must be, after NIST SP 800-63B rev. 4 §3.1.1.2: long enough (15 code
// points by default), any Unicode (NFC-normalised, never truncated, at most a stated number of
// bytes), no composition rules, and not on a blocklist of common and breached passwords or made
// of words from the context (the service, the org, the person's email). A refusal says why.
//
// Thread-safety: immutable after construction.
#pragma once

#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "config/config.h"
#include "core/error.h"

namespace gatehouse {

// NFC form of UTF-8 text; kInvalidArgument (field "password") for invalid UTF-8 or control
// characters. Applied to every password before it is checked, hashed or verified, so that
// the same characters typed on two keyboards verify the same.
Result<std::string> NormalizePassword(std::string_view password);

// Code points in UTF-8 text.
std::size_t CodePoints(std::string_view utf8);

class PasswordPolicy {
 public:
  // Reads the blocklist file named in `config` (kInvalidArgument when it cannot be read).
  static Result<PasswordPolicy> Load(const PasswordConfig& config);
  PasswordPolicy(const PasswordConfig& config, std::unordered_set<std::string> blocklist);

  // `password` as normalised by NormalizePassword. `context`: words that must not make up the
  // password (org name, email, the person's name); "gatehouse" is always one.
  Result<void> Check(std::string_view password, const std::vector<std::string>& context) const;

  std::size_t min_length() const { return min_length_; }
  std::size_t max_bytes() const { return max_bytes_; }
  std::size_t blocklist_size() const { return blocklist_.size(); }

 private:
  std::size_t min_length_;
  std::size_t max_bytes_;
  std::unordered_set<std::string> blocklist_;  // lower-case
};

}  // namespace gatehouse

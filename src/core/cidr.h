// IPv4 and IPv6 CIDR blocks for allowlists. Addresses are compared as 16-byte IPv6 values, with
// IPv4 mapped into ::ffff:0:0/96 so that one list can hold both families.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace gatehouse {

using IpBytes = std::array<unsigned char, 16>;

// Parses "192.0.2.1" or "2001:db8::1" (no zone, no port).
std::optional<IpBytes> ParseIp(std::string_view text);

class Cidr {
 public:
  // "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). Host bits must be zero.
  static Result<Cidr> Parse(std::string_view text);
  bool Contains(const IpBytes& ip) const;
  const std::string& text() const { return text_; }

 private:
  IpBytes network_{};
  int prefix_bits_ = 0;  // Over the 128-bit mapped form.
  std::string text_;
};

// True when the list is empty (no restriction) or one block contains the address.
bool AllowedBy(const std::vector<Cidr>& list, std::string_view ip);

// 127.0.0.0/8 or ::1 (a malformed address is not loopback).
bool IsLoopback(std::string_view ip);

}  // namespace gatehouse

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

// The network an address belongs to (IPv4 /v4_bits, IPv6 /v6_bits) in the mapped 16-byte form;
// `is_v4` says which family it was. nullopt for a malformed address.
std::optional<IpBytes> NetworkOf(std::string_view ip, int v4_bits, int v6_bits,
                                 bool* is_v4 = nullptr);

// The same as text: "192.0.2.0/24" for (v4_bits 24), "2001:db8::/48"
// for (v6_bits 48); a full-length prefix gives the address itself. A malformed address is
// returned as it is (it is still one distinct client).
std::string AddressBucket(std::string_view ip, int v4_bits, int v6_bits);

// 127.0.0.0/8 or ::1 (a malformed address is not loopback).
bool IsLoopback(std::string_view ip);

}  // namespace gatehouse

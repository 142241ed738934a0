#include "core/cidr.h"

#include <arpa/inet.h>

#include <algorithm>

#include <charconv>
#include <cstring>

namespace gatehouse {

std::optional<IpBytes> ParseIp(std::string_view text) {
  if (text.empty() || text.size() > 45) return std::nullopt;
  char buf[46];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpBytes out{};
  in_addr v4{};
  if (inet_pton(AF_INET, buf, &v4) == 1) {
    out[10] = 0xff;
    out[11] = 0xff;
    std::memcpy(out.data() + 12, &v4, 4);
    return out;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, buf, &v6) == 1) {
    std::memcpy(out.data(), &v6, 16);
    return out;
  }
  return std::nullopt;
}

Result<Cidr> Cidr::Parse(std::string_view text) {
  auto bad = [&] {
    return FailField("ip_allowlist", "not a CIDR block (e.g. 203.0.113.0/24 or 2001:db8::/32)");
  };
  std::string_view addr = text;
  int bits = -1;
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    addr = text.substr(0, slash);
    std::string_view b = text.substr(slash + 1);
    if (b.empty() || b.size() > 3 || b.front() < '0' || b.front() > '9') return bad();
    auto [p, ec] = std::from_chars(b.data(), b.data() + b.size(), bits);
    if (ec != std::errc() || p != b.data() + b.size()) return bad();
  }
  auto ip = ParseIp(addr);
  if (!ip) return bad();
  bool v4 = addr.find(':') == std::string_view::npos;
  int max_bits = v4 ? 32 : 128;
  if (bits < 0) bits = max_bits;
  if (bits > max_bits) return bad();
  Cidr c;
  c.network_ = *ip;
  c.prefix_bits_ = v4 ? bits + 96 : bits;
  for (int i = c.prefix_bits_; i < 128; ++i) {
    if (c.network_[static_cast<std::size_t>(i / 8)] & (0x80 >> (i % 8))) {
      return FailField("ip_allowlist", "CIDR block has host bits set: " + std::string(text));
    }
  }
  c.text_ = std::string(text);
  return c;
}

bool Cidr::Contains(const IpBytes& ip) const {
  int full = prefix_bits_ / 8;
  if (std::memcmp(ip.data(), network_.data(), static_cast<std::size_t>(full)) != 0) return false;
  int rest = prefix_bits_ % 8;
  if (rest == 0) return true;
  unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (ip[static_cast<std::size_t>(full)] & mask) ==
         (network_[static_cast<std::size_t>(full)] & mask);
}

bool AllowedBy(const std::vector<Cidr>& list, std::string_view ip) {
  if (list.empty()) return true;
  auto parsed = ParseIp(ip);
  if (!parsed) return false;
  for (const auto& c : list) {
    if (c.Contains(*parsed)) return true;
  }
  return false;
}

bool IsLoopback(std::string_view ip) {
  static const std::vector<Cidr> kLoopback = {*Cidr::Parse("127.0.0.0/8"), *Cidr::Parse("::1")};
  auto bytes = ParseIp(ip);
  if (!bytes) return false;
  for (const auto& c : kLoopback) {
    if (c.Contains(*bytes)) return true;
  }
  return false;
}

std::optional<IpBytes> NetworkOf(std::string_view ip, int v4_bits, int v6_bits, bool* is_v4) {
  auto parsed = ParseIp(ip);
  if (!parsed) return std::nullopt;
  IpBytes b = *parsed;
  static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  const bool v4 = std::equal(b.begin(), b.begin() + 12, kMapped);
  if (is_v4) *is_v4 = v4;
  const int bits = v4 ? 96 + std::min(v4_bits, 32) : std::min(v6_bits, 128);
  for (int i = 0; i < 16; ++i) {
    int keep = std::clamp(bits - 8 * i, 0, 8);
    b[static_cast<std::size_t>(i)] &= static_cast<unsigned char>(0xff00 >> keep);
  }
  return b;
}

std::string AddressBucket(std::string_view ip, int v4_bits, int v6_bits) {
  bool v4 = false;
  auto b = NetworkOf(ip, v4_bits, v6_bits, &v4);
  if (!b || (v4 && v4_bits >= 32) || (!v4 && v6_bits >= 128)) return std::string(ip);
  char out[INET6_ADDRSTRLEN];
  if (v4) {
    if (!inet_ntop(AF_INET, b->data() + 12, out, sizeof out)) return std::string(ip);
    return std::string(out) + "/" + std::to_string(v4_bits);
  }
  if (!inet_ntop(AF_INET6, b->data(), out, sizeof out)) return std::string(ip);
  return std::string(out) + "/" + std::to_string(v6_bits);
}

}  // namespace gatehouse

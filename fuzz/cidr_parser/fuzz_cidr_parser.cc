// Allowlist entries and client addresses (the latter from X-Forwarded-For, so attacker-controlled).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/cidr.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto split = text.find('|');
  std::string_view block = text.substr(0, split);
  std::string_view addr = split == std::string_view::npos ? text : text.substr(split + 1);
  auto cidr = gatehouse::Cidr::Parse(block);
  if (cidr) {
    // A block always contains its own network address.
    auto ip = gatehouse::ParseIp(block.substr(0, block.find('/')));
    if (!ip || !cidr->Contains(*ip)) std::abort();
    (void)gatehouse::AllowedBy({*cidr}, addr);
  }
  (void)gatehouse::ParseIp(addr);
  return 0;
}

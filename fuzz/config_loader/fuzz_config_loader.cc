// gatehouse.toml: an operator's file, but a typo must give a message, never a crash.
#include <cstdint>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = gatehouse::ParseConfig(text, "fuzz.toml");
  if (c) (void)gatehouse::Validate(*c);
  return 0;
}

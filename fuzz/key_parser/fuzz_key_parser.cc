// Presented API keys and the durations/timestamps that come with key creation: all
// attacker-controlled. None may crash, and a key that passes Check must round-trip its checksum.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/crypto.h"
#include "core/time_format.h"
#include "keys/key_format.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  static const gatehouse::KeyFormat sk("sk");
  static const gatehouse::KeyFormat custom("aiia_key");
  for (const auto* f : {&sk, &custom}) {
    if (f->Check(input)) {
      auto body = input.substr(0, input.size() - 6);
      if (gatehouse::Base62Fixed6(gatehouse::Crc32(body)) != input.substr(input.size() - 6)) {
        std::abort();
      }
    }
  }
  (void)gatehouse::ParseDuration(input);
  if (auto t = gatehouse::ParseRfc3339(input)) (void)gatehouse::FormatRfc3339(*t);
  return 0;
}

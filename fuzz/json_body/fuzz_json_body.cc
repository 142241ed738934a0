// Control-plane request bodies, read the way the key-creation handler reads them.
#include <cstdint>
#include <string_view>

#include "core/json_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  auto in = gatehouse::JsonObjectReader::Parse(body);
  if (!in) return 0;
  (void)in->OptString("label");
  (void)in->OptStringArray("scopes");
  (void)in->OptString("expires_in");
  (void)in->OptInt("limit");
  (void)in->OptBool("flag");
  (void)in->RejectUnknownFields();
  return 0;
}

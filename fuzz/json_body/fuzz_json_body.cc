// Control-plane request bodies, read the way the key-creation handler reads them (with a
// nested rate limit), and as audit verify reads its anchor.
#include <cstdint>
#include <string_view>

#include "audit/audit_service.h"
#include "core/json_input.h"
#include "limits/rate_policy.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  (void)gatehouse::ReadAuditAnchor(body, false);
  (void)gatehouse::ReadAuditAnchor(body, true);
  auto in = gatehouse::JsonObjectReader::Parse(body);
  if (!in) return 0;
  (void)in->OptString("label");
  (void)in->OptStringArray("scopes");
  (void)in->OptString("expires_in");
  (void)in->OptInt("limit");
  (void)in->OptBool("flag");
  // A rate limit, nested, as keys and orgs take it; and its stored form read back.
  if (auto rate = in->OptObject("rate_limit"); rate && *rate) {
    if (auto p = gatehouse::ReadRatePolicy(**rate, "rate_limit"); p) {
      auto back = gatehouse::ParseStoredRatePolicy(gatehouse::StoreRatePolicy(*p));
      if (!back || !(*back == *p)) __builtin_trap();
    }
  }
  (void)in->RejectUnknownFields();
  return 0;
}

// A journal segment as found on disk after a crash (torn, damaged, or not ours at all): the scan
// stops at the last whole record and never reads past the bytes, and every record it accepts
// encodes back to the same bytes.
#include <cstdint>
#include <string>
#include <string_view>

#include "audit/journal.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::size_t last = 0;
  std::string again;
  std::size_t end =
      gatehouse::ScanJournalSegment(bytes, [&](gatehouse::AuditEvent&& e, std::size_t at) {
        if (at <= last || at > bytes.size()) __builtin_trap();
        again.clear();
        gatehouse::EncodeJournalRecord(e, again);
        if (again != bytes.substr(last, at - last)) __builtin_trap();
        last = at;
      });
  if (end != last) __builtin_trap();
  (void)gatehouse::DecodeJournalPayload(bytes);
  return 0;
}

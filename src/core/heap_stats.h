// The allocator's own figures, for /metrics and for tests that hold the request paths to an
// allocation budget. Only when the process runs on jemalloc (the server binary does; sanitizer,
// fuzz and test builds keep their own allocator): it is looked up at run time, so that the code
// that reads it builds everywhere.
#pragma once

#include <cstdint>
#include <optional>

namespace gatehouse {

struct HeapStats {
  std::uint64_t allocated_bytes = 0;  // in use by the application now
};

std::optional<HeapStats> ReadHeapStats();

// The calling thread's count of bytes it has allocated since it started, kept by jemalloc on
// every allocation; valid while the thread lives. Null when not on jemalloc.
const std::uint64_t* ThisThreadAllocatedCounter();

}  // namespace gatehouse

#include "core/heap_stats.h"

#include <dlfcn.h>

#include <cstddef>

namespace gatehouse {

namespace {

using MallctlFn = int (*)(const char*, void*, std::size_t*, void*, std::size_t);

MallctlFn Mallctl() {
  static const MallctlFn fn = [] {
    auto found = reinterpret_cast<MallctlFn>(::dlsym(RTLD_DEFAULT, "mallctl"));
    if (!found) return MallctlFn{nullptr};
    bool stats = false;
    std::size_t size = sizeof(stats);
    if (found("config.stats", &stats, &size, nullptr, 0) != 0 || !stats) return MallctlFn{nullptr};
    return found;
  }();
  return fn;
}

template <class T>
bool Read(MallctlFn fn, const char* name, T& out) {
  std::size_t size = sizeof(out);
  return fn(name, &out, &size, nullptr, 0) == 0 && size == sizeof(out);
}

}  // namespace

std::optional<HeapStats> ReadHeapStats() {
  MallctlFn fn = Mallctl();
  if (!fn) return std::nullopt;
  // jemalloc's statistics are a snapshot taken when the epoch advances.
  std::uint64_t epoch = 1;
  std::size_t size = sizeof(epoch);
  if (fn("epoch", &epoch, &size, &epoch, sizeof(epoch)) != 0) return std::nullopt;
  std::size_t allocated = 0;
  if (!Read(fn, "stats.allocated", allocated)) return std::nullopt;
  return HeapStats{allocated};
}

const std::uint64_t* ThisThreadAllocatedCounter() {
  MallctlFn fn = Mallctl();
  std::uint64_t* counter = nullptr;
  if (!fn || !Read(fn, "thread.allocatedp", counter)) return nullptr;
  return counter;
}

}  // namespace gatehouse

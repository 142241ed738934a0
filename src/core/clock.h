// Time for domain code. Domain classes take a Clock& so that tests drive expiry with FakeClock
// instead of sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace gatehouse {

// Unix time in microseconds; the unit stored in every table.
using UnixMicros = std::int64_t;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual UnixMicros Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  UnixMicros Now() const override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// Thread-safe so that a test can move time while server threads read it.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(UnixMicros start = 1'700'000'000'000'000) : now_(start) {}
  UnixMicros Now() const override { return now_.load(std::memory_order_relaxed); }
  void Set(UnixMicros t) { now_.store(t, std::memory_order_relaxed); }
  void Advance(std::chrono::microseconds d) {
    now_.fetch_add(d.count(), std::memory_order_relaxed);
  }

 private:
  std::atomic<UnixMicros> now_;
};

constexpr UnixMicros kMicrosPerSecond = 1'000'000;

}  // namespace gatehouse

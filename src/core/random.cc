#include "core/random.h"

#include <sys/random.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <string_view>

namespace gatehouse {

namespace {
constexpr std::string_view kBase62 =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
}

void FillRandom(std::span<unsigned char> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::abort();  // No CSPRNG means no safe keys; never fall back to something weaker.
    }
    done += static_cast<std::size_t>(n);
  }
}

void FillRandomBase62(std::span<char> out) {
  // Ids are made on every request; one getrandom(2) per 4 KiB keeps that off the syscall path.
  // The pool is per thread, so no two threads ever hand out the same bytes.
  thread_local std::array<unsigned char, 4096> pool{};
  thread_local std::size_t used = pool.size();
  std::size_t filled = 0;
  while (filled < out.size()) {
    if (used == pool.size()) {
      FillRandom(pool);
      used = 0;
    }
    unsigned char b = pool[used];
    pool[used++] = 0;  // a byte handed out is not left behind for a later reader of memory
    // 248 = 4 * 62: bytes at or above it would bias the low characters.
    if (b < 248) out[filled++] = kBase62[b % 62];
  }
}

std::string RandomBase62(std::size_t length) {
  std::string out(length, '0');
  FillRandomBase62(out);
  return out;
}

std::string NewId(std::string_view prefix) {
  std::string id(prefix);
  id += '_';
  id += RandomBase62(20);
  return id;
}

}  // namespace gatehouse

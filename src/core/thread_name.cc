#include "core/thread_name.h"

#include <pthread.h>

#include <algorithm>
#include <string>

namespace gatehouse {

void NameThisThread(std::string_view name) {
  constexpr std::size_t kMaxLinuxThreadName = 15;
  const std::string cut(name.substr(0, std::min(name.size(), kMaxLinuxThreadName)));
  // Best effort: a name is only a diagnostic aid, so a failure changes nothing else.
  (void)pthread_setname_np(pthread_self(), cut.c_str());
}

}  // namespace gatehouse

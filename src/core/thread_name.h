// Names the calling thread, so that `top -H`, `ps -L`, perf and gdb tell the network threads
// from the audit writer and the other helpers; every thread would otherwise read "gatehouse".
#pragma once

#include <string_view>

namespace gatehouse {

// Linux keeps at most 15 bytes of a thread's name; a longer one is cut there.
void NameThisThread(std::string_view name);

}  // namespace gatehouse

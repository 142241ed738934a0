// Which nodes serve from one store, and whether their peppers and key prefixes agree.
//
// A pepper rotation goes node by node (README, "Rotating the pepper"). A node that switches to
// the new pepper before every other node holds it as next, one that retires the old pepper while
// another still makes with it, or one started with a mistyped pepper, would answer 401 to keys,
// sessions and sign-ins the others made, and nothing would say why. So each serving node keeps
// an entry in the store with the fingerprints of its peppers (never the peppers), refreshed
// every few seconds, and a node starts only when its peppers and every live node's agree. The
// entry also holds the node's key prefix: a node configured with another one refuses every key
// the others make, as wrongly formed, so prefixes must agree too.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "core/clock.h"
#include "store/node_repository.h"

namespace gatehouse {

// Why nodes holding `a`'s and `b`'s peppers cannot serve side by side, seen from `a`, or nullopt
// when they can: each must verify what the other makes now, which its current pepper keys.
std::optional<std::string> PepperConflict(const NodeRecord& a, const NodeRecord& b);

// Why `a` and `b` cannot serve side by side, and how to fix it, or nullopt when they can: their
// key prefixes differ (an empty one, from an entry older than the prefix column, agrees with
// any), or their peppers do not agree (PepperConflict).
struct NodeConflict {
  std::string why;
  std::string fix;
};
std::optional<NodeConflict> ConflictBetween(const NodeRecord& a, const NodeRecord& b);

class NodeRegistry {
 public:
  struct Options {
    std::chrono::seconds beat_every{5};
    // An entry not refreshed for this long is a node that is gone (killed, or its host lost).
    std::chrono::seconds lapse_after{15};
  };

  // `self` names the node and its peppers' fingerprints; its times are set here.
  NodeRegistry(NodeRepository& nodes, const Clock& clock, NodeRecord self, Options options);

  // Enters this node, then checks it against every other node seen within lapse_after. On a
  // conflict the entry is removed again, and the error names the other node and the fix. An
  // entry of a process on this host that no longer runs is removed, not waited out.
  Result<void> Join();
  // From a periodic tick: refreshes the entry every beat_every, and counts the live nodes in
  // conflict (two nodes starting at once each check before the other is entered). Logs each
  // conflicting node once.
  void Tick();
  // Removes the entry (graceful stop), so that a restart with other peppers need not wait for
  // it to lapse.
  void Leave();

  // Live nodes in conflict with this one, as of the last check.
  int conflicts() const { return conflicts_.load(std::memory_order_relaxed); }
  const NodeRecord& self() const { return self_; }

 private:
  // The other live nodes; entries of dead processes on this host are removed on the way.
  Result<std::vector<NodeRecord>> Others();

  NodeRepository& nodes_;
  const Clock& clock_;
  NodeRecord self_;
  Options options_;
  UnixMicros last_beat_ = 0;
  std::set<std::string> reported_;  // conflicting node ids already logged
  std::atomic<int> conflicts_{0};
};

// This host's name and this process's pid namespace, for NodeRecord.
std::string HostName();
std::string PidNamespace();

}  // namespace gatehouse

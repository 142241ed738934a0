// Persistence of the serving nodes that share a store (cluster/node_registry.h). Written once
// over Store::RunSql; the rows belong to no org.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "store/store.h"

namespace gatehouse {

struct NodeRecord {
  std::string id;
  std::string host;  // gethostname()
  std::int64_t pid = 0;
  // The pid namespace the pid means something in (/proc/self/ns/pid), so that an entry whose
  // process is gone from this host and namespace is not waited out; empty when unknown.
  std::string pid_namespace;
  UnixMicros started_at = 0;
  UnixMicros seen_at = 0;
  // PepperFingerprint of each pepper the node holds; empty for a role it does not hold.
  std::string pepper, previous_pepper, next_pepper;
  // The prefix of the keys the node makes and accepts ([keys] prefix); empty when unknown.
  std::string key_prefix;
};

class NodeRepository {
 public:
  explicit NodeRepository(Store& store) : store_(store) {}

  // Adds the node, or refreshes every field of it.
  Result<void> Save(const NodeRecord& node);
  // The nodes seen at `since` or later, oldest start first.
  Result<std::vector<NodeRecord>> SeenSince(UnixMicros since);
  Result<void> Remove(std::string_view id);

 private:
  Store& store_;
};

}  // namespace gatehouse

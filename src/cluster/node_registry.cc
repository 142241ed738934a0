#include "cluster/node_registry.h"

#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>

namespace gatehouse {

namespace {

bool Holds(const NodeRecord& node, std::string_view fingerprint) {
  return fingerprint == node.pepper || fingerprint == node.previous_pepper ||
         fingerprint == node.next_pepper;
}

std::string Describe(const NodeRecord& node, UnixMicros now) {
  return fmt::format("node {} (host {}, pid {}, seen {} s ago)", node.id, node.host, node.pid,
                     std::max<UnixMicros>(0, now - node.seen_at) / kMicrosPerSecond);
}

// A process of this host that no longer runs. Another user's process (EPERM) still runs; a pid
// of another pid namespace (a container with this host's name) says nothing here.
bool GoneFromThisHost(const NodeRecord& node, const NodeRecord& self) {
  if (node.host != self.host || node.pid_namespace.empty() ||
      node.pid_namespace != self.pid_namespace || node.pid <= 0) {
    return false;
  }
  return ::kill(static_cast<pid_t>(node.pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

std::optional<std::string> PepperConflict(const NodeRecord& a, const NodeRecord& b) {
  if (!Holds(a, b.pepper)) {
    return fmt::format(
        "makes keys, sessions and password hashes with pepper {}, which this node "
        "does not hold",
        b.pepper);
  }
  if (!Holds(b, a.pepper)) {
    return fmt::format(
        "does not hold this node's pepper {}, so it cannot verify what this node "
        "makes",
        a.pepper);
  }
  return std::nullopt;
}

std::optional<NodeConflict> ConflictBetween(const NodeRecord& a, const NodeRecord& b) {
  if (!a.key_prefix.empty() && !b.key_prefix.empty() && a.key_prefix != b.key_prefix) {
    return NodeConflict{
        fmt::format("makes keys with prefix \"{}\" where this node makes and accepts \"{}\"",
                    b.key_prefix, a.key_prefix),
        "Give every node the same [keys] prefix (or GATEHOUSE_KEY_PREFIX): a node refuses keys "
        "with another prefix as malformed, so each would refuse the keys the other makes"};
  }
  if (auto why = PepperConflict(a, b)) {
    return NodeConflict{
        std::move(*why),
        "Announce a new pepper (next_pepper) on every node before any node switches to it, and "
        "retire the previous pepper only once every node has switched (README, \"Rotating the "
        "pepper\")"};
  }
  return std::nullopt;
}

std::string PidNamespace() {
  char link[128] = {};
  const ssize_t n = ::readlink("/proc/self/ns/pid", link, sizeof link - 1);
  return n > 0 ? std::string(link, static_cast<std::size_t>(n)) : std::string();
}

std::string HostName() {
  // uname(2) rather than gethostname(3): preloaded name-service shims (nss_wrapper in the tests)
  // wrap the latter, and what they load with it cannot run under a sanitizer.
  utsname u{};
  if (::uname(&u) != 0) return "unknown";
  return u.nodename;
}

NodeRegistry::NodeRegistry(NodeRepository& nodes, const Clock& clock, NodeRecord self,
                           Options options)
    : nodes_(nodes), clock_(clock), self_(std::move(self)), options_(options) {}

Result<std::vector<NodeRecord>> NodeRegistry::Others() {
  const UnixMicros now = clock_.Now();
  auto seen = nodes_.SeenSince(
      now - std::chrono::duration_cast<std::chrono::microseconds>(options_.lapse_after).count());
  if (!seen) return tl::unexpected(seen.error());
  std::vector<NodeRecord> out;
  for (auto& node : *seen) {
    if (node.id == self_.id) continue;
    if (GoneFromThisHost(node, self_)) {
      (void)nodes_.Remove(node.id);
      continue;
    }
    out.push_back(std::move(node));
  }
  return out;
}

Result<void> NodeRegistry::Join() {
  self_.started_at = self_.seen_at = last_beat_ = clock_.Now();
  if (auto r = nodes_.Save(self_); !r) return r;
  auto others = Others();
  if (!others) return tl::unexpected(others.error());
  for (const auto& other : *others) {
    if (auto conflict = ConflictBetween(self_, other)) {
      (void)nodes_.Remove(self_.id);
      return Fail(ErrorCode::kInvalidArgument,
                  fmt::format("this node does not agree with the other nodes: {} {}. {}. A node "
                              "that is gone drops out {} s after it was last seen, or at once "
                              "when it was stopped with SIGTERM",
                              Describe(other, clock_.Now()), conflict->why, conflict->fix,
                              options_.lapse_after.count()));
    }
  }
  return {};
}

void NodeRegistry::Tick() {
  const UnixMicros now = clock_.Now();
  if (now - last_beat_ <
      std::chrono::duration_cast<std::chrono::microseconds>(options_.beat_every).count()) {
    return;
  }
  last_beat_ = now;
  self_.seen_at = now;
  if (auto r = nodes_.Save(self_); !r) {
    spdlog::warn("cluster: cannot refresh this node's entry: {}", r.error().message);
    return;
  }
  auto others = Others();
  if (!others) {
    spdlog::warn("cluster: cannot read the other nodes' entries: {}", others.error().message);
    return;
  }
  int conflicts = 0;
  std::set<std::string> still;
  for (const auto& other : *others) {
    auto conflict = ConflictBetween(self_, other);
    if (!conflict) continue;
    ++conflicts;
    still.insert(other.id);
    if (reported_.insert(other.id).second) {
      spdlog::error(
          "cluster: {} {}: keys and sign-ins made on one of the two nodes fail on the "
          "other. {}",
          Describe(other, now), conflict->why, conflict->fix);
    }
  }
  std::erase_if(reported_, [&](const std::string& id) { return !still.contains(id); });
  conflicts_.store(conflicts, std::memory_order_relaxed);
}

void NodeRegistry::Leave() {
  if (auto r = nodes_.Remove(self_.id); !r) {
    spdlog::warn("cluster: cannot remove this node's entry: {}", r.error().message);
  }
}

}  // namespace gatehouse

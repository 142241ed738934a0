// Maps (method, path) to a control-plane handler. Patterns are literal segments and {params}:
// "/v1/orgs/{org}/keys/{id}". Built once at start, then read-only and shared by all threads.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "http/message.h"

namespace gatehouse {

// Where a handler may run. kInline handlers never block and run on the network thread;
// kBlocking handlers touch the store and run on the blocking pool; kCostly handlers do
// deliberately slow work (password hashing) and run on a small pool of their own, so that a
// flood of them is refused there (503) instead of holding every store call up.
enum class HandlerKind { kInline, kBlocking, kCostly };

using Handler = std::function<HttpResponse(HttpRequest&)>;
// Tried on the network thread before `handler`; answers when it can without blocking (e.g. the
// key is in the cache), returns nullopt otherwise.
using FastHandler = std::function<std::optional<HttpResponse>(HttpRequest&)>;

struct RouteEntry {
  std::string method;
  std::string pattern;
  HandlerKind kind = HandlerKind::kBlocking;
  Handler handler;
  FastHandler fast;                   // optional
  std::vector<std::string> segments;  // derived from pattern
  std::size_t metrics_index = 0;      // slot in Metrics, assigned by the server
};

class Router {
 public:
  void Add(std::string method, std::string pattern, HandlerKind kind, Handler handler,
           FastHandler fast = nullptr);

  struct Match {
    const RouteEntry* route = nullptr;  // null: see `error`
    Error error;                        // kNotFound or kMethodNotAllowed
    std::string allow;                  // for 405: the methods the path does accept
  };
  // Fills request.path_params on success.
  Match Find(HttpRequest& request) const;

  const std::vector<RouteEntry>& routes() const { return routes_; }
  std::vector<RouteEntry>& mutable_routes() { return routes_; }

 private:
  std::vector<RouteEntry> routes_;
};

}  // namespace gatehouse

#include "http/router.h"

#include <boost/container/small_vector.hpp>

namespace gatehouse {

namespace {
// Every request is routed: its segments stay on the stack unless the path is unusually deep.
using Segments = boost::container::small_vector<std::string_view, 12>;

Segments SplitPath(std::string_view path) {
  Segments out;
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}
}  // namespace

void Router::Add(std::string method, std::string pattern, HandlerKind kind, Handler handler,
                 FastHandler fast) {
  RouteEntry e;
  e.method = std::move(method);
  e.pattern = std::move(pattern);
  e.kind = kind;
  e.handler = std::move(handler);
  e.fast = std::move(fast);
  for (auto s : SplitPath(e.pattern)) e.segments.emplace_back(s);
  routes_.push_back(std::move(e));
}

Router::Match Router::Find(HttpRequest& request) const {
  auto parts = SplitPath(request.path);
  Match m;
  std::string allow;
  for (const auto& r : routes_) {
    // A last segment "{*name}" takes the rest of the path, one segment or more.
    bool tail = !r.segments.empty() && r.segments.back().starts_with("{*");
    if (tail ? parts.size() < r.segments.size() : r.segments.size() != parts.size()) continue;
    bool ok = true;
    for (std::size_t i = 0; i < r.segments.size() && ok; ++i) {
      const auto& seg = r.segments[i];
      bool param = seg.size() > 2 && seg.front() == '{' && seg.back() == '}';
      ok = param ? !parts[i].empty() : seg == parts[i];
    }
    if (!ok) continue;
    if (r.method != request.method && !(r.method == "GET" && request.method == "HEAD")) {
      if (!allow.empty()) allow += ", ";
      allow += r.method;
      continue;
    }
    request.path_params.clear();
    for (std::size_t i = 0; i < r.segments.size(); ++i) {
      const auto& seg = r.segments[i];
      if (seg.starts_with("{*")) {
        auto offset = static_cast<std::size_t>(parts[i].data() - request.path.data());
        request.path_params.emplace_back(std::string_view(seg).substr(2, seg.size() - 3),
                                         std::string(request.path.substr(offset - 1)));
      } else if (seg.front() == '{') {
        request.path_params.emplace_back(std::string_view(seg).substr(1, seg.size() - 2),
                                         std::string(parts[i]));
      }
    }
    m.route = &r;
    return m;
  }
  if (!allow.empty()) {
    m.error = Error{ErrorCode::kMethodNotAllowed, "method not allowed here", {}, {}};
    m.allow = allow;
  } else {
    m.error = Error{ErrorCode::kNotFound, "no such endpoint", {}, {}};
  }
  return m;
}

}  // namespace gatehouse

// The data plane's decisions, free of sockets: which configured route a path belongs to, whether
// a principal may use it, and which identity headers the upstream (or the calling proxy, for
// forward-auth) receives. The HTTP session does the I/O around these.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "authz/principal.h"
#include "config/config.h"
#include "http/message.h"

namespace gatehouse {

// Headers gatehouse sets for upstreams. A client's own copies are always removed first, so an
// upstream can trust them.
inline constexpr std::string_view kIdentityHeaders[] = {"X-Gatehouse-Org", "X-Gatehouse-Principal",
                                                        "X-Gatehouse-Scopes", "X-Gatehouse-Env"};

bool IsIdentityHeader(std::string_view name);

class Gateway {
 public:
  explicit Gateway(std::shared_ptr<const Config> config);

  // Longest configured prefix that covers `path` on a segment boundary; -1 when none does.
  int Match(std::string_view path) const;
  const RouteConfig& route(int index) const {
    return config_->routes[static_cast<std::size_t>(index)];
  }

  // Refuses paths whose meaning could change on the way upstream: dot segments, encoded
  // slashes, dots or backslashes. Attacker-controlled: an upstream that normalises
  // /api/public/../admin must never receive what gatehouse matched as /api/public.
  static Result<void> CheckPathIsCanonical(std::string_view path);

  // Method allowed by the route, and every scope it requires held by the principal.
  Result<void> Authorize(int route, std::string_view method, const Principal& principal) const;

  // The route's edge checks on a request with a body: its media type (415) and, when the
  // length is known up front, its size (413). Chunked bodies are held to the size as they pass.
  Result<void> CheckBody(int route, const HttpRequest& request, bool has_body,
                         std::optional<std::uint64_t> content_length) const;

  // X-Gatehouse-Org, -Principal, -Scopes, -Env (request id is added by the caller).
  static std::vector<std::pair<std::string, std::string>> IdentityHeaders(const Principal& p);
  // Client fields the upstream never receives as sent: hop-by-hop ones, and those gatehouse
  // sets itself (identity, request id, forwarding, Host) or removes (the credential, Expect).
  static bool ReplacedUpstream(std::string_view name, bool forward_credential);
  // The same as header lines ("Name: value\r\n") appended to `out`, for the proxy's hot path.
  static void AppendIdentityHeaders(const Principal& p, std::string& out);

  // For /v1/authz/check: the original request as the calling proxy reports it. Views into the
  // check request's headers or path, valid as long as it is.
  struct OriginalRequest {
    std::string_view method;
    std::string_view uri;
  };
  static Result<OriginalRequest> ReadOriginal(const HttpRequest& check_request,
                                              std::string_view path_suffix);

  // nginx's auth_request understands 2xx, 401 and 403 only and turns any other answer (a 429,
  // a 503) into a 500. A check request that carries "X-Gatehouse-Deny-Status: 403" (or 401)
  // gets that status for every other refusal instead, with the real one in X-Gatehouse-Status,
  // so that nginx can map it back (README: Forward-auth behind nginx).
  static void ApplyDenyStatus(const HttpRequest& check_request, HttpResponse& response);

  // The whole forward-auth decision once the principal is known: 200 with identity headers, or
  // the JSON error. Adds nothing else.
  HttpResponse AuthzDecision(const HttpRequest& request, std::string_view path_suffix,
                             const Result<Principal>& principal) const;

 private:
  std::shared_ptr<const Config> config_;
};

}  // namespace gatehouse

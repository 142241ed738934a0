#include "gateway/gateway.h"

#include <algorithm>

#include "core/text.h"
#include "http/h1.h"

namespace gatehouse {

bool IsIdentityHeader(std::string_view name) {
  for (auto h : kIdentityHeaders) {
    if (EqualsIgnoreCase(name, h)) return true;
  }
  return false;
}

Gateway::Gateway(std::shared_ptr<const Config> config) : config_(std::move(config)) {}

int Gateway::Match(std::string_view path) const {
  int best = -1;
  std::size_t best_len = 0;
  for (std::size_t i = 0; i < config_->routes.size(); ++i) {
    std::string_view prefix = config_->routes[i].path_prefix;
    if (!path.starts_with(prefix)) continue;
    bool boundary =
        prefix.ends_with('/') || path.size() == prefix.size() || path[prefix.size()] == '/';
    if (boundary && prefix.size() >= best_len) {
      best = static_cast<int>(i);
      best_len = prefix.size();
    }
  }
  return best;
}

Result<void> Gateway::CheckPathIsCanonical(std::string_view path) {
  auto bad = [] {
    return Fail(ErrorCode::kInvalidArgument,
                "path must not contain dot segments, backslashes or encoded slashes or dots");
  };
  if (!path.starts_with('/')) return bad();
  if (path.find('\\') != std::string_view::npos) return bad();
  for (std::size_t i = 0; i + 2 < path.size(); ++i) {
    if (path[i] != '%') continue;
    char a = path[i + 1], b = static_cast<char>(path[i + 2] | 0x20);
    // %2e (.), %2f (/), %5c (\), and %00.
    if ((a == '2' && (b == 'e' || b == 'f')) || (a == '5' && b == 'c') || (a == '0' && b == '0')) {
      return bad();
    }
  }
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(start, end - start);
    if (seg == "." || seg == "..") return bad();
    start = end + 1;
  }
  return {};
}

Result<void> Gateway::Authorize(int index, std::string_view method,
                                const Principal& principal) const {
  const RouteConfig& r = route(index);
  if (!r.methods.empty() &&
      std::find(r.methods.begin(), r.methods.end(), method) == r.methods.end() &&
      !(method == "HEAD" &&
        std::find(r.methods.begin(), r.methods.end(), "GET") != r.methods.end())) {
    return Fail(ErrorCode::kMethodNotAllowed, "method not allowed on this route");
  }
  return RequireScopes(principal, r.scopes);
}

Result<void> Gateway::CheckBody(int index, const HttpRequest& request, bool has_body,
                                std::optional<std::uint64_t> content_length) const {
  const RouteConfig& r = route(index);
  if (!has_body) return {};
  if (!r.content_types.empty()) {
    std::string_view type = request.Header("content-type").value_or("");
    type = type.substr(0, type.find(';'));
    while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
    while (!type.empty() && (type.front() == ' ' || type.front() == '\t')) type.remove_prefix(1);
    bool ok = false;
    for (const auto& t : r.content_types) ok = ok || EqualsIgnoreCase(type, t);
    if (!ok) {
      std::string list;
      for (const auto& t : r.content_types) list += (list.empty() ? "" : ", ") + t;
      return Fail(ErrorCode::kUnsupportedMedia, "this route takes request bodies of type " + list);
    }
  }
  const std::uint64_t max =
      r.max_body_bytes > 0 && r.max_body_bytes < config_->limits.max_proxy_body_bytes
          ? r.max_body_bytes
          : config_->limits.max_proxy_body_bytes;
  if (content_length && *content_length > max) {
    return Fail(ErrorCode::kPayloadTooLarge, "request body is too large for this route (at most " +
                                                 std::to_string(max) + " bytes)");
  }
  return {};
}

std::vector<std::pair<std::string, std::string>> Gateway::IdentityHeaders(const Principal& p) {
  // Room for the four RateLimit-* fields forward-auth may add, so that they cause no regrowth.
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(std::size(kIdentityHeaders) + 4);
  out.emplace_back(kIdentityHeaders[0], p.org_id);
  out.emplace_back(kIdentityHeaders[1], p.id);
  out.emplace_back(kIdentityHeaders[2], JoinScopes(p.scopes));
  out.emplace_back(kIdentityHeaders[3], p.environment);
  return out;
}

// Client fields the upstream never receives as sent: hop-by-hop ones (h1::IsHopByHop), and those
// gatehouse sets itself (identity, request id, forwarding, Host) or removes (the credential,
// Expect). Every request runs each of its fields through this, so the length is checked before any
// compare.
bool Gateway::ReplacedUpstream(std::string_view n, bool forward_credential) {
  if (h1::IsHopByHop(n)) return true;
  switch (n.size()) {
    case 4:
      return EqualsIgnoreCase(n, "host");
    case 6:
      return EqualsIgnoreCase(n, "expect");
    case 9:
      return !forward_credential && EqualsIgnoreCase(n, "x-api-key");
    case 12:
      return EqualsIgnoreCase(n, "x-request-id");
    case 13:
      return !forward_credential && EqualsIgnoreCase(n, "authorization");
    case 15:
      return EqualsIgnoreCase(n, "x-gatehouse-org") || EqualsIgnoreCase(n, "x-gatehouse-env") ||
             EqualsIgnoreCase(n, "x-forwarded-for");
    case 17:
      return EqualsIgnoreCase(n, "x-forwarded-proto");
    case 18:
      return EqualsIgnoreCase(n, "x-gatehouse-scopes");
    case 21:
      return EqualsIgnoreCase(n, "x-gatehouse-principal");
    default:
      return false;
  }
}

void Gateway::AppendIdentityHeaders(const Principal& p, std::string& out) {
  out += "X-Gatehouse-Org: ";
  out += p.org_id;
  out += "\r\nX-Gatehouse-Principal: ";
  out += p.id;
  out += "\r\nX-Gatehouse-Scopes: ";
  for (std::size_t i = 0; i < p.scopes.size(); ++i) {
    if (i > 0) out += ' ';
    out += p.scopes[i];
  }
  out += "\r\nX-Gatehouse-Env: ";
  out += p.environment;
  out += "\r\n";
}

Result<Gateway::OriginalRequest> Gateway::ReadOriginal(const HttpRequest& req,
                                                       std::string_view path_suffix) {
  OriginalRequest o;
  auto method = req.Header("x-original-method");
  if (!method) method = req.Header("x-forwarded-method");
  o.method = method ? *method : req.method;
  auto uri = req.Header("x-original-uri");
  if (!uri) uri = req.Header("x-forwarded-uri");
  if (uri) {
    o.uri = *uri;
  } else if (!path_suffix.empty()) {
    // Envoy ext_authz (HTTP) appends the original path to the check path.
    o.uri = path_suffix;
  } else {
    return FailField("X-Original-URI",
                     "forward-auth needs X-Original-URI or X-Forwarded-Uri (the request to check)");
  }
  if (!IsHttpToken(o.method) || o.method.size() > 16) {
    return FailField("X-Original-Method", "not an HTTP method");
  }
  if (o.uri.size() > 8192 || !o.uri.starts_with('/')) {
    return FailField("X-Original-URI", "must be an origin-form URI starting with /");
  }
  return o;
}

void Gateway::ApplyDenyStatus(const HttpRequest& check_request, HttpResponse& response) {
  const int status = response.status;
  if ((status >= 200 && status < 300) || status == 401 || status == 403) return;
  auto wanted = check_request.Header("x-gatehouse-deny-status");
  if (!wanted || (*wanted != "403" && *wanted != "401")) return;
  response.SetHeader("X-Gatehouse-Status", std::to_string(status));
  response.status = *wanted == "401" ? 401 : 403;
}

HttpResponse Gateway::AuthzDecision(const HttpRequest& request, std::string_view path_suffix,
                                    const Result<Principal>& principal) const {
  auto original = ReadOriginal(request, path_suffix);
  if (!original) return ErrorResponse(original.error(), request.request_id);
  std::string_view uri = original->uri;
  std::string_view path = uri.substr(0, uri.find('?'));
  if (auto canonical = CheckPathIsCanonical(path); !canonical) {
    return ErrorResponse(canonical.error(), request.request_id);
  }
  if (!principal) return ErrorResponse(principal.error(), request.request_id);
  int route = Match(path);
  if (route < 0) {
    // Fail closed: a URI that no route describes has no policy, so nothing may pass.
    return ErrorResponse(
        Error{ErrorCode::kPermissionDenied, "no gatehouse route covers this URI", {}, {}},
        request.request_id);
  }
  if (auto ok = Authorize(route, original->method, *principal); !ok) {
    Error e = ok.error();
    // auth_request and forwardAuth understand 401 and 403 only; anything else becomes a 500.
    if (e.code == ErrorCode::kMethodNotAllowed) e.code = ErrorCode::kPermissionDenied;
    return ErrorResponse(e, request.request_id);
  }
  HttpResponse r;
  r.status = 200;
  r.headers = IdentityHeaders(*principal);
  return r;
}

}  // namespace gatehouse

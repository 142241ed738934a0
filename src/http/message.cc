#include "http/message.h"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "core/text.h"

namespace gatehouse {

std::optional<std::string_view> HttpRequest::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (EqualsIgnoreCase(k, name)) return v;
  }
  return std::nullopt;
}

std::string_view HttpRequest::PathParam(std::string_view name) const {
  for (const auto& [k, v] : path_params) {
    if (k == name) return v;
  }
  return {};
}

namespace {
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 && HexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}
}  // namespace

std::optional<std::string> HttpRequest::QueryParam(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    auto amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    auto eq = pair.find('=');
    std::string_view k = pair.substr(0, eq);
    if (PercentDecode(k) == name) {
      if (eq == std::string_view::npos) return std::string();
      return ValidUtf8(PercentDecode(pair.substr(eq + 1)), std::string::npos);
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

void HttpResponse::SetHeader(std::string name, std::string value) {
  for (auto& [k, v] : headers) {
    if (EqualsIgnoreCase(k, name)) {
      v = std::move(value);
      return;
    }
  }
  headers.emplace_back(std::move(name), std::move(value));
}

int ErrorStatus(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kTokenExpired:
      return 401;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kOrgMismatch:
      return 403;
    case ErrorCode::kIpNotAllowed:
      return 403;
    case ErrorCode::kReauthRequired:
      return 403;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kMethodNotAllowed:
      return 405;
    case ErrorCode::kRequestTimeout:
      return 408;
    case ErrorCode::kAlreadyExists:
      return 409;
    case ErrorCode::kPayloadTooLarge:
      return 413;
    case ErrorCode::kUriTooLong:
      return 414;
    case ErrorCode::kUnsupportedMedia:
      return 415;
    case ErrorCode::kHeadersTooLarge:
      return 431;
    case ErrorCode::kResourceExhausted:
      return 429;
    case ErrorCode::kUsageExceeded:
      return 429;
    case ErrorCode::kInternal:
      return 500;
    case ErrorCode::kUpstreamUnavailable:
      return 502;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kUpstreamTimeout:
      return 504;
  }
  return 500;
}

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid_request";
    case ErrorCode::kUnauthenticated:
      return "unauthorized";
    case ErrorCode::kTokenExpired:
      return "token_expired";
    case ErrorCode::kPermissionDenied:
      return "forbidden";
    case ErrorCode::kOrgMismatch:
      return "org_mismatch";
    case ErrorCode::kIpNotAllowed:
      return "ip_not_allowed";
    case ErrorCode::kReauthRequired:
      return "reauth_required";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kMethodNotAllowed:
      return "method_not_allowed";
    case ErrorCode::kRequestTimeout:
      return "request_timeout";
    case ErrorCode::kAlreadyExists:
      return "conflict";
    case ErrorCode::kPayloadTooLarge:
      return "payload_too_large";
    case ErrorCode::kUriTooLong:
      return "uri_too_long";
    case ErrorCode::kUnsupportedMedia:
      return "unsupported_media_type";
    case ErrorCode::kHeadersTooLarge:
      return "headers_too_large";
    case ErrorCode::kResourceExhausted:
      return "rate_limit_exceeded";
    case ErrorCode::kUsageExceeded:
      return "usage_exceeded";
    case ErrorCode::kInternal:
      return "internal";
    case ErrorCode::kUpstreamUnavailable:
      return "upstream_unavailable";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kUpstreamTimeout:
      return "upstream_timeout";
  }
  return "internal";
}

HttpResponse ErrorResponse(const Error& error, std::string_view request_id) {
  boost::json::object e;
  int status = ErrorStatus(error.code);
  e["status"] = status;
  e["code"] = ErrorCodeName(error.code);
  e["message"] = error.message.empty() ? std::string(ErrorCodeName(error.code)) : error.message;
  if (!error.field.empty()) e["field"] = error.field;
  if (error.pointer) e["pointer"] = *error.pointer;
  if (!error.required.empty()) {
    boost::json::array req;
    for (const auto& r : error.required) req.emplace_back(r);
    e["required"] = std::move(req);
  }
  e["request_id"] = request_id;
  boost::json::object root;
  root["error"] = std::move(e);
  HttpResponse r;
  r.status = status;
  r.body = boost::json::serialize(root);
  if (status == 401) r.SetHeader("WWW-Authenticate", "Bearer realm=\"gatehouse\"");
  if (error.retry_after > 0) r.SetHeader("Retry-After", std::to_string(error.retry_after));
  return r;
}

HttpResponse JsonResponse(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

}  // namespace gatehouse

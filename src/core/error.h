// Errors as values. Every expected failure in gatehouse is an Error carried by Result<T>;
// exceptions never cross a domain API. One function in http/ (ErrorStatus/ErrorCodeName in
// http/error_response.h) turns an Error into the JSON error of DESIGN.md.
//
// Codes follow abseil's meanings where one exists: kUnauthenticated is for a caller we could not
// identify, kPermissionDenied for an identified caller that lacks a permission, kResourceExhausted
// for limits. The gatehouse-specific codes refine those for the outside contract.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <tl/expected.hpp>

namespace gatehouse {

enum class ErrorCode {
  kInvalidArgument,      // 400 invalid_request
  kUnauthenticated,      // 401 unauthorized
  kTokenExpired,         // 401 token_expired
  kPermissionDenied,     // 403 forbidden
  kOrgMismatch,          // 403 org_mismatch
  kIpNotAllowed,         // 403 ip_not_allowed
  kReauthRequired,       // 403 reauth_required
  kNotFound,             // 404 not_found
  kMethodNotAllowed,     // 405 method_not_allowed
  kRequestTimeout,       // 408 request_timeout
  kAlreadyExists,        // 409 conflict
  kPayloadTooLarge,      // 413 payload_too_large
  kUriTooLong,           // 414 uri_too_long
  kUnsupportedMedia,     // 415 unsupported_media_type
  kHeadersTooLarge,      // 431 headers_too_large
  kResourceExhausted,    // 429 rate_limit_exceeded
  kUsageExceeded,        // 429 usage_exceeded
  kInternal,             // 500 internal
  kUpstreamUnavailable,  // 502 upstream_unavailable
  kUnavailable,          // 503 unavailable
  kUpstreamTimeout,      // 504 upstream_timeout
};

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  // Safe to show to the caller: never contains a secret or another org's data.
  std::string message;
  // For kInvalidArgument: the offending field (JSON name or config path), if one is known.
  std::string field;
  // For kPermissionDenied: the scopes or permissions that were missing.
  std::vector<std::string> required;
  // For kResourceExhausted and kUnavailable: seconds until trying again makes sense (the
  // Retry-After header); 0: not said.
  long retry_after = 0;
  // For a request body that a route's JSON Schema refused: the RFC 6901 pointer of the first
  // violation ("" is the whole body).
  std::optional<std::string> pointer = std::nullopt;
};

template <typename T>
using Result = tl::expected<T, Error>;

inline tl::unexpected<Error> Fail(ErrorCode code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message), {}, {}});
}

inline tl::unexpected<Error> FailRetryAfter(ErrorCode code, std::string message, long seconds) {
  Error e{code, std::move(message), {}, {}, seconds};
  return tl::unexpected<Error>(std::move(e));
}

inline tl::unexpected<Error> FailField(std::string field, std::string message) {
  return tl::unexpected<Error>(
      Error{ErrorCode::kInvalidArgument, std::move(message), std::move(field), {}});
}

}  // namespace gatehouse

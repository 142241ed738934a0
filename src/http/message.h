// Requests and responses as plain data, so that handlers and tests need no sockets and no
// Asio. The session (server.cc) builds an HttpRequest whose views point into the message it
// read; they stay valid until the response is written.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "store/records.h"

namespace gatehouse {

struct HttpRequest {
  std::string_view method;
  std::string_view target;  // as received: path and query
  std::string_view path;
  std::string_view query;
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::string_view body;
  std::string client_ip;   // after trusted-proxy processing
  std::string request_id;  // echoed as X-Request-Id
  std::vector<std::pair<std::string_view, std::string>> path_params;  // filled by the router
  std::string principal_id;  // set by a handler once it knows the caller, for the access log
  // The authentication decision to record, set by handlers that make one: org, actor, action,
  // resource and details. The server fills in the rest (time, status, result, address, agent,
  // request id) and answers only once the event is durable.
  std::optional<AuditEvent> audit;
  // Set with `audit` when the credential was refused as stale (RefusedAsStale): threat detection
  // then counts the 401 against that key (`principal_id`), not as a guess.
  bool stale_credential = false;

  // First header with that name, compared case-insensitively.
  std::optional<std::string_view> Header(std::string_view name) const;
  std::string_view PathParam(std::string_view name) const;
  // Percent-decoded query parameter; nullopt when absent. Decoded bytes that are not UTF-8 read
  // as U+FFFD (ValidUtf8): values go on to the store, and PostgreSQL refuses such text.
  std::optional<std::string> QueryParam(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // JSON unless a Content-Type header says otherwise
  // A body too large to hold: when set, `body` is ignored and the server sends the pieces this
  // returns (chunked), calling it on the blocking pool until it returns false. An error after
  // the first piece ends the connection without the final chunk, so the client sees a cut.
  std::function<Result<bool>(std::string& piece)> stream;

  void SetHeader(std::string name, std::string value);
};

// The JSON error of DESIGN.md: {"error":{"status":…,"code":…,"message":…,"request_id":…}}.
HttpResponse ErrorResponse(const Error& error, std::string_view request_id);
int ErrorStatus(ErrorCode code);
std::string_view ErrorCodeName(ErrorCode code);

HttpResponse JsonResponse(int status, std::string body);

}  // namespace gatehouse

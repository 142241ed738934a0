#include "demo/echo.h"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "core/text.h"

namespace gatehouse {

void RegisterEchoRoutes(Router& router) {
  auto echo = [](HttpRequest& req) {
    boost::json::object o;
    o["service"] = "gatehouse-demo-echo";
    o["method"] = req.method;
    o["path"] = req.path;
    o["query"] = req.query;
    boost::json::object headers;
    // Header values may hold any byte; the JSON it answers must be UTF-8.
    for (const auto& [k, v] : req.headers)
      headers[std::string(k)] = ValidUtf8(v, std::string::npos);
    o["headers"] = std::move(headers);
    o["body_bytes"] = req.body.size();
    return JsonResponse(200, boost::json::serialize(o));
  };
  for (const char* method : {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}) {
    router.Add(method, "/", HandlerKind::kInline, echo);
    router.Add(method, "/{*path}", HandlerKind::kInline, echo);
  }
}

}  // namespace gatehouse

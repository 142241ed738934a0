// Request targets as the session hands them on: routing, query parsing, the canonical-path
// check and forward-auth's reading of X-Original-URI.
#include <cstdint>
#include <string>
#include <string_view>

#include "gateway/gateway.h"
#include "http/router.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static gatehouse::Router router = [] {
    gatehouse::Router r;
    auto h = [](gatehouse::HttpRequest&) { return gatehouse::HttpResponse{}; };
    r.Add("GET", "/v1/orgs/{org}/keys/{id}", gatehouse::HandlerKind::kInline, h);
    r.Add("POST", "/v1/authz/check/{*rest}", gatehouse::HandlerKind::kInline, h);
    return r;
  }();
  static gatehouse::Gateway gateway(
      std::make_shared<gatehouse::Config>(gatehouse::DefaultConfig()));
  std::string target(reinterpret_cast<const char*>(data), size);
  std::string_view t = target;
  gatehouse::HttpRequest req;
  req.method = "GET";
  req.target = t;
  req.path = t.substr(0, t.find('?'));
  req.query = t.size() > req.path.size() ? t.substr(req.path.size() + 1) : std::string_view{};
  req.headers = {{"X-Original-URI", t}};
  (void)router.Find(req);
  (void)req.QueryParam("api_key");
  (void)gatehouse::Gateway::CheckPathIsCanonical(req.path);
  (void)gateway.Match(req.path);
  (void)gatehouse::Gateway::ReadOriginal(req, "");
  return 0;
}

#include "config/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include <boost/json/parse.hpp>
#include <boost/url/parse.hpp>

#include "core/signing.h"
#include "core/text.h"
#include "core/time_format.h"
#include "schema/json_schema.h"

namespace gatehouse {

namespace {

// Where a value came from, so that every message names file, line and field.
struct Site {
  const std::string* source;
  std::uint32_t line;
  std::string field;
};

tl::unexpected<Error> Bad(const Site& at, std::string_view what) {
  std::string msg = *at.source;
  if (at.line > 0) msg += ":" + std::to_string(at.line);
  msg += ": " + at.field + ": " + std::string(what);
  return tl::unexpected<Error>(Error{ErrorCode::kInvalidArgument, std::move(msg), at.field, {}});
}

#define GH_TRY_IN_READER(expr)                                    \
  do {                                                            \
    if (auto _r = (expr); !_r) return tl::unexpected(_r.error()); \
  } while (0)

// Reads one TOML table, remembering which keys were consumed so that typos are errors.
class TableReader {
 public:
  TableReader(const toml::table& t, const std::string& source, std::string path)
      : t_(t), source_(source), path_(std::move(path)) {}

  Site At(std::string_view key) const {
    const toml::node* n = t_.get(key);
    std::uint32_t line = n ? n->source().begin.line : t_.source().begin.line;
    return Site{&source_, line, Field(key)};
  }
  std::string Field(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  const toml::node* Get(std::string_view key) {
    used_.emplace(key);
    return t_.get(key);
  }

  Result<void> String(std::string_view key, std::string& out) {
    const auto* n = Get(key);
    if (!n) return {};
    if (!n->is_string()) return Bad(At(key), "must be a string");
    out = n->as_string()->get();
    return {};
  }
  Result<void> Bool(std::string_view key, bool& out) {
    const auto* n = Get(key);
    if (!n) return {};
    if (!n->is_boolean()) return Bad(At(key), "must be true or false");
    out = n->as_boolean()->get();
    return {};
  }
  template <typename Int>
  Result<void> Integer(std::string_view key, Int& out, std::int64_t min, std::int64_t max) {
    const auto* n = Get(key);
    if (!n) return {};
    if (!n->is_integer()) return Bad(At(key), "must be an integer");
    std::int64_t v = n->as_integer()->get();
    if (v < min || v > max) {
      return Bad(At(key), "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    out = static_cast<Int>(v);
    return {};
  }
  // "10s", "500ms", "5m".
  Result<void> Duration(std::string_view key, Millis& out) {
    std::string text;
    if (auto r = String(key, text); !r) return r;
    if (!Get(key)) return {};
    auto d = ParseDuration(text);
    if (!d) return Bad(At(key), d.error().message);
    out = Millis(*d / 1000);
    return {};
  }
  Result<void> StringArray(std::string_view key, std::vector<std::string>& out) {
    const auto* n = Get(key);
    if (!n) return {};
    const auto* arr = n->as_array();
    if (!arr) return Bad(At(key), "must be an array of strings");
    out.clear();
    for (const auto& item : *arr) {
      if (!item.is_string()) return Bad(At(key), "must be an array of strings");
      out.push_back(item.as_string()->get());
    }
    return {};
  }
  // { requests = 100, window = "1m", burst = 20, mode = "enforce" }
  Result<void> Rate(std::string_view key, RatePolicy& out) {
    const auto* n = Get(key);
    if (!n) return {};
    if (!n->is_table()) {
      return Bad(At(key), "must be a table such as { requests = 100, window = \"1m\" }");
    }
    TableReader sub(*n->as_table(), source_, Field(key));
    std::int64_t requests = 0, burst = 0;
    std::string window, mode = "enforce";
    GH_TRY_IN_READER(sub.Integer("requests", requests, 1, 1'000'000'000));
    GH_TRY_IN_READER(sub.String("window", window));
    GH_TRY_IN_READER(sub.Integer("burst", burst, 0, 1'000'000'000));
    GH_TRY_IN_READER(sub.String("mode", mode));
    GH_TRY_IN_READER(sub.RejectUnknown());
    auto p = MakeRatePolicy(requests, window, burst, mode, Field(key));
    if (!p) return Bad(At(key), p.error().message);
    out = *p;
    return {};
  }
  // { threshold = 20, reaction = "block", mode = "enforce" }
  Result<void> Threat(std::string_view key, ThreatRule& out) {
    const auto* n = Get(key);
    if (!n) return {};
    if (!n->is_table()) {
      return Bad(At(key), "must be a table such as { threshold = 20, reaction = \"block\" }");
    }
    TableReader sub(*n->as_table(), source_, Field(key));
    std::string mode = out.shadow ? "shadow" : "enforce";
    GH_TRY_IN_READER(sub.Integer("threshold", out.threshold, 0, 1'000'000'000));
    GH_TRY_IN_READER(sub.String("reaction", out.reaction));
    GH_TRY_IN_READER(sub.String("mode", mode));
    GH_TRY_IN_READER(sub.RejectUnknown());
    if (out.reaction != "record" && out.reaction != "notify" && out.reaction != "block") {
      return Bad(sub.At("reaction"), "must be \"record\", \"notify\" or \"block\"");
    }
    if (mode != "enforce" && mode != "shadow") {
      return Bad(sub.At("mode"), "must be \"enforce\" or \"shadow\"");
    }
    out.shadow = mode == "shadow";
    return {};
  }
  Result<void> RejectUnknown() const {
    for (const auto& [k, v] : t_) {
      if (!used_.contains(k.str())) {
        return Bad(Site{&source_, v.source().begin.line, Field(k.str())}, "unknown setting");
      }
    }
    return {};
  }

 private:
  const toml::table& t_;
  const std::string& source_;
  std::string path_;
  std::set<std::string, std::less<>> used_;
};

#define GH_TRY(expr)                                              \
  do {                                                            \
    if (auto _r = (expr); !_r) return tl::unexpected(_r.error()); \
  } while (0)

Result<void> ReadListeners(TableReader& root, const toml::table& t, Config& c) {
  const auto* n = root.Get("listeners");
  if (!n) return {};
  const auto* arr = n->as_array();
  if (!arr || !arr->is_array_of_tables()) {
    return Bad(root.At("listeners"), "must be an array of tables ([[listeners]])");
  }
  c.listeners.clear();
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const auto& lt = *arr->get(i)->as_table();
    TableReader r(lt, c.source, "listeners[" + std::to_string(i) + "]");
    std::string address;
    GH_TRY(r.String("address", address));
    if (address.empty()) return Bad(r.At("address"), "is required, e.g. \"127.0.0.1:8080\"");
    auto l = ParseListenAddress(address);
    if (!l) return Bad(r.At("address"), l.error().message);
    GH_TRY(r.String("tls_cert_file", l->tls_cert_file));
    GH_TRY(r.String("tls_key_file", l->tls_key_file));
    if (l->tls_cert_file.empty() != l->tls_key_file.empty()) {
      return Bad(r.At("tls_cert_file"), "tls_cert_file and tls_key_file go together");
    }
    GH_TRY(r.RejectUnknown());
    c.listeners.push_back(*l);
  }
  return {};
}

// A route's JSON Schema, inline or from a file, compiled now so that a mistake in it stops the
// start instead of reaching requests.
Result<void> ReadRouteSchema(TableReader& r, const std::string& config_source, RouteConfig& route) {
  std::string inline_text, file;
  bool strict = true;
  GH_TRY(r.String("json_schema", inline_text));
  GH_TRY(r.String("json_schema_file", file));
  GH_TRY(r.Bool("json_schema_strict", strict));
  if (inline_text.empty() && file.empty()) return {};
  if (!inline_text.empty() && !file.empty()) {
    return Bad(r.At("json_schema_file"), "give json_schema or json_schema_file, not both");
  }
  std::string text = inline_text;
  const char* key = "json_schema";
  if (!file.empty()) {
    key = "json_schema_file";
    std::filesystem::path path(file);
    if (path.is_relative()) path = std::filesystem::path(config_source).parent_path() / path;
    std::ifstream in(path, std::ios::binary);
    if (!in) return Bad(r.At(key), "cannot read " + path.string());
    std::ostringstream content;
    content << in.rdbuf();
    text = content.str();
    if (text.size() > 4 * 1024 * 1024) return Bad(r.At(key), path.string() + " is over 4 MiB");
  }
  boost::system::error_code ec;
  boost::json::value doc = boost::json::parse(text, ec);
  if (ec) return Bad(r.At(key), "is not valid JSON (" + ec.message() + ")");
  auto schema = JsonSchema::Compile(doc, {.strict = strict});
  if (!schema) {
    std::string hint = strict && schema.error().find("would be ignored") != std::string::npos
                           ? "; json_schema_strict = false ignores it, as the draft does"
                           : "";
    if (strict && schema.error().find("is not a JSON Schema") != std::string::npos) {
      hint = "; json_schema_strict = false ignores unknown keywords, as the drafts do";
    }
    return Bad(r.At(key), "is not a schema gatehouse can apply: " + schema.error() + hint);
  }
  route.json_schema = std::make_shared<const JsonSchema>(std::move(*schema));
  return {};
}

// The client TLS files of a setting group (`prefix` then ca_file, cert_file, key_file): the
// certificate and key go together, and each file named can be read now.
Result<void> CheckClientTlsFiles(const std::string& prefix, const std::string& ca,
                                 const std::string& cert, const std::string& key,
                                 const std::function<Site(const std::string&)>& at) {
  if (cert.empty() != key.empty()) {
    return Bad(at(prefix + "cert_file"),
               prefix + "cert_file and " + prefix + "key_file go together");
  }
  for (const auto& [name, path] : {std::pair<const char*, const std::string*>{"ca_file", &ca},
                                   {"cert_file", &cert},
                                   {"key_file", &key}}) {
    if (!path->empty() && !std::ifstream(*path).good()) {
      return Bad(at(prefix + name), "cannot be read: " + *path);
    }
  }
  return {};
}

// One of a route's upstream URLs, with what connecting to it needs. The route's TLS settings
// are part of the pool key: a plain and a TLS connection to one host:port, or two that trust
// different CAs or present different certificates, are never interchangeable.
Result<UpstreamServer> ParseUpstreamUrl(const std::string& text, const RouteConfig& route) {
  auto url = boost::urls::parse_uri(text);
  if (!url || (url->scheme() != "http" && url->scheme() != "https") || url->host().empty() ||
      url->has_query() || url->has_fragment() || url->has_userinfo()) {
    return Fail(ErrorCode::kInvalidArgument,
                "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:9000 (got " +
                    text + ")");
  }
  const bool tls = url->scheme() == "https";
  const std::uint16_t default_port = tls ? 443 : 80;
  UpstreamServer s;
  s.url = text;
  const bool ipv6 = url->host_type() == boost::urls::host_type::ipv6;
  s.host = ipv6 ? url->host_ipv6_address().to_string() : std::string(url->host());
  s.port = url->has_port() ? url->port_number() : default_port;
  if (url->has_port() && s.port == 0) {
    return Fail(ErrorCode::kInvalidArgument, "port 0 cannot be connected to (" + text + ")");
  }
  const std::string host_field = ipv6 ? "[" + s.host + "]" : s.host;
  s.authority = s.port == default_port ? host_field : host_field + ":" + std::to_string(s.port);
  s.pool_key = tls ? "https://" + s.authority + " " + route.upstream_tls_ca_file + " " +
                         route.upstream_tls_server_name + " " + route.upstream_tls_cert_file
                   : s.authority;
  s.base_path = std::string(url->encoded_path());
  while (s.base_path.ends_with('/')) s.base_path.pop_back();
  return s;
}

Result<void> ReadRoutes(TableReader& root, Config& c) {
  const auto* n = root.Get("routes");
  if (!n) return {};
  const auto* arr = n->as_array();
  if (!arr || !arr->is_array_of_tables()) {
    return Bad(root.At("routes"), "must be an array of tables ([[routes]])");
  }
  c.routes.clear();
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const auto& rt = *arr->get(i)->as_table();
    TableReader r(rt, c.source, "routes[" + std::to_string(i) + "]");
    RouteConfig route;
    route.source_line = rt.source().begin.line;
    GH_TRY(r.String("name", route.name));
    GH_TRY(r.String("path_prefix", route.path_prefix));
    GH_TRY(r.StringArray("methods", route.methods));
    if (const auto* u = r.Get("upstream"); u && u->is_array()) {
      GH_TRY(r.StringArray("upstream", route.upstream));
      if (route.upstream.empty()) return Bad(r.At("upstream"), "names no URL");
    } else if (u) {
      std::string one;
      GH_TRY(r.String("upstream", one));
      route.upstream = {std::move(one)};
    }
    GH_TRY(r.String("upstream_tls_ca_file", route.upstream_tls_ca_file));
    GH_TRY(r.String("upstream_tls_server_name", route.upstream_tls_server_name));
    GH_TRY(r.String("upstream_tls_cert_file", route.upstream_tls_cert_file));
    GH_TRY(r.String("upstream_tls_key_file", route.upstream_tls_key_file));
    GH_TRY(r.StringArray("scopes", route.scopes));
    GH_TRY(r.Bool("strip_prefix", route.strip_prefix));
    GH_TRY(r.Bool("forward_credential", route.forward_credential));
    GH_TRY(r.Bool("websocket", route.websocket));
    GH_TRY(r.Duration("connect_timeout", route.connect_timeout));
    GH_TRY(r.Duration("response_timeout", route.response_timeout));
    GH_TRY(r.Duration("dns_refresh", route.dns_refresh));
    GH_TRY(r.Duration("upstream_fail_timeout", route.upstream_fail_timeout));
    GH_TRY(r.Integer("upstream_max_failures", route.upstream_max_failures, 0, 1'000'000));
    std::string balance;
    GH_TRY(r.String("upstream_balance", balance));
    if (balance == "least_requests") {
      route.upstream_balance = RouteConfig::Balance::kLeastRequests;
    } else if (!balance.empty() && balance != "round_robin") {
      return Bad(r.At("upstream_balance"), "must be \"round_robin\" or \"least_requests\"");
    }
    GH_TRY(r.String("upstream_health_path", route.upstream_health_path));
    GH_TRY(r.Duration("upstream_health_interval", route.upstream_health_interval));
    GH_TRY(r.Duration("upstream_health_timeout", route.upstream_health_timeout));
    GH_TRY(r.Duration("stream_idle_timeout", route.stream_idle_timeout));
    GH_TRY(r.Rate("rate_limit", route.rate_limit));
    GH_TRY(r.Rate("rate_limit_per_principal", route.rate_limit_per_principal));
    GH_TRY(r.Integer("cost", route.cost, 0, 1'000'000));
    GH_TRY(r.StringArray("content_types", route.content_types));
    for (auto& t : route.content_types) {
      if (t.empty() || t.find(';') != std::string::npos || t.find('/') == std::string::npos) {
        return Bad(r.At("content_types"), "entries are media types such as \"application/json\"");
      }
      for (auto& ch : t) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
    GH_TRY(r.Integer("max_body_bytes", route.max_body_bytes, 0, std::int64_t{1} << 40));
    GH_TRY(ReadRouteSchema(r, c.source, route));
    if (const auto* h = r.Get("add_headers")) {
      const auto* ht = h->as_table();
      if (!ht) return Bad(r.At("add_headers"), "must be a table of header = \"value\"");
      for (const auto& [k, v] : *ht) {
        if (!v.is_string()) return Bad(r.At("add_headers"), "header values must be strings");
        route.add_headers.emplace_back(std::string(k.str()), v.as_string()->get());
      }
    }
    GH_TRY(r.RejectUnknown());
    // Lines for the cross-setting checks in Validate().
    route.name = route.name.empty() ? "route" + std::to_string(i) : route.name;
    c.routes.push_back(std::move(route));
  }
  return {};
}

}  // namespace

const std::vector<std::string>& BuiltinPermissions() {
  // gatehouse's own objects, then the categories our users' platforms name (issue 5).
  static const std::vector<std::string> kPermissions = {"admin",
                                                        "orgs:read",
                                                        "orgs:write",
                                                        "keys:read",
                                                        "keys:write",
                                                        "keys:verify",
                                                        "audit:read",
                                                        "members:read",
                                                        "members:write",
                                                        "roles:read",
                                                        "roles:write",
                                                        "vault:read",
                                                        "vault:write",
                                                        "webhooks:read",
                                                        "webhooks:write",
                                                        "dashboards:view",
                                                        "dashboards:create",
                                                        "dashboards:edit",
                                                        "dashboards:delete",
                                                        "workflows:view",
                                                        "workflows:create",
                                                        "workflows:execute",
                                                        "workflows:manage",
                                                        "integrations:connect",
                                                        "integrations:configure",
                                                        "integrations:remove",
                                                        "ai:use",
                                                        "ai:deploy_agents",
                                                        "ai:manage_settings",
                                                        "admin:users",
                                                        "admin:roles",
                                                        "admin:billing",
                                                        "admin:settings"};
  return kPermissions;
}

std::string Config::SqlitePath() const {
  if (storage.empty()) return data_dir + "/gatehouse.db";
  std::string_view s = storage;
  if (s.starts_with("sqlite://")) s.remove_prefix(9);
  return std::string(s);
}

bool Config::UsesPostgres() const {
  return storage.starts_with("postgres://") || storage.starts_with("postgresql://");
}

std::string Config::PepperFile() const {
  return pepper.file.empty() ? data_dir + "/secrets/pepper" : pepper.file;
}

bool Config::KnowsScope(std::string_view scope) const {
  return std::find(scopes.begin(), scopes.end(), scope) != scopes.end() ||
         std::find(BuiltinPermissions().begin(), BuiltinPermissions().end(), scope) !=
             BuiltinPermissions().end();
}

Config DefaultConfig() {
  Config c;
  c.scopes = {"read:findings", "write:evidence", "workflows:execute", "workflows:view"};
  c.demo.echo_listen = "127.0.0.1:8081";
  auto demo_route = [](std::string name, std::string prefix, std::vector<std::string> methods,
                       std::vector<std::string> scopes) {
    RouteConfig r;
    r.name = std::move(name);
    r.path_prefix = std::move(prefix);
    r.methods = std::move(methods);
    r.upstream = {"http://127.0.0.1:8081"};
    r.scopes = std::move(scopes);
    return r;
  };
  c.routes = {
      demo_route("findings", "/api/v1/findings", {"GET"}, {"read:findings"}),
      demo_route("evidence", "/api/v1/evidence", {"POST", "PUT"}, {"write:evidence"}),
      demo_route("workflows", "/api/v1/workflows", {}, {"workflows:execute"}),
      demo_route("echo", "/api/echo", {}, {}),
  };
  auto ok = Validate(c);
  (void)ok;  // The built-in defaults are valid by construction; tests assert it.
  return c;
}

EnvLookup ProcessEnv() {
  return [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

Result<ListenerConfig> ParseListenAddress(std::string_view text) {
  ListenerConfig l;
  std::string_view host, port;
  if (text.starts_with('[')) {
    auto close = text.find("]:");
    if (close == std::string_view::npos) {
      return Fail(ErrorCode::kInvalidArgument, "listen address must be HOST:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      return Fail(ErrorCode::kInvalidArgument, "listen address must be HOST:PORT");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || ptr != port.data() + port.size() || p > 65535 || host.empty()) {
    return Fail(ErrorCode::kInvalidArgument,
                "listen address must be HOST:PORT with a port 0-65535");
  }
  if (!ParseIp(host)) {
    return Fail(ErrorCode::kInvalidArgument, "listen host must be an IP address");
  }
  l.host = std::string(host);
  l.port = static_cast<std::uint16_t>(p);
  return l;
}

Result<RedisAddress> ParseRedisUrl(std::string_view url) {
  RedisAddress a;
  a.tls = url.starts_with("rediss://");
  if (!a.tls && !url.starts_with("redis://")) {
    return Fail(ErrorCode::kInvalidArgument,
                "must be a redis://host:port or rediss://host:port URL");
  }
  std::string_view rest = url.substr(a.tls ? 9 : 8);
  if (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.find_first_of("@/?#") != std::string_view::npos) {
    return Fail(ErrorCode::kInvalidArgument,
                "must be redis[s]://host[:port] with no credentials, database or options");
  }
  std::string_view host = rest, port;
  if (rest.starts_with('[')) {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return Fail(ErrorCode::kInvalidArgument, "bad IPv6 host");
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') return Fail(ErrorCode::kInvalidArgument, "bad port");
      port = rest.substr(close + 2);
    }
  } else if (auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return Fail(ErrorCode::kInvalidArgument, "names no host");
  if (!port.empty()) {
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p == 0 || p > 65535) {
      return Fail(ErrorCode::kInvalidArgument, "port must be 1-65535");
    }
    a.port = static_cast<std::uint16_t>(p);
  }
  a.host = std::string(host);
  return a;
}

Result<RedisAddress> SharedRedisAddress(const RateLimitsConfig& config) {
  auto address = ParseRedisUrl(config.redis);
  if (!address) return address;
  address->user = config.redis_user;
  address->tls_ca_file = config.redis_tls_ca_file;
  address->tls_cert_file = config.redis_tls_cert_file;
  address->tls_key_file = config.redis_tls_key_file;
  address->tls_server_name = config.redis_tls_server_name;
  return address;
}

Result<Config> ParseConfig(std::string_view toml_text, std::string source) {
  Config c = DefaultConfig();
  c.source = std::move(source);
  // A file replaces the demo set-up: its routes are the deployment's own.
  c.routes.clear();
  c.scopes.clear();
  c.demo.echo_listen.clear();
  toml::table root;
  try {
    root = toml::parse(toml_text, c.source);
  } catch (const toml::parse_error& e) {
    std::string msg = c.source + ":" + std::to_string(e.source().begin.line) + ": " +
                      std::string(e.description());
    return tl::unexpected<Error>(Error{ErrorCode::kInvalidArgument, std::move(msg), "", {}});
  }
  TableReader r(root, c.source, "");
  GH_TRY(ReadListeners(r, root, c));
  GH_TRY(r.Integer("threads", c.threads, 0, 256));
  GH_TRY(r.String("data_dir", c.data_dir));
  GH_TRY(r.String("storage", c.storage));
  GH_TRY(r.Integer("storage_connections", c.storage_connections, 1, 256));
  GH_TRY(r.StringArray("trusted_proxies", c.trusted_proxies));
  GH_TRY(r.StringArray("scopes", c.scopes));
  GH_TRY(ReadRoutes(r, c));

  auto sub = [&](std::string_view name, auto&& read) -> Result<void> {
    const auto* n = r.Get(name);
    if (!n) return {};
    if (!n->is_table()) return Bad(r.At(name), "must be a table");
    TableReader t(*n->as_table(), c.source, std::string(name));
    GH_TRY(read(t));
    return t.RejectUnknown();
  };
  GH_TRY(sub("secrets", [&](TableReader& t) -> Result<void> {
    GH_TRY(t.String("pepper_env", c.pepper.env));
    GH_TRY(t.String("pepper_file", c.pepper.file));
    GH_TRY(t.String("previous_pepper_env", c.previous_pepper.env));
    GH_TRY(t.String("previous_pepper_file", c.previous_pepper.file));
    GH_TRY(t.String("next_pepper_env", c.next_pepper.env));
    GH_TRY(t.String("next_pepper_file", c.next_pepper.file));
    GH_TRY(t.String("master_key_env", c.master_key.env));
    GH_TRY(t.String("master_key_file", c.master_key.file));
    GH_TRY(t.String("audit_signing_key_env", c.audit_signing_key.env));
    GH_TRY(t.String("audit_signing_key_file", c.audit_signing_key.file));
    GH_TRY(t.String("metrics_token_env", c.metrics_token.env));
    return t.String("metrics_token_file", c.metrics_token.file);
  }));
  GH_TRY(sub("limits", [&](TableReader& t) -> Result<void> {
    auto& l = c.limits;
    GH_TRY(t.Integer("max_header_bytes", l.max_header_bytes, 1024, 1 << 20));
    GH_TRY(t.Integer("max_header_count", l.max_header_count, 8, 1000));
    GH_TRY(t.Integer("max_url_bytes", l.max_url_bytes, 256, 1 << 20));
    GH_TRY(t.Integer("max_body_bytes", l.max_body_bytes, 1024, 64 << 20));
    GH_TRY(t.Integer("max_proxy_body_bytes", l.max_proxy_body_bytes, 0, std::int64_t{1} << 40));
    GH_TRY(t.Duration("idle_timeout", l.idle_timeout));
    GH_TRY(t.Duration("header_timeout", l.header_timeout));
    GH_TRY(t.Duration("body_timeout", l.body_timeout));
    GH_TRY(t.Duration("drain_timeout", l.drain_timeout));
    GH_TRY(t.Integer("max_connections", l.max_connections, 1, 1'000'000));
    return t.Integer("max_blocking_jobs", l.max_blocking_jobs, 1, 1'000'000);
  }));
  GH_TRY(sub("keys", [&](TableReader& t) -> Result<void> {
    GH_TRY(t.String("prefix", c.keys.prefix));
    GH_TRY(t.Integer("cache_capacity", c.keys.cache_capacity, 0, 100'000'000));
    GH_TRY(t.Duration("negative_cache_ttl", c.keys.negative_cache_ttl));
    return t.Duration("usage_flush_interval", c.keys.usage_flush_interval);
  }));
  GH_TRY(sub("log", [&](TableReader& t) -> Result<void> {
    GH_TRY(t.String("level", c.log.level));
    return t.Bool("access_log", c.log.access_log);
  }));
  GH_TRY(sub("audit", [&](TableReader& t) -> Result<void> {
    GH_TRY(t.Bool("enabled", c.audit.enabled));
    GH_TRY(t.Integer("queue_capacity", c.audit.queue_capacity, 1, 10'000'000));
    GH_TRY(t.Integer("max_batch", c.audit.max_batch, 1, 1'000'000));
    GH_TRY(t.String("overflow", c.audit.overflow));
    GH_TRY(t.Bool("fsync", c.audit.fsync));
    GH_TRY(t.String("journal_dir", c.audit.journal_dir));
    if (c.audit.overflow != "reject" && c.audit.overflow != "drop") {
      return Bad(t.At("overflow"), "must be \"reject\" or \"drop\"");
    }
    GH_TRY(t.Integer("system_retention_days", c.audit.system_retention_days, 0, 3650));
    GH_TRY(t.StringArray("retired_signing_keys", c.audit.retired_signing_keys));
    c.audit.retired_signing_public_keys.clear();
    for (const auto& x : c.audit.retired_signing_keys) {
      auto key = Ed25519KeyFromJwkX(x);
      if (!key) {
        return Bad(t.At("retired_signing_keys"),
                   "each must be the \"x\" of an Ed25519 key in /.well-known/jwks.json "
                   "(base64url, 43 characters)");
      }
      c.audit.retired_signing_public_keys.push_back(*key);
    }
    return t.Duration("retention_interval", c.audit.retention_interval);
  }));
  GH_TRY(sub("passwords", [&](TableReader& t) -> Result<void> {
    auto& p = c.passwords;
    GH_TRY(t.Integer("min_length", p.min_length, 8, 64));
    GH_TRY(t.Integer("max_bytes", p.max_bytes, 256, 4096));
    GH_TRY(t.String("blocklist_file", p.blocklist_file));
    GH_TRY(t.Integer("argon2_memory_kib", p.argon2_memory_kib, 19456, 4 * 1024 * 1024));
    GH_TRY(t.Integer("argon2_iterations", p.argon2_iterations, 2, 64));
    GH_TRY(t.Integer("hash_workers", p.hash_workers, 0, 256));
    return t.Integer("hash_queue", p.hash_queue, 1, 100'000);
  }));
  GH_TRY(sub("sessions", [&](TableReader& t) -> Result<void> {
    auto& s = c.sessions;
    GH_TRY(t.Duration("idle_timeout", s.idle_timeout));
    GH_TRY(t.Duration("absolute_lifetime", s.absolute_lifetime));
    GH_TRY(t.Duration("refresh_after", s.refresh_after));
    GH_TRY(t.Duration("reauth_window", s.reauth_window));
    GH_TRY(t.Duration("touch_interval", s.touch_interval));
    GH_TRY(t.Duration("reuse_grace", s.reuse_grace));
    GH_TRY(t.Duration("invitation_ttl", s.invitation_ttl));
    GH_TRY(t.StringArray("allowed_origins", s.allowed_origins));
    if (s.idle_timeout.count() < 60'000 || s.absolute_lifetime < s.idle_timeout) {
      return Bad(t.At("idle_timeout"),
                 "idle_timeout must be at least 1m and at most absolute_lifetime");
    }
    return {};
  }));
  GH_TRY(sub("login", [&](TableReader& t) -> Result<void> {
    auto& l = c.login;
    GH_TRY(t.Integer("free_failures", l.free_failures, 1, 20));
    GH_TRY(t.Duration("max_lock", l.max_lock));
    GH_TRY(t.Integer("max_failures", l.max_failures, 10, 100));
    GH_TRY(t.Integer("address_free_failures", l.address_free_failures, 1, 100'000));
    GH_TRY(t.Duration("address_max_delay", l.address_max_delay));
    GH_TRY(t.Integer("address_failures", l.address_failures, 5, 100'000));
    if (l.address_free_failures >= l.address_failures) {
      return Bad(t.At("address_free_failures"), "must be less than address_failures");
    }
    GH_TRY(t.Integer("stuffing_accounts", l.stuffing_accounts, 2, 1000));
    GH_TRY(t.Duration("window", l.window));
    return t.Duration("address_lock", l.address_lock);
  }));
  GH_TRY(sub("rate_limits", [&](TableReader& t) -> Result<void> {
    auto& l = c.rate_limits;
    GH_TRY(t.String("redis", l.redis));
    GH_TRY(t.String("redis_user", l.redis_user));
    GH_TRY(t.String("redis_tls_ca_file", l.redis_tls_ca_file));
    GH_TRY(t.String("redis_tls_server_name", l.redis_tls_server_name));
    GH_TRY(t.String("redis_tls_cert_file", l.redis_tls_cert_file));
    GH_TRY(t.String("redis_tls_key_file", l.redis_tls_key_file));
    GH_TRY(t.String("redis_password_env", l.redis_password.env));
    GH_TRY(t.String("redis_password_file", l.redis_password.file));
    GH_TRY(t.Duration("redis_timeout", l.redis_timeout));
    GH_TRY(t.Integer("cluster_nodes", l.cluster_nodes, 0, 10'000));
    GH_TRY(t.Integer("max_tracked", l.max_tracked, 1'000, 1'000'000'000));
    GH_TRY(t.Rate("global", l.global));
    GH_TRY(t.Rate("per_key", l.per_key));
    GH_TRY(t.Rate("per_user", l.per_user));
    GH_TRY(t.Rate("per_org", l.per_org));
    GH_TRY(t.Rate("control_plane", l.control_plane));
    if (!l.redis.empty()) {
      auto addr = ParseRedisUrl(l.redis);
      if (!addr) return Bad(t.At("redis"), addr.error().message);
      const bool tls_options = !l.redis_tls_ca_file.empty() || !l.redis_tls_server_name.empty() ||
                               !l.redis_tls_cert_file.empty() || !l.redis_tls_key_file.empty();
      if (tls_options && !addr->tls) {
        return Bad(t.At("redis"), "the redis_tls_* settings need a rediss:// URL");
      }
    }
    GH_TRY(CheckClientTlsFiles("redis_tls_", l.redis_tls_ca_file, l.redis_tls_cert_file,
                               l.redis_tls_key_file,
                               [&](const std::string& name) { return t.At(name); }));
    if (l.redis_timeout.count() < 1 || l.redis_timeout.count() > 10'000) {
      return Bad(t.At("redis_timeout"), "must be from 1ms to 10s");
    }
    return {};
  }));
  GH_TRY(sub("threats", [&](TableReader& t) -> Result<void> {
    auto& th = c.threats;
    GH_TRY(t.Duration("window", th.window));
    GH_TRY(t.Duration("block_duration", th.block_duration));
    GH_TRY(t.Integer("blocked_status", th.blocked_status, 403, 429));
    if (th.blocked_status != 403 && th.blocked_status != 429) {
      return Bad(t.At("blocked_status"), "must be 403 or 429");
    }
    GH_TRY(t.Integer("max_tracked", th.max_tracked, 100, 100'000'000));
    GH_TRY(t.Threat("invalid_keys", th.invalid_keys));
    GH_TRY(t.Threat("address_failures", th.address_failures));
    GH_TRY(t.Threat("key_failures", th.key_failures));
    GH_TRY(t.Threat("new_network", th.new_network));
    if (th.window.count() < 1000) return Bad(t.At("window"), "must be at least 1s");
    return {};
  }));
  GH_TRY(sub("demo", [&](TableReader& t) -> Result<void> {
    return t.String("echo_listen", c.demo.echo_listen);
  }));
  GH_TRY(r.RejectUnknown());
  GH_TRY(Validate(c));
  return c;
}

Result<Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Fail(ErrorCode::kInvalidArgument, path + ": cannot read the configuration file");
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  if (s.size() > 4 * 1024 * 1024) {
    return Fail(ErrorCode::kInvalidArgument, path + ": configuration file is larger than 4 MiB");
  }
  return ParseConfig(s, path);
}

Result<void> ApplyEnvironment(Config& c, const EnvLookup& env) {
  auto site = [&](const char* var) { return Site{&c.source, 0, std::string(var)}; };
  if (auto v = env("GATEHOUSE_LISTEN")) {
    auto l = ParseListenAddress(*v);
    if (!l) return Bad(site("GATEHOUSE_LISTEN"), l.error().message);
    c.listeners = {*l};
  }
  if (auto v = env("GATEHOUSE_DATA_DIR")) c.data_dir = *v;
  if (auto v = env("GATEHOUSE_STORAGE")) c.storage = *v;
  if (auto v = env("GATEHOUSE_LOG_LEVEL")) c.log.level = *v;
  if (auto v = env("GATEHOUSE_KEY_PREFIX")) c.keys.prefix = *v;
  if (auto v = env("GATEHOUSE_ACCESS_LOG")) c.log.access_log = *v != "0" && *v != "false";
  if (auto v = env("GATEHOUSE_REDIS")) {
    if (auto a = ParseRedisUrl(*v); !a && !v->empty()) {
      return Bad(site("GATEHOUSE_REDIS"), a.error().message);
    }
    c.rate_limits.redis = *v;
  }
  if (auto v = env("GATEHOUSE_THREADS")) {
    int t = -1;
    auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), t);
    if (ec != std::errc() || p != v->data() + v->size() || t < 0 || t > 256) {
      return Bad(site("GATEHOUSE_THREADS"), "must be an integer between 0 and 256");
    }
    c.threads = t;
  }
  return Validate(c);
}

Result<void> Validate(Config& c) {
  auto site = [&](std::string field) { return Site{&c.source, 0, std::move(field)}; };
  if (c.listeners.empty()) return Bad(site("listeners"), "at least one listener is required");
  if (!c.storage.empty() && !c.storage.starts_with("sqlite://") && !c.UsesPostgres()) {
    return Bad(site("storage"), "must be sqlite:///path or postgres://user@host:port/database");
  }
  const auto& p = c.keys.prefix;
  bool prefix_ok = !p.empty() && p.size() <= 32 && p.back() != '_' &&
                   std::all_of(p.begin(), p.end(), [](char ch) {
                     return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
                   });
  if (!prefix_ok) {
    return Bad(site("keys.prefix"), "must be 1-32 characters of a-z, 0-9 and _, not ending in _");
  }
  static const std::set<std::string, std::less<>> kLevels = {"trace", "debug", "info",
                                                             "warn",  "error", "off"};
  if (!kLevels.contains(c.log.level)) {
    return Bad(site("log.level"), "must be one of trace, debug, info, warn, error, off");
  }
  for (std::size_t i = 0; i < c.scopes.size(); ++i) {
    const auto& s = c.scopes[i];
    bool ok = !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char ch) {
      return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == ':' || ch == '_' ||
             ch == '-' || ch == '.';
    });
    if (!ok) {
      return Bad(site("scopes[" + std::to_string(i) + "]"),
                 "a scope is 1-64 characters of a-z, 0-9, ':', '_', '-', '.'");
    }
  }
  c.trusted_proxy_cidrs.clear();
  for (std::size_t i = 0; i < c.trusted_proxies.size(); ++i) {
    auto cidr = Cidr::Parse(c.trusted_proxies[i]);
    if (!cidr) return Bad(site("trusted_proxies[" + std::to_string(i) + "]"), cidr.error().message);
    c.trusted_proxy_cidrs.push_back(*cidr);
  }
  if (!c.demo.echo_listen.empty()) {
    if (auto l = ParseListenAddress(c.demo.echo_listen); !l) {
      return Bad(site("demo.echo_listen"), l.error().message);
    }
  }
  std::set<std::string, std::less<>> names;
  for (std::size_t i = 0; i < c.routes.size(); ++i) {
    auto& r = c.routes[i];
    auto site = [&](std::string field) { return Site{&c.source, r.source_line, std::move(field)}; };
    std::string at = "routes[" + std::to_string(i) + "]";
    if (!names.insert(r.name).second) return Bad(site(at + ".name"), "route names must be unique");
    if (!r.path_prefix.starts_with('/')) return Bad(site(at + ".path_prefix"), "must start with /");
    for (std::string_view reserved : {"/v1/", "/healthz", "/readyz", "/metrics", "/.well-known/"}) {
      std::string_view rp = r.path_prefix;
      if (rp.starts_with(reserved) || std::string_view(reserved).starts_with(rp)) {
        return Bad(site(at + ".path_prefix"),
                   "overlaps gatehouse's own endpoints (" + std::string(reserved) + ")");
      }
    }
    for (auto& m : r.methods) {
      static const std::set<std::string, std::less<>> kMethods = {
          "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
      if (!kMethods.contains(m)) {
        return Bad(site(at + ".methods"),
                   "unknown method " + m + " (TRACE and CONNECT are not proxied)");
      }
    }
    for (const auto& s : r.scopes) {
      if (!c.KnowsScope(s)) {
        return Bad(site(at + ".scopes"), "scope " + s + " is not in the scopes catalogue");
      }
    }
    if (r.upstream.empty()) {
      return Bad(site(at + ".upstream"), "is required: the URL requests are forwarded to");
    }
    r.upstreams.clear();
    for (const auto& text : r.upstream) {
      auto server = ParseUpstreamUrl(text, r);
      if (!server) return Bad(site(at + ".upstream"), server.error().message);
      if (r.upstreams.empty()) {
        r.upstream_tls = text.starts_with("https:");
      } else if (r.upstream_tls != text.starts_with("https:")) {
        return Bad(site(at + ".upstream"),
                   "the URLs of one route must share a scheme (its upstream_tls_* settings "
                   "apply to all of them)");
      }
      for (const auto& other : r.upstreams) {
        if (other.pool_key == server->pool_key) {
          return Bad(site(at + ".upstream"), "names " + other.authority + " twice");
        }
      }
      r.upstreams.push_back(std::move(*server));
    }
    if (!r.upstream_health_path.empty()) {
      const auto& hp = r.upstream_health_path;
      if (!hp.starts_with('/') || hp.find_first_of(" \t\r\n") != std::string::npos ||
          hp.find('#') != std::string::npos) {
        return Bad(site(at + ".upstream_health_path"),
                   "must be a path such as /healthz (an optional ?query, no spaces)");
      }
      if (r.upstream_health_interval < Millis(100) || r.upstream_health_timeout < Millis(10)) {
        return Bad(site(at + ".upstream_health_interval"),
                   "checks need an interval of at least 100ms and a timeout of at least 10ms");
      }
    }
    if (!r.upstream_tls &&
        (!r.upstream_tls_ca_file.empty() || !r.upstream_tls_server_name.empty() ||
         !r.upstream_tls_cert_file.empty() || !r.upstream_tls_key_file.empty())) {
      return Bad(site(at + ".upstream"), "the upstream_tls_* settings need an https:// upstream");
    }
    GH_TRY(CheckClientTlsFiles("upstream_tls_", r.upstream_tls_ca_file, r.upstream_tls_cert_file,
                               r.upstream_tls_key_file,
                               [&](const std::string& name) { return site(at + "." + name); }));
    for (const auto& [name, value] : r.add_headers) {
      if (!IsHttpToken(name)) return Bad(site(at + ".add_headers"), "bad header name " + name);
      if (ContainsLineBreak(value)) {
        return Bad(site(at + ".add_headers"), "header values cannot contain line breaks");
      }
    }
  }
  return {};
}

Result<std::string> ReadSecret(const SecretSource& source, const EnvLookup& env,
                               std::string_view what) {
  if (!source.env.empty()) {
    if (auto v = env(source.env.c_str()); v && !v->empty()) return *v;
  }
  if (source.file.empty()) {
    return Fail(ErrorCode::kNotFound, std::string(what) + " is not configured");
  }
  std::ifstream in(source.file, std::ios::binary);
  if (!in) {
    return Fail(ErrorCode::kNotFound,
                std::string(what) + " file " + source.file + " cannot be read");
  }
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.empty()) return Fail(ErrorCode::kNotFound, std::string(what) + " file is empty");
  return s;
}

}  // namespace gatehouse

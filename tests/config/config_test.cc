#include "config/config.h"
#include "core/signing.h"
#include "schema/json_schema.h"

#include <gtest/gtest.h>

#include <map>

namespace gatehouse {
namespace {

const char* kGood = R"(
threads = 2
data_dir = "/var/lib/gatehouse"
scopes = ["read:findings", "write:evidence"]
trusted_proxies = ["10.0.0.0/8"]

[[listeners]]
address = "127.0.0.1:9443"

[limits]
max_body_bytes = 65536
header_timeout = "5s"

[keys]
prefix = "aiia_key"

[[routes]]
name = "findings"
path_prefix = "/api/v1/findings"
methods = ["GET"]
upstream = "http://127.0.0.1:9000/base/"
scopes = ["read:findings"]
response_timeout = "30s"
add_headers = { X-Tenant-Source = "gatehouse" }
)";

TEST(Config, ParsesEverySectionAndDerivesUpstreams) {
  auto c = ParseConfig(kGood, "gatehouse.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->threads, 2);
  EXPECT_EQ(c->listeners.at(0).port, 9443);
  EXPECT_EQ(c->limits.max_body_bytes, 65536u);
  EXPECT_EQ(c->limits.header_timeout, Millis(5000));
  EXPECT_EQ(c->keys.prefix, "aiia_key");
  ASSERT_EQ(c->routes.size(), 1u);
  ASSERT_EQ(c->routes[0].upstreams.size(), 1u);
  EXPECT_EQ(c->routes[0].upstreams[0].host, "127.0.0.1");
  EXPECT_EQ(c->routes[0].upstreams[0].port, 9000);
  EXPECT_EQ(c->routes[0].upstreams[0].base_path, "/base");
  EXPECT_EQ(c->routes[0].add_headers.at(0).first, "X-Tenant-Source");
  EXPECT_TRUE(c->KnowsScope("keys:verify"));  // built-in permissions are always known
  EXPECT_FALSE(c->KnowsScope("delete:everything"));
  EXPECT_EQ(c->storage_connections, 4);  // the default
  auto tls = ParseConfig(
      "[[routes]]\npath_prefix = \"/models\"\nupstream = \"https://api.example.com/v1\"\n"
      "upstream_tls_server_name = \"api.example.com\"\n"
      "[[routes]]\npath_prefix = \"/other\"\nupstream = \"https://api.example.com:8443\"\n",
      "gatehouse.toml");
  ASSERT_TRUE(tls) << tls.error().message;
  EXPECT_TRUE(tls->routes[0].upstream_tls);
  EXPECT_EQ(tls->routes[0].upstreams.at(0).port, 443);
  EXPECT_EQ(tls->routes[0].upstreams.at(0).authority, "api.example.com");
  EXPECT_EQ(tls->routes[1].upstreams.at(0).authority, "api.example.com:8443");
  EXPECT_FALSE(c->routes[0].upstream_tls);
  auto several = ParseConfig(
      "[[routes]]\npath_prefix = \"/api\"\n"
      "upstream = [\"http://10.0.0.1:9000/v1/\", \"http://[::1]:9001\", \"http://b.internal\"]\n"
      "upstream_fail_timeout = \"2s\"\nupstream_max_failures = 0\n"
      "upstream_balance = \"least_requests\"\n",
      "gatehouse.toml");
  ASSERT_TRUE(several) << several.error().message;
  const auto& servers = several->routes[0].upstreams;
  ASSERT_EQ(servers.size(), 3u);
  EXPECT_EQ(servers[0].authority, "10.0.0.1:9000");
  EXPECT_EQ(servers[0].base_path, "/v1");
  EXPECT_EQ(servers[1].host, "::1");  // connectable: no brackets
  EXPECT_EQ(servers[1].authority, "[::1]:9001");
  EXPECT_EQ(servers[2].authority, "b.internal");
  EXPECT_EQ(servers[2].port, 80);
  EXPECT_EQ(several->routes[0].upstream_fail_timeout, Millis(2000));
  EXPECT_EQ(several->routes[0].upstream_max_failures, 0u);
  EXPECT_EQ(several->routes[0].upstream_balance, RouteConfig::Balance::kLeastRequests);
  EXPECT_EQ(c->routes[0].upstream_balance, RouteConfig::Balance::kRoundRobin);
  EXPECT_EQ(c->routes[0].upstream_max_failures, 5u);  // the default
  auto pg = ParseConfig("storage = \"postgres://app@db:5432/gh\"\nstorage_connections = 16\n",
                        "gatehouse.toml");
  ASSERT_TRUE(pg) << pg.error().message;
  EXPECT_TRUE(pg->UsesPostgres());
  EXPECT_EQ(pg->storage_connections, 16);
}

struct BadCase {
  std::string toml;
  std::string expect;  // substring of the message: "file:line: field"
};

TEST(Config, ErrorsNameFileLineAndField) {
  std::vector<BadCase> cases = {
      {"threads = \"two\"\n", "gatehouse.toml:1: threads: must be an integer"},
      {"\n\nthreadz = 1\n", "gatehouse.toml:3: threadz: unknown setting"},
      {"[limits]\nmax_body_bytes = 1\n",
       "gatehouse.toml:2: limits.max_body_bytes: must be between"},
      {"[limits]\nheader_timeout = \"soon\"\n", "gatehouse.toml:2: limits.header_timeout"},
      {"[[listeners]]\naddress = \"localhost:80\"\n",
       "listeners[0].address: listen host must be an IP"},
      {"scopes = [\"Bad Scope\"]\n", "scopes[0]"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"ftp://x\"\n", "routes[0].upstream"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = []\n", "routes[0].upstream: names no URL"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = [\"http://a\", \"https://b\"]\n",
       "the URLs of one route must share a scheme"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = [\"http://a:80\", \"http://a\"]\n",
       "names a twice"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = [\"http://a\", 7]\n",
       "routes[0].upstream: must be an array of strings"},
      {"[[routes]]\npath_prefix = \"/api\"\n", "routes[0].upstream: is required"},
      {"[audit]\nretired_signing_keys = [\"not-a-key\"]\n",
       "gatehouse.toml:2: audit.retired_signing_keys: each must be the \"x\" of an Ed25519 key"},
      {"[audit]\nretired_signing_keys = "
       "[\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"]\n",
       "audit.retired_signing_keys: each must be"},  // 32 bytes, but not a point of the curve
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://a\"\n"
       "upstream_balance = \"random\"\n",
       "routes[0].upstream_balance: must be \"round_robin\" or \"least_requests\""},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://a\"\n"
       "upstream_health_path = \"health\"\n",
       "routes[0].upstream_health_path: must be a path"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://a\"\n"
       "upstream_health_path = \"/h\"\nupstream_health_interval = \"10ms\"\n",
       "an interval of at least 100ms"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://x\"\n"
       "upstream_tls_server_name = \"x\"\n",
       "the upstream_tls_* settings need an https:// upstream"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"https://x\"\n"
       "upstream_tls_ca_file = \"/nonexistent/ca.pem\"\n",
       "routes[0].upstream_tls_ca_file: cannot be read"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"https://x\"\n"
       "upstream_tls_cert_file = \"/etc/hostname\"\n",
       "upstream_tls_cert_file and upstream_tls_key_file go together"},
      {"[[routes]]\npath_prefix = \"/v1/keys\"\nupstream = \"http://127.0.0.1:1\"\n",
       "routes[0].path_prefix: overlaps"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\nscopes = "
       "[\"nope\"]\n",
       "routes[0].scopes: scope nope is not in the scopes catalogue"},
      {"[keys]\nprefix = \"SK\"\n", "keys.prefix"},
      {"[secrets]\npepper = \"inline-secret\"\n", "secrets.pepper: unknown setting"},
      {"this is not toml", "gatehouse.toml:1:"},
      {"storage_connections = 0\n", "gatehouse.toml:1: storage_connections: must be between"},
      {"storage = \"mysql://x\"\n", "storage: must be sqlite:///path or postgres://"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\n"
       "json_schema = '{\"type\":'\n",
       "gatehouse.toml:4: routes[0].json_schema: is not valid JSON"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\n"
       "json_schema = '{\"minimum\":\"one\"}'\n",
       "routes[0].json_schema: is not a schema gatehouse can apply: #/minimum: must be a number"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\n"
       "json_schema = '{}'\njson_schema_file = \"x.json\"\n",
       "give json_schema or json_schema_file, not both"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\n"
       "json_schema_file = \"/nonexistent/s.json\"\n",
       "routes[0].json_schema_file: cannot read /nonexistent/s.json"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\n"
       "json_schema = '{\"requried\":[\"model\"]}'\n",
       "routes[0].json_schema: is not a schema gatehouse can apply: #/requried: is not a JSON "
       "Schema draft-07 keyword (did you mean \"required\"?)"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\n"
       "json_schema = '{\"requried\":[\"model\"]}'\n",
       "json_schema_strict = false ignores unknown keywords"},
      {"[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\n"
       "json_schema = '{}'\njson_schema_strict = \"yes\"\n",
       "routes[0].json_schema_strict"},
  };
  for (const auto& bc : cases) {
    auto c = ParseConfig(bc.toml, "gatehouse.toml");
    ASSERT_FALSE(c) << bc.toml;
    EXPECT_NE(c.error().message.find(bc.expect), std::string::npos)
        << "got: " << c.error().message << "\nwanted: " << bc.expect;
  }
}

TEST(Config, ARoutesInlineJsonSchemaIsCompiledWhenRead) {
  auto c = ParseConfig(
      "[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\n"
      "json_schema = \"\"\"\n{\"type\": \"object\", \"required\": [\"model\"]}\n\"\"\"\n",
      "gatehouse.toml");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->routes[0].json_schema);
  EXPECT_TRUE(c->routes[0].json_schema->ValidateBody(R"({"model":"m"})"));
  auto refused = c->routes[0].json_schema->ValidateBody("{}");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().pointer, "/model");
}

TEST(Config, ANonStrictRouteSchemaIgnoresWhatTheDraftIgnores) {
  auto c = ParseConfig(
      "[[routes]]\npath_prefix = \"/api\"\nupstream = \"http://127.0.0.1:1\"\n"
      "json_schema = '{\"type\":\"object\",\"nullable\":true}'\njson_schema_strict = false\n",
      "gatehouse.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(c->routes[0].json_schema->ValidateBody("{}"));
  EXPECT_FALSE(c->routes[0].json_schema->ValidateBody("null"));  // nullable meant nothing
}

TEST(Config, EnvironmentOverridesTheFile) {
  auto c = ParseConfig(kGood, "gatehouse.toml");
  ASSERT_TRUE(c);
  std::map<std::string, std::string> env = {{"GATEHOUSE_LISTEN", "127.0.0.1:7000"},
                                            {"GATEHOUSE_DATA_DIR", "/tmp/x"},
                                            {"GATEHOUSE_THREADS", "3"}};
  auto lookup = [&](const char* n) -> std::optional<std::string> {
    auto it = env.find(n);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  ASSERT_TRUE(ApplyEnvironment(*c, lookup));
  EXPECT_EQ(c->listeners.at(0).port, 7000);
  EXPECT_EQ(c->data_dir, "/tmp/x");
  EXPECT_EQ(c->threads, 3);
  env["GATEHOUSE_THREADS"] = "many";
  auto bad = ApplyEnvironment(*c, lookup);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("GATEHOUSE_THREADS"), std::string::npos);
}

TEST(Config, DefaultsAreValidAndServeTheDemo) {
  Config c = DefaultConfig();
  EXPECT_TRUE(Validate(c));
  EXPECT_EQ(c.listeners.at(0).port, 8080);
  EXPECT_EQ(c.demo.echo_listen, "127.0.0.1:8081");
  EXPECT_FALSE(c.routes.empty());
}

TEST(Config, RetiredAuditSigningKeysAreTheirJwksX) {
  Ed25519Signer old_key(Sha256("an old signing secret"));
  const std::string x = Base64UrlEncode(old_key.public_key().data(), old_key.public_key().size());
  auto c = ParseConfig(
      "[secrets]\naudit_signing_key_file = \"/etc/gatehouse/audit-signing\"\n"
      "[audit]\nretired_signing_keys = [\"" +
          x + "\"]\n",
      "gatehouse.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->previous_pepper.env, "GATEHOUSE_PREVIOUS_PEPPER");
  EXPECT_TRUE(c->previous_pepper.file.empty());  // unset: no pepper rotation under way
  EXPECT_EQ(c->next_pepper.env, "GATEHOUSE_NEXT_PEPPER");
  EXPECT_TRUE(c->next_pepper.file.empty());
  EXPECT_EQ(c->audit_signing_key.file, "/etc/gatehouse/audit-signing");
  EXPECT_EQ(c->audit_signing_key.env, "GATEHOUSE_AUDIT_SIGNING_KEY");
  ASSERT_EQ(c->audit.retired_signing_keys, std::vector<std::string>{x});
  EXPECT_EQ(c->audit.retired_signing_public_keys,
            std::vector<Ed25519PublicKey>{old_key.public_key()});
}

TEST(Config, SecretsComeFromEnvThenFile) {
  SecretSource s{"GH_TEST_PEPPER", "/nonexistent/pepper"};
  auto none = [](const char*) -> std::optional<std::string> { return std::nullopt; };
  EXPECT_FALSE(ReadSecret(s, none, "pepper"));
  auto set = [](const char*) -> std::optional<std::string> { return "from-env"; };
  EXPECT_EQ(*ReadSecret(s, set, "pepper"), "from-env");
}

}  // namespace
}  // namespace gatehouse

namespace gatehouse {
namespace {

TEST(ConfigAbuse, ARedissUrlMeansTls) {
  auto plain = ParseRedisUrl("redis://cache:6380");
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->tls);
  auto tls = ParseRedisUrl("rediss://[::1]:6390/");
  ASSERT_TRUE(tls) << tls.error().message;
  EXPECT_TRUE(tls->tls);
  EXPECT_EQ(tls->host, "::1");
  EXPECT_EQ(tls->port, 6390);
  EXPECT_FALSE(ParseRedisUrl("redisss://cache"));
  EXPECT_FALSE(ParseRedisUrl("rediss://user:pw@cache"));
}

TEST(ConfigAbuse, RateLimitsAndThreatRulesAreReadAndCheckedWithTheirLines) {
  auto c = ParseConfig(R"(
[rate_limits]
redis = "redis://127.0.0.1:6390"
per_key = { requests = 100, window = "1m", burst = 20 }
global = { requests = 5000, window = "1s", mode = "shadow" }
control_plane = { requests = 30, window = "1m" }
[threats]
invalid_keys = { threshold = 7, reaction = "notify", mode = "shadow" }
[[routes]]
name = "r"
path_prefix = "/api"
upstream = "http://127.0.0.1:9000"
rate_limit_per_principal = { requests = 60, window = "1m" }
)",
                       "t.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->rate_limits.per_key.requests, 100u);
  EXPECT_EQ(c->rate_limits.per_key.capacity(), 20u);
  EXPECT_TRUE(c->rate_limits.global.shadow);
  EXPECT_EQ(c->rate_limits.control_plane.requests, 30u);
  EXPECT_EQ(c->rate_limits.control_plane.window, 60'000'000);
  // Without a word in the file, every caller of the control plane is still held to 100/s.
  auto plain = ParseConfig("", "t.toml");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->rate_limits.control_plane.requests, 100u);
  EXPECT_EQ(plain->rate_limits.control_plane.capacity(), 200u);
  EXPECT_FALSE(plain->rate_limits.control_plane.shadow);
  EXPECT_EQ(c->threats.invalid_keys.threshold, 7);
  EXPECT_TRUE(c->threats.invalid_keys.shadow);
  EXPECT_EQ(c->routes[0].rate_limit_per_principal.requests, 60u);

  for (auto [text, where] : std::vector<std::pair<std::string, std::string>>{
           {"[rate_limits]\nper_key = { requests = 0, window = \"1m\" }\n",
            "t.toml:2: rate_limits.per_key"},
           {"[rate_limits]\nper_key = { requests = 5, window = \"1m\", oops = 1 }\n",
            "per_key.oops"},
           {"[rate_limits]\nredis = \"http://x\"\n", "t.toml:2: rate_limits.redis"},
           {"[rate_limits]\nredis = \"redis://:pw@host\"\n", "rate_limits.redis"},
           {"[rate_limits]\nredis = \"redis://h\"\nredis_tls_ca_file = \"/etc/hostname\"\n",
            "need a rediss:// URL"},
           {"[rate_limits]\nredis = \"rediss://h\"\nredis_tls_cert_file = \"/etc/hostname\"\n",
            "redis_tls_cert_file and redis_tls_key_file go together"},
           {"[rate_limits]\nredis = \"rediss://h\"\nredis_tls_ca_file = \"/nonexistent/ca.pem\"\n",
            "rate_limits.redis_tls_ca_file: cannot be read"},
           {"[threats]\ninvalid_keys = { threshold = 5, reaction = \"ban\" }\n",
            "invalid_keys.reaction"},
           {"[threats]\nblocked_status = 404\n", "threats.blocked_status"},
       }) {
    auto bad = ParseConfig(text, "t.toml");
    ASSERT_FALSE(bad) << text;
    EXPECT_NE(bad.error().message.find(where), std::string::npos) << bad.error().message;
  }
}

}  // namespace
}  // namespace gatehouse

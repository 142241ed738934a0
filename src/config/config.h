// gatehouse.toml, parsed and validated once at start into an immutable Config. Every setting and
// its default is declared here; gatehouse.example.toml at the repo root explains each one.
//
// Precedence: built-in defaults < file < environment (GATEHOUSE_*) < command-line flags.
// Secrets (the key pepper, the master key) never live in the file: it names an environment
// variable or a file to read them from.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/cidr.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/signing.h"
#include "limits/rate_policy.h"

namespace gatehouse {

using Millis = std::chrono::milliseconds;

class JsonSchema;

// A configured duration in the unit the domain and the stores count time in.
inline UnixMicros ToMicros(Millis m) { return static_cast<UnixMicros>(m.count()) * 1000; }

struct ListenerConfig {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;  // 0 picks a free port (tests)
  std::string tls_cert_file;  // both set: TLS; both empty: plain HTTP
  std::string tls_key_file;
  bool tls() const { return !tls_cert_file.empty(); }
};

struct LimitsConfig {
  std::size_t max_header_bytes = 16 * 1024;             // request line + headers -> 431
  std::size_t max_header_count = 100;                   // -> 431
  std::size_t max_url_bytes = 8 * 1024;                 // -> 414
  std::size_t max_body_bytes = 1024 * 1024;             // control-plane bodies -> 413
  std::size_t max_proxy_body_bytes = 64 * 1024 * 1024;  // bodies streamed to upstreams -> 413
  Millis idle_timeout{60'000};           // keep-alive wait for the next request's first byte
  Millis header_timeout{10'000};         // first byte to end of headers (slowloris bound) -> 408
  Millis body_timeout{30'000};           // whole request body -> 408
  Millis drain_timeout{10'000};          // graceful shutdown: in-flight requests get this long
  std::size_t max_connections = 10'000;  // per process; more are closed at accept
  std::size_t max_blocking_jobs = 1024;  // queued store calls before 503 unavailable
};

struct KeysConfig {
  std::string prefix = "sk";             // keys look like sk_live_...; e.g. "aiia_key"
  std::size_t cache_capacity = 100'000;  // verified keys kept in memory
  Millis negative_cache_ttl{30'000};     // well-formed but unknown keys remembered this long
  Millis usage_flush_interval{1'000};    // last_used_at is written in batches this often
};

// One upstream server of a route, from its URL.
struct UpstreamServer {
  std::string url;   // as written
  std::string host;  // a name or an IP address (IPv6 without brackets)
  std::uint16_t port = 80;
  std::string base_path;  // no trailing '/'
  std::string authority;  // the Host header: "host" or "host:port" ("[::1]:9000")
  std::string pool_key;   // which pooled connections can serve it
};

struct RouteConfig {
  std::string name;
  std::string path_prefix;           // longest matching prefix wins
  std::vector<std::string> methods;  // empty: any method
  // Where requests go: one URL (`upstream = "http://host:port[/base]"`, or https://), or several
  // (`upstream = ["http://a:9000", "http://b:9000"]`, one scheme), taken in turn per request.
  std::vector<std::string> upstream;
  std::vector<UpstreamServer> upstreams;  // derived, one per URL
  // https://: TLS to the upstream, its certificate verified against upstream_tls_ca_file (empty:
  // the system's CAs) for upstream_tls_server_name (empty: the URL's host).
  bool upstream_tls = false;  // derived
  std::string upstream_tls_ca_file;
  std::string upstream_tls_server_name;
  // A client certificate and key gatehouse presents, for upstreams that accept only it (mTLS):
  // then they know the identity headers came from gatehouse, wherever the network is.
  std::string upstream_tls_cert_file, upstream_tls_key_file;
  // A server that refused or dropped a new connection (or failed its TLS handshake) is passed
  // over for this long while the route has others that have not.
  Millis upstream_fail_timeout{10'000};
  // A server that answers this many requests in a row with 502, 503 or 504 (it is up, but what
  // is behind it is not) rests too, while the route has others. 0: never for answers.
  std::uint32_t upstream_max_failures = 5;
  // How a route with several servers picks one: in turn, or the one with the fewest requests in
  // flight (from every worker), which suits responses of very different lengths such as streamed
  // model output. Ties go in turn.
  enum class Balance { kRoundRobin, kLeastRequests };
  Balance upstream_balance = Balance::kRoundRobin;
  // Active health checks (empty path: none): every upstream_health_interval each server gets
  // `GET <path>` on a new connection and must answer 2xx or 3xx within upstream_health_timeout;
  // one that does not is left out of the turn until a check passes.
  std::string upstream_health_path;
  Millis upstream_health_interval{10'000};
  Millis upstream_health_timeout{2'000};
  std::vector<std::string> scopes;  // all required
  bool strip_prefix = false;        // drop path_prefix before appending to the base path
  bool forward_credential = false;  // pass the client's Authorization / X-API-Key upstream
  // Let a client's authenticated GET with `Upgrade: websocket` through: once the upstream
  // answers 101, bytes are relayed both ways until either side closes, or neither sends
  // anything for stream_idle_timeout.
  bool websocket = false;
  Millis connect_timeout{5'000};
  Millis response_timeout{60'000};      // request sent -> response headers
  Millis dns_refresh{30'000};           // upstream names are looked up again this often
  Millis stream_idle_timeout{300'000};  // between body bytes (long for SSE token streams)
  std::vector<std::pair<std::string, std::string>> add_headers;
  RatePolicy rate_limit;                // all callers of the route together
  RatePolicy rate_limit_per_principal;  // each key or user on this route
  std::uint32_t cost = 1;               // credits a request spends of a key's usage quota
  // Input validation at the edge: a request body needs one of these media types (415 otherwise;
  // empty: any), and may be at most this large (413; 0: limits.max_proxy_body_bytes).
  std::vector<std::string> content_types;
  std::size_t max_body_bytes = 0;
  // Request bodies must match this JSON Schema (draft-07, 2019-09 or 2020-12) before they leave for
  // the upstream (400 invalid_request with the pointer of the first violation). Written inline
  // (`json_schema`) or as a file (`json_schema_file`, relative to the config file's folder).
  std::shared_ptr<const JsonSchema> json_schema;
  std::uint32_t source_line = 0;  // where the route was written, for messages
};

struct SecretSource {
  std::string env;   // name of an environment variable holding the secret
  std::string file;  // path of a file holding it (trailing newline ignored)
};

struct LogConfig {
  std::string level = "info";  // trace, debug, info, warn, error
  bool access_log = true;      // one JSON line per request on stdout
};

struct AuditConfig {
  bool enabled = true;                 // record authentication decisions (changes always are)
  std::size_t queue_capacity = 65536;  // events waiting for the writer
  std::size_t max_batch = 8192;        // events per group commit
  std::string overflow = "reject";     // full queue: "reject" (503) or "drop" (counted)
  bool fsync = true;        // answer once events are on stable storage; false: once the OS has them
  std::string journal_dir;  // where events wait for the store; "": <data_dir>/audit-journal;
                            // a relative path is under data_dir
  Millis retention_interval{3'600'000};  // how often retention runs
  int system_retention_days = 30;        // the org-less "system" chain; 0: forever
  // Public keys (JWKS `x`) of signing keys rotated out: what they signed still verifies, and
  // /.well-known/jwks.json keeps publishing them.
  std::vector<std::string> retired_signing_keys;
  std::vector<Ed25519PublicKey> retired_signing_public_keys;  // derived
};

// Passwords (issue 5), after NIST SP 800-63B rev. 4 and OWASP's Argon2id guidance.
struct PasswordConfig {
  std::size_t min_length = 15;   // Unicode code points after NFC; never below 8
  std::size_t max_bytes = 1024;  // UTF-8 bytes after NFC: the stated upper bound (≥ 64 chars)
  // Common and breached passwords, one per line ('#!comment' lines skipped); empty: none.
  std::string blocklist_file = "/usr/share/john/password.lst";
  std::uint32_t argon2_memory_kib = 65536;  // 64 MiB; at least 19 MiB (OWASP)
  std::uint32_t argon2_iterations = 3;      // at least 2
  int hash_workers = 0;                     // concurrent hashes; 0: one per core
  std::size_t hash_queue = 32;              // hashes waiting; more get 503
};

struct SessionConfig {
  Millis idle_timeout{3'600'000};            // default inactivity limit; orgs may set theirs
  Millis absolute_lifetime{12 * 3'600'000};  // from sign-in, across refreshes
  Millis refresh_after{15 * 60'000};         // a token older than this should be refreshed
  Millis reauth_window{15 * 60'000};         // sensitive operations need a sign-in this recent
  Millis touch_interval{10'000};             // last-seen is written at most this often
  // A replaced token presented this soon after its refresh is refused without ending the
  // sign-in (a browser's requests in flight during a refresh); later, it ends the sign-in.
  Millis reuse_grace{10'000};
  Millis invitation_ttl{7 * 24 * 3'600'000};
  // Origins whose cookie requests may change state; empty: the request's own Host.
  std::vector<std::string> allowed_origins;
};

struct LoginConfig {
  int free_failures = 5;             // consecutive failures before delays start
  Millis max_lock{15 * 60'000};      // the longest an account is ever locked at a time
  int max_failures = 100;            // then password sign-in stops until an operator resets
  int address_free_failures = 10;    // per client address per window, then growing delays
  Millis address_max_delay{30'000};  // the longest of those delays
  int address_failures = 30;         // per client address per window, then a lock
  int stuffing_accounts = 5;         // distinct emails failing from one address per window
  Millis window{10 * 60'000};
  Millis address_lock{3'600'000};  // how long a stuffing address is blocked
};

// Abuse protection (issue 6). A policy with requests = 0 does not apply.
struct RateLimitsConfig {
  std::string redis;       // redis://host:port: limits shared by every node; empty: per node
  std::string redis_user;  // Redis 6+ ACL user; empty: the default user
  // With rediss:// only (RedisAddress): the CA bundle that signed Redis's certificate (empty:
  // the system's), the name that certificate must carry (empty: the URL's host), and a client
  // certificate and key for a Redis that requires one (tls-auth-clients).
  std::string redis_tls_ca_file, redis_tls_server_name, redis_tls_cert_file, redis_tls_key_file;
  // Redis's password (AUTH), never in the file: an environment variable or a file holding it.
  SecretSource redis_password{"GATEHOUSE_REDIS_PASSWORD", ""};
  Millis redis_timeout{50};  // a decision waits this long for Redis, then falls back locally
  int cluster_nodes = 0;     // nodes sharing the limits; 0: counted from Redis heartbeats
  std::size_t max_tracked = 2'000'000;  // subjects this node keeps limiter state for
  RatePolicy global;                    // every request through gatehouse together
  RatePolicy per_key;                   // each API key without its own rate_limit
  RatePolicy per_user;                  // each signed-in user
  RatePolicy per_org;                   // each org without its own rate_limit
  // Each caller (key or user) of the control plane (/v1/...), counted apart from its proxied
  // traffic: a script gone wrong, or a stolen admin key, cannot hammer the store with changes.
  RatePolicy control_plane{100, 1'000'000, 200, false};
};

// One threat-detection rule: what it reacts to, how, and whether only as a dry run.
struct ThreatRule {
  int threshold = 0;                // events from one subject within the window; 0: rule off
  std::string reaction = "record";  // "record" a security event, "notify" (recorded for
                                    // delivery), or "block" the address (and record)
  bool shadow = false;              // dry run: record what it would have done, do nothing else
};

// Threat detection (issue 6). Counts are in fixed windows, shared by the cluster when
// rate_limits.redis is set (limits/threat_detector.h), per node otherwise.
struct ThreatsConfig {
  Millis window{60'000};
  Millis block_duration{15 * 60'000};  // how long a "block" keeps an address out
  int blocked_status = 429;            // what a blocked address gets: 429 or 403
  // Refused credentials (401) from one address: key enumeration and guessing.
  ThreatRule invalid_keys{20, "block", false};
  // 401/403/429 answers to one address, and to one key.
  ThreatRule address_failures{200, "record", false};
  ThreatRule key_failures{200, "record", false};
  // A key used from a network (IPv4 /24, IPv6 /48) it was not seen on before (threshold 1).
  ThreatRule new_network{1, "record", false};
  std::size_t max_tracked = 200'000;  // addresses and keys followed per node
};

struct RedisAddress {
  std::string host;
  std::uint16_t port = 6379;
  std::string user;      // AUTH user (ACL); empty: the default user
  std::string password;  // AUTH password; empty: none
  // rediss://: TLS, the server's certificate verified against tls_ca_file (empty: the system's
  // trusted CAs) for tls_server_name (empty: the host), and tls_cert_file/tls_key_file
  // presented when the server asks for a client certificate.
  bool tls = false;
  std::string tls_ca_file, tls_cert_file, tls_key_file, tls_server_name;
};
// redis://host[:port] or rediss://host[:port] (TLS); no credentials in the URL: they come from
// redis_user and the password's secret source.
Result<RedisAddress> ParseRedisUrl(std::string_view url);
struct RateLimitsConfig;
// The cluster's Redis as configured: the URL's address with the ACL user and the TLS settings
// (the password, a secret, is the caller's to add). An error when rate_limits.redis is not set.
Result<RedisAddress> SharedRedisAddress(const RateLimitsConfig& config);

struct DemoConfig {
  // Serves the built-in echo upstream on this address inside the same process; empty: off.
  std::string echo_listen;
};

struct Config {
  std::string source = "(built-in defaults)";  // file name, for messages
  std::vector<ListenerConfig> listeners{ListenerConfig{}};
  int threads = 0;  // 0: one per core
  std::string data_dir = "./gatehouse-data";
  std::string storage;                          // empty: sqlite://<data_dir>/gatehouse.db
  int storage_connections = 4;                  // per process; also the store calls at once
  SecretSource pepper{"GATEHOUSE_PEPPER", ""};  // file default: <data_dir>/secrets/pepper
  // The pepper before the last rotation, while it lasts; unset (neither the variable nor a file):
  // none. API keys and passwords hashed with it still verify, and each moves to the current
  // pepper on its first use; sessions and invitations made under it stay valid.
  SecretSource previous_pepper{"GATEHOUSE_PREVIOUS_PEPPER", ""};
  // The pepper that becomes current once every node has it, announced first so that nodes can
  // switch one at a time; unset: none. What other nodes hashed with it verifies here, and stays.
  SecretSource next_pepper{"GATEHOUSE_NEXT_PEPPER", ""};
  SecretSource master_key{"GATEHOUSE_MASTER_KEY", ""};
  // The secret the audit signing key derives from (at least 32 characters); when neither is
  // set, the pepper. Its own, it can be rotated without touching API keys.
  SecretSource audit_signing_key{"GATEHOUSE_AUDIT_SIGNING_KEY", ""};
  // A bearer token for /metrics. Without one, /metrics answers loopback clients only.
  SecretSource metrics_token{"GATEHOUSE_METRICS_TOKEN", ""};
  std::vector<std::string> trusted_proxies;  // CIDRs whose X-Forwarded-For is believed
  std::vector<Cidr> trusted_proxy_cidrs;     // derived
  LimitsConfig limits;
  KeysConfig keys;
  std::vector<std::string> scopes;  // the catalogue; built-in permissions are always added
  std::vector<RouteConfig> routes;
  LogConfig log;
  AuditConfig audit;
  PasswordConfig passwords;
  SessionConfig sessions;
  LoginConfig login;
  RateLimitsConfig rate_limits;
  ThreatsConfig threats;
  DemoConfig demo;

  // storage is a postgres:// or postgresql:// URL (libpq's connection URI).
  bool UsesPostgres() const;
  // The SQLite path when storage is sqlite.
  std::string SqlitePath() const;
  std::string PepperFile() const;
  bool KnowsScope(std::string_view scope) const;
};

// Permissions that the control plane itself needs; always part of the catalogue.
const std::vector<std::string>& BuiltinPermissions();

// The configuration `gatehouse serve` uses with no file: one listener on 127.0.0.1:8080, demo
// routes under /api/ to the built-in echo upstream on 127.0.0.1:8081.
Config DefaultConfig();

using EnvLookup = std::function<std::optional<std::string>(const char*)>;
EnvLookup ProcessEnv();

// Parses TOML text; `source` names it in messages ("gatehouse.toml:12: routes[0].upstream: ...").
Result<Config> ParseConfig(std::string_view toml_text, std::string source);
Result<Config> LoadConfigFile(const std::string& path);

// GATEHOUSE_LISTEN, GATEHOUSE_DATA_DIR, GATEHOUSE_STORAGE, GATEHOUSE_THREADS,
// GATEHOUSE_LOG_LEVEL, GATEHOUSE_KEY_PREFIX, GATEHOUSE_ACCESS_LOG, GATEHOUSE_REDIS.
Result<void> ApplyEnvironment(Config& config, const EnvLookup& env);

// Checks everything that crosses settings (route prefixes against the control plane, scopes
// against the catalogue, TLS file pairs) and fills the derived fields.
Result<void> Validate(Config& config);

// "127.0.0.1:8080", "[::1]:8080".
Result<ListenerConfig> ParseListenAddress(std::string_view text);

// Reads a secret from its env var, else its file. kNotFound when neither is set or present.
Result<std::string> ReadSecret(const SecretSource& source, const EnvLookup& env,
                               std::string_view what);

}  // namespace gatehouse

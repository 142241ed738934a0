// gatehouse: flags -> config -> objects -> run. The only file that knows every module.
#include <CLI/CLI.hpp>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <fstream>
#include <future>
#include <iostream>
#include <optional>
#include <thread>

#include "api/control_plane.h"
#include "cli/app.h"
#include "cluster/node_registry.h"
#include "config/tls_check.h"
#include "core/crypto.h"
#include "core/heap_stats.h"
#include "core/random.h"
#include "core/time_format.h"
#include "demo/echo.h"
#include "http/server.h"
#include "limits/redis_limiter.h"
#include "limits/threat_detector.h"
#include "people/gateway_sessions.h"
#include "store/postgres/pg_store.h"

namespace gh = gatehouse;

namespace {

struct CommonFlags {
  std::string config_file;
  std::string data_dir;
  std::string storage;
};

void AddCommon(CLI::App* cmd, CommonFlags& f) {
  cmd->add_option("--config", f.config_file, "gatehouse.toml to read (default: built-in defaults)");
  cmd->add_option("--data-dir", f.data_dir, "data directory (overrides the file and env)");
  cmd->add_option("--storage", f.storage, "storage URL, e.g. sqlite:///var/lib/gatehouse/db");
}

int Die(const std::string& message) {
  std::fprintf(stderr, "gatehouse: %s\n", message.c_str());
  return 2;
}

gh::Result<std::shared_ptr<gh::Config>> LoadConfig(const CommonFlags& f,
                                                   const std::string& listen = "") {
  gh::Config c = gh::DefaultConfig();
  if (!f.config_file.empty()) {
    auto loaded = gh::LoadConfigFile(f.config_file);
    if (!loaded) return tl::unexpected(loaded.error());
    c = std::move(*loaded);
  }
  if (auto r = gh::ApplyEnvironment(c, gh::ProcessEnv()); !r) return tl::unexpected(r.error());
  if (!f.data_dir.empty()) c.data_dir = f.data_dir;
  if (!f.storage.empty()) c.storage = f.storage;
  if (!listen.empty()) {
    auto l = gh::ParseListenAddress(listen);
    if (!l) return tl::unexpected(l.error());
    c.listeners = {*l};
  }
  if (auto r = gh::Validate(c); !r) return tl::unexpected(r.error());
  return std::make_shared<gh::Config>(std::move(c));
}

void PrintIssued(const gh::NewOrgResult& r, bool json) {
  if (json) {
    boost::json::object o;
    o["org_id"] = r.org.id;
    o["org_name"] = r.org.name;
    o["key_id"] = r.owner_key.record.id;
    o["api_key"] = r.owner_key.secret;
    std::cout << boost::json::serialize(o) << std::endl;
    return;
  }
  std::cout << "Organization: " << r.org.name << " (" << r.org.id << ")\n"
            << "Owner API key (scope admin), shown once - store it now:\n\n  " << r.owner_key.secret
            << "\n"
            << std::endl;
}

boost::json::object KeyLine(const gh::KeyService& keys, const gh::ApiKeyRecord& k) {
  boost::json::object o;
  o["id"] = k.id;
  o["org_id"] = k.org_id;
  o["label"] = k.label;
  o["masked_key"] = keys.Masked(k);
  o["state"] = keys.State(k);
  boost::json::array scopes;
  for (const auto& s : k.scopes) scopes.emplace_back(s);
  o["scopes"] = std::move(scopes);
  o["environment"] = k.environment;
  o["expires_at"] = k.expires_at ? boost::json::value(gh::FormatRfc3339(*k.expires_at)) : nullptr;
  o["last_used_at"] =
      k.last_used_at ? boost::json::value(gh::FormatRfc3339(*k.last_used_at)) : nullptr;
  return o;
}

void PrintIssuedKey(const gh::KeyService& keys, const gh::IssuedKey& issued, bool json) {
  if (json) {
    auto o = KeyLine(keys, issued.record);
    o["key"] = issued.secret;
    std::cout << boost::json::serialize(o) << std::endl;
  } else {
    std::cout << issued.record.id << "\n" << issued.secret << std::endl;
  }
}

// Blocks for abuse reach every node: this node's go to Redis, the others' come back.
void ShareBlocks(gh::ThreatDetector& threats, gh::RedisLimiter* redis, gh::UnixMicros now) {
  if (!redis) return;
  gh::RedisLimiter::Blocks mine;
  for (auto& [ip, until] : threats.OwnBlocks()) mine.emplace_back(ip, until / 1000);
  auto all = redis->ExchangeBlocks(mine, now / 1000);
  if (!all) return;
  for (const auto& [ip, until_ms] : *all) {
    if (threats.AdoptBlock(ip, until_ms * 1000)) {
      spdlog::warn("security: blocking {} as another node of the cluster does", ip);
    }
  }
}

// Where `serve` keeps the audit journal.
// A relative journal_dir is under the data directory, not the working directory: every process
// on one data directory, and `audit verify`, must find the same slots to replay what another left.
std::filesystem::path AuditJournalDir(const gh::Config& config) {
  const std::filesystem::path data(config.data_dir);
  if (config.audit.journal_dir.empty()) return data / "audit-journal";
  const std::filesystem::path dir(config.audit.journal_dir);
  return dir.is_absolute() ? dir : data / dir;
}

int Serve(const std::shared_ptr<gh::Config>& config) {
  auto app = gh::App::Open(config, false);
  if (!app) return Die(app.error().message);
  gh::App& a = **app;
  spdlog::set_level(spdlog::level::from_str(config->log.level));

  gh::Router router;
  gh::Gateway gateway(config);
  gh::Metrics metrics;
  gh::Authenticator auth(*a.verifier, metrics, *a.clock);
  auth.SetSessionResolver(gh::GatewaySessionResolver(*a.sessions, *a.members, *a.accounts));
  auth.SetOrgPolicies(a.org_policies.get());
  std::string redis_password;
  if (auto pw = gh::ReadSecret(config->rate_limits.redis_password, gh::ProcessEnv(),
                               "the Redis password")) {
    redis_password = std::move(*pw);
  } else if (!config->rate_limits.redis_password.file.empty()) {
    return Die(pw.error().message);  // configured but unreadable: say so rather than ignore it
  }
  gh::LimitService limits(config->rate_limits, *a.clock, std::move(redis_password));
  limits.RegisterMetrics(metrics);
  metrics.AddReading("gatehouse_allowlist_shadow_refusals_total",
                     "Requests an org's shadow (dry-run) IP allowlist would have refused.",
                     "counter",
                     [&auth] { return static_cast<double>(auth.shadow_allowlist_refusals()); });
  if (gh::ReadHeapStats()) {  // on jemalloc (the release binary)
    metrics.AddReading(
        "gatehouse_heap_allocated_bytes",
        "Heap memory in use, as the allocator (jemalloc) counts it.", "gauge", [] {
          return static_cast<double>(gh::ReadHeapStats().value_or(gh::HeapStats{}).allocated_bytes);
        });
  }
  // The metrics token is optional: without it /metrics answers loopback clients only.
  std::string metrics_token;
  if (auto t = gh::ReadSecret(config->metrics_token, gh::ProcessEnv(), "the metrics token")) {
    if (t->size() < 16) return Die("the metrics token must be at least 16 characters");
    metrics_token = std::move(*t);
  } else if (!config->metrics_token.file.empty()) {
    return Die(t.error().message);  // configured but unreadable: say so rather than ignore it
  }
  // Security events go through the audit writer without holding up the request that caused
  // them; with the audit log off they are logged only.
  gh::AuditWriter* event_writer = nullptr;  // set once the writer exists, before serving
  gh::ThreatDetector threats(config->threats, *a.clock, [&event_writer](gh::AuditEvent e) {
    if (event_writer) (void)event_writer->Submit(std::move(e), [](bool) {});
  });
  gh::QuotaService quotas(*a.clock, [&event_writer](gh::AuditEvent e) {
    if (event_writer) (void)event_writer->Submit(std::move(e), [](bool) {});
  });
  metrics.AddReading("gatehouse_security_events_total", "Security events threat detection raised.",
                     "counter", [&threats] { return static_cast<double>(threats.events()); });
  metrics.AddReading("gatehouse_security_blocks_total", "Addresses blocked for abuse.", "counter",
                     [&threats] { return static_cast<double>(threats.blocks()); });
  metrics.AddReading("gatehouse_security_shadow_actions_total",
                     "What shadow (dry-run) detection rules would have done.", "counter",
                     [&threats] { return static_cast<double>(threats.shadow_actions()); });
  metrics.AddReading("gatehouse_security_blocked_requests_total",
                     "Requests refused because their address was blocked.", "counter",
                     [&threats] { return static_cast<double>(threats.blocked_requests()); });

  gh::ControlPlaneDeps deps{auth,
                            *a.keys,
                            *a.orgs,
                            *a.store,
                            gateway,
                            metrics,
                            *a.clock,
                            *a.audit,
                            *a.accounts,
                            *a.sessions,
                            *a.members,
                            *a.people,
                            std::move(metrics_token)};
  deps.policies = a.policies.get();
  deps.org_policies = a.org_policies.get();
  deps.verifier = a.verifier.get();
  deps.limits = &limits;
  deps.threats = &threats;
  deps.audit_journal_dir = AuditJournalDir(*config);
  quotas.ShareThrough(limits.redis());
  if (gh::RedisLimiter* redis = limits.redis()) {
    threats.ShareThrough(gh::ThreatDetector::Cluster{
        [redis](std::string key, std::int64_t window_ms, auto done) {
          redis->IncrementInWindow(std::move(key), window_ms, std::move(done));
        },
        [redis](std::string key, std::string member, std::int64_t ttl_ms, std::int64_t max,
                std::function<void(std::optional<gh::ThreatDetector::Cluster::Remembered>)> done) {
          redis->RememberMember(
              std::move(key), std::move(member), ttl_ms, max,
              [done = std::move(done)](std::optional<std::pair<bool, std::int64_t>> r) {
                if (!r) return done(std::nullopt);
                done(gh::ThreatDetector::Cluster::Remembered{r->first, r->second});
              });
        }});
    // Sign-ins run on the costly pool, where waiting for Redis holds up no connection.
    auto wait_for = [](auto start) {
      std::promise<std::optional<std::int64_t>> answer;
      auto got = answer.get_future();
      start([&answer](std::optional<std::int64_t> v) { answer.set_value(v); });
      return got.get();
    };
    a.login_guard->ShareThrough(gh::LoginGuard::Cluster{
        [redis, wait_for](std::string key, std::int64_t window_ms) {
          return wait_for([&](auto done) {
            redis->IncrementInWindow(std::move(key), window_ms, std::move(done));
          });
        },
        [redis, wait_for, max = config->login.stuffing_accounts](
            std::string key, std::string account, std::int64_t window_ms) {
          return wait_for([&](auto done) {
            redis->AddToWindowSet(std::move(key), std::move(account), window_ms, max,
                                  std::move(done));
          });
        },
        [redis](std::string key, gh::UnixMicros until) {
          redis->KeepUntil(std::move(key), until / 1000);
        },
        [redis, wait_for](std::string key) -> std::optional<gh::UnixMicros> {
          auto ms = wait_for([&](auto done) { redis->ReadUntil(std::move(key), std::move(done)); });
          if (!ms) return std::nullopt;
          return *ms * 1000;
        }});
  }
  deps.quotas = &quotas;
  gh::RegisterControlPlane(router, std::move(deps));
  gh::PasswordHasher* hasher = a.hasher.get();
  metrics.AddReading("gatehouse_password_hashes_rejected_total",
                     "Sign-ins refused (503) because the password hashing queue was full.",
                     "counter", [hasher] { return static_cast<double>(hasher->rejected()); });
  gh::KeyVerifier* verifier = a.verifier.get();
  metrics.AddReading("gatehouse_keys_rehashed_total",
                     "API keys moved from the previous pepper to the current one by this process.",
                     "counter",
                     [verifier] { return static_cast<double>(verifier->keys_rehashed()); });
  metrics.AddFamily(
      "gatehouse_pepper",
      "1 for each pepper this node holds, by role (current, previous, next) and fingerprint: "
      "before any node switches to a new pepper, every node shows it as next.",
      "gauge", [fingerprints = a.pepper_fingerprints] {
        gh::Metrics::LabeledValues out;
        for (const auto& [role, fingerprint] :
             {std::pair{"current", fingerprints.current},
              std::pair{"previous", fingerprints.previous}, std::pair{"next", fingerprints.next}}) {
          if (fingerprint.empty()) continue;
          out.emplace_back(gh::Metrics::Label("role", role) + "," +
                               gh::Metrics::Label("fingerprint", fingerprint),
                           1.0);
        }
        return out;
      });
  gh::NodeRepository node_rows(*a.store);
  gh::NodeRegistry nodes(
      node_rows, *a.clock,
      gh::NodeRecord{"node_" + gh::RandomBase62(16), gh::HostName(), ::getpid(), gh::PidNamespace(),
                     0, 0, a.pepper_fingerprints.current, a.pepper_fingerprints.previous,
                     a.pepper_fingerprints.next, config->keys.prefix},
      {});
  metrics.AddReading("gatehouse_node_conflicts",
                     "Live nodes sharing this store that refuse what this node makes, or whose "
                     "keys and sessions this node refuses: another key prefix, or peppers that "
                     "do not agree.",
                     "gauge", [&nodes] { return static_cast<double>(nodes.conflicts()); });
  std::unique_ptr<gh::AuditWriter> audit_writer;
  if (config->audit.enabled) {
    gh::AuditWriterOptions ao;
    ao.capacity = config->audit.queue_capacity;
    ao.max_batch = config->audit.max_batch;
    ao.fsync = config->audit.fsync;
    ao.overflow = config->audit.overflow == "drop" ? gh::AuditWriterOptions::Overflow::kDrop
                                                   : gh::AuditWriterOptions::Overflow::kReject;
    // Which durable point a request waits for, as measured (bench/RESULTS.md,
    // docs/architecture.md): on SQLite with fsync, the store's own group commit beats the journal's
    // fdatasync; on PostgreSQL a local fdatasync beats a commit over the network (and keeps
    // decisions while the database is away); without fsync, one write() to the journal beats both.
    if (!config->audit.fsync || config->UsesPostgres()) ao.journal_dir = AuditJournalDir(*config);
    auto opened = gh::AuditWriter::Open(*a.store, ao);
    if (!opened) return Die(opened.error().message);
    audit_writer = std::move(*opened);
    a.audit->SetCatchUp([w = audit_writer.get()] { (void)w->CatchUp(std::chrono::seconds(2)); });
    gh::AuditWriter* w = audit_writer.get();
    metrics.AddReading(
        "gatehouse_audit_queue_depth",
        "Audit events recorded but not yet in the store (queued, or in the journal).", "gauge",
        [w] { return static_cast<double>(w->queue_depth()); });
    metrics.AddReading("gatehouse_audit_queue_capacity",
                       "Audit events on their way to the store at most; past it, 503.", "gauge",
                       [cap = ao.capacity] { return static_cast<double>(cap); });
    metrics.AddReading("gatehouse_audit_events_written_total",
                       "Audit events stored in the database.", "counter",
                       [w] { return static_cast<double>(w->written()); });
    metrics.AddReading("gatehouse_audit_batches_total", "Audit group commits.", "counter",
                       [w] { return static_cast<double>(w->batches()); });
    metrics.AddReading("gatehouse_audit_events_rejected_total",
                       "Requests refused (503) because the audit queue was full.", "counter",
                       [w] { return static_cast<double>(w->rejected()); });
    metrics.AddReading("gatehouse_audit_events_dropped_total",
                       "Audit events dropped because the queue was full (overflow = drop).",
                       "counter", [w] { return static_cast<double>(w->dropped()); });
    metrics.AddReading("gatehouse_audit_events_failed_total",
                       "Audit events the store would not take (their requests got 503).", "counter",
                       [w] { return static_cast<double>(w->failed()); });
    metrics.AddReading("gatehouse_audit_events_set_aside_total",
                       "Answered requests' events the store refused for good, kept in the audit "
                       "journal's quarantine.jsonl instead.",
                       "counter", [w] { return static_cast<double>(w->set_aside()); });
  }
  metrics.AddReading("gatehouse_key_cache_hits_total", "Key verifications answered from memory.",
                     "counter", [verifier] { return static_cast<double>(verifier->cache_hits()); });
  metrics.AddReading("gatehouse_key_cache_misses_total", "Key verifications that asked the store.",
                     "counter",
                     [verifier] { return static_cast<double>(verifier->cache_misses()); });
  metrics.AddReading("gatehouse_key_cache_entries", "Keys held in the verification cache.", "gauge",
                     [verifier] { return static_cast<double>(verifier->cache_size()); });

  event_writer = audit_writer.get();

  std::unique_ptr<gh::Server> demo;
  gh::Router demo_router;
  gh::Metrics demo_metrics;
  if (!config->demo.echo_listen.empty()) {
    gh::RegisterEchoRoutes(demo_router);
    gh::Server::Parts dp;
    dp.config = config;
    dp.router = &demo_router;
    dp.metrics = &demo_metrics;
    dp.listeners = {*gh::ParseListenAddress(config->demo.echo_listen)};
    dp.threads = 1;
    dp.blocking_threads = 1;
    dp.access_log = false;
    demo = std::make_unique<gh::Server>(dp);
    if (auto r = demo->Start(); !r) return Die("demo upstream: " + r.error().message);
  }

  gh::Server::Parts parts;
  parts.config = config;
  parts.router = &router;
  parts.gateway = &gateway;
  parts.authenticator = &auth;
  parts.limits = &limits;
  parts.threats = &threats;
  parts.quotas = &quotas;
  parts.metrics = &metrics;
  parts.audit = audit_writer.get();
  parts.listeners = config->listeners;
  parts.access_log = config->log.access_log;
  parts.blocking_threads = config->storage_connections;  // one store call per connection
  // Sign-ins wait on the hashing pool: twice its workers keep it busy, and its queue bounds them.
  int hash_workers = config->passwords.hash_workers > 0
                         ? config->passwords.hash_workers
                         : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  parts.costly_threads = 2 * hash_workers;
  parts.max_costly_jobs = config->passwords.hash_queue + static_cast<std::size_t>(hash_workers);
  gh::Server server(parts);
  if (auto r = verifier->SyncInvalidations(); !r) return Die(r.error().message);
  // Before listening: a node whose peppers cannot verify what the others make would fail
  // their callers without saying why.
  if (auto r = nodes.Join(); !r) return Die(r.error().message);
  if (auto r = server.Start(); !r) {
    nodes.Leave();
    return Die(r.error().message);
  }
  auto ports = server.ports();
  for (std::size_t i = 0; i < ports.size(); ++i) {
    const auto& l = config->listeners[i];
    spdlog::info("gatehouse listening on {}://{}:{}", l.tls() ? "https" : "http", l.host, ports[i]);
    // One machine-readable line for scripts and tests that start with port 0.
    std::printf("{\"listening\":\"%s:%u\",\"tls\":%s}\n", l.host.c_str(), ports[i],
                l.tls() ? "true" : "false");
  }
  if (demo) spdlog::info("demo echo upstream on http://{}", config->demo.echo_listen);
  std::fflush(stdout);

  // Revocations from other nodes, pushed as they commit where the store can (PostgreSQL);
  // the 100 ms poll below is the backstop.
  std::atomic<bool> stop_watching{false};
  std::thread watcher([&] {
    a.store->WatchKeyInvalidations(
        [verifier](std::string_view hash) { verifier->Invalidate(hash); }, stop_watching);
  });

  const auto tick = gh::Millis(100);
  const long flush_every = std::max<long>(1, config->keys.usage_flush_interval.count() / 100);
  long ticks = 0;
  const long retention_every =
      std::max<long>(1, static_cast<long>(config->audit.retention_interval.count() / 100));
  server.RunUntilSignalled(
      [&] {
        if (ticks % 10 == 0) {  // once a second
          nodes.Tick();
          limits.Housekeep();
          threats.Sweep();
          ShareBlocks(threats, limits.redis(), a.clock->Now());
          if (auto r = quotas.Flush(*a.policies); !r) {
            spdlog::warn("usage quota flush failed: {}", r.error().message);
          }
        }
        if (++ticks % retention_every == 0) {
          if (auto r = a.audit->ApplyAllRetention(); !r)
            spdlog::warn("audit retention failed: {}", r.error().message);
          else if (*r > 0)
            spdlog::info("audit retention removed {} events", *r);
          // Dead sessions and forgotten sign-in failures go on the same schedule.
          constexpr gh::UnixMicros kForgetFailures = 30LL * 86400 * gh::kMicrosPerSecond;
          if (auto p = a.people->PruneExpired(a.clock->Now(), kForgetFailures,
                                              config->login.max_failures);
              !p) {
            spdlog::warn("session housekeeping failed: {}", p.error().message);
          }
        }
        if (auto r = verifier->SyncInvalidations(); !r) {
          spdlog::warn("revocation sync failed: {}", r.error().message);
        }
        if (ticks % flush_every == 0) {
          if (auto r = verifier->FlushUsage(); !r)
            spdlog::warn("key usage flush failed: {}", r.error().message);
        }
      },
      tick);
  nodes.Leave();
  stop_watching.store(true);
  watcher.join();
  // Redis answers run the quota service's and threat detector's callbacks, which may submit
  // events: end them first, while both and the audit writer are still there.
  limits.StopSharing();
  if (audit_writer) audit_writer->Stop();  // after the server: in-flight requests wait on it
  (void)verifier->FlushUsage();
  (void)quotas.Flush(*a.policies);
  if (demo) demo->Shutdown();
  spdlog::info("gatehouse stopped");
  return 0;
}

// `gatehouse audit verify`: every org's chain, plus the org-less "system" chain.
// JSON lines, a page at a time, so that memory stays flat for any chain.
int ExportAudit(gh::App& a, const std::string& org, std::int64_t after_seq) {
  auto replayed = gh::ReplayLeftJournals(*a.store, AuditJournalDir(*a.config), nullptr);
  if (!replayed) return Die(replayed.error().message);
  for (;;) {
    auto page = a.audit->ChainPage(org, after_seq);
    if (!page) return Die(org + ": " + page.error().message);
    for (const auto& e : *page) std::cout << boost::json::serialize(gh::AuditEventJson(e)) << '\n';
    if (static_cast<int>(page->size()) < gh::AuditService::kChainPage) break;
    after_seq = page->back().seq;
  }
  std::cout.flush();
  return std::cout ? 0 : 2;
}

int RequeueAudit(gh::App& a) {
  const auto root = AuditJournalDir(*a.config);
  auto r = gh::RequeueSetAside(*a.store, root);
  if (!r) return Die(r.error().message);
  if (r->stored + r->already + r->kept > 0) {
    // The operator's act is on record too, in the operator's chain.
    std::vector<gh::AuditEvent> event{gh::AuditSource{}.Event(
        "system", "audit.requeue", "file:" + gh::QuarantineFile(root).string(), 0, a.clock->Now())};
    event.front().details = gh::DetailsOf({{"stored", std::to_string(r->stored)},
                                           {"already_stored", std::to_string(r->already)},
                                           {"kept", std::to_string(r->kept)}});
    if (auto e = a.store->AppendAudit(event, {}, true); !e) return Die(e.error().message);
  }
  std::cout << "requeued " << r->stored << " events into their chains; " << r->kept << " remain in "
            << gh::QuarantineFile(root).string() << "\n";
  if (r->already > 0) {
    std::cout << "  " << r->already
              << " were in their chains already (stored by a requeue that was cut short), and "
                 "left the file\n";
  }
  for (const auto& why : r->refusals) std::cout << "  refused: " << why << "\n";
  std::cout.flush();
  return r->kept == 0 ? 0 : 1;
}

int VerifyAudit(gh::App& a, const std::string& only_org, bool json,
                const std::string& anchor_file) {
  std::optional<gh::SignedAuditStatement> anchor;
  if (!anchor_file.empty()) {
    std::ifstream in(anchor_file, std::ios::binary);
    if (!in) return Die(anchor_file + ": cannot read the anchor");
    std::string text(64 * 1024 + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<std::size_t>(in.gcount()));
    if (text.size() > 64 * 1024) return Die(anchor_file + ": an anchor is not that long");
    auto read = gh::ReadAuditAnchor(text, true);
    if (!read) return Die(anchor_file + ": " + read.error().message);
    anchor = std::move(*read);
  }
  // Events journaled by a process that is gone belong in the log before it is judged; slots of
  // running servers are theirs, and skipped.
  auto replayed = gh::ReplayLeftJournals(*a.store, AuditJournalDir(*a.config), nullptr);
  if (!replayed) return Die(replayed.error().message);
  std::vector<std::string> orgs;
  if (!only_org.empty()) {
    orgs.push_back(only_org);
  } else {
    auto list = a.store->ListOrgs();
    if (!list) return Die(list.error().message);
    for (const auto& o : *list) orgs.push_back(o.id);
    orgs.push_back("system");
  }
  // Events the store refused for good are not in any chain; the report names how many each org
  // has in the quarantine file, so that they are not missed.
  const auto set_aside = gh::CountSetAside(AuditJournalDir(*a.config));
  bool all_intact = true;
  for (const auto& org : orgs) {
    auto r = a.audit->Verify(org, anchor ? &*anchor : nullptr);
    if (!r) return Die(org + ": " + r.error().message);
    all_intact = all_intact && r->intact;
    const auto aside = set_aside.find(org);
    const std::size_t aside_count = aside == set_aside.end() ? 0 : aside->second;
    const std::string aside_note =
        aside_count == 0 ? ""
                         : "; " + std::to_string(aside_count) + " events set aside in " +
                               gh::QuarantineFile(AuditJournalDir(*a.config)).string();
    if (json) {
      boost::json::object o = gh::AuditVerifyReportJson(*r);
      o["org_id"] = org;
      o["set_aside"] = aside_count;
      std::cout << boost::json::serialize(o) << "\n";
    } else if (r->intact) {
      std::cout << org << ": intact, " << r->verified << " events verified (seq "
                << r->checkpoint_seq + 1 << "-" << r->head_seq << ")"
                << (r->anchor ? "; the anchor is " + *r->anchor : "") << aside_note << "\n";
    } else {
      std::cout << org << ": BROKEN at event " << *r->broken_at << ": " << r->reason << aside_note
                << "\n";
    }
  }
  std::cout.flush();
  return all_intact ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Diagnostics go to stderr; stdout carries command output (--json) and the access log.
  spdlog::set_default_logger(spdlog::stderr_logger_mt("gatehouse"));
  spdlog::set_pattern("{\"ts\":\"%Y-%m-%dT%H:%M:%S.%fZ\",\"level\":\"%l\",\"msg\":\"%v\"}",
                      spdlog::pattern_time_type::utc);
  CLI::App cli{"gatehouse: API security gateway and identity service"};
  cli.require_subcommand(1);
  CommonFlags common;

  auto* serve = cli.add_subcommand("serve", "run the server");
  AddCommon(serve, common);
  std::string listen;
  serve->add_option("--listen", listen,
                    "HOST:PORT to listen on (replaces the configured listeners)");

  auto* init = cli.add_subcommand("init", "create the data directory, first org and owner key");
  AddCommon(init, common);
  std::string org_name = "Default";
  bool json = false;
  init->add_option("--org-name", org_name, "name of the first organization");
  init->add_flag("--json", json, "print {\"org_id\",\"api_key\"} as JSON");
  std::string owner_email;
  init->add_option("--owner-email", owner_email,
                   "also create the owner user (password from GATEHOUSE_OWNER_PASSWORD, or "
                   "generated and printed once)");

  auto* config_cmd = cli.add_subcommand("config", "configuration tools");
  config_cmd->require_subcommand(1);
  auto* check = config_cmd->add_subcommand("check", "validate a configuration file");
  AddCommon(check, common);

  auto* orgs = cli.add_subcommand("orgs", "manage organizations");
  orgs->require_subcommand(1);
  auto* orgs_create = orgs->add_subcommand("create", "create an org and its owner key");
  AddCommon(orgs_create, common);
  std::string new_org;
  orgs_create->add_option("name", new_org, "organization name")->required();
  orgs_create->add_flag("--json", json, "print JSON");
  auto* orgs_list = orgs->add_subcommand("list", "list organizations");
  AddCommon(orgs_list, common);

  auto* migrate = cli.add_subcommand(
      "migrate", "PostgreSQL: apply migrations as the owner and set up the application role");
  AddCommon(migrate, common);
  std::string app_role;
  migrate
      ->add_option("--app-role", app_role,
                   "login role the server connects as (created or tightened); its password, "
                   "if any, comes from GATEHOUSE_APP_ROLE_PASSWORD")
      ->required();

  auto* keys = cli.add_subcommand("keys", "manage API keys");
  keys->require_subcommand(1);
  std::string org, key_id, label, env = "live", expires_in, grace = "24h";
  std::int64_t after_seq = 0;
  std::vector<std::string> scopes, allow;
  auto* kc = keys->add_subcommand("create", "create a key (printed once)");
  AddCommon(kc, common);
  kc->add_option("--org", org, "organization id")->required();
  kc->add_option("--label", label, "what the key is for")->required();
  kc->add_option("--scope", scopes, "a scope to grant (repeatable)");
  kc->add_option("--env", env, "live or test");
  kc->add_option("--expires-in", expires_in, "lifetime such as 30d, 90d, 1y");
  kc->add_option("--ip", allow, "allowed CIDR (repeatable)");
  kc->add_flag("--json", json, "print JSON");
  auto* kl = keys->add_subcommand("list", "list keys (masked), one JSON object a line");
  AddCommon(kl, common);
  bool all_orgs = false;
  std::string unused_since;
  auto* kl_org = kl->add_option("--org", org, "organization id");
  auto* kl_all = kl->add_flag("--all-orgs", all_orgs, "the keys of every organization");
  kl_org->excludes(kl_all);
  kl->add_option("--unused-since", unused_since,
                 "only active keys not used since this RFC 3339 time (during a pepper rotation, "
                 "since the last node switched: the keys that have not moved)");
  auto* kr = keys->add_subcommand("revoke", "revoke a key now");
  AddCommon(kr, common);
  kr->add_option("--org", org, "organization id")->required();
  kr->add_option("key_id", key_id, "key id")->required();
  auto* kro = keys->add_subcommand("rotate", "issue a replacement; the old key lives for --grace");
  AddCommon(kro, common);
  kro->add_option("--org", org, "organization id")->required();
  kro->add_option("key_id", key_id, "key id")->required();
  kro->add_option("--grace", grace, "how long the old key keeps working (0s to 30d)");
  kro->add_flag("--json", json, "print JSON");

  auto* audit = cli.add_subcommand("audit", "the audit log");
  audit->require_subcommand(1);
  auto* audit_verify = audit->add_subcommand(
      "verify", "check every org's hash chain (or --org's); exits 1 when a chain is broken");
  AddCommon(audit_verify, common);
  audit_verify->add_option("--org", org, "only this organization (\"system\": org-less events)");
  audit_verify->add_flag("--json", json, "print one JSON report per org");
  std::string anchor_file;
  audit_verify
      ->add_option("--anchor", anchor_file,
                   "a signed_head kept from an earlier verify of --org (a JSON file); "
                   "the chain must still hold it")
      ->needs(audit_verify->get_option("--org"));
  auto* audit_export = audit->add_subcommand(
      "export",
      "print an organization's audit chain as JSON lines, oldest first (\"system\": "
      "the org-less events, such as refused credentials that name no org)");
  AddCommon(audit_export, common);
  audit_export->add_option("--org", org, "organization id, or \"system\"")->required();
  audit_export->add_option("--after-seq", after_seq, "only events after this sequence number");
  auto* audit_prune = audit->add_subcommand(
      "prune", "apply every org's audit retention now (the server also does this hourly)");
  AddCommon(audit_prune, common);
  auto* audit_requeue = audit->add_subcommand(
      "requeue",
      "offer the events this node's audit journal set aside (quarantine.jsonl) to the database "
      "again, once the cause is fixed; exits 1 while some remain");
  AddCommon(audit_requeue, common);

  auto* users = cli.add_subcommand("users", "manage people's accounts");
  users->require_subcommand(1);
  std::string email, user_name, member_role = "viewer";
  bool password_stdin = false;
  auto* uc = users->add_subcommand(
      "create",
      "create a user (password from GATEHOUSE_USER_PASSWORD, --password-stdin, or "
      "generated and printed once)");
  AddCommon(uc, common);
  uc->add_option("email", email, "email address")->required();
  uc->add_option("--name", user_name, "display name");
  uc->add_option("--org", org, "also make the user a member of this org");
  uc->add_option("--role", member_role, "their role there (default viewer)");
  uc->add_flag("--password-stdin", password_stdin,
               "read the password from the first line of stdin");
  uc->add_flag("--json", json, "print JSON");
  auto* ul = users->add_subcommand("list", "list users");
  AddCommon(ul, common);
  auto* up = users->add_subcommand(
      "passwd", "set a user's password (ends their sessions and clears sign-in locks)");
  AddCommon(up, common);
  up->add_option("email", email, "email address")->required();
  up->add_flag("--password-stdin", password_stdin,
               "read the password from the first line of stdin");
  auto* ud = users->add_subcommand("disable", "disable a user and end their sessions");
  AddCommon(ud, common);
  ud->add_option("email", email, "email address")->required();
  auto* uu = users->add_subcommand("unlock", "clear a user's failed sign-in count and lock");
  AddCommon(uu, common);
  uu->add_option("email", email, "email address")->required();

  auto* nodes = cli.add_subcommand("nodes", "the serving nodes that share this store");
  nodes->require_subcommand(1);
  auto* nodes_list = nodes->add_subcommand(
      "list",
      "list the live nodes, the fingerprints of the peppers each holds (a pepper rotation's "
      "next step is safe once they agree) and the key prefix each makes");
  AddCommon(nodes_list, common);

  CLI11_PARSE(cli, argc, argv);

  if (check->parsed()) {
    auto c = LoadConfig(common);
    if (!c) return Die(c.error().message);
    if (auto tls = gh::CheckTlsMaterial(**c); !tls) {
      return Die((*c)->source + ": " + tls.error().message);
    }
    std::printf("%s: OK (%zu listener(s), %zu route(s))\n", (*c)->source.c_str(),
                (*c)->listeners.size(), (*c)->routes.size());
    return 0;
  }
  auto config = LoadConfig(common, serve->parsed() ? listen : "");
  if (!config) return Die(config.error().message);
  if (migrate->parsed()) {
    if (!(*config)->UsesPostgres()) {
      return Die(
          "migrate is for PostgreSQL: give --storage postgres://OWNER@HOST/DB (SQLite "
          "migrates itself on open)");
    }
    const char* password = std::getenv("GATEHOUSE_APP_ROLE_PASSWORD");
    auto r = gh::PgStore::Migrate((*config)->storage, app_role, password ? password : "");
    if (!r) return Die(r.error().message);
    std::fputs(r->c_str(), stdout);
    return 0;
  }
  spdlog::set_level(spdlog::level::from_str((*config)->log.level));
  if (serve->parsed()) {
    if (auto tls = gh::CheckTlsMaterial(**config); !tls) {
      return Die((*config)->source + ": " + tls.error().message);
    }
    return Serve(*config);
  }

  auto app = gh::App::Open(*config, init->parsed());
  if (!app) return Die(app.error().message);
  gh::App& a = **app;

  // A password for a new account: from the environment, stdin, or made here and shown once.
  auto obtain_password = [&](const char* env_name, bool& generated) -> std::string {
    if (const char* p = std::getenv(env_name); p && *p) return p;
    if (password_stdin) {
      std::string line;
      std::getline(std::cin, line);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    generated = true;
    return gh::RandomBase62(24);
  };
  if (init->parsed()) {
    auto r = a.orgs->Bootstrap(org_name);
    if (!r) {
      if (r.error().code == gh::ErrorCode::kAlreadyExists) {
        auto existing = a.store->BootstrapOrgId();
        std::string id = existing && *existing ? **existing : "?";
        if (json) {
          std::cout << "{\"org_id\":\"" << id << "\",\"already_initialized\":true}" << std::endl;
        } else {
          std::cout << "Already initialised (organization " << id
                    << "); nothing was changed. The owner key was shown when it was created."
                    << std::endl;
        }
        return 0;
      }
      return Die(r.error().message);
    }
    PrintIssued(*r, json);
    if (!owner_email.empty()) {
      bool generated = false;
      std::string password = obtain_password("GATEHOUSE_OWNER_PASSWORD", generated);
      auto user = a.accounts->CreateUser(owner_email, password, "", {}, {r->org.name});
      if (!user) return Die("owner user: " + user.error().message);
      if (auto m = a.members->AddMember(r->org.id, user->id, "owner", {}); !m) {
        return Die("owner membership: " + m.error().message);
      }
      if (json) {
        boost::json::object o{{"user_id", user->id}, {"email", user->email}};
        if (generated) o["password"] = password;
        std::cout << boost::json::serialize(o) << std::endl;
      } else {
        std::cout << "Owner user: " << user->email << " (" << user->id << ")\n";
        if (generated) {
          std::cout << "Owner password, shown once - store it now:\n\n  " << password << "\n"
                    << std::endl;
        }
      }
      gh::SecureZero(password);
    }
    return 0;
  }
  if (uc->parsed()) {
    bool generated = false;
    std::string password = obtain_password("GATEHOUSE_USER_PASSWORD", generated);
    std::vector<std::string> context;
    if (!org.empty()) {
      auto o = a.orgs->Get(org);
      if (!o) return Die("--org: " + o.error().message);
      context.push_back(o->name);
    }
    auto user = a.accounts->CreateUser(email, password, user_name, {}, context);
    if (!user) return Die(user.error().message);
    if (!org.empty()) {
      if (auto m = a.members->AddMember(org, user->id, member_role, {}); !m) {
        return Die("membership: " + m.error().message);
      }
    }
    if (json) {
      boost::json::object o{{"user_id", user->id}, {"email", user->email}};
      if (generated) o["password"] = password;
      std::cout << boost::json::serialize(o) << std::endl;
    } else {
      std::cout << user->id << "\t" << user->email << "\n";
      if (generated) std::cout << "password (shown once): " << password << "\n";
    }
    gh::SecureZero(password);
    return 0;
  }
  if (nodes_list->parsed()) {
    const auto lapse = std::chrono::duration_cast<std::chrono::microseconds>(
                           gh::NodeRegistry::Options{}.lapse_after)
                           .count();
    auto live = gh::NodeRepository(*a.store).SeenSince(a.clock->Now() - lapse);
    if (!live) return Die(live.error().message);
    auto or_none = [](std::string_view value) {
      return value.empty() ? std::string("none") : std::string(value);
    };
    for (const auto& n : *live) {
      std::cout << n.id << "\t" << n.host << "\t" << n.pid << "\tstarted "
                << gh::FormatRfc3339(n.started_at) << "\tseen " << gh::FormatRfc3339(n.seen_at)
                << "\tpepper:" << or_none(n.pepper) << "\tprevious:" << or_none(n.previous_pepper)
                << "\tnext:" << or_none(n.next_pepper) << "\tkey_prefix:" << or_none(n.key_prefix)
                << "\n";
    }
    return 0;
  }
  if (ul->parsed()) {
    auto list = a.accounts->List();
    if (!list) return Die(list.error().message);
    // The last column names the pepper the password is keyed with (gatehouse_pepper on
    // /metrics names a node's): during a rotation, who has not signed in on a switched node.
    for (const auto& u : *list) {
      const std::string_view pepper = gh::PasswordHasher::PepperOf(u.password_hash);
      std::cout << u.id << "\t" << u.email << "\t" << (u.disabled_at ? "disabled" : "active")
                << "\t" << (u.last_login_at ? gh::FormatRfc3339(*u.last_login_at) : "never")
                << "\tpepper:" << (pepper.empty() ? "unnamed" : pepper) << "\n";
    }
    return 0;
  }
  if (up->parsed()) {
    bool generated = false;
    std::string password = obtain_password("GATEHOUSE_USER_PASSWORD", generated);
    auto user = a.accounts->SetPassword(email, password, {});
    if (!user) return Die(user.error().message);
    std::cout << "password set for " << user->email << "; their sessions ended\n";
    if (generated) std::cout << "password (shown once): " << password << "\n";
    gh::SecureZero(password);
    return 0;
  }
  if (ud->parsed()) {
    auto user = a.accounts->Disable(email, {});
    if (!user) return Die(user.error().message);
    std::cout << "disabled " << user->email << "; their sessions ended\n";
    return 0;
  }
  if (uu->parsed()) {
    if (auto r = a.accounts->Unlock(email); !r) return Die(r.error().message);
    std::cout << "unlocked " << email << "\n";
    return 0;
  }
  if (orgs_create->parsed()) {
    auto r = a.orgs->Create(new_org);
    if (!r) return Die(r.error().message);
    PrintIssued(*r, json);
    return 0;
  }
  if (orgs_list->parsed()) {
    auto r = a.orgs->List();
    if (!r) return Die(r.error().message);
    for (const auto& o : *r) std::cout << o.id << "\t" << o.name << "\n";
    return 0;
  }
  if (audit_verify->parsed()) return VerifyAudit(a, org, json, anchor_file);
  if (audit_export->parsed()) return ExportAudit(a, org, after_seq);
  if (audit_requeue->parsed()) return RequeueAudit(a);
  if (audit_prune->parsed()) {
    auto r = a.audit->ApplyAllRetention();
    if (!r) return Die(r.error().message);
    std::cout << "pruned " << *r << " audit events" << std::endl;
    return 0;
  }
  auto op = gh::KeyService::Operator(org);
  if (kc->parsed()) {
    gh::NewKeyParams p;
    p.label = label;
    p.scopes = scopes;
    p.environment = env;
    if (!expires_in.empty()) p.expires_in = expires_in;
    p.ip_allowlist = allow;
    auto r = a.keys->Create(op, org, p);
    if (!r) return Die(r.error().message);
    PrintIssuedKey(*a.keys, *r, json);
    return 0;
  }
  if (kl->parsed()) {
    if (org.empty() && !all_orgs) return Die("keys list: give --org ID or --all-orgs");
    std::optional<gh::UnixMicros> since;
    if (!unused_since.empty()) {
      auto t = gh::ParseRfc3339(unused_since);
      if (!t) return Die("--unused-since: " + t.error().message);
      since = *t;
    }
    std::vector<std::string> orgs{org};
    if (all_orgs) {
      auto listed = a.store->ListOrgs();
      if (!listed) return Die(listed.error().message);
      orgs.clear();
      for (const auto& o : *listed) orgs.push_back(o.id);
    }
    for (const auto& org_id : orgs) {
      gh::KeyListQuery q;
      q.limit = 200;
      for (;;) {
        auto page = a.keys->List(org_id, q);
        if (!page) return Die(page.error().message);
        for (const auto& k : page->keys) {
          // With --unused-since, only the active keys not used since then.
          if (since &&
              (a.keys->State(k) != "active" || (k.last_used_at && *k.last_used_at >= *since))) {
            continue;
          }
          std::cout << boost::json::serialize(KeyLine(*a.keys, k)) << "\n";
        }
        if (page->next_cursor.empty()) break;
        q.cursor = page->next_cursor;
      }
    }
    return 0;
  }
  if (kr->parsed()) {
    auto r = a.keys->Revoke(org, key_id);
    if (!r) return Die(r.error().message);
    std::cout << "revoked " << r->id << std::endl;
    return 0;
  }
  if (kro->parsed()) {
    gh::UnixMicros g = 0;
    if (grace != "0" && grace != "0s") {
      auto d = gh::ParseDuration(grace);
      if (!d) return Die("--grace: " + d.error().message);
      g = *d;
    }
    auto r = a.keys->Rotate(op, org, key_id, g);
    if (!r) return Die(r.error().message);
    PrintIssuedKey(*a.keys, *r, json);
    return 0;
  }
  return 0;
}

// In-process key verification: the cost gatehouse pays per request before any I/O.
// Run: build/bench/bench_verify (make bench runs it and records the figures).
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "authz/authenticator.h"
#include "keys/key_service.h"
#include "orgs/org_service.h"
#include "store/postgres/pg_store.h"
#include "store/sqlite/sqlite_store.h"

namespace gatehouse {
namespace {

struct World {
  explicit World(std::unique_ptr<Store> s) : store(std::move(s)) {
    config = std::make_shared<Config>(DefaultConfig());
    verifier = std::make_unique<KeyVerifier>(
        KeyFormat("sk"), HmacSha256Key("bench-pepper-0123456789abcdef0123456789"), *store, clock,
        KeyVerifier::Options{100000, 30'000'000});
    keys = std::make_unique<KeyService>(*store, *verifier, clock, config);
    orgs = std::make_unique<OrgService>(*store, *keys, clock);
    auto org = *orgs->Create("bench");
    for (int i = 0; i < 1000; ++i) {
      NewKeyParams p;
      p.label = "k";
      p.scopes = {"read:findings"};
      auto k = *keys->Create(KeyService::Operator(org.org.id), org.org.id, p);
      (void)verifier->Verify(k.secret, "127.0.0.1");  // warm the cache
      secrets.push_back(k.secret);
    }
  }
  SystemClock clock;
  std::shared_ptr<Config> config;
  std::unique_ptr<Store> store;
  std::unique_ptr<KeyVerifier> verifier;
  std::unique_ptr<KeyService> keys;
  std::unique_ptr<OrgService> orgs;
  std::vector<std::string> secrets;
};

World& TheWorld() {
  static World w(std::move(*SqliteStore::Open(":memory:")));
  return w;
}

// With GATEHOUSE_BENCH_POSTGRES (an application-role URL of a migrated database; make bench
// sets it up), the cache-hit and store-lookup benchmarks run again on PostgreSQL.
World* PostgresWorld() {
  static World* w = []() -> World* {
    const char* url = std::getenv("GATEHOUSE_BENCH_POSTGRES");
    if (!url || !*url) return nullptr;
    auto store = PgStore::Open(url);
    if (!store) {
      std::fprintf(stderr, "bench: %s\n", store.error().message.c_str());
      std::exit(2);
    }
    return new World(std::move(*store));
  }();
  return w;
}

// Checksum + HMAC + cache lookup + expiry/revocation check, over 1000 distinct keys.
void VerifyCacheHit(benchmark::State& state, World& w) {
  std::size_t i = 0;
  for (auto _ : state) {
    auto v = w.verifier->TryCached(w.secrets[i++ % w.secrets.size()], "127.0.0.1");
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
void BM_VerifyCacheHit(benchmark::State& state) { VerifyCacheHit(state, TheWorld()); }
BENCHMARK(BM_VerifyCacheHit);
BENCHMARK(BM_VerifyCacheHit)->Threads(2);

// The whole authentication stage as the proxy runs it: header extraction, verification,
// allowlist and principal construction.
void BM_AuthenticateCacheHit(benchmark::State& state) {
  World& w = TheWorld();
  Metrics metrics;
  Authenticator auth(*w.verifier, metrics, w.clock);
  std::vector<std::string> headers;
  for (auto& s : w.secrets) headers.push_back("Bearer " + s);
  std::size_t i = 0;
  for (auto _ : state) {
    HttpRequest req;
    req.headers.emplace_back("Authorization", headers[i++ % headers.size()]);
    req.client_ip = "127.0.0.1";
    auto p = auth.TryFast(req);
    benchmark::DoNotOptimize(p);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AuthenticateCacheHit);

void BM_KeyChecksumOnly(benchmark::State& state) {
  World& w = TheWorld();
  KeyFormat f("sk");
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(f.Check(w.secrets[i++ % w.secrets.size()]));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_KeyChecksumOnly);

void BM_PepperedHmac(benchmark::State& state) {
  World& w = TheWorld();
  HmacSha256Key key("bench-pepper-0123456789abcdef0123456789");
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(key.Mac(w.secrets[i++ % w.secrets.size()]));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PepperedHmac);

// A cache miss: the store lookup that every first sighting of a key costs.
void VerifyStoreLookup(benchmark::State& state, World& w) {
  std::size_t i = 0;
  for (auto _ : state) {
    const auto& s = w.secrets[i++ % w.secrets.size()];
    w.verifier->Invalidate(w.verifier->HashKey(s));
    benchmark::DoNotOptimize(w.verifier->Verify(s, "127.0.0.1"));
  }
  state.SetItemsProcessed(state.iterations());
}
void BM_VerifyStoreLookup(benchmark::State& state) { VerifyStoreLookup(state, TheWorld()); }
BENCHMARK(BM_VerifyStoreLookup);

}  // namespace
}  // namespace gatehouse

int main(int argc, char** argv) {
  using gatehouse::World;
  if (World* pg = gatehouse::PostgresWorld()) {
    benchmark::RegisterBenchmark("BM_VerifyCacheHit/postgres",
                                 [pg](benchmark::State& s) { gatehouse::VerifyCacheHit(s, *pg); });
    benchmark::RegisterBenchmark("BM_VerifyStoreLookup/postgres", [pg](benchmark::State& s) {
      gatehouse::VerifyStoreLookup(s, *pg);
    });
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

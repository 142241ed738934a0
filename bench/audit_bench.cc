// Audit throughput: events pushed through the AuditWriter into a SQLite file with
// synchronous=FULL (an fsync per group commit), by several producer threads, until every event
// is durable. make bench runs it while wrk drives the proxy, as issue 4 asks.
// Run: build/bench/bench_audit [--benchmark_min_time=2]
#include <benchmark/benchmark.h>

#include <sys/resource.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <thread>

#include "audit/writer.h"
#include "store/sqlite/sqlite_store.h"

namespace gatehouse {
namespace {

struct AuditWorld {
  AuditWorld() {
    dir = std::filesystem::temp_directory_path() / ("gh-bench-audit-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    store = std::move(*SqliteStore::Open((dir / "gatehouse.db").string()));
    for (int i = 0; i < 8; ++i) {
      AuditEvent e;
      e.actor = "operator";
      e.action = "org.create";
      e.result = "success";
      e.details = "{}";
      std::string org = "org_bench" + std::to_string(i);
      (void)store->InsertOrg({org, "bench", 1}, e);
      orgs.push_back(org);
    }
  }
  ~AuditWorld() {
    store.reset();
    std::filesystem::remove_all(dir);
  }
  std::filesystem::path dir;
  std::unique_ptr<SqliteStore> store;
  std::vector<std::string> orgs;
};

AuditEvent ProxyEvent(const std::string& org, int i) {
  AuditEvent e;
  e.org_id = org;
  e.at = 1'700'000'000'000'000 + i;
  e.actor = "key_01JBENCHKEY" + std::to_string(i % 1000);
  e.action = "auth.proxy";
  e.resource = "route:/api/echo";
  e.result = "success";
  e.status = 200;
  e.client_ip = "127.0.0.1";
  e.user_agent = "wrk";
  e.request_id = "req_" + std::to_string(i);
  e.details = "{}";
  return e;
}

// Each iteration: 4 producers submit `batch` events each (as request threads would) and the
// iteration ends when all are durable (fsync on). Second argument 1: the server's fsync = false
// path instead: a producer is answered once its event is in the journal, and the iteration ends
// only once the store has every event too, so the rate is the store's sustained one, not just
// the journal's.
void BM_AuditWriterDurable(benchmark::State& state) {
  static AuditWorld world;
  AuditWriterOptions options;
  const bool journal = state.range(1) != 0;
  if (journal) {
    options.journal_dir = world.dir / "journal";
    options.fsync = false;
  }
  auto opened = AuditWriter::Open(*world.store, options);
  if (!opened) {
    state.SkipWithError(opened.error().message.c_str());
    return;
  }
  AuditWriter& writer = **opened;
  const int per_thread = static_cast<int>(state.range(0));
  constexpr int kProducers = 4;
  int serial = 0;
  for (auto _ : state) {
    std::atomic<int> done{0};
    const int total = kProducers * per_thread;
    auto finished = [&] {
      if (done.fetch_add(1, std::memory_order_relaxed) + 1 == total) done.notify_one();
    };
    std::vector<std::thread> producers;
    for (int t = 0; t < kProducers; ++t) {
      producers.emplace_back([&, t, base = serial] {
        for (int i = 0; i < per_thread; ++i) {
          auto a = writer.Submit(
              ProxyEvent(world.orgs[static_cast<std::size_t>(i % 8)], base + t * per_thread + i),
              [&](bool) { finished(); });
          if (a != AuditWriter::Admission::kQueued) finished();
        }
      });
    }
    for (auto& p : producers) p.join();
    for (int seen = done.load(); seen < total; seen = done.load()) done.wait(seen);
    if (journal && !writer.CatchUp(std::chrono::seconds(60))) {
      state.SkipWithError("the store did not catch up with the journal");
    }
    serial += kProducers * per_thread;
  }
  state.SetItemsProcessed(state.iterations() * kProducers * per_thread);
  state.counters["batches"] = static_cast<double>(writer.batches());
  state.counters["rejected"] = static_cast<double>(writer.rejected());
}
BENCHMARK(BM_AuditWriterDurable)
    ->Args({5000, 0})
    ->Args({5000, 1})
    ->ArgNames({"per_thread", "journal"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

double ProcessCpuMicros() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// What the proxy benchmark does to the writer: `in_flight` requests, each waiting for its event
// to be durable before the next one starts (wrk -c64 keeps 64 in flight). Batches can then never
// hold more than `in_flight` events, so the per-commit cost is what shows. Reports the CPU time
// the whole process spent per event, writer and store included: on a machine whose cores are
// all busy serving requests, that is what the audit log takes from them.
void BM_AuditWriterClosedLoop(benchmark::State& state) {
  static AuditWorld world;
  AuditWriter writer(*world.store, {});
  const int in_flight = static_cast<int>(state.range(0));
  constexpr int kEventsPerIteration = 20000;
  std::atomic<int> serial{0};
  double cpu = 0;
  for (auto _ : state) {
    std::atomic<int> started{0}, done{0};
    std::function<void()> next = [&] {
      if (started.fetch_add(1, std::memory_order_relaxed) >= kEventsPerIteration) return;
      int i = serial.fetch_add(1, std::memory_order_relaxed);
      auto a = writer.Submit(ProxyEvent(world.orgs[0], i), [&](bool) {
        next();
        if (done.fetch_add(1, std::memory_order_relaxed) + 1 == kEventsPerIteration) {
          done.notify_one();
        }
      });
      if (a != AuditWriter::Admission::kQueued) state.SkipWithError("audit writer refused");
    };
    double before = ProcessCpuMicros();
    for (int c = 0; c < in_flight; ++c) next();
    for (int seen = done.load(); seen < kEventsPerIteration; seen = done.load()) done.wait(seen);
    cpu += ProcessCpuMicros() - before;
  }
  const double events = static_cast<double>(state.iterations()) * kEventsPerIteration;
  state.SetItemsProcessed(static_cast<std::int64_t>(events));
  state.counters["cpu_us_per_event"] = cpu / events;
  state.counters["events_per_batch"] =
      static_cast<double>(writer.written()) / static_cast<double>(writer.batches());
}
BENCHMARK(BM_AuditWriterClosedLoop)
    ->Arg(64)
    ->Arg(256)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace gatehouse

BENCHMARK_MAIN();

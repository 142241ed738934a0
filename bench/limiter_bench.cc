// The rate limiter alone (issue 6): decisions per second on one core, and the memory its table
// takes with a million distinct subjects live at once.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "limits/rate_limiter.h"

namespace gh = gatehouse;

namespace {

constexpr gh::UnixMicros kT0 = 1'700'000'000'000'000;

gh::RatePolicy Policy(std::int64_t requests, std::string_view window) {
  return *gh::MakeRatePolicy(requests, window, 0, "enforce", "bench");
}

// One subject per decision from a pool of `range(0)` ids (key ids as the proxy sees them):
// hashing the subject, locking its shard, one GCRA step.
void BM_DecideOneLimit(benchmark::State& state) {
  gh::GcraTable table;
  const auto policy = Policy(1'000'000, "1s");
  std::vector<std::string> ids;
  for (int i = 0; i < state.range(0); ++i) ids.push_back("key_" + std::to_string(i) + "abcdefghij");
  std::size_t i = 0;
  gh::UnixMicros now = kT0;
  for (auto _ : state) {
    auto s = gh::SubjectHash("key", ids[i]);
    benchmark::DoNotOptimize(table.Take(s, policy, now));
    if (++i == ids.size()) i = 0;
    ++now;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecideOneLimit)->Arg(1000)->Arg(100'000);

// What a proxied request pays: global, org and key limits decided together.
void BM_DecideRequest(benchmark::State& state) {
  gh::GcraTable table;
  std::vector<std::string> ids;
  for (int i = 0; i < 1000; ++i) ids.push_back("key_" + std::to_string(i) + "abcdefghij");
  std::vector<gh::LimitCheck> checks = {
      {"global", "", "", Policy(1'000'000'000, "1s"), 1},
      {"org", "", "org_4QxZb8m1Yw2N0kLpA7sT", Policy(100'000'000, "1s"), 1},
      {"key", "", "", Policy(1'000'000, "1s"), 1}};
  std::size_t i = 0;
  gh::UnixMicros now = kT0;
  for (auto _ : state) {
    checks[2].id = ids[i];
    benchmark::DoNotOptimize(gh::DecideLocally(table, checks, now));
    if (++i == ids.size()) i = 0;
    ++now;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecideRequest);

// A million distinct keys live within one window: the table's size and bytes per subject.
void BM_MillionSubjectsMemory(benchmark::State& state) {
  for (auto _ : state) {
    gh::GcraTable table(1'000'000);
    const auto policy = Policy(10, "1h");
    for (int i = 0; i < 1'000'000; ++i) {
      (void)table.Take(gh::SubjectHash("key", std::to_string(i)), policy, kT0);
    }
    state.counters["subjects"] = static_cast<double>(table.size());
    state.counters["table_MiB"] = static_cast<double>(table.capacity_bytes()) / (1 << 20);
    state.counters["bytes_per_subject"] =
        static_cast<double>(table.capacity_bytes()) / static_cast<double>(table.size());
    state.counters["evictions"] = static_cast<double>(table.evictions());
  }
}
BENCHMARK(BM_MillionSubjectsMemory)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();

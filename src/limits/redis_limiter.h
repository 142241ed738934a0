// Rate limits shared by every node through Redis (7.x, standalone): one Lua script decides all
// of a request's limits atomically in one round trip, on Redis's own clock, so nodes with
// skewed clocks still agree.
//
// One thread owns the connection and pipelines: it takes every decision waiting, sends them
// together and answers each from its reply, so a node needs one connection whatever its load.
// Failures never wait: when Redis is down (or a reply is later than the timeout) each pending
// decision is answered "unavailable" at once and the caller decides locally; the thread
// reconnects in the background.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "config/config.h"
#include "limits/rate_limiter.h"
#include "limits/redis_connection.h"

namespace gatehouse {

// The script's verdict for one request, or nullopt when Redis could not answer.
using SharedVerdict = std::optional<RateVerdict>;

// The cluster's count of a key's credits for one quota period, after a spend.
struct SharedSpend {
  bool allowed = false;
  std::int64_t used = 0;  // spent in the period, this request included when allowed
};

class RedisLimiter {
 public:
  RedisLimiter(RedisAddress address, Millis timeout);
  ~RedisLimiter();
  RedisLimiter(const RedisLimiter&) = delete;
  RedisLimiter& operator=(const RedisLimiter&) = delete;

  // `done` runs on the Redis thread (or at once on this one when Redis is known to be down).
  void Decide(std::span<const LimitCheck> checks, std::function<void(SharedVerdict)> done);
  // The same, waiting for the answer (for callers already off the network threads).
  SharedVerdict DecideBlocking(std::span<const LimitCheck> checks);

  // Spends `cost` of a key's credits for `period` atomically in Redis: refused (and nothing
  // spent) when it would pass `credits`, unless `shadow`. A period Redis has no count for starts
  // from `seed`, what the store and this node know was spent. `done` gets nullopt when Redis
  // could not answer; it runs on the Redis thread, or at once when Redis is known to be down.
  void SpendCredits(std::string_view key_id, std::int64_t period, std::int64_t credits,
                    std::int64_t cost, std::int64_t seed, bool shadow, std::int64_t ttl_seconds,
                    std::function<void(std::optional<SharedSpend>)> done);

  // Keeps `until_ms` (Unix ms) under `key` until then, unless a later one is there already.
  void KeepUntil(std::string key, std::int64_t until_ms);
  // What KeepUntil keeps under `key`: 0 when nothing is, nullopt when Redis could not answer.
  void ReadUntil(std::string key, std::function<void(std::optional<std::int64_t>)> done);

  // INCR `key`, expiring `window_ms` after its first increment; `done` gets the count, or
  // nullopt when Redis could not answer (on the Redis thread, or at once when it is down).
  void IncrementInWindow(std::string key, std::int64_t window_ms,
                         std::function<void(std::optional<std::int64_t>)> done);

  // Adds `member` to the set under `key`, which is kept `ttl_ms` from its last addition and at
  // most `max_members` large (a random member makes room). `done` gets whether the member was
  // new and how many the set had before, or nullopt when Redis could not answer.
  void RememberMember(std::string key, std::string member, std::int64_t ttl_ms,
                      std::int64_t max_members,
                      std::function<void(std::optional<std::pair<bool, std::int64_t>>)> done);

  // Adds `member` to the set under `key`, which expires `window_ms` after its first member and
  // holds at most `max_members`; `done` gets the set's size, or nullopt when Redis could not
  // answer.
  void AddToWindowSet(std::string key, std::string member, std::int64_t window_ms,
                      std::int64_t max_members,
                      std::function<void(std::optional<std::int64_t>)> done);

  // Addresses blocked for abuse, shared by the cluster: adds `mine` (address, until in Unix
  // ms) and returns every block still in force after `now_ms`; nullopt when Redis is down.
  using Blocks = std::vector<std::pair<std::string, std::int64_t>>;
  std::optional<Blocks> ExchangeBlocks(const Blocks& mine, std::int64_t now_ms);

  // Registers this node and counts the nodes seen in the last 10 s; nullopt when Redis is down.
  std::optional<std::uint32_t> Heartbeat(std::string_view node_id);

  // Answers what is queued with "unavailable" and ends the thread; later jobs are answered so at
  // once. Callbacks hold pointers to the quota service and threat detector: the server stops
  // this before they go away.
  void Stop();

  bool up() const { return up_.load(std::memory_order_relaxed); }
  std::uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }

 private:
  struct Job {
    // A decision: EVALSHA <sha, filled in when sent> numkeys keys… args…. Otherwise any command.
    std::vector<std::string> argv;
    std::function<void(SharedVerdict)> done;  // set for decisions
    std::function<void(void*)> raw;           // set for other commands: gets the redisReply*
    // Decisions: which check each script key stands for, and whether it is a shadow one.
    std::array<int, kMaxLimitChecks> index{};
    std::array<bool, kMaxLimitChecks> shadow{};
    std::size_t keys = 0;
  };
  static RateVerdict VerdictFromReply(const void* reply, const Job& job);
  // A Job::raw that hands `done` an integer reply, or a two-integer array; nullopt (counted as
  // a failure when Redis answered something else) otherwise.
  std::function<void(void*)> AnswerInteger(std::function<void(std::optional<std::int64_t>)> done);
  std::function<void(void*)> AnswerIntegerPair(
      std::function<void(std::optional<std::pair<std::int64_t, std::int64_t>>)> done);
  void Submit(Job job);
  void Run();
  bool Connect();
  void FailAll(std::deque<Job>& jobs);

  RedisAddress address_;
  Millis timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // guarded by mu_
  bool stop_ = false;      // guarded by mu_
  std::atomic<bool> up_{false};
  std::atomic<bool> connected_once_{false};  // a first connection was attempted
  std::atomic<std::uint64_t> failures_{0};
  // The Redis thread's own: the connection (null while down), TLS settings loaded at the first
  // attempt, and the last reason a connection failed (said in the log once, not every second).
  std::unique_ptr<RedisConnection> conn_;
  std::shared_ptr<RedisTlsContext> tls_;
  std::string last_failure_;
  std::string sha_;
  std::thread thread_;
};

}  // namespace gatehouse

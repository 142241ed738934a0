#include "limits/redis_limiter.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <csignal>
#include <cstdlib>
#include <future>

#include "core/thread_name.h"

namespace gatehouse {

namespace {

// KEYS: one per limit. ARGV: per limit 4 values: interval, interval + tolerance (both µs),
// cost, shadow (1/0). Returns {refused (1-based, 0: admitted), retry_after µs, shadow bits,
// then remaining and reset µs per limit}. Nothing is written unless every enforced limit admits.
constexpr const char* kGcraScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local next_tat = {}
local out = {0, 0, 0}
local shadow_bits = 0
for i = 1, n do
  local b = (i - 1) * 4
  local interval = tonumber(ARGV[b + 1])
  local limit = tonumber(ARGV[b + 2])
  local cost = tonumber(ARGV[b + 3])
  local shadow = ARGV[b + 4] == '1'
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local nxt = tat + interval * cost
  if nxt - now > limit then
    out[3 + 2 * i - 1] = 0
    out[3 + 2 * i] = tat - now
    if shadow then
      shadow_bits = shadow_bits + 2 ^ (i - 1)
    else
      out[1] = i
      out[2] = nxt - now - limit
      out[3] = shadow_bits
      return out
    end
  else
    next_tat[i] = nxt
    out[3 + 2 * i - 1] = math.floor((limit - (nxt - now)) / interval)
    out[3 + 2 * i] = nxt - now
  end
end
for i, v in pairs(next_tat) do
  redis.call('SET', KEYS[i], string.format('%d', v), 'PX', math.floor((v - now) / 1000) + 1)
end
out[3] = shadow_bits
return out
)lua";

// KEYS: the key's count for the period. ARGV: credits, cost, seed, shadow (1/0), ttl seconds.
// Returns {allowed (1/0), spent in the period after this request}.
constexpr const char* kCreditsScript = R"lua(
local used = tonumber(redis.call('GET', KEYS[1]) or '-1')
if used < 0 then
  used = tonumber(ARGV[3])
  redis.call('SET', KEYS[1], string.format('%d', used), 'EX', tonumber(ARGV[5]))
end
local cost = tonumber(ARGV[2])
if used + cost > tonumber(ARGV[1]) and ARGV[4] ~= '1' then
  return {0, used}
end
return {1, redis.call('INCRBY', KEYS[1], cost)}
)lua";

std::string SubjectKey(const LimitCheck& c) {
  std::string k = "gh:rl:";
  k += c.dimension;
  k += ':';
  k += c.scope;
  k += ':';
  k += c.id;
  return k;
}

}  // namespace

RateVerdict RedisLimiter::VerdictFromReply(const void* raw, const Job& job) {
  const auto* r = static_cast<const redisReply*>(raw);
  RateVerdict v;
  auto at = [&](std::size_t i) -> long long {
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_INTEGER) return 0;
    return r->element[i]->integer;
  };
  const long long refused = at(0);
  const auto script_shadow = static_cast<std::uint32_t>(at(2));
  for (std::size_t k = 0; k < job.keys; ++k) {
    const int i = job.index[k];
    if (job.shadow[k]) {
      if (script_shadow & (1U << k)) v.shadow_refusals |= 1U << i;
      continue;
    }
    GcraOutcome o;
    o.remaining = static_cast<std::uint32_t>(std::max(0LL, at(3 + 2 * k)));
    o.reset = at(4 + 2 * k);
    if (refused == static_cast<long long>(k + 1)) {
      o.retry_after = at(1);
      v.allowed = false;
      v.refused_by = i;
      v.retry_after = o.retry_after;
      v.binding = i;
      v.binding_outcome = o;
      return v;
    }
    o.allowed = true;
    if (v.binding < 0 || o.remaining < v.binding_outcome.remaining) {
      v.binding = i;
      v.binding_outcome = o;
    }
  }
  return v;
}

void RedisLimiter::Submit(Job job) {
  if (!up_.load(std::memory_order_relaxed) && connected_once_.load()) {
    // Known down: answer at once rather than queue behind a reconnect.
    failures_.fetch_add(1, std::memory_order_relaxed);
    if (job.done) job.done(std::nullopt);
    if (job.raw) job.raw(nullptr);
    return;
  }
  {
    std::lock_guard lock(mu_);
    if (!stop_) {
      queue_.push_back(std::move(job));
      cv_.notify_one();
      return;
    }
  }
  // Stopped: nobody would ever answer a queued job.
  if (job.done) job.done(std::nullopt);
  if (job.raw) job.raw(nullptr);
}

void RedisLimiter::Decide(std::span<const LimitCheck> checks,
                          std::function<void(SharedVerdict)> done) {
  Job job;
  job.argv.reserve(3 + 5 * checks.size());
  job.argv.emplace_back("EVALSHA");
  job.argv.emplace_back();  // the sha, filled in when sent
  job.argv.emplace_back();  // numkeys
  std::vector<std::string> args;
  for (std::size_t i = 0; i < checks.size() && i < kMaxLimitChecks; ++i) {
    const LimitCheck& c = checks[i];
    if (!c.policy.enabled()) continue;
    job.index[job.keys] = static_cast<int>(i);
    job.shadow[job.keys] = c.policy.shadow;
    ++job.keys;
    job.argv.push_back(SubjectKey(c));
    args.push_back(std::to_string(c.policy.interval()));
    args.push_back(std::to_string(c.policy.tolerance() + c.policy.interval()));
    args.push_back(std::to_string(c.cost));
    args.emplace_back(c.policy.shadow ? "1" : "0");
  }
  if (job.keys == 0) {
    done(RateVerdict{});
    return;
  }
  job.argv[2] = std::to_string(job.keys);
  for (auto& a : args) job.argv.push_back(std::move(a));
  job.done = std::move(done);
  Submit(std::move(job));
}

SharedVerdict RedisLimiter::DecideBlocking(std::span<const LimitCheck> checks) {
  std::promise<SharedVerdict> p;
  auto f = p.get_future();
  Decide(checks, [&p](SharedVerdict v) { p.set_value(std::move(v)); });
  return f.get();
}

void RedisLimiter::SpendCredits(std::string_view key_id, std::int64_t period, std::int64_t credits,
                                std::int64_t cost, std::int64_t seed, bool shadow,
                                std::int64_t ttl_seconds,
                                std::function<void(std::optional<SharedSpend>)> done) {
  Job job;
  // EVAL rather than EVALSHA: Redis keeps the compiled script by its hash either way, and a
  // restarted Redis needs no SCRIPT LOAD for it.
  job.argv = {"EVAL",
              kCreditsScript,
              "1",
              "gh:q:" + std::string(key_id) + ":" + std::to_string(period),
              std::to_string(credits),
              std::to_string(cost),
              std::to_string(seed),
              shadow ? "1" : "0",
              std::to_string(std::max<std::int64_t>(1, ttl_seconds))};
  job.raw = AnswerIntegerPair([done = std::move(done)](auto pair) {
    if (!pair) return done(std::nullopt);
    done(SharedSpend{pair->first == 1, pair->second});
  });
  Submit(std::move(job));
}

std::function<void(void*)> RedisLimiter::AnswerInteger(
    std::function<void(std::optional<std::int64_t>)> done) {
  return [this, done = std::move(done)](void* raw) {
    const auto* r = static_cast<const redisReply*>(raw);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
      if (r) failures_.fetch_add(1, std::memory_order_relaxed);
      return done(std::nullopt);
    }
    done(r->integer);
  };
}

std::function<void(void*)> RedisLimiter::AnswerIntegerPair(
    std::function<void(std::optional<std::pair<std::int64_t, std::int64_t>>)> done) {
  return [this, done = std::move(done)](void* raw) {
    const auto* r = static_cast<const redisReply*>(raw);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
      if (r) failures_.fetch_add(1, std::memory_order_relaxed);
      return done(std::nullopt);
    }
    done(std::make_pair(r->element[0]->integer, r->element[1]->integer));
  };
}

void RedisLimiter::IncrementInWindow(std::string key, std::int64_t window_ms,
                                     std::function<void(std::optional<std::int64_t>)> done) {
  Job job;
  job.argv = {"EVAL",
              "local n = redis.call('INCR', KEYS[1]) "
              "if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n",
              "1", std::move(key), std::to_string(std::max<std::int64_t>(1, window_ms))};
  job.raw = AnswerInteger(std::move(done));
  Submit(std::move(job));
}

void RedisLimiter::RememberMember(
    std::string key, std::string member, std::int64_t ttl_ms, std::int64_t max_members,
    std::function<void(std::optional<std::pair<bool, std::int64_t>>)> done) {
  Job job;
  job.argv = {"EVAL",
              "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then "
              "redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
              "return {0, redis.call('SCARD', KEYS[1])} end "
              "local before = redis.call('SCARD', KEYS[1]) "
              "if before >= tonumber(ARGV[3]) then redis.call('SPOP', KEYS[1]) end "
              "redis.call('SADD', KEYS[1], ARGV[1]) redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
              "return {1, before}",
              "1",
              std::move(key),
              std::move(member),
              std::to_string(std::max<std::int64_t>(1, ttl_ms)),
              std::to_string(std::max<std::int64_t>(1, max_members))};
  job.raw = AnswerIntegerPair([done = std::move(done)](auto pair) {
    if (!pair) return done(std::nullopt);
    done(std::make_pair(pair->first == 1, pair->second));
  });
  Submit(std::move(job));
}

void RedisLimiter::AddToWindowSet(std::string key, std::string member, std::int64_t window_ms,
                                  std::int64_t max_members,
                                  std::function<void(std::optional<std::int64_t>)> done) {
  Job job;
  job.argv = {"EVAL",
              "if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[3]) then "
              "redis.call('SADD', KEYS[1], ARGV[1]) end "
              "if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
              "return redis.call('SCARD', KEYS[1])",
              "1",
              std::move(key),
              std::move(member),
              std::to_string(std::max<std::int64_t>(1, window_ms)),
              std::to_string(std::max<std::int64_t>(1, max_members))};
  job.raw = AnswerInteger(std::move(done));
  Submit(std::move(job));
}

void RedisLimiter::KeepUntil(std::string key, std::int64_t until_ms) {
  Job job;
  job.argv = {"EVAL",
              "local old = tonumber(redis.call('GET', KEYS[1]) or '0') "
              "if tonumber(ARGV[1]) > old then "
              "redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1]) end return 1",
              "1", std::move(key), std::to_string(until_ms)};
  job.raw = [](void*) {};
  Submit(std::move(job));
}

void RedisLimiter::ReadUntil(std::string key,
                             std::function<void(std::optional<std::int64_t>)> done) {
  Job job;
  job.argv = {"GET", std::move(key)};
  job.raw = [this, done = std::move(done)](void* raw) {
    const auto* r = static_cast<const redisReply*>(raw);
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
      if (r) failures_.fetch_add(1, std::memory_order_relaxed);
      done(std::nullopt);
      return;
    }
    std::int64_t until = 0;
    if (r->type == REDIS_REPLY_STRING) {
      auto [p, ec] = std::from_chars(r->str, r->str + r->len, until);
      if (ec != std::errc()) until = 0;
    }
    done(until);
  };
  Submit(std::move(job));
}

std::optional<RedisLimiter::Blocks> RedisLimiter::ExchangeBlocks(const Blocks& mine,
                                                                 std::int64_t now_ms) {
  std::promise<std::optional<Blocks>> p;
  auto f = p.get_future();
  auto send = [&](std::vector<std::string> argv, std::function<void(void*)> raw) {
    Job j;
    j.argv = std::move(argv);
    j.raw = std::move(raw);
    Submit(std::move(j));
  };
  for (const auto& [ip, until] : mine) {
    send({"ZADD", "gh:blocks", "GT", std::to_string(until), ip}, [](void*) {});
  }
  send({"ZREMRANGEBYSCORE", "gh:blocks", "-inf", std::to_string(now_ms)}, [](void*) {});
  send({"ZRANGE", "gh:blocks", "(" + std::to_string(now_ms), "+inf", "BYSCORE", "WITHSCORES"},
       [&p](void* raw) {
         auto* r = static_cast<redisReply*>(raw);
         if (!r || r->type != REDIS_REPLY_ARRAY) {
           p.set_value(std::nullopt);
           return;
         }
         Blocks all;
         for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
           const redisReply* member = r->element[i];
           const redisReply* score = r->element[i + 1];
           if (member->type != REDIS_REPLY_STRING || score->type != REDIS_REPLY_STRING) continue;
           // Scores come back as decimal text; milliseconds fit a double exactly.
           all.emplace_back(std::string(member->str, member->len),
                            static_cast<std::int64_t>(std::strtod(score->str, nullptr)));
         }
         p.set_value(std::move(all));
       });
  return f.get();
}

std::optional<std::uint32_t> RedisLimiter::Heartbeat(std::string_view node_id) {
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::promise<std::optional<std::uint32_t>> p;
  auto f = p.get_future();
  auto send = [&](std::vector<std::string> argv, bool last) {
    Job j;
    j.argv = std::move(argv);
    if (last) {
      j.raw = [&p](void* raw) {
        auto* r = static_cast<redisReply*>(raw);
        if (r && r->type == REDIS_REPLY_INTEGER)
          p.set_value(static_cast<std::uint32_t>(r->integer));
        else
          p.set_value(std::nullopt);
      };
    } else {
      j.raw = [](void*) {};
    }
    Submit(std::move(j));
  };
  send({"ZADD", "gh:nodes", std::to_string(now_ms), std::string(node_id)}, false);
  send({"ZREMRANGEBYSCORE", "gh:nodes", "-inf", std::to_string(now_ms - 10'000)}, false);
  send({"ZCARD", "gh:nodes"}, true);
  return f.get();
}

RedisLimiter::RedisLimiter(RedisAddress address, Millis timeout)
    : address_(std::move(address)), timeout_(timeout) {
  thread_ = std::thread([this] {
    NameThisThread("gh-redis");
    Run();
  });
}

RedisLimiter::~RedisLimiter() { Stop(); }

void RedisLimiter::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool RedisLimiter::Connect() {
  conn_.reset();
  auto failed = [&](const std::string& why) {
    if (why != last_failure_) spdlog::warn("rate limits: {}", why);
    last_failure_ = why;
    return false;
  };
  if (address_.tls && !tls_) {
    auto loaded = RedisTlsContext::Load(address_);
    if (!loaded) return failed(loaded.error().message);
    tls_ = std::move(*loaded);
  }
  auto opened = RedisConnection::Open(address_, timeout_, tls_.get());
  if (!opened) return failed(opened.error().message);
  RedisConnection& c = **opened;
  if (!address_.password.empty()) {
    std::vector<std::string> argv{"AUTH"};
    if (!address_.user.empty()) argv.push_back(address_.user);
    argv.push_back(address_.password);
    auto* auth = static_cast<redisReply*>(c.Command(argv));
    if (!auth) {
      return failed(fmt::format("Redis at {}:{}: {}", address_.host, address_.port, c.failure()));
    }
    const bool accepted = auth->type == REDIS_REPLY_STATUS;
    freeReplyObject(auth);
    if (!accepted) {
      // Never the password itself, nor Redis's reply (which could echo it).
      return failed(fmt::format("Redis at {}:{} refused gatehouse's credentials", address_.host,
                                address_.port));
    }
  }
  const std::vector<std::string> load{"SCRIPT", "LOAD", kGcraScript};
  auto* reply = static_cast<redisReply*>(c.Command(load));
  if (!reply) {
    return failed(fmt::format("Redis at {}:{}: {}", address_.host, address_.port, c.failure()));
  }
  if (reply->type != REDIS_REPLY_STRING) {
    freeReplyObject(reply);
    return failed(fmt::format("Redis at {}:{} did not load the rate-limit script", address_.host,
                              address_.port));
  }
  sha_.assign(reply->str, reply->len);
  freeReplyObject(reply);
  conn_ = std::move(*opened);
  last_failure_.clear();
  return true;
}

void RedisLimiter::FailAll(std::deque<Job>& jobs) {
  for (auto& j : jobs) {
    if (j.done) j.done(std::nullopt);
    if (j.raw) j.raw(nullptr);
  }
  jobs.clear();
}

void RedisLimiter::Run() {
  // A write to a connection Redis closed fails with EPIPE here instead of killing the process
  // (OpenSSL writes with write(), which raises SIGPIPE on this thread).
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  auto next_attempt = std::chrono::steady_clock::now();
  std::deque<Job> batch;
  std::string out;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stop_ || !queue_.empty(); });
      if (stop_) {
        batch.swap(queue_);
        lock.unlock();
        FailAll(batch);
        return;
      }
      batch.swap(queue_);
    }
    if (!conn_ && std::chrono::steady_clock::now() >= next_attempt) {
      bool was_up = up_.load();
      connected_once_.store(true);
      if (Connect()) {
        up_.store(true);
        spdlog::info("rate limits: shared through Redis at {}:{}{}", address_.host, address_.port,
                     address_.tls ? " (TLS)" : "");
      } else {
        up_.store(false);
        if (was_up) spdlog::warn("rate limits: Redis unreachable; limiting locally");
        next_attempt = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      }
    }
    if (batch.empty()) continue;
    if (!conn_) {
      failures_.fetch_add(batch.size(), std::memory_order_relaxed);
      FailAll(batch);
      continue;
    }
    // Every command waiting goes out in one write; the replies come back in order.
    out.clear();
    for (auto& j : batch) {
      if (j.done) j.argv[1] = sha_;
      RedisConnection::Format(j.argv, out);
    }
    bool broken = !conn_->Send(out);
    for (auto& j : batch) {
      void* raw = broken ? nullptr : conn_->Receive();
      if (!raw) {
        broken = true;
        failures_.fetch_add(1, std::memory_order_relaxed);
        if (j.done) j.done(std::nullopt);
        if (j.raw) j.raw(nullptr);
        continue;
      }
      auto* reply = static_cast<redisReply*>(raw);
      if (j.done) {
        if (reply->type == REDIS_REPLY_ARRAY) {
          j.done(VerdictFromReply(reply, j));
        } else {
          failures_.fetch_add(1, std::memory_order_relaxed);
          j.done(std::nullopt);
        }
      }
      if (j.raw) j.raw(reply);
      freeReplyObject(reply);
    }
    batch.clear();
    if (broken) {
      // A timed-out or dropped connection is in an unknown state: start over.
      conn_.reset();
      if (up_.exchange(false)) spdlog::warn("rate limits: Redis unreachable; limiting locally");
    }
  }
}

}  // namespace gatehouse

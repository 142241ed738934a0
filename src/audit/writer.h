// The audit pipeline (issue 4): request paths hand events to one writer thread, which appends
// them in batches, one transaction (and so one fsync) per batch: group commit. The network
// threads never touch the store; they learn when their event is durable through a callback,
// and only then answer, so that every response a client received has its event on disk even
// if the process is killed right after.
//
// Back-pressure is explicit. The queue holds at most `capacity` events. When it is full, the
// policy decides: kReject (the default) refuses the event, and the caller answers 503 instead
// of doing work it cannot record; kDrop lets the request through unrecorded and counts it.
//
// Key usage comes from the same pipeline: for every event of a key's request, the writer adds
// one to that key's count for the day and status class. Counts are summed in memory and stored
// with a batch at most once per `usage_flush` (and at Stop), so that a key costs one row write
// per interval rather than one per batch; a crash loses at most that interval's counts, never
// an event.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "store/store.h"

namespace gatehouse {

struct AuditWriterOptions {
  enum class Overflow { kReject, kDrop };
  std::size_t capacity = 65536;
  std::size_t max_batch = 8192;
  Overflow overflow = Overflow::kReject;
  // true: a batch is acknowledged once on stable storage (fsync), surviving a power cut. false:
  // once the operating system or database server has it, surviving kill -9 of gatehouse but
  // not of the machine; a commit costs a write instead of an fsync.
  bool fsync = true;
  // A batch the store refuses is tried again for this long before its callers are told it
  // failed (they answer 503: nothing is served that is not recorded).
  std::chrono::milliseconds retry_for{2000};
  std::chrono::milliseconds usage_flush{1000};
};

class AuditWriter {
 public:
  // Runs on the writer thread once the event's batch committed (true) or was given up (false).
  // It must be quick: hand the outcome to the request's own thread and return.
  using Done = std::function<void(bool durable)>;

  AuditWriter(Store& store, AuditWriterOptions options);
  ~AuditWriter();  // Stop()
  AuditWriter(const AuditWriter&) = delete;
  AuditWriter& operator=(const AuditWriter&) = delete;

  enum class Admission { kQueued, kRejected, kDropped };
  // kQueued: `done` will run. kRejected, kDropped: it never will.
  Admission Submit(AuditEvent event, Done done);

  // Writes what is queued, then ends the thread. Later submissions are rejected.
  void Stop();

  std::size_t queue_depth() const { return depth_.load(std::memory_order_relaxed); }
  std::uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  std::uint64_t batches() const { return batches_.load(std::memory_order_relaxed); }
  std::uint64_t rejected() const { return rejected_.load(std::memory_order_relaxed); }
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  std::uint64_t failed() const { return failed_.load(std::memory_order_relaxed); }

 private:
  void Run();
  bool WriteBatch(std::vector<AuditEvent>& events, const std::vector<KeyUsageCount>& usage);
  std::vector<KeyUsageCount> PendingUsage() const;

  Store& store_;
  AuditWriterOptions options_;
  // Writer thread only: counts not stored yet, merged across batches.
  std::map<std::tuple<std::string, std::string, std::string, int>, std::int64_t> usage_;
  std::chrono::steady_clock::time_point usage_flushed_ = std::chrono::steady_clock::now();
  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<AuditEvent> queued_events_;  // guarded by mu_
  std::vector<Done> queued_done_;          // guarded by mu_, one per queued event
  bool stopping_ = false;                  // guarded by mu_
  std::atomic<std::size_t> depth_{0};
  std::atomic<std::uint64_t> written_{0}, batches_{0}, rejected_{0}, dropped_{0}, failed_{0};
  std::thread thread_;
};

// The usage counts of `events`: one per key request, by key, UTC day and status class.
std::vector<KeyUsageCount> CountKeyUsage(const std::vector<AuditEvent>& events);

}  // namespace gatehouse

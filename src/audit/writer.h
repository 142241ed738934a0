// The audit pipeline (issue 4): request paths hand events to one writer thread, which appends
// them in batches, one transaction (and so one fsync) per batch: group commit. The network
// threads never touch the store; they learn when their event is durable through a callback,
// and only then answer, so that every response a client received has its event on disk even
// if the process is killed right after.
//
// Back-pressure is explicit. At most `capacity` events are on their way to the store (queued,
// or in the batch being written). Past that, the policy decides: kReject (the default) refuses
// the event, and the caller answers 503 instead of doing work it cannot record; kDrop lets the
// request through unrecorded and counts it.
//
// With a journal (audit/journal.h, the server's mode), Submit appends the event to the journal
// on the caller's thread before returning: once that write() returns, the event survives kill -9
// and the request can be answered (with fsync, once a syncer thread's fdatasync covered it).
// The writer thread then moves journaled events into the store in large batches, off every
// request's path; a restart replays what it had not moved. Without a journal (benchmarks of the
// store alone), every request waits for the commit of its event's batch.
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
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "audit/journal.h"
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
  // The journal's root directory; empty: no journal.
  std::filesystem::path journal_dir;
  std::int64_t journal_segment_bytes = 64LL << 20;
  // With a journal nobody waits for the store (a reader's CatchUp cuts the wait short), so the
  // writer gathers this long for a batch: at 5 ms a commit took ~300 events at 57k events/s and
  // the writer spent 3.0 us an event; at 50 ms, 2.6 (the commit's fixed pages and the WAL
  // checkpoint's re-copied tail pages are shared by ten times as many).
  std::chrono::milliseconds journal_gather{50};
};

class AuditWriter {
 public:
  // Runs on the writer thread once the event's batch committed (true) or was given up (false).
  // It must be quick: hand the outcome to the request's own thread and return.
  using Done = std::function<void(bool durable)>;

  // Opens the journal the options name, if any, and first replays into the store what earlier
  // processes left in it (this slot's and orphaned slots'), so that nothing is served before
  // the log is whole.
  static Result<std::unique_ptr<AuditWriter>> Open(Store& store, AuditWriterOptions options);
  AuditWriter(Store& store, AuditWriterOptions options);  // without a journal
  ~AuditWriter();                                         // Stop()
  AuditWriter(const AuditWriter&) = delete;
  AuditWriter& operator=(const AuditWriter&) = delete;

  enum class Admission { kQueued, kJournaled, kRejected, kDropped, kFailed };
  // kQueued: `done` will run. kJournaled: the event is already as safe as the options ask (in
  // the journal, fsync off), and `done` never runs. kRejected (queue full), kDropped (queue
  // full, overflow = drop) and kFailed (the journal cannot be written): it never runs either.
  Admission Submit(AuditEvent event, Done done);
  // With a journal only: `count` events framed by EncodeJournalRecord, journaled with one
  // write() where Submit makes one each (a network thread gathers what one turn of its loop
  // decided). All are taken or none: kRejected, kDropped or kFailed. Taken, they are kJournaled
  // without fsync; with it kQueued, and `done` runs once the fdatasync that covers them ended.
  Admission SubmitRecords(std::string_view records, std::size_t count, Done done = {});

  // Blocks until every event submitted before the call is in the store (and the key usage
  // counts with it), or `timeout` passed; false then. Readers of the log call it first, so that
  // what was answered before a read is in what the read sees. Not on a network thread.
  bool CatchUp(std::chrono::milliseconds timeout);

  // True when Submit answers for good (kJournaled): callers need not prepare to wait.
  bool AnswersAtOnce() const { return journal_ && !options_.fsync; }
  // True when events go through the journal, so that SubmitRecords takes them.
  bool Journals() const { return journal_ != nullptr; }

  // Writes what is queued, then ends the thread. Later submissions are rejected.
  void Stop();

  std::size_t queue_depth() const { return depth_.load(std::memory_order_relaxed); }
  std::uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  std::uint64_t batches() const { return batches_.load(std::memory_order_relaxed); }
  std::uint64_t rejected() const { return rejected_.load(std::memory_order_relaxed); }
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  std::uint64_t failed() const { return failed_.load(std::memory_order_relaxed); }
  // Journaled events the store refused for good, kept in the quarantine file instead.
  std::uint64_t set_aside() const { return set_aside_.load(std::memory_order_relaxed); }

 private:
  AuditWriter(Store& store, AuditWriterOptions options, std::unique_ptr<AuditJournal> journal);
  Admission SubmitToJournal(AuditEvent& event, Done& done);
  // Under mu_, after a journal append that succeeded: with fsync, hands `done` to the syncer.
  Admission AwaitSync(Done& done);
  // Under mu_: records the outcome of a journal append of `count` events.
  Admission Journaled(const Result<JournalMark>& mark, std::size_t count);
  Admission Overflow(std::size_t count = 1);
  void Run();
  void RunSyncer();
  // `ends`: with a journal, the mark after each event (else empty).
  bool WriteBatch(std::vector<AuditEvent>& events, const std::vector<JournalMark>& ends,
                  const std::vector<KeyUsageCount>& usage, const JournalProgress* progress,
                  bool fsync);
  std::vector<KeyUsageCount> PendingUsage() const;

  Store& store_;
  AuditWriterOptions options_;
  // Writer thread only: counts not stored yet, merged across batches.
  std::map<std::tuple<std::string, std::string, std::string, int>, std::int64_t> usage_;
  std::int64_t synced_segment_ = -1;  // writer thread: the journal segment of the last synced mark
  std::chrono::steady_clock::time_point usage_flushed_ = std::chrono::steady_clock::now();
  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<AuditEvent> queued_events_;  // guarded by mu_ (no journal)
  std::vector<Done> queued_done_;          // guarded by mu_, one per queued event (no journal)
  bool stopping_ = false;                  // guarded by mu_
  std::uint64_t submitted_ = 0;            // guarded by mu_: events queued so far
  std::uint64_t taken_ = 0;                // guarded by mu_: of those, taken into a batch
  JournalMark appended_;                   // guarded by mu_: after the last journaled event
  std::uint64_t settled_ = 0;              // guarded by mu_: of those, stored or given up
  int catching_up_ = 0;                    // guarded by mu_: CatchUp calls waiting
  std::condition_variable settled_cv_;
  std::unique_ptr<AuditJournal> journal_;  // appended to under mu_
  // fsync with a journal: requests waiting for the next fdatasync.
  std::mutex sync_mu_;  // taken inside mu_, never around it
  std::condition_variable sync_wake_;
  std::vector<Done> sync_waiting_;  // guarded by sync_mu_
  bool sync_stopping_ = false;      // guarded by sync_mu_
  std::thread sync_thread_;
  std::atomic<std::uint64_t> journal_failures_{0};
  std::atomic<std::size_t> depth_{0};
  std::atomic<std::uint64_t> written_{0}, batches_{0}, rejected_{0}, dropped_{0}, failed_{0},
      set_aside_{0};
  std::thread thread_;
};

// Moves into the store what the journal slots under `root` that no running process holds (and
// that are not `own`) have and the store lacks. Returns how many events it moved.
Result<std::size_t> ReplayLeftJournals(Store& store, const std::filesystem::path& root,
                                       const AuditJournal* own, std::size_t max_batch = 8192,
                                       bool fsync = true);

// Where journaled events the store refuses for good are kept, as JSON lines, under the journal's
// root directory.
inline std::filesystem::path QuarantineFile(const std::filesystem::path& journal_root) {
  return journal_root / "quarantine.jsonl";
}

struct RequeueReport {
  std::size_t stored = 0;   // now in their orgs' chains, and gone from the file
  std::size_t already = 0;  // in their chains already (a requeue cut short, a line twice), gone
  std::size_t kept = 0;     // still in the file
  std::vector<std::string> refusals;  // why the store refused those it refused
};

// Offers every event in the quarantine file under `journal_root` to the store again, oldest
// first: each is appended to its org's chain now, with its original time, request id and
// fields. Those stored leave the file; those refused again, and lines it cannot read, stay.
// The store being unavailable stops it, and what is left stays. Servers that set events aside
// meanwhile wait for it. A requeue that dies between storing events and replacing the file
// leaves a marker beside it (each org's chain head before it began); the next finds the events
// the first stored past those heads, and they leave the file without being stored twice.
Result<RequeueReport> RequeueSetAside(Store& store, const std::filesystem::path& journal_root);

// How many events the quarantine file under `journal_root` holds, by org.
std::map<std::string, std::size_t> CountSetAside(const std::filesystem::path& journal_root);

// Stores journaled `events` with `usage`, saving `progress` (the mark after the last of them).
// A refusal other than the store being unavailable (a constraint, a value the store cannot
// hold) will not pass by waiting, and waiting would stop the log for every org: the batch is
// then tried without the usage counts, and then event by event, each saved with its own mark
// from `ends` (the mark after each event, one per event); those refused are appended to
// `quarantine` (synced) and their marks saved without them. Returns
// how many events were set aside; `settled` gets how many leading events the store now
// accounts for (all, unless it failed halfway), which must not be stored again.
Result<std::size_t> StoreOrSetAside(Store& store, std::vector<AuditEvent>& events,
                                    const std::vector<KeyUsageCount>& usage, bool fsync,
                                    const JournalProgress& progress,
                                    const std::vector<JournalMark>& ends,
                                    const std::filesystem::path& quarantine, std::size_t* settled);

// The usage counts of `events`: one per key request, by key, UTC day and status class.
std::vector<KeyUsageCount> CountKeyUsage(const std::vector<AuditEvent>& events);

}  // namespace gatehouse

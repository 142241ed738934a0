#include "audit/writer.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "audit/details.h"
#include "core/thread_name.h"
#include "core/time_format.h"

namespace gatehouse {

namespace {

// Held while the quarantine file is appended to or rewritten, so that a server setting events
// aside never appends to a file that `gatehouse audit requeue` is about to replace. A separate
// file, because the quarantine file itself is replaced by rename.
class QuarantineLock {
 public:
  static Result<QuarantineLock> Take(const std::filesystem::path& quarantine) {
    const std::filesystem::path path = quarantine.string() + ".lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      return Fail(ErrorCode::kInternal,
                  "cannot open " + path.string() + ": " + std::strerror(errno));
    }
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return Fail(ErrorCode::kInternal, "cannot lock " + path.string());
    }
    return QuarantineLock(fd);
  }
  QuarantineLock(QuarantineLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  QuarantineLock& operator=(QuarantineLock&&) = delete;
  ~QuarantineLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }

 private:
  explicit QuarantineLock(int fd) : fd_(fd) {}
  int fd_;
};

std::string QuarantineLine(const AuditEvent& e) {
  return boost::json::serialize(AuditEventJson(e)) + "\n";
}

// Writes `bytes` to `file` (created 0600, appended or replaced), synced before it returns.
Result<void> WriteSynced(const std::filesystem::path& file, std::string_view bytes, int mode) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | mode, 0600);
  if (fd < 0) {
    return Fail(ErrorCode::kInternal, "cannot open " + file.string() + ": " + std::strerror(errno));
  }
  const bool synced = WriteAll(fd, bytes) && ::fdatasync(fd) == 0;
  ::close(fd);
  if (!synced) return Fail(ErrorCode::kInternal, "cannot write " + file.string());
  return {};
}

// Replaces `file` with `bytes` by rename, both synced before it returns: a crash leaves the old
// file or the new, never half of one.
Result<void> ReplaceSynced(const std::filesystem::path& file, std::string_view bytes) {
  const std::filesystem::path next = file.string() + ".next";
  if (auto w = WriteSynced(next, bytes, O_TRUNC); !w) return w;
  std::error_code ec;
  std::filesystem::rename(next, file, ec);
  if (ec)
    return Fail(ErrorCode::kInternal, "cannot replace " + file.string() + ": " + ec.message());
  if (!SyncDirectory(file.parent_path())) {
    return Fail(ErrorCode::kInternal, "cannot sync " + file.parent_path().string());
  }
  return {};
}

// Appends `events` as JSON lines to the quarantine file, synced before it returns.
Result<void> Quarantine(const std::filesystem::path& file, const std::vector<AuditEvent>& events) {
  std::string lines;
  for (const auto& e : events) lines += QuarantineLine(e);
  auto lock = QuarantineLock::Take(file);
  if (!lock) return tl::unexpected(lock.error());
  return WriteSynced(file, lines, O_APPEND);
}

}  // namespace

std::map<std::string, std::size_t> CountSetAside(const std::filesystem::path& journal_root) {
  std::map<std::string, std::size_t> out;
  std::ifstream in(QuarantineFile(journal_root));
  std::string line;
  while (std::getline(in, line)) {
    boost::system::error_code ec;
    auto v = boost::json::parse(line, ec);
    const auto* o = ec ? nullptr : v.if_object();
    const auto* org = o ? o->if_contains("org_id") : nullptr;
    if (org && org->is_string()) ++out[std::string(org->as_string())];
  }
  return out;
}

namespace {

// What names one event: all it says but its seq and hashes, which a requeue gives anew.
std::string EventIdentity(const AuditEvent& e) {
  return boost::json::serialize(boost::json::array{e.at, e.request_id, e.actor, e.action,
                                                   e.resource, e.result, e.status, e.client_ip,
                                                   e.user_agent, e.details});
}

// A requeue's record that it is under way: each org's chain head before it stored anything,
// kept beside the file until the file is replaced. Found at the start of the next, it says the
// last one died midway, and which events of each chain it may have stored.
std::filesystem::path RequeueMarker(const std::filesystem::path& file) {
  return file.string() + ".requeuing";
}

Result<std::map<std::string, std::int64_t>> ReadRequeueMarker(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::map<std::string, std::int64_t>{};
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  const auto* heads = ec ? nullptr : v.if_object();
  if (!heads) {
    return Fail(ErrorCode::kInternal, path.string() + " cannot be read");
  }
  std::map<std::string, std::int64_t> out;
  for (const auto& [org, seq] : *heads) {
    if (!seq.is_int64()) return Fail(ErrorCode::kInternal, path.string() + " cannot be read");
    out[std::string(org)] = seq.as_int64();
  }
  return out;
}

// Which of `wanted` (event identities) the org's chain holds after `after_seq`: what a requeue
// that died may have stored. Memory stays within the file's size however long the chain has
// grown since, and the read ends once all are found.
Result<std::set<std::string>> FoundAfter(Store& store, const std::string& org,
                                         std::int64_t after_seq, std::set<std::string> wanted) {
  std::set<std::string> found;
  while (!wanted.empty()) {
    auto page = store.AuditChain(org, after_seq, 1000);
    if (!page) return tl::unexpected(page.error());
    if (page->empty()) break;
    for (const auto& e : *page) {
      if (auto node = wanted.extract(EventIdentity(e))) found.insert(std::move(node));
    }
    after_seq = page->back().seq;
  }
  return found;
}

}  // namespace

Result<RequeueReport> RequeueSetAside(Store& store, const std::filesystem::path& journal_root) {
  const std::filesystem::path file = QuarantineFile(journal_root);
  auto lock = QuarantineLock::Take(file);
  if (!lock) return tl::unexpected(lock.error());
  std::ifstream in(file, std::ios::binary);
  if (!in) return RequeueReport{};  // nothing was ever set aside
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(std::move(line));
  }
  in.close();
  std::vector<std::optional<AuditEvent>> events;
  events.reserve(lines.size());
  for (const auto& line : lines) events.push_back(AuditEventFromJson(line));

  // After a requeue that died between storing events and replacing the file, the events it
  // stored are still listed: found in their chains past the heads it noted, they leave the file
  // without being stored twice.
  const std::filesystem::path marker = RequeueMarker(file);
  auto died_at = ReadRequeueMarker(marker);
  const bool marker_damaged = !died_at;
  if (marker_damaged) {
    // The heads it noted are lost (the marker is written whole by rename, so only damage or a
    // hand edit does this): any event of the file may be stored already, anywhere in its
    // chain. Slower, as right.
    spdlog::warn("audit requeue: {}; reading the chains of the orgs it lists from their start",
                 died_at.error().message);
    died_at = std::map<std::string, std::int64_t>{};
    for (const auto& e : events) {
      if (e) died_at->emplace(e->org_id, 0);
    }
  }
  std::map<std::string, std::set<std::string>> maybe_stored;
  for (const auto& e : events) {
    if (e && died_at->contains(e->org_id)) maybe_stored[e->org_id].insert(EventIdentity(*e));
  }
  for (auto& [org, wanted] : maybe_stored) {
    auto found = FoundAfter(store, org, died_at->at(org), std::move(wanted));
    if (!found) return tl::unexpected(found.error());
    wanted = std::move(*found);
  }
  // Noted before anything is stored; an org the marker names keeps the head noted first, so
  // that the events of both runs are found should this one die too.
  boost::json::object heads;
  for (const auto& [org, seq] : *died_at) heads[org] = seq;
  bool noted = marker_damaged;  // rewritten whole either way
  for (const auto& e : events) {
    if (!e || heads.contains(e->org_id)) continue;
    auto head = store.GetAuditHead(e->org_id);
    if (!head) return tl::unexpected(head.error());
    heads[e->org_id] = head->seq;
    noted = true;
  }
  if (noted) {
    if (auto w = ReplaceSynced(marker, boost::json::serialize(heads)); !w) {
      return tl::unexpected(w.error());
    }
  }

  RequeueReport report;
  std::string kept;
  std::optional<Error> stopped;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    auto& event = events[i];
    if (event && !stopped) {
      // The file may also hold an event twice (set aside again after a crash): once is enough.
      std::string identity = EventIdentity(*event);
      auto& in_chain = maybe_stored[event->org_id];
      if (in_chain.contains(identity)) {
        ++report.already;
        continue;
      }
      std::vector<AuditEvent> one{std::move(*event)};
      auto stored = store.AppendAudit(one, {}, true);
      if (stored) {
        in_chain.insert(std::move(identity));
        ++report.stored;
        continue;
      }
      if (stored.error().code == ErrorCode::kUnavailable) {
        stopped = stored.error();
      } else {
        report.refusals.push_back(stored.error().message);
      }
    }
    // Unreadable lines stay for a person to read; after an outage, so does the rest.
    kept += lines[i] + "\n";
    ++report.kept;
  }
  if (report.stored + report.already > 0) {
    if (auto w = ReplaceSynced(file, kept); !w) return tl::unexpected(w.error());
  }
  // The file no longer lists what was stored (or nothing was): the marker has done its work.
  std::error_code removed;
  std::filesystem::remove(marker, removed);
  if (removed || !SyncDirectory(journal_root)) {
    return Fail(ErrorCode::kInternal, "cannot remove " + marker.string());
  }
  if (stopped) {
    Error e = *stopped;
    e.message = "stopped after " + std::to_string(report.stored) +
                " events, the rest are still in the file: " + e.message;
    return tl::unexpected(e);
  }
  return report;
}

Result<std::size_t> StoreOrSetAside(Store& store, std::vector<AuditEvent>& events,
                                    const std::vector<KeyUsageCount>& usage, bool fsync,
                                    const JournalProgress& progress,
                                    const std::vector<JournalMark>& ends,
                                    const std::filesystem::path& quarantine, std::size_t* settled) {
  *settled = 0;
  auto stored = store.AppendAudit(events, usage, fsync, &progress);
  if (!stored && stored.error().code != ErrorCode::kUnavailable && !usage.empty()) {
    // The usage counts may be what is refused (a key whose org is gone from the database).
    auto again = store.AppendAudit(events, {}, fsync, &progress);
    if (again) {
      spdlog::error("audit: the store refuses key usage counts ({}); this interval's are dropped",
                    stored.error().message);
    }
    if (again || again.error().code == ErrorCode::kUnavailable) stored = std::move(again);
  }
  if (stored) {
    *settled = events.size();
    return 0;
  }
  if (stored.error().code == ErrorCode::kUnavailable) return tl::unexpected(stored.error());
  // One event at a time, each with the journal mark after it, so that the mark the store holds
  // always says exactly what it took: neither a crash nor the store going away midway can make
  // an event be stored twice or skipped. The events it refuses go to the file.
  if (ends.size() != events.size()) {
    return Fail(ErrorCode::kInternal, "audit: a journal mark is needed for each event");
  }
  std::size_t aside = 0;
  std::vector<AuditEvent> none;
  for (std::size_t i = 0; i < events.size(); ++i) {
    std::vector<AuditEvent> one{events[i]};
    const JournalProgress at{progress.journal_id, ends[i]};
    auto r = store.AppendAudit(one, {}, fsync, &at);
    if (!r) {
      if (r.error().code == ErrorCode::kUnavailable) return tl::unexpected(r.error());
      if (auto kept = Quarantine(quarantine, {events[i]}); !kept) {
        return tl::unexpected(kept.error());
      }
      // When this fails, the event is tried again later, and the file may then hold it twice.
      if (auto m = store.AppendAudit(none, {}, fsync, &at); !m) return tl::unexpected(m.error());
      spdlog::error(
          "audit: the store refuses event {} of org {} ({}); it is kept in {}, and the log goes "
          "on without it",
          events[i].request_id, events[i].org_id, r.error().message, quarantine.string());
      ++aside;
    }
    *settled = i + 1;
  }
  if (!usage.empty()) {
    if (auto u = store.AppendAudit(none, usage, fsync, &progress); !u) {
      spdlog::error("audit: the store refuses key usage counts ({}); this interval's are dropped",
                    u.error().message);
    }
  }
  return aside;
}

namespace {

// Moves `journal`'s records after the store's mark for it into the store, in batches that each
// save the new mark. Returns how many it moved.
Result<std::size_t> ReplayJournal(Store& store, AuditJournal& journal, std::size_t max_batch,
                                  bool fsync, const std::filesystem::path& quarantine) {
  auto saved = store.JournalProgressOf(journal.id());
  if (!saved) return tl::unexpected(saved.error());
  JournalProgress progress{journal.id(), saved->value_or(JournalMark{})};
  std::vector<AuditEvent> batch;
  std::vector<JournalMark> ends;
  Result<void> stored;
  std::size_t moved = 0;
  auto flush = [&] {
    if (batch.empty() || !stored) return;
    std::size_t settled = 0;
    auto r = StoreOrSetAside(store, batch, CountKeyUsage(batch), fsync, progress, ends, quarantine,
                             &settled);
    if (!r) stored = tl::unexpected(r.error());
    moved += batch.size();
    batch.clear();
    ends.clear();
  };
  auto read = journal.Replay(progress.mark, [&](AuditEvent&& e, const JournalMark& end) {
    if (!stored) return;
    batch.push_back(std::move(e));
    ends.push_back(end);
    progress.mark = end;
    if (batch.size() >= max_batch) flush();
  });
  if (!read) return tl::unexpected(read.error());
  flush();
  if (!stored) return tl::unexpected(stored.error());
  if (moved == 0) {
    // Saving the mark is what every later batch does too: find out now, at start, if the store
    // refuses it, rather than fill the queue with events it never takes.
    std::vector<AuditEvent> none;
    if (auto r = store.AppendAudit(none, {}, false, &progress); !r) {
      return Fail(ErrorCode::kInternal,
                  "audit journal: the store refuses to record its progress (" + r.error().message +
                      "); on PostgreSQL, run `gatehouse migrate --app-role ROLE` again");
    }
  }
  return moved;
}

}  // namespace

Result<std::size_t> ReplayLeftJournals(Store& store, const std::filesystem::path& root,
                                       const AuditJournal* own, std::size_t max_batch, bool fsync) {
  std::size_t total = 0;
  for (auto& orphan : AuditJournal::TakeOrphans(root, own)) {
    auto moved = ReplayJournal(store, *orphan, max_batch, fsync, QuarantineFile(root));
    if (!moved) return tl::unexpected(moved.error());
    if (*moved) {
      spdlog::info("audit: replayed {} events from {}, left by a process that is gone", *moved,
                   orphan->directory().string());
    }
    orphan->ForgetBefore(JournalMark{std::numeric_limits<std::int64_t>::max(), 0});
    total += *moved;
  }
  return total;
}

Result<std::unique_ptr<AuditWriter>> AuditWriter::Open(Store& store, AuditWriterOptions options) {
  if (options.journal_dir.empty()) return std::make_unique<AuditWriter>(store, options);
  auto journal =
      AuditJournal::Open(options.journal_dir, options.journal_segment_bytes, options.fsync);
  if (!journal) return tl::unexpected(journal.error());
  auto own = ReplayJournal(store, **journal, options.max_batch, options.fsync,
                           QuarantineFile(options.journal_dir));
  if (!own) return tl::unexpected(own.error());
  if (*own)
    spdlog::info("audit: replayed {} events from {}", *own, (*journal)->directory().string());
  auto orphans = ReplayLeftJournals(store, options.journal_dir, journal->get(), options.max_batch,
                                    options.fsync);
  if (!orphans) return tl::unexpected(orphans.error());
  return std::unique_ptr<AuditWriter>(new AuditWriter(store, options, std::move(*journal)));
}

AuditWriter::AuditWriter(Store& store, AuditWriterOptions options)
    : AuditWriter(store, std::move(options), nullptr) {}

AuditWriter::AuditWriter(Store& store, AuditWriterOptions options,
                         std::unique_ptr<AuditJournal> journal)
    : store_(store), options_(std::move(options)), journal_(std::move(journal)) {
  if (!journal_) {
    queued_events_.reserve(options_.max_batch);
    queued_done_.reserve(options_.max_batch);
  }
  thread_ = std::thread([this] {
    NameThisThread("gh-audit");
    Run();
  });
  if (journal_ && options_.fsync) {
    sync_thread_ = std::thread([this] {
      NameThisThread("gh-audit-sync");
      RunSyncer();
    });
  }
}

AuditWriter::~AuditWriter() { Stop(); }

AuditWriter::Admission AuditWriter::Overflow(std::size_t count) {
  if (options_.overflow == AuditWriterOptions::Overflow::kDrop) {
    dropped_.fetch_add(count, std::memory_order_relaxed);
    return Admission::kDropped;
  }
  rejected_.fetch_add(count, std::memory_order_relaxed);
  return Admission::kRejected;
}

AuditWriter::Admission AuditWriter::Journaled(const Result<JournalMark>& mark, std::size_t count) {
  if (!mark) {
    // Once per thousand, so that a full disk does not also flood the log.
    if (journal_failures_.fetch_add(1, std::memory_order_relaxed) % 1000 == 0) {
      spdlog::error("audit: {}", mark.error().message);
    }
    failed_.fetch_add(count, std::memory_order_relaxed);
    return Admission::kFailed;
  }
  // The writer thread reads the events back from the journal: nothing is handed over but a
  // count and a mark.
  appended_ = *mark;
  const bool idle = submitted_ == taken_;
  submitted_ += count;
  depth_.store(submitted_ - settled_, std::memory_order_relaxed);
  if (idle) wake_.notify_one();
  return Admission::kJournaled;
}

AuditWriter::Admission AuditWriter::SubmitToJournal(AuditEvent& event, Done& done) {
  std::lock_guard lock(mu_);
  if (stopping_ || submitted_ - settled_ >= options_.capacity) return Overflow();
  // `event` is freed here, on the thread that made it.
  if (Journaled(journal_->Append(event), 1) != Admission::kJournaled) return Admission::kFailed;
  return AwaitSync(done);
}

AuditWriter::Admission AuditWriter::AwaitSync(Done& done) {
  if (!options_.fsync) return Admission::kJournaled;
  bool first = false;
  {
    std::lock_guard sync_lock(sync_mu_);
    first = sync_waiting_.empty();
    sync_waiting_.push_back(std::move(done));
  }
  if (first) sync_wake_.notify_one();
  return Admission::kQueued;
}

AuditWriter::Admission AuditWriter::SubmitRecords(std::string_view records, std::size_t count,
                                                  Done done) {
  if (count == 0) return Admission::kJournaled;
  if (!journal_) return Admission::kFailed;  // a caller's mistake: nothing was recorded
  std::lock_guard lock(mu_);
  if (stopping_ || submitted_ - settled_ + count > options_.capacity) return Overflow(count);
  const Admission journaled = Journaled(journal_->AppendRecords(records), count);
  if (journaled != Admission::kJournaled) return journaled;
  return AwaitSync(done);
}

void AuditWriter::RunSyncer() {
  // One fdatasync answers every request that appended before it began: group commit.
  std::vector<Done> waiting;
  for (;;) {
    {
      std::unique_lock lock(sync_mu_);
      sync_wake_.wait(lock, [&] { return sync_stopping_ || !sync_waiting_.empty(); });
      if (sync_waiting_.empty()) return;
      waiting.swap(sync_waiting_);
    }
    auto synced = journal_->Sync();
    if (!synced) spdlog::error("audit: {}", synced.error().message);
    for (auto& done : waiting) {
      if (done) done(synced.has_value());
    }
    waiting.clear();
  }
}

AuditWriter::Admission AuditWriter::Submit(AuditEvent event, Done done) {
  if (journal_) return SubmitToJournal(event, done);
  {
    std::lock_guard lock(mu_);
    if (!stopping_ && submitted_ - settled_ < options_.capacity) {
      queued_events_.push_back(std::move(event));
      queued_done_.push_back(std::move(done));
      ++submitted_;
      depth_.store(submitted_ - settled_, std::memory_order_relaxed);
      if (queued_events_.size() == 1) wake_.notify_one();
      return Admission::kQueued;
    }
  }
  return Overflow();
}

bool AuditWriter::CatchUp(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  const std::uint64_t target = submitted_;
  if (settled_ >= target) return true;
  ++catching_up_;
  wake_.notify_one();  // cut the gathering short
  bool reached =
      settled_cv_.wait_for(lock, timeout, [&] { return settled_ >= target || stopping_; });
  --catching_up_;
  return reached && settled_ >= target;
}

void AuditWriter::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (sync_thread_.joinable()) {  // answers its last waiters first
    {
      std::lock_guard lock(sync_mu_);
      sync_stopping_ = true;
    }
    sync_wake_.notify_one();
    sync_thread_.join();
  }
  if (thread_.joinable()) thread_.join();
}

std::vector<KeyUsageCount> CountKeyUsage(const std::vector<AuditEvent>& events) {
  // Keyed by views into `events` and the day number, so counting allocates per distinct key,
  // not per event; the day is formatted once per entry.
  constexpr std::int64_t kMicrosPerDay = 86400LL * kMicrosPerSecond;
  std::map<std::tuple<std::string_view, std::string_view, std::int64_t, int>, std::int64_t> counts;
  for (const auto& e : events) {
    if (!e.action.starts_with("auth.") || !e.actor.starts_with("key_")) continue;
    int cls = e.status / 100;
    if (cls < 2 || cls > 5) continue;
    counts[{e.org_id, e.actor, e.at / kMicrosPerDay, cls}]++;
  }
  std::vector<KeyUsageCount> out;
  out.reserve(counts.size());
  std::int64_t day = -1;  // a batch almost always falls on one day: format it once
  std::string day_text;
  for (const auto& [k, n] : counts) {
    if (std::get<2>(k) != day) {
      day = std::get<2>(k);
      day_text = FormatRfc3339(day * kMicrosPerDay).substr(0, 10);
    }
    out.push_back(KeyUsageCount{std::string(std::get<0>(k)), std::string(std::get<1>(k)), day_text,
                                std::get<3>(k), n});
  }
  return out;
}

bool AuditWriter::WriteBatch(std::vector<AuditEvent>& events, const std::vector<JournalMark>& ends,
                             const std::vector<KeyUsageCount>& usage,
                             const JournalProgress* progress, bool fsync) {
  auto give_up = std::chrono::steady_clock::now() + options_.retry_for;
  std::chrono::milliseconds pause{10};
  int refusals = 0;      // in a row, for a reason other than the store being unavailable
  std::size_t from = 0;  // events already stored or set aside one at a time, with their marks
  for (;;) {
    // The store fills seq and hashes in place; a failed attempt's are overwritten by the next.
    // Journaled events the store keeps refusing are set aside after a few tries: waiting would
    // stop the log (and, once the queue is full, every request) for good.
    Result<void> r;
    if (progress && refusals >= 2) {
      std::vector<AuditEvent> rest(events.begin() + static_cast<std::ptrdiff_t>(from),
                                   events.end());
      std::vector<JournalMark> rest_ends(ends.begin() + static_cast<std::ptrdiff_t>(from),
                                         ends.end());
      std::size_t settled = 0;
      auto kept = StoreOrSetAside(store_, rest, usage, fsync, *progress, rest_ends,
                                  QuarantineFile(options_.journal_dir), &settled);
      from += settled;
      if (kept) set_aside_.fetch_add(*kept, std::memory_order_relaxed);
      if (!kept) r = tl::unexpected(kept.error());
    } else if (from > 0) {
      // Setting aside one at a time stopped halfway (the store went away): the rest as a batch.
      std::vector<AuditEvent> rest(events.begin() + static_cast<std::ptrdiff_t>(from),
                                   events.end());
      r = store_.AppendAudit(rest, usage, fsync, progress);
    } else {
      r = store_.AppendAudit(events, usage, fsync, progress);
    }
    if (r) return true;
    refusals = r.error().code == ErrorCode::kUnavailable ? 0 : refusals + 1;
    // Journaled events are safe where they are: keep trying (the queue fills, and requests get
    // 503) until the store is back, or until shutdown, after which the next start replays them.
    bool keep_trying = false;
    if (journal_) {
      std::lock_guard lock(mu_);
      keep_trying = !stopping_;
    }
    if (!keep_trying && std::chrono::steady_clock::now() + pause > give_up) {
      spdlog::error("audit: a batch of {} events could not be written: {}", events.size(),
                    r.error().message);
      return false;
    }
    spdlog::warn("audit: batch write failed ({}); retrying", r.error().message);
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(200));
  }
}

std::vector<KeyUsageCount> AuditWriter::PendingUsage() const {
  std::vector<KeyUsageCount> out;
  out.reserve(usage_.size());
  for (const auto& [k, n] : usage_) {
    out.push_back(KeyUsageCount{std::get<0>(k), std::get<1>(k), std::get<2>(k), std::get<3>(k), n});
  }
  return out;
}

void AuditWriter::Run() {
  // Without a journal a batch is taken by swapping vectors with the queue, so an event is moved
  // once, by Submit. With one, the batch is read back from the journal into `events`, whose
  // strings keep their memory from batch to batch.
  std::vector<AuditEvent> events;
  std::vector<JournalMark> ends;  // with a journal, the mark after each of `events`
  std::vector<Done> dones;
  events.reserve(options_.max_batch);
  if (!journal_) dones.reserve(options_.max_batch);
  // Moves the first `n` of `queue` into `batch` (all of it by swapping, which moves nothing).
  auto take = [](auto& queue, auto& batch, std::size_t n) {
    if (n == queue.size()) {
      batch.swap(queue);
      return;
    }
    const auto cut = static_cast<std::ptrdiff_t>(n);
    batch.assign(std::make_move_iterator(queue.begin()),
                 std::make_move_iterator(queue.begin() + cut));
    queue.erase(queue.begin(), queue.begin() + cut);
  };
  JournalMark read_to;
  for (;;) {
    bool hurried = false;  // a reader waits: store the usage counts with this batch too
    JournalMark until;
    std::size_t n = 0;
    {
      std::unique_lock lock(mu_);
      auto pending = [&] { return submitted_ - taken_; };
      wake_.wait(lock, [&] { return stopping_ || pending() > 0; });
      if (journal_ && !stopping_ && pending() < options_.max_batch) {
        // Nobody waits for this batch: let it grow, so that commits are fewer and larger.
        wake_.wait_for(lock, options_.journal_gather,
                       [&] { return stopping_ || catching_up_ > 0; });
      }
      hurried = catching_up_ > 0;
      if (pending() == 0) {  // stopping, and every event is written: store the last counts
        lock.unlock();
        if (!usage_.empty()) {
          std::vector<AuditEvent> none;
          if (WriteBatch(none, {}, PendingUsage(), nullptr, options_.fsync)) usage_.clear();
        }
        return;
      }
      n = static_cast<std::size_t>(std::min<std::uint64_t>(pending(), options_.max_batch));
      if (journal_) {
        until = appended_;
      } else {
        take(queued_events_, events, n);
        take(queued_done_, dones, n);
      }
      taken_ += n;
    }
    if (journal_) {
      auto read = journal_->ReadOwn(until, n, events, &ends);
      if (read) read_to = *read;
      if (events.size() < n) {  // what was not read is read again after a pause
        spdlog::error("audit: {}", read ? "the journal ended early" : read.error().message);
        {
          std::lock_guard lock(mu_);
          taken_ -= n - events.size();
        }
        if (events.empty()) {
          std::unique_lock lock(mu_);
          if (stopping_) return;  // the next start replays it
          wake_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stopping_; });
          continue;
        }
      }
    }
    for (auto& u : CountKeyUsage(events)) {
      usage_[{std::move(u.org_id), std::move(u.key_id), std::move(u.day), u.status_class}] +=
          u.count;
    }
    std::vector<KeyUsageCount> usage;
    bool last = false;
    {
      std::lock_guard lock(mu_);
      last = stopping_ && submitted_ == taken_;
    }
    auto now = std::chrono::steady_clock::now();
    if (last || hurried || now - usage_flushed_ >= options_.usage_flush) usage = PendingUsage();
    std::optional<JournalProgress> progress;
    bool fsync = options_.fsync;
    if (journal_) {
      progress = JournalProgress{journal_->id(), read_to};
      // The journal holds these events safely already, so the store's commit need not be synced,
      // except the one after which journal segments are deleted: syncing it syncs every earlier
      // commit too (SQLite's WAL and PostgreSQL's are each one sequential log).
      fsync = fsync && (last || progress->mark.segment > synced_segment_);
    }
    bool durable = WriteBatch(events, ends, usage, progress ? &*progress : nullptr, fsync);
    if (durable && progress && (fsync || !options_.fsync)) {
      journal_->ForgetBefore(progress->mark);
      synced_segment_ = progress->mark.segment;
    }
    if (durable && !usage.empty()) {
      usage_.clear();
      usage_flushed_ = now;
    }
    if (durable) {
      written_.fetch_add(events.size(), std::memory_order_relaxed);
      batches_.fetch_add(1, std::memory_order_relaxed);
    } else {
      failed_.fetch_add(events.size(), std::memory_order_relaxed);
    }
    for (auto& done : dones) {
      if (done) done(durable);
    }
    {
      std::lock_guard lock(mu_);
      settled_ += events.size();
      depth_.store(submitted_ - settled_, std::memory_order_relaxed);
    }
    settled_cv_.notify_all();
    if (!journal_) events.clear();  // with a journal, the next read reuses them
    dones.clear();
  }
}

}  // namespace gatehouse

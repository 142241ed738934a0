#include "audit/writer.h"

#include <spdlog/spdlog.h>

#include <map>
#include <tuple>

#include "core/time_format.h"

namespace gatehouse {

AuditWriter::AuditWriter(Store& store, AuditWriterOptions options)
    : store_(store), options_(options) {
  queued_events_.reserve(options_.max_batch);
  queued_done_.reserve(options_.max_batch);
  thread_ = std::thread([this] { Run(); });
}

AuditWriter::~AuditWriter() { Stop(); }

AuditWriter::Admission AuditWriter::Submit(AuditEvent event, Done done) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_ && queued_events_.size() < options_.capacity) {
      queued_events_.push_back(std::move(event));
      queued_done_.push_back(std::move(done));
      depth_.store(queued_events_.size(), std::memory_order_relaxed);
      if (queued_events_.size() == 1) wake_.notify_one();
      return Admission::kQueued;
    }
  }
  if (options_.overflow == AuditWriterOptions::Overflow::kDrop) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return Admission::kDropped;
  }
  rejected_.fetch_add(1, std::memory_order_relaxed);
  return Admission::kRejected;
}

void AuditWriter::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
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

bool AuditWriter::WriteBatch(std::vector<AuditEvent>& events,
                             const std::vector<KeyUsageCount>& usage) {
  auto give_up = std::chrono::steady_clock::now() + options_.retry_for;
  std::chrono::milliseconds pause{10};
  for (;;) {
    // The store fills seq and hashes in place; a failed attempt's are overwritten by the next.
    auto r = store_.AppendAudit(events, usage, options_.fsync);
    if (r) return true;
    if (std::chrono::steady_clock::now() + pause > give_up) {
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
  // A batch is taken by swapping vectors with the queue, so an event is moved once, by Submit.
  std::vector<AuditEvent> events;
  std::vector<Done> dones;
  events.reserve(options_.max_batch);
  dones.reserve(options_.max_batch);
  for (;;) {
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !queued_events_.empty(); });
      if (queued_events_.empty()) {  // stopping, and every event is written: store the last counts
        lock.unlock();
        if (!usage_.empty()) {
          std::vector<AuditEvent> none;
          if (WriteBatch(none, PendingUsage())) usage_.clear();
        }
        return;
      }
      if (queued_events_.size() <= options_.max_batch) {
        events.swap(queued_events_);
        dones.swap(queued_done_);
      } else {
        const auto cut = static_cast<std::ptrdiff_t>(options_.max_batch);
        events.assign(std::make_move_iterator(queued_events_.begin()),
                      std::make_move_iterator(queued_events_.begin() + cut));
        dones.assign(std::make_move_iterator(queued_done_.begin()),
                     std::make_move_iterator(queued_done_.begin() + cut));
        queued_events_.erase(queued_events_.begin(), queued_events_.begin() + cut);
        queued_done_.erase(queued_done_.begin(), queued_done_.begin() + cut);
      }
      depth_.store(queued_events_.size(), std::memory_order_relaxed);
    }
    for (auto& u : CountKeyUsage(events)) {
      usage_[{std::move(u.org_id), std::move(u.key_id), std::move(u.day), u.status_class}] +=
          u.count;
    }
    std::vector<KeyUsageCount> usage;
    bool last = false;
    {
      std::lock_guard lock(mu_);
      last = stopping_ && queued_events_.empty();
    }
    auto now = std::chrono::steady_clock::now();
    if (last || now - usage_flushed_ >= options_.usage_flush) usage = PendingUsage();
    bool durable = WriteBatch(events, usage);
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
    events.clear();
    dones.clear();
  }
}

}  // namespace gatehouse

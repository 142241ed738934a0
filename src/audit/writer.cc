#include "audit/writer.h"

#include <spdlog/spdlog.h>

#include <map>
#include <tuple>

#include "core/time_format.h"

namespace gatehouse {

AuditWriter::AuditWriter(Store& store, AuditWriterOptions options)
    : store_(store), options_(options) {
  queue_.reserve(options_.max_batch);
  thread_ = std::thread([this] { Run(); });
}

AuditWriter::~AuditWriter() { Stop(); }

AuditWriter::Admission AuditWriter::Submit(AuditEvent event, Done done) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_ && queue_.size() < options_.capacity) {
      queue_.push_back(Pending{std::move(event), std::move(done)});
      depth_.store(queue_.size(), std::memory_order_relaxed);
      if (queue_.size() == 1) wake_.notify_one();
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
  std::map<std::tuple<std::string, std::string, std::string, int>, std::int64_t> counts;
  for (const auto& e : events) {
    if (!e.action.starts_with("auth.") || !e.actor.starts_with("key_")) continue;
    int cls = e.status / 100;
    if (cls < 2 || cls > 5) continue;
    counts[{e.org_id, e.actor, FormatRfc3339(e.at).substr(0, 10), cls}]++;
  }
  std::vector<KeyUsageCount> out;
  out.reserve(counts.size());
  for (const auto& [k, n] : counts) {
    out.push_back(KeyUsageCount{std::get<0>(k), std::get<1>(k), std::get<2>(k), std::get<3>(k), n});
  }
  return out;
}

bool AuditWriter::WriteBatch(std::vector<AuditEvent>& events,
                             const std::vector<KeyUsageCount>& usage) {
  auto give_up = std::chrono::steady_clock::now() + options_.retry_for;
  std::chrono::milliseconds pause{10};
  for (;;) {
    // The store fills seq and hashes in place; a failed attempt's are overwritten by the next.
    auto r = store_.AppendAudit(events, usage);
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

void AuditWriter::Run() {
  std::vector<Pending> batch;
  batch.reserve(options_.max_batch);
  std::vector<AuditEvent> events;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything is written
      if (queue_.size() <= options_.max_batch) {
        batch.swap(queue_);
      } else {
        auto cut = queue_.begin() + static_cast<std::ptrdiff_t>(options_.max_batch);
        batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(cut));
        queue_.erase(queue_.begin(), cut);
      }
      depth_.store(queue_.size(), std::memory_order_relaxed);
    }
    events.clear();
    events.reserve(batch.size());
    for (auto& p : batch) events.push_back(std::move(p.event));
    bool durable = WriteBatch(events, CountKeyUsage(events));
    if (durable) {
      written_.fetch_add(events.size(), std::memory_order_relaxed);
      batches_.fetch_add(1, std::memory_order_relaxed);
    } else {
      failed_.fetch_add(events.size(), std::memory_order_relaxed);
    }
    for (auto& p : batch) {
      if (p.done) p.done(durable);
    }
    batch.clear();
  }
}

}  // namespace gatehouse

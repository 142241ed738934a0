// The audit journal: where an event is first made safe, before the database has it.
//
// A request's event is appended here with one write() on the request's own thread; once the
// kernel has it, the event survives kill -9 of gatehouse, so the request can be answered at once
// instead of waiting for a database commit (with fsync on, it waits for an fdatasync of this
// file instead: a cheap sequential flush). The audit writer then moves events into the store in
// large batches and records there, in the same transaction, how far it got (a JournalMark).
// After a crash, the next start replays what the store had not taken yet.
//
// On disk: <root>/<slot>/<segment>.journal, segments numbered upwards, each a run of records
//   u32 length | u32 crc32(payload) | payload (EncodeJournalRecord), integers little-endian.
// Every process takes a slot of its own (the lowest free one, held with flock), so that several
// gatehouse processes can share one data directory. A slot left by a process that is gone is
// replayed by the next one to start.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "store/records.h"

namespace gatehouse {

// Appends `e` as one framed record (header and payload) to `out`.
void EncodeJournalRecord(const AuditEvent& e, std::string& out);
// The event in one record's payload; an error for bytes no EncodeJournalRecord made.
Result<AuditEvent> DecodeJournalPayload(std::string_view payload);
// The same into `out`, reusing its strings' memory; false for bytes no EncodeJournalRecord made.
bool DecodeJournalPayloadInto(std::string_view payload, AuditEvent& out);

// Walks the framed records of one segment's bytes. `visit` gets each event and the offset just
// past its record. Returns the offset where whole, intact records end: the segment's size, or
// less when its tail was torn by a crash or is damaged.
std::size_t ScanJournalSegment(std::string_view bytes,
                               const std::function<void(AuditEvent&&, std::size_t end)>& visit);

// Writes all of `bytes` to `fd`, going on after interruptions; false on an error.
bool WriteAll(int fd, std::string_view bytes);
// Makes the directory's entries (a file created or renamed in it) durable; false on an error.
bool SyncDirectory(const std::filesystem::path& dir);

class AuditJournal {
 public:
  // Takes a free slot under `root`, creating what is missing. `sync`: Sync() will be called, so
  // a full segment is kept open until synced rather than closed at once.
  static Result<std::unique_ptr<AuditJournal>> Open(const std::filesystem::path& root,
                                                    std::int64_t segment_bytes, bool sync);
  ~AuditJournal();
  AuditJournal(const AuditJournal&) = delete;
  AuditJournal& operator=(const AuditJournal&) = delete;

  // The slot's identity, stable across restarts; the store keeps its JournalMark under it.
  const std::string& id() const { return id_; }
  const std::filesystem::path& directory() const { return dir_; }

  // Appends one event. Callers serialise appends (the audit writer holds its lock).
  Result<JournalMark> Append(const AuditEvent& event);
  // Appends whole records framed by EncodeJournalRecord, with one write(); likewise serialised.
  Result<JournalMark> AppendRecords(std::string_view records);
  // Flushes every record appended before the call to stable storage. Safe beside Append.
  Result<void> Sync();
  // Calls `visit` for every record after `from`, oldest first, in the segments written before
  // this process took the slot. A torn tail is cut off and reported in the log.
  Result<void> Replay(const JournalMark& from,
                      const std::function<void(AuditEvent&&, const JournalMark& end)>& visit);
  // Reads this process's own records in order, where the last call stopped (first: the start
  // of its first segment), for the writer thread. `until` is the mark Append returned last, so
  // every record before it is whole. Decodes at most `max` records into `out`, which ends with
  // exactly that many elements (their strings' memory reused from earlier calls), and returns
  // the mark after the last record read. `ends`, when given, gets the mark after each record.
  Result<JournalMark> ReadOwn(const JournalMark& until, std::size_t max,
                              std::vector<AuditEvent>& out,
                              std::vector<JournalMark>* ends = nullptr);
  // Deletes the segments wholly before `mark`: the store has every record in them.
  void ForgetBefore(const JournalMark& mark);

  // Other slots under the same root that no running process holds, each taken for as long as
  // the returned journal lives, so that their records can be replayed.
  // `own` (may be null): the caller's own slot, skipped.
  static std::vector<std::unique_ptr<AuditJournal>> TakeOrphans(const std::filesystem::path& root,
                                                                const AuditJournal* own);

 private:
  AuditJournal() = default;
  static Result<std::unique_ptr<AuditJournal>> TakeSlot(const std::filesystem::path& dir,
                                                        bool create_segment, bool sync);
  Result<void> StartSegment(std::int64_t number);
  std::vector<std::int64_t> Segments() const;

  std::filesystem::path dir_;
  std::string id_;
  int lock_fd_ = -1;
  std::int64_t segment_bytes_ = 0;
  bool sync_ = false;
  std::int64_t first_own_segment_ = 0;  // segments below it were there when the slot was taken
  std::int64_t segment_ = 0;            // the one appended to
  std::int64_t offset_ = 0;
  std::string buffer_;  // reused by Append
  // ReadOwn's, on the writer thread.
  JournalMark read_;
  int read_fd_ = -1;
  std::int64_t read_fd_segment_ = -1;
  std::string read_buffer_;
  std::mutex fds_mu_;
  int fd_ = -1;                      // guarded by fds_mu_ against Sync
  std::vector<int> full_fds_;        // guarded by fds_mu_: full segments not yet synced
  bool directory_unsynced_ = false;  // guarded by fds_mu_: a segment was created since
};

}  // namespace gatehouse

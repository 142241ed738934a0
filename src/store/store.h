// The persistence interface. Every method blocks (disk or network), so callers on network
// threads must hop to the blocking pool first (see http/server.h).
//
// Errors: kNotFound when a row does not exist in the given org, kAlreadyExists on a unique
// conflict, kUnavailable when the database cannot be reached or stays busy, kInternal otherwise.
// Org-owned lookups always take the org id, so that one org can never read another's rows.
//
// Thread-safety: implementations are safe to call from many threads at once.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "store/records.h"
#include "store/sql.h"

namespace gatehouse {

class Store {
 public:
  virtual ~Store() = default;

  // Cheap round trip for /readyz.
  virtual Result<void> Ping() = 0;

  // Every change takes its audit event, which commits in the same transaction: a change is
  // never on disk without its record, nor a record without its change (issue 4). The store
  // assigns the event's seq and hashes, and fills `details` with before/after where it reads
  // them anyway.
  virtual Result<void> InsertOrg(const Org& org, const AuditEvent& audit) = 0;
  virtual Result<Org> GetOrg(std::string_view org_id) = 0;
  virtual Result<Org> UpdateOrg(std::string_view org_id, const OrgUpdate& update,
                                const AuditEvent& audit) = 0;
  virtual Result<std::vector<Org>> ListOrgs() = 0;

  // Creates an org and its first (owner) key atomically. With `bootstrap`, also marks the store
  // initialised, and fails with kAlreadyExists (changing nothing) if it was initialised before.
  virtual Result<void> CreateOrgWithKey(const Org& org, const ApiKeyRecord& owner_key,
                                        bool bootstrap, const AuditEvent& audit) = 0;
  // The org created by Bootstrap, if any.
  virtual Result<std::optional<std::string>> BootstrapOrgId() = 0;

  virtual Result<void> InsertKey(const ApiKeyRecord& key, const AuditEvent& audit) = 0;
  virtual Result<ApiKeyRecord> GetKey(std::string_view org_id, std::string_view key_id) = 0;
  // Crosses orgs by necessity: the org is not known until the key is found.
  virtual Result<ApiKeyRecord> FindKeyByHash(std::string_view key_hash) = 0;
  // After a pepper rotation: the key's hash becomes `new_hash` if it still is `old_hash`. True
  // when this call changed it.
  virtual Result<bool> ReplaceKeyHash(std::string_view org_id, std::string_view key_id,
                                      std::string_view old_hash, std::string_view new_hash) = 0;
  virtual Result<KeyPage> ListKeys(std::string_view org_id, const KeyListQuery& query) = 0;
  // Sets revoked_at if it is not set yet; returns the record as it is afterwards.
  virtual Result<ApiKeyRecord> RevokeKey(std::string_view org_id, std::string_view key_id,
                                         UnixMicros at, const AuditEvent& audit) = 0;
  // Inserts `replacement` and moves the old key's expiry to `old_expires_at`, atomically.
  virtual Result<void> RotateKey(std::string_view org_id, std::string_view old_key_id,
                                 const ApiKeyRecord& replacement, UnixMicros old_expires_at,
                                 const AuditEvent& audit) = 0;
  // Revocations and rotations, in commit order, after `after_seq`: every process that caches keys
  // polls this so that a key revoked anywhere (another node, the CLI) is dropped everywhere.
  virtual Result<std::vector<KeyInvalidation>> KeyInvalidationsSince(std::int64_t after_seq,
                                                                     int limit) = 0;
  // The newest sequence number, so that a starting process skips history.
  virtual Result<std::int64_t> LatestKeyInvalidation() = 0;

  // Keeps the latest sighting per key; older sightings never overwrite newer ones.
  virtual Result<void> RecordKeyUsage(const std::vector<KeyUsage>& usage) = 0;

  // The audit writer's group commit: appends `events` (of any orgs) to their orgs' chains and
  // adds `usage` to the per-day key counts, all in one transaction. Fills each event's seq and
  // hashes. Either everything is durable when it returns, or nothing is. With `fsync`, durable
  // means on stable storage; without, it means handed to the operating system (SQLite) or the
  // database server (PostgreSQL), which survives the death of this process, not of the machine.
  // With `progress`, the same transaction records how far the store has taken that audit
  // journal's records (audit/journal.h), so that a replay after a crash adds none twice.
  virtual Result<void> AppendAudit(std::vector<AuditEvent>& events,
                                   const std::vector<KeyUsageCount>& usage, bool fsync,
                                   const JournalProgress* progress) = 0;
  Result<void> AppendAudit(std::vector<AuditEvent>& events, const std::vector<KeyUsageCount>& usage,
                           bool fsync) {
    return AppendAudit(events, usage, fsync, nullptr);
  }
  // The mark saved by the last AppendAudit with this journal's progress; nullopt if none was.
  virtual Result<std::optional<JournalMark>> JournalProgressOf(std::string_view journal_id) = 0;
  // Newest first, filtered; see AuditQuery.
  virtual Result<AuditPage> ListAudit(std::string_view org_id, const AuditQuery& query) = 0;
  // Oldest first, seq > after_seq: for verification and export.
  virtual Result<std::vector<AuditEvent>> AuditChain(std::string_view org_id,
                                                     std::int64_t after_seq, int limit) = 0;
  virtual Result<AuditHead> GetAuditHead(std::string_view org_id) = 0;
  // Retention: deletes the org's events older than `before` (never the newest one), after
  // recording a checkpoint at the cut (the last deleted event's seq and hash), signed with
  // `sign(org, checkpoint)`, and `audit` (the prune's own event), in one transaction. Returns
  // how many events went.
  virtual Result<std::int64_t> PruneAudit(
      std::string_view org_id, UnixMicros before,
      const std::function<std::string(std::string_view org, const AuditHead& checkpoint)>& sign,
      const AuditEvent& audit) = 0;
  // The key's per-day counts from `since_day` ("YYYY-MM-DD") on, oldest first.
  virtual Result<std::vector<KeyUsageDay>> KeyUsageDays(std::string_view org_id,
                                                        std::string_view key_id,
                                                        std::string_view since_day) = 0;

  // Runs `body` in one transaction of `org_id` (empty: global); see store/sql.h. Transient
  // failures may run `body` again, so it must only talk to the database.
  virtual Result<void> RunSql(std::string_view org_id, bool write, const SqlBody& body) = 0;

  // Pushes revocations and rotations made by other processes as they commit: blocks, calling
  // `on_invalidated(key_hash)` for each, until `stop` is set, reconnecting by itself. A store
  // without such a channel returns at once; polling KeyInvalidationsSince covers it (and any
  // gap while a channel reconnects).
  virtual void WatchKeyInvalidations(
      const std::function<void(std::string_view key_hash)>& on_invalidated,
      const std::atomic<bool>& stop) {
    (void)on_invalidated;
    (void)stop;
  }
};

}  // namespace gatehouse

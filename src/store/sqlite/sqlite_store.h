// The embedded store: one SQLite file in WAL mode, with versioned migrations applied on open.
//
// A small pool of connections serves concurrent readers; writers take BEGIN IMMEDIATE so that a
// busy database shows up as a wait (busy_timeout), not as a failed upgrade half way through a
// transaction. A database that stays locked past the timeout is kUnavailable.
//
// Tenancy is the database's job, not the queries': every org-owned call runs on a connection
// set to the caller's org, whose only way to org-owned rows is through views that show that
// org (migration 2), and an authorizer refuses any statement that names the tables themselves.
// Only the cross-org paths (bootstrap, lookup by key hash, usage, the invalidation log, the
// operator's org list) run as "system". See docs/architecture.md.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/store.h"

struct sqlite3;

namespace gatehouse {

class SqliteStore final : public Store {
 public:
  // `path` is a file path or ":memory:" (tests; then the pool has one connection).
  static Result<std::unique_ptr<SqliteStore>> Open(const std::string& path, int pool_size = 4);
  ~SqliteStore() override;

  Result<void> Ping() override;
  Result<void> InsertOrg(const Org& org, const AuditEvent& audit) override;
  Result<Org> GetOrg(std::string_view org_id) override;
  Result<Org> UpdateOrg(std::string_view org_id, const OrgUpdate& update,
                        const AuditEvent& audit) override;
  Result<std::vector<Org>> ListOrgs() override;
  Result<void> CreateOrgWithKey(const Org& org, const ApiKeyRecord& owner_key, bool bootstrap,
                                const AuditEvent& audit) override;
  Result<std::optional<std::string>> BootstrapOrgId() override;
  Result<void> InsertKey(const ApiKeyRecord& key, const AuditEvent& audit) override;
  Result<ApiKeyRecord> GetKey(std::string_view org_id, std::string_view key_id) override;
  Result<ApiKeyRecord> FindKeyByHash(std::string_view key_hash) override;
  Result<bool> ReplaceKeyHash(std::string_view org_id, std::string_view key_id,
                              std::string_view old_hash, std::string_view new_hash) override;
  Result<KeyPage> ListKeys(std::string_view org_id, const KeyListQuery& query) override;
  Result<ApiKeyRecord> RevokeKey(std::string_view org_id, std::string_view key_id, UnixMicros at,
                                 const AuditEvent& audit) override;
  Result<void> RotateKey(std::string_view org_id, std::string_view old_key_id,
                         const ApiKeyRecord& replacement, UnixMicros old_expires_at,
                         const AuditEvent& audit) override;
  Result<std::vector<KeyInvalidation>> KeyInvalidationsSince(std::int64_t after_seq,
                                                             int limit) override;
  Result<std::int64_t> LatestKeyInvalidation() override;
  Result<void> RecordKeyUsage(const std::vector<KeyUsage>& usage) override;
  using Store::AppendAudit;
  Result<void> AppendAudit(std::vector<AuditEvent>& events, const std::vector<KeyUsageCount>& usage,
                           bool fsync, const JournalProgress* progress) override;
  Result<std::optional<JournalMark>> JournalProgressOf(std::string_view journal_id) override;
  Result<AuditPage> ListAudit(std::string_view org_id, const AuditQuery& query) override;
  Result<std::vector<AuditEvent>> AuditChain(std::string_view org_id, std::int64_t after_seq,
                                             int limit) override;
  Result<AuditHead> GetAuditHead(std::string_view org_id) override;
  Result<std::int64_t> PruneAudit(
      std::string_view org_id, UnixMicros before,
      const std::function<std::string(std::string_view, const AuditHead&)>& sign,
      const AuditEvent& audit) override;
  Result<std::vector<KeyUsageDay>> KeyUsageDays(std::string_view org_id, std::string_view key_id,
                                                std::string_view since_day) override;

  Result<void> RunSql(std::string_view org_id, bool write, const SqlBody& body) override;

  // Runs one statement as a call for `org_id` would run (an empty org sees no org's rows) and
  // returns the first column of each row as text. For tests and diagnostics: it shows what a
  // query that forgot its org condition, or named a table directly, would get.
  Result<std::vector<std::string>> QueryAsTenant(std::string_view org_id, const std::string& sql);

  class Connection;

 private:
  SqliteStore() = default;
  class Lease;
  Connection* Take();
  Lease Acquire();
  Lease AcquireTenant(std::string_view org_id);  // sees that org's rows only
  Lease AcquireSystem();                         // the store's few cross-org paths
  void Release(Connection* c);

  std::mutex mu_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<Connection>> all_;
  std::vector<Connection*> idle_;  // guarded by mu_
};

}  // namespace gatehouse

// The PostgreSQL store (libpq), for clusters of gatehouse processes sharing one database.
//
// Tenancy is the database's: every org-owned table has ENABLE and FORCE ROW LEVEL SECURITY
// with a policy on `org_id = current_setting('gatehouse.org_id')`, and every org-owned call
// runs in a transaction that sets that value (SET LOCAL semantics, via set_config(..., true))
// to the caller's org. The server connects as a role that owns nothing and has no BYPASSRLS;
// Open() refuses anything else. The few lookups that must cross orgs (a key by its hash, key
// usage batches, the operator's list of orgs) go through SECURITY DEFINER functions that return
// only what that lookup needs.
//
// Migrations run separately, as the owner: Migrate() applies them and creates or updates the
// application role with the privileges the server needs and nothing more.
//
// Transient failures (a lost connection before anything was committed, serialization
// failures, deadlocks) are retried; a database that stays unreachable is kUnavailable.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/store.h"

namespace gatehouse {

class PgStore final : public Store {
 public:
  // Connects as the application role. Fails, saying why, when the role is a superuser, has
  // BYPASSRLS or owns the tables, or when the schema is missing or older than this build.
  static Result<std::unique_ptr<PgStore>> Open(const std::string& url, int pool_size = 4);

  // As the owner (`owner_url`): applies pending migrations, then creates the login role
  // `app_role` if missing and gives it exactly the server's privileges. With a non-empty
  // `app_password`, sets that role's password. Idempotent. Returns a summary for the operator.
  static Result<std::string> Migrate(const std::string& owner_url, const std::string& app_role,
                                     const std::string& app_password);

  ~PgStore() override;

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
  // LISTEN on the channel the invalidation trigger NOTIFYs, on a connection of its own.
  void WatchKeyInvalidations(const std::function<void(std::string_view)>& on_invalidated,
                             const std::atomic<bool>& stop) override;

  class Connection;
  class Tx;

 private:
  explicit PgStore(std::string url);
  // Runs `body` in one transaction whose org context is `org_id` (empty: none), retrying when
  // that is safe.
  template <typename T, typename F>
  Result<T> InTransaction(std::string_view org_id, F&& body);
  Connection* Take();
  void Give(Connection* c);

  std::string url_;
  std::mutex mu_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<Connection>> all_;
  std::vector<Connection*> idle_;  // guarded by mu_
};

}  // namespace gatehouse

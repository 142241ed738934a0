#include "audit/audit_service.h"

#include "audit/chain.h"
#include "core/json_input.h"
#include "core/time_format.h"

namespace gatehouse {

AuditService::AuditService(Store& store, const Clock& clock, std::string_view pepper,
                           int system_retention_days)
    : store_(store),
      clock_(clock),
      // A key for checkpoints only: the pepper itself keys API key hashes.
      checkpoint_key_(DeriveSubkey(pepper, "gatehouse-audit-checkpoint-key-v1")),
      system_retention_days_(system_retention_days) {}

std::string AuditService::SignCheckpoint(std::string_view org_id,
                                         const AuditHead& checkpoint) const {
  std::string message = "gatehouse-audit-checkpoint-v1\n";
  message += org_id;
  message += '\n';
  message += std::to_string(checkpoint.checkpoint_seq);
  message += '\n';
  message += checkpoint.checkpoint_hash;
  message += '\n';
  message += std::to_string(checkpoint.checkpoint_at);
  return HexEncode(checkpoint_key_.Mac(message));
}

Result<AuditPage> AuditService::List(std::string_view org_id, const AuditQuery& query) {
  if (query.limit < 1 || query.limit > 500) return FailField("limit", "limit must be 1-500");
  CatchUp();
  return store_.ListAudit(org_id, query);
}

Result<AuditVerifyReport> AuditService::Verify(std::string_view org_id) {
  CatchUp();
  auto head = store_.GetAuditHead(org_id);
  if (!head) return tl::unexpected(head.error());
  AuditVerifyReport report;
  report.head_seq = head->seq;
  report.checkpoint_seq = head->checkpoint_seq;
  if (head->checkpoint_seq > 0 &&
      !ConstantTimeEquals(SignCheckpoint(org_id, *head), head->checkpoint_signature)) {
    report.intact = false;
    report.broken_at = head->checkpoint_seq;
    report.reason = "the retention checkpoint's signature does not verify";
    return report;
  }
  AuditChainVerifier verifier(head->checkpoint_seq, head->checkpoint_hash);
  std::int64_t after = head->checkpoint_seq;
  for (;;) {
    auto page = ChainPage(org_id, after);
    if (!page) return tl::unexpected(page.error());
    for (const auto& e : *page) verifier.Feed(e);
    if (verifier.broken() || static_cast<int>(page->size()) < kChainPage) break;
    after = page->back().seq;
  }
  verifier.CheckHead(head->seq, head->hash);
  report.verified = verifier.verified();
  if (const auto& b = verifier.broken()) {
    report.intact = false;
    report.broken_at = b->seq;
    report.reason = b->reason;
  }
  return report;
}

Result<std::vector<AuditEvent>> AuditService::ChainPage(std::string_view org_id,
                                                        std::int64_t after_seq) {
  if (after_seq == 0) CatchUp();
  return store_.AuditChain(org_id, after_seq, kChainPage);
}

Result<std::int64_t> AuditService::ApplyRetention(const Org& org, const AuditSource& source) {
  if (org.audit_retention_days <= 0) return std::int64_t{0};
  UnixMicros now = clock_.Now();
  UnixMicros before =
      now - static_cast<UnixMicros>(org.audit_retention_days) * 86400 * kMicrosPerSecond;
  AuditEvent event = source.Event(org.id, "audit.prune", "org:" + org.id, 200, now);
  return store_.PruneAudit(
      org.id, before,
      [this](std::string_view org_id, const AuditHead& cp) { return SignCheckpoint(org_id, cp); },
      event);
}

Result<std::int64_t> AuditService::ApplyAllRetention() {
  auto orgs = store_.ListOrgs();
  if (!orgs) return tl::unexpected(orgs.error());
  orgs->push_back(Org{"system", "system", 0, system_retention_days_});
  std::int64_t total = 0;
  for (const auto& org : *orgs) {
    auto n = ApplyRetention(org);
    if (!n) return tl::unexpected(n.error());
    total += *n;
  }
  return total;
}

Result<AuditService::KeyUsageReport> AuditService::KeyUsage(std::string_view org_id,
                                                            std::string_view key_id, int days) {
  if (days < 1 || days > 366) return FailField("days", "days must be 1-366");
  CatchUp();
  auto key = store_.GetKey(org_id, key_id);
  if (!key) return tl::unexpected(key.error());
  UnixMicros since = clock_.Now() - static_cast<UnixMicros>(days - 1) * 86400 * kMicrosPerSecond;
  auto rows = store_.KeyUsageDays(org_id, key_id, FormatRfc3339(since).substr(0, 10));
  if (!rows) return tl::unexpected(rows.error());
  return KeyUsageReport{std::move(*key), std::move(*rows)};
}

}  // namespace gatehouse

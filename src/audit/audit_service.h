// Reading and keeping the audit log: filtered listing, chain verification, retention with
// signed checkpoints, and key usage. Plain C++ over the Store; the HTTP handlers and the CLI
// (`gatehouse audit verify`) both call it.
//
// Checkpoints are signed with Ed25519 under a key derived from the deployment's pepper (or from
// a signing secret of its own, which can be rotated apart from it), so that someone who can
// write to the database but does not hold that secret cannot move the start of a chain to hide
// deleted events, and an auditor who holds only the public key
// (/.well-known/jwks.json) can check them. Verify also signs the head it found intact: an
// auditor who keeps those statements can later prove that a chain was once longer, which the
// chain alone cannot show when someone truncates the tail and the head together.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "audit/details.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/signing.h"
#include "store/store.h"

namespace gatehouse {

// A statement signed with the audit key: `statement` is the exact text signed (UTF-8, lines
// separated by \n), `signature` its Ed25519 signature in base64url, `key_id` the JWKS kid.
struct SignedAuditStatement {
  std::string statement;
  std::string signature;
  std::string key_id;
};

struct AuditVerifyReport {
  bool intact = true;
  std::int64_t verified = 0;  // events checked
  std::int64_t head_seq = 0;
  std::int64_t checkpoint_seq = 0;  // the chain was verified from here (0: from the start)
  std::optional<std::int64_t> broken_at;
  std::string reason;
  // Where the chain starts after retention (checkpoint_seq > 0): its hash and signed statement.
  // Checkpoints written before signatures were Ed25519 carry an HMAC that only the deployment
  // can check; they have no statement.
  std::string checkpoint_hash;
  std::optional<SignedAuditStatement> checkpoint;
  // "gatehouse-audit-head-v1\n<org>\n<head seq>\n<head hash>\n<verified at, RFC 3339>",
  // signed only when the chain is intact.
  std::string head_hash;
  std::optional<SignedAuditStatement> signed_head;
  // With an anchor (a signed head kept from an earlier verify): "held" when the chain still
  // holds that event with that hash, "pruned" when retention has since removed it. When the
  // chain no longer holds it, the report is not intact and broken_at is the anchor's seq.
  std::optional<std::string> anchor;
};

// Reads {"anchor": <a signed_head as verify printed it>} (the API's body), or the signed_head
// object itself when `bare` (`gatehouse audit verify --anchor FILE`). No anchor: nullopt.
Result<std::optional<SignedAuditStatement>> ReadAuditAnchor(std::string_view json, bool bare);

// The report as the API and `gatehouse audit verify --json` print it.
boost::json::object AuditVerifyReportJson(const AuditVerifyReport& report);

class AuditService {
 public:
  // `system_retention_days`: how long the org-less "system" chain (refused credentials that
  // name no org) keeps events; 0 forever. An attacker writes to it at will, so it needs a bound.
  AuditService(Store& store, const Clock& clock, std::string_view pepper,
               int system_retention_days = 30);
  // The key that signs, and the public keys of keys that signed before it. `signing_secret`
  // (empty: the pepper) derives the signing key. Statements and checkpoints signed by a
  // retired key still verify, and JWKS keeps publishing it, so that rotating the key does not
  // orphan what auditors already hold.
  // `previous_pepper` and `next_pepper` (empty: none): the peppers of a rotation under way.
  // When the pepper derives the signing key, the keys they derive verify with the retired ones,
  // without being listed: the previous pepper's signed before, and the next pepper's signs on
  // the nodes already switched.
  struct SigningKeys {
    std::string_view signing_secret;
    std::vector<Ed25519PublicKey> retired;
    std::string_view previous_pepper;
    std::string_view next_pepper;
  };
  AuditService(Store& store, const Clock& clock, std::string_view pepper, int system_retention_days,
               const SigningKeys& keys);

  // Called before each read of the log (List, Verify, KeyUsage, an export's first page), so
  // that decisions still on their way to the store are in what the read sees.
  void SetCatchUp(std::function<void()> catch_up) { catch_up_ = std::move(catch_up); }

  Result<AuditPage> List(std::string_view org_id, const AuditQuery& query);
  // `anchor`: a signed head from an earlier verify of this org, which the chain must still hold.
  // One suffices: an intact chain that holds the newest anchor holds every older one. An anchor
  // this deployment did not sign, or signed for another org, is kInvalidArgument.
  Result<AuditVerifyReport> Verify(std::string_view org_id,
                                   const SignedAuditStatement* anchor = nullptr);
  // The next page of the chain, oldest first, after `after_seq` (verify and export read it so);
  // a page shorter than kChainPage is the last.
  static constexpr int kChainPage = 1000;
  Result<std::vector<AuditEvent>> ChainPage(std::string_view org_id, std::int64_t after_seq);
  // Applies the org's retention now; returns how many events went. 0 when retention is off.
  Result<std::int64_t> ApplyRetention(const Org& org, const AuditSource& source = {});
  // Every org's retention, and the system chain's (the server runs this periodically).
  Result<std::int64_t> ApplyAllRetention();

  struct KeyUsageReport {
    ApiKeyRecord key;
    std::vector<KeyUsageDay> days;
  };
  // Usage of the last `days` days (1-366), today included.
  Result<KeyUsageReport> KeyUsage(std::string_view org_id, std::string_view key_id, int days);

  // "ed25519:<kid>:<base64url signature>" over CheckpointStatement().
  std::string SignCheckpoint(std::string_view org_id, const AuditHead& checkpoint) const;
  static std::string CheckpointStatement(std::string_view org_id, const AuditHead& checkpoint);
  bool CheckpointSignatureValid(std::string_view org_id, const AuditHead& head) const;
  // The key that signs now.
  const Ed25519Signer& signer() const { return signer_; }
  // /.well-known/jwks.json: the signing key first, then the retired ones.
  std::string JwksJson() const;

 private:
  void CatchUp() const {
    if (catch_up_) catch_up_();
  }

  Store& store_;
  const Clock& clock_;
  std::function<void()> catch_up_;
  SignedAuditStatement SignStatement(std::string statement) const;
  bool SignatureValid(const SignedAuditStatement& s) const;
  // Judges the chain (already verified intact) against an earlier signed head.
  Result<void> CheckAnchor(std::string_view org_id, const AuditHead& head,
                           const SignedAuditStatement& anchor, AuditVerifyReport& report);

  Ed25519Signer signer_;
  std::vector<std::pair<std::string, Ed25519PublicKey>> retired_;  // kid, key
  // Checks checkpoints signed before Ed25519 (hex HMAC-SHA-256); signs nothing new.
  PepperedKey legacy_checkpoint_key_;
  int system_retention_days_;
};

}  // namespace gatehouse

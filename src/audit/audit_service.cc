#include "audit/audit_service.h"

#include <algorithm>
#include <charconv>
#include <vector>

#include "audit/chain.h"
#include "core/json_input.h"
#include "core/time_format.h"

namespace gatehouse {

namespace {
constexpr std::string_view kEd25519Prefix = "ed25519:";
constexpr std::string_view kHeadStatementKind = "gatehouse-audit-head-v1";

// A signing key for the audit log only: the pepper itself keys API key hashes.
Digest32 AuditSigningSeed(std::string_view pepper) {
  return HmacSha256Key(pepper).Mac("gatehouse-audit-signing-key-v1");
}

// A signed statement's text: its kind, then one field a line. Checkpoints and heads share the
// form, so that a verifier parses both the same way.
std::string Statement(std::string_view kind, std::string_view org_id, std::int64_t seq,
                      std::string_view hash, std::string_view time) {
  const std::string seq_text = std::to_string(seq);
  std::string out(kind);
  for (std::string_view field : {org_id, std::string_view(seq_text), hash, time}) {
    out += '\n';
    out += field;
  }
  return out;
}

std::string CheckpointMessage(std::string_view version, std::string_view org_id,
                              const AuditHead& checkpoint) {
  return Statement(std::string("gatehouse-audit-checkpoint-") + std::string(version), org_id,
                   checkpoint.checkpoint_seq, checkpoint.checkpoint_hash,
                   std::to_string(checkpoint.checkpoint_at));
}

// "ed25519:<kid>:<signature>" as SignCheckpoint writes it; nullopt for a legacy HMAC.
struct StoredSignature {
  std::string_view key_id;
  std::string_view signature;
};
std::optional<StoredSignature> ParseEd25519(std::string_view stored) {
  if (!stored.starts_with(kEd25519Prefix)) return std::nullopt;
  stored.remove_prefix(kEd25519Prefix.size());
  const auto colon = stored.find(':');
  if (colon == std::string_view::npos) return StoredSignature{stored, {}};
  return StoredSignature{stored.substr(0, colon), stored.substr(colon + 1)};
}
boost::json::value StatementJson(const std::optional<SignedAuditStatement>& s) {
  if (!s) return nullptr;
  boost::json::object o;
  o["statement"] = s->statement;
  o["signature"] = s->signature;
  o["kid"] = s->key_id;
  o["alg"] = "EdDSA";
  return o;
}
}  // namespace

namespace {
// `prefix`: "anchor." inside the API's body, so that messages name the field as sent.
Result<SignedAuditStatement> ReadStatement(JsonObjectReader& r, const std::string& prefix) {
  SignedAuditStatement s;
  for (auto [name, field] : {std::pair{"statement", &s.statement},
                             std::pair{"signature", &s.signature}, std::pair{"kid", &s.key_id}}) {
    auto v = r.OptString(name);
    if (!v) return tl::unexpected(v.error());
    if (!*v) return FailField(prefix + name, prefix + name + " is required");
    *field = std::move(**v);
  }
  if (auto alg = r.OptString("alg"); !alg) {
    return tl::unexpected(alg.error());
  } else if (*alg && **alg != "EdDSA") {
    return FailField(prefix + "alg", prefix + "alg must be EdDSA");
  }
  if (auto unknown = r.RejectUnknownFields(); !unknown) return tl::unexpected(unknown.error());
  return s;
}
}  // namespace

Result<std::optional<SignedAuditStatement>> ReadAuditAnchor(std::string_view json, bool bare) {
  auto reader = JsonObjectReader::Parse(json);
  if (!reader) return tl::unexpected(reader.error());
  if (bare) {
    auto s = ReadStatement(*reader, "");
    if (!s) return tl::unexpected(s.error());
    return std::optional<SignedAuditStatement>(std::move(*s));
  }
  auto anchor = reader->OptObject("anchor");
  if (!anchor) return tl::unexpected(anchor.error());
  if (auto unknown = reader->RejectUnknownFields(); !unknown) {
    return tl::unexpected(unknown.error());
  }
  if (!*anchor) return std::optional<SignedAuditStatement>();
  auto s = ReadStatement(**anchor, "anchor.");
  if (!s) return tl::unexpected(s.error());
  return std::optional<SignedAuditStatement>(std::move(*s));
}

boost::json::object AuditVerifyReportJson(const AuditVerifyReport& r) {
  boost::json::object o;
  o["intact"] = r.intact;
  o["verified"] = r.verified;
  o["head_seq"] = r.head_seq;
  o["head_hash"] = r.head_hash;
  o["checkpoint_seq"] = r.checkpoint_seq;
  o["checkpoint_hash"] = r.checkpoint_seq > 0 ? boost::json::value(r.checkpoint_hash) : nullptr;
  o["checkpoint"] = StatementJson(r.checkpoint);
  o["signed_head"] = StatementJson(r.signed_head);
  o["broken_at"] = r.broken_at ? boost::json::value(*r.broken_at) : nullptr;
  if (!r.intact) o["reason"] = r.reason;
  if (r.anchor) o["anchor"] = *r.anchor;
  return o;
}

AuditService::AuditService(Store& store, const Clock& clock, std::string_view pepper,
                           int system_retention_days)
    : AuditService(store, clock, pepper, system_retention_days, SigningKeys{}) {}

AuditService::AuditService(Store& store, const Clock& clock, std::string_view pepper,
                           int system_retention_days, const SigningKeys& keys)
    : store_(store),
      clock_(clock),
      signer_(AuditSigningSeed(keys.signing_secret.empty() ? pepper : keys.signing_secret)),
      legacy_checkpoint_key_(Peppers{pepper, keys.previous_pepper, keys.next_pepper},
                             "gatehouse-audit-checkpoint-key-v1"),
      system_retention_days_(system_retention_days) {
  std::vector<Ed25519PublicKey> retired = keys.retired;
  for (std::string_view other : {keys.previous_pepper, keys.next_pepper}) {
    if (keys.signing_secret.empty() && !other.empty()) {
      retired.push_back(Ed25519Signer(AuditSigningSeed(other)).public_key());
    }
  }
  for (const auto& key : retired) {
    const bool listed = std::any_of(retired_.begin(), retired_.end(),
                                    [&](const auto& kid_key) { return kid_key.second == key; });
    if (key != signer_.public_key() && !listed) retired_.emplace_back(Ed25519KeyId(key), key);
  }
}

std::string AuditService::JwksJson() const {
  std::vector<Ed25519PublicKey> keys{signer_.public_key()};
  for (const auto& [kid, key] : retired_) keys.push_back(key);
  return Ed25519Jwks(keys);
}

std::string AuditService::CheckpointStatement(std::string_view org_id,
                                              const AuditHead& checkpoint) {
  return CheckpointMessage("v2", org_id, checkpoint);
}

SignedAuditStatement AuditService::SignStatement(std::string statement) const {
  const Ed25519Signature signature = signer_.Sign(statement);
  return {std::move(statement), Base64UrlEncode(signature.data(), signature.size()),
          signer_.key_id()};
}

std::string AuditService::SignCheckpoint(std::string_view org_id,
                                         const AuditHead& checkpoint) const {
  SignedAuditStatement s = SignStatement(CheckpointStatement(org_id, checkpoint));
  return std::string(kEd25519Prefix) + s.key_id + ":" + s.signature;
}

bool AuditService::SignatureValid(const SignedAuditStatement& s) const {
  const Ed25519PublicKey* key = s.key_id == signer_.key_id() ? &signer_.public_key() : nullptr;
  for (const auto& [kid, retired] : retired_) {
    if (!key && s.key_id == kid) key = &retired;
  }
  const auto raw = Base64UrlDecode(s.signature);
  Ed25519Signature signature{};
  if (!key || !raw || raw->size() != signature.size()) return false;
  std::copy(raw->begin(), raw->end(), signature.begin());
  return VerifyEd25519(*key, s.statement, signature);
}

Result<void> AuditService::CheckAnchor(std::string_view org_id, const AuditHead& head,
                                       const SignedAuditStatement& anchor,
                                       AuditVerifyReport& report) {
  // Signed by us, so well formed; only the org needs checking.
  std::string_view rest = anchor.statement;
  if (!rest.starts_with(kHeadStatementKind) ||
      !rest.substr(kHeadStatementKind.size()).starts_with('\n')) {
    return FailField("anchor", "the anchor is not a signed audit head");
  }
  rest.remove_prefix(kHeadStatementKind.size() + 1);
  std::vector<std::string_view> lines;
  for (std::size_t end; (end = rest.find('\n')) != std::string_view::npos;) {
    lines.push_back(rest.substr(0, end));
    rest.remove_prefix(end + 1);
  }
  lines.push_back(rest);
  std::int64_t seq = 0;
  if (lines.size() != 4 || lines[0] != org_id ||
      std::from_chars(lines[1].data(), lines[1].data() + lines[1].size(), seq).ec != std::errc{}) {
    return FailField("anchor", "the anchor is a signed head of another org");
  }
  const std::string_view hash = lines[2], signed_at = lines[3];
  auto lost = [&](std::string why) {
    report.intact = false;
    report.broken_at = seq;
    report.reason = "the chain no longer holds the head signed at " + std::string(signed_at) +
                    " (seq " + std::to_string(seq) + "): " + std::move(why);
  };
  if (seq > head.seq) {
    lost("the chain now ends at seq " + std::to_string(head.seq) + "; its tail was cut");
  } else if (seq < head.checkpoint_seq) {
    report.anchor = "pruned";
  } else if (seq == head.checkpoint_seq) {
    if (seq > 0 && !ConstantTimeEquals(hash, head.checkpoint_hash)) {
      lost("the retention checkpoint has another hash");
    } else {
      report.anchor = "held";
    }
  } else {
    auto event = store_.AuditChain(org_id, seq - 1, 1);
    if (!event) return tl::unexpected(event.error());
    if (event->empty() || event->front().seq != seq) {
      lost("the event is missing");
    } else if (!ConstantTimeEquals(event->front().hash, hash)) {
      lost("the event there has another hash; the chain was rewritten from there on");
    } else {
      report.anchor = "held";
    }
  }
  return {};
}

bool AuditService::CheckpointSignatureValid(std::string_view org_id, const AuditHead& head) const {
  const auto stored = ParseEd25519(head.checkpoint_signature);
  if (!stored) {
    return legacy_checkpoint_key_.Matches(CheckpointMessage("v1", org_id, head),
                                          head.checkpoint_signature);
  }
  return SignatureValid({CheckpointStatement(org_id, head), std::string(stored->signature),
                         std::string(stored->key_id)});
}

Result<AuditPage> AuditService::List(std::string_view org_id, const AuditQuery& query) {
  if (query.limit < 1 || query.limit > 500) return FailField("limit", "limit must be 1-500");
  CatchUp();
  return store_.ListAudit(org_id, query);
}

Result<AuditVerifyReport> AuditService::Verify(std::string_view org_id,
                                               const SignedAuditStatement* anchor) {
  if (anchor && !SignatureValid(*anchor)) {
    return FailField("anchor",
                     "the anchor's signature does not verify with this deployment's "
                     "audit key (/.well-known/jwks.json)");
  }
  CatchUp();
  auto head = store_.GetAuditHead(org_id);
  if (!head) return tl::unexpected(head.error());
  AuditVerifyReport report;
  report.head_seq = head->seq;
  report.head_hash = head->hash;
  report.checkpoint_seq = head->checkpoint_seq;
  if (head->checkpoint_seq > 0) {
    report.checkpoint_hash = head->checkpoint_hash;
    if (const auto stored = ParseEd25519(head->checkpoint_signature)) {
      report.checkpoint =
          SignedAuditStatement{CheckpointStatement(org_id, *head), std::string(stored->signature),
                               std::string(stored->key_id)};
    }
  }
  if (head->checkpoint_seq > 0 && !CheckpointSignatureValid(org_id, *head)) {
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
    return report;
  }
  if (anchor) {
    if (auto checked = CheckAnchor(org_id, *head, *anchor, report); !checked) {
      return tl::unexpected(checked.error());
    }
    if (!report.intact) return report;
  }
  report.signed_head = SignStatement(
      Statement(kHeadStatementKind, org_id, head->seq, head->hash, FormatRfc3339(clock_.Now())));
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

// Tamper evidence for the audit log (issue 4): each org's events form a hash chain. An event's
// hash covers its every field and the previous event's hash, so an edit, a deletion or a
// reordering made directly in the database breaks the chain at the first event it touches, and
// a verifier can say where.
//
//   hash(n) = hex(SHA-256("gatehouse-audit-v1" || prev_hash(n) || canonical(event n)))
//
// canonical() writes each field with its length first, in a fixed order, so no two different
// events have the same bytes. The first event of an org chains from kGenesisHash.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "store/records.h"

namespace gatehouse {

inline constexpr std::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// The bytes the hash covers, without the hashes themselves.
std::string CanonicalAuditBytes(const AuditEvent& event);

// The hash `event` must carry when it follows an event whose hash is `prev_hash`.
std::string AuditHash(std::string_view prev_hash, const AuditEvent& event);

// Fills seq, prev_hash and hash for `event` appended after (last_seq, last_hash).
void LinkAuditEvent(AuditEvent& event, std::int64_t last_seq, std::string_view last_hash);

struct ChainBreak {
  std::int64_t seq = 0;  // the first event that does not verify (or the missing one)
  std::string reason;
};

// Checks an org's events fed in seq order. The first broken link is kept; later events are
// not judged, since everything after a break is suspect anyway.
class AuditChainVerifier {
 public:
  // From the start of the chain, or from a checkpoint (seq, hash) that is trusted.
  explicit AuditChainVerifier(std::int64_t after_seq = 0,
                              std::string after_hash = std::string(kGenesisHash));

  void Feed(const AuditEvent& event);
  // The chain must end at the recorded head; a missing tail is a deletion too.
  void CheckHead(std::int64_t head_seq, std::string_view head_hash);

  const std::optional<ChainBreak>& broken() const { return broken_; }
  std::int64_t verified() const { return verified_; }
  std::int64_t last_seq() const { return last_seq_; }

 private:
  void Break(std::int64_t seq, std::string reason);

  std::int64_t last_seq_;
  std::string last_hash_;
  std::int64_t verified_ = 0;
  std::optional<ChainBreak> broken_;
};

}  // namespace gatehouse

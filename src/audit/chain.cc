#include "audit/chain.h"

#include <charconv>

#include "core/crypto.h"

namespace gatehouse {
namespace {

void Put(std::string& out, std::string_view field) {
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof(digits), field.size()).ptr;
  out.append(digits, end);
  out += ':';
  out += field;
  out += '\n';
}

void PutNumber(std::string& out, std::int64_t n) {
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof(digits), n).ptr;
  Put(out, std::string_view(digits, static_cast<std::size_t>(end - digits)));
}

void AppendCanonical(std::string& out, const AuditEvent& e) {
  Put(out, e.org_id);
  PutNumber(out, e.seq);
  PutNumber(out, e.at);
  Put(out, e.actor);
  Put(out, e.action);
  Put(out, e.resource);
  Put(out, e.result);
  PutNumber(out, e.status);
  Put(out, e.client_ip);
  Put(out, e.user_agent);
  Put(out, e.request_id);
  Put(out, e.details);
}

// The hash of `event` after `prev_hash`, as hex into `out`. The audit writer hashes every event
// it appends, so the input is built in one buffer per thread that keeps its capacity.
void HashInto(std::string& out, std::string_view prev_hash, const AuditEvent& event) {
  thread_local std::string input;
  input.assign("gatehouse-audit-v1\n");
  Put(input, prev_hash);
  AppendCanonical(input, event);
  Digest32 digest = Sha256(input);
  HexEncodeInto(out, digest.data(), digest.size());
}

}  // namespace

std::string CanonicalAuditBytes(const AuditEvent& e) {
  std::string out;
  out.reserve(256 + e.details.size());
  AppendCanonical(out, e);
  return out;
}

std::string AuditHash(std::string_view prev_hash, const AuditEvent& event) {
  std::string out;
  HashInto(out, prev_hash, event);
  return out;
}

void LinkAuditEvent(AuditEvent& event, std::int64_t last_seq, std::string_view last_hash) {
  event.seq = last_seq + 1;
  event.prev_hash.assign(last_hash);
  HashInto(event.hash, last_hash, event);
}

AuditChainVerifier::AuditChainVerifier(std::int64_t after_seq, std::string after_hash)
    : last_seq_(after_seq), last_hash_(std::move(after_hash)) {}

void AuditChainVerifier::Break(std::int64_t seq, std::string reason) {
  if (!broken_) broken_ = ChainBreak{seq, std::move(reason)};
}

void AuditChainVerifier::Feed(const AuditEvent& e) {
  if (broken_) return;
  if (e.seq != last_seq_ + 1) {
    Break(last_seq_ + 1, e.seq > last_seq_ + 1
                             ? "event " + std::to_string(last_seq_ + 1) + " is missing"
                             : "event " + std::to_string(e.seq) + " is out of order");
    return;
  }
  if (e.prev_hash != last_hash_) {
    Break(e.seq, "does not follow the event before it (prev_hash differs)");
    return;
  }
  if (AuditHash(e.prev_hash, e) != e.hash) {
    Break(e.seq, "its contents were changed after it was written (hash differs)");
    return;
  }
  last_seq_ = e.seq;
  last_hash_ = e.hash;
  ++verified_;
}

void AuditChainVerifier::CheckHead(std::int64_t head_seq, std::string_view head_hash) {
  if (broken_) return;
  if (head_seq > last_seq_) {
    Break(last_seq_ + 1, "events " + std::to_string(last_seq_ + 1) + " to " +
                             std::to_string(head_seq) + " are missing at the end");
  } else if (head_seq < last_seq_) {
    Break(head_seq + 1, "events after " + std::to_string(head_seq) +
                            " were added outside gatehouse (past the recorded head)");
  } else if (head_hash != last_hash_) {
    Break(head_seq, "the last event differs from the recorded head");
  }
}

}  // namespace gatehouse

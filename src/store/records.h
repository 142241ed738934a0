// Plain records that cross the store interface. No behaviour here: rules live in the domain
// services (orgs/, keys/), persistence in the store implementations.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"

namespace gatehouse {

struct Org {
  std::string id;
  std::string name;
  UnixMicros created_at = 0;
  int audit_retention_days = 0;  // 0: audit events are kept forever
};

// What PATCH /v1/orgs/{org} may change; absent fields stay as they are.
struct OrgUpdate {
  std::optional<std::string> name;
  std::optional<int> audit_retention_days;
};

struct ApiKeyRecord {
  std::string id;
  std::string org_id;
  std::string label;
  std::vector<std::string> scopes;
  std::string environment;  // "live" or "test"
  std::string key_hash;     // hex HMAC-SHA-256(pepper, key); the key itself is never stored
  std::string last4;
  std::optional<UnixMicros> expires_at;
  std::vector<std::string> ip_allowlist;  // CIDR texts, validated on the way in
  std::string created_by;                 // key id or user id of the creator
  UnixMicros created_at = 0;
  std::optional<UnixMicros> last_used_at;
  std::string last_used_ip;
  std::optional<UnixMicros> revoked_at;
  std::string rotated_from;  // id of the key this one replaced, if any
};

// One sighting of a key in use; the verifier batches these so that use costs no write per request.
struct KeyUsage {
  std::string key_id;
  UnixMicros at = 0;
  std::string ip;
};

struct KeyInvalidation {
  std::int64_t seq = 0;
  std::string key_hash;
};

struct KeyListQuery {
  int limit = 50;
  std::string cursor;  // opaque to callers: "<created_at>.<id>" of the last row seen
};

struct KeyPage {
  std::vector<ApiKeyRecord> keys;
  std::string next_cursor;  // empty on the last page
};

// One audit log entry (issue 4). Fields are what an auditor asks: when, which org, who, did
// what, to what, with what outcome, from where. Never a secret: the actor is an id.
struct AuditEvent {
  std::string org_id;
  std::int64_t seq = 0;  // 1, 2, 3… within the org, assigned when appended
  UnixMicros at = 0;
  std::string actor;     // key id, user id, "operator" (CLI) or "anonymous"
  std::string action;    // e.g. "key.create", "org.update", "auth.proxy"
  std::string resource;  // e.g. "key:key_…", "org:org_…", "route:/api/v1"
  std::string result;    // "success", "failure" or "denied"
  int status = 0;        // HTTP status, 0 outside HTTP (the CLI)
  std::string client_ip;
  std::string user_agent;
  std::string request_id;
  std::string details;    // a JSON object: before/after for changes, reasons for denials
  std::string prev_hash;  // hex; the genesis hash for an org's first event
  std::string hash;       // hex
};

// A place in an audit journal (audit/journal.h): a segment and a byte offset within it.
struct JournalMark {
  std::int64_t segment = 0;
  std::int64_t offset = 0;
};
// How far the store has taken one journal's records, saved with the batch that took them.
struct JournalProgress {
  std::string journal_id;
  JournalMark mark;
};

struct AuditQuery {
  // action "security.*" (a trailing ".*") matches every action with that prefix.
  std::optional<std::string> actor, action, resource, result;
  std::optional<UnixMicros> since, until;  // at >= since, at < until
  std::optional<std::int64_t> before_seq;  // the cursor: newest first, strictly older than this
  int limit = 50;
};

struct AuditPage {
  std::vector<AuditEvent> events;
  std::string next_cursor;  // empty on the last page
};

// An org's chain as recorded: its newest link, and the signed checkpoint where retention last
// cut it (seq 0 and the genesis hash when it was never pruned).
struct AuditHead {
  std::int64_t seq = 0;
  std::string hash;
  std::int64_t checkpoint_seq = 0;
  std::string checkpoint_hash;
  UnixMicros checkpoint_at = 0;
  std::string checkpoint_signature;  // AuditService::SignCheckpoint; empty: never pruned
};

// Requests of one key on one UTC day that ended in one status class, counted by the audit
// writer and added to the stored totals with each batch.
struct KeyUsageCount {
  std::string org_id;
  std::string key_id;
  std::string day;       // "YYYY-MM-DD", UTC
  int status_class = 2;  // 2-5
  std::int64_t count = 0;
};

struct KeyUsageDay {
  std::string day;
  std::int64_t status_2xx = 0, status_3xx = 0, status_4xx = 0, status_5xx = 0;
};

// People (issue 5). A user is one person across orgs (one email, one user); memberships give
// them a role in each org.
struct UserRecord {
  std::string id;
  std::string email;  // normalised (see people/email.h); unique
  std::string name;
  std::string password_hash;  // a PHC string ($argon2id$v=19$m=…,t=…,p=1$salt$hash)
  UnixMicros created_at = 0;
  UnixMicros password_changed_at = 0;
  std::optional<UnixMicros> disabled_at;
  std::optional<UnixMicros> last_login_at;
};

struct Membership {
  std::string org_id;
  std::string user_id;
  std::string role;
  UnixMicros created_at = 0;
  std::string email;                       // the user's, filled when listing an org's members
  std::string org_name;                    // the org's, filled when listing a user's orgs
  std::optional<UnixMicros> idle_timeout;  // the org's session policy, when listing a user's orgs
};

// An org's custom role; the built-in ones live in code (people/roles.h).
struct RoleRecord {
  std::string org_id;
  std::string name;
  std::string description;
  std::vector<std::string> permissions;
  UnixMicros created_at = 0;
};

struct Invitation {
  std::string id;
  std::string org_id;
  std::string email;
  std::string role;
  std::string token_hash;  // hex HMAC of the token; the token itself is shown once
  std::string invited_by;
  UnixMicros created_at = 0;
  UnixMicros expires_at = 0;
  std::optional<UnixMicros> accepted_at;
  std::string accepted_by;
  std::optional<UnixMicros> revoked_at;
};

// One token of a sign-in. Refresh replaces the token (a new row of the same family) and marks the
// old one rotated; presenting a rotated token again ends the family.
struct SessionRecord {
  std::string id;
  std::string family_id;  // the sign-in; what "a session" means to users
  std::string user_id;
  std::string token_hash;
  UnixMicros created_at = 0;         // of this token
  UnixMicros family_created_at = 0;  // of the sign-in: the absolute lifetime counts from here
  UnixMicros last_seen_at = 0;
  UnixMicros auth_time = 0;  // last password check (sign-in or re-authentication)
  UnixMicros idle_timeout = 0;
  UnixMicros expires_at = 0;  // absolute
  std::optional<UnixMicros> rotated_at;
  std::optional<UnixMicros> revoked_at;
  std::string client_ip;
  std::string user_agent;
};

// Consecutive failed sign-ins for one email (known or not, so that the answer never says which).
struct LoginThrottle {
  int failures = 0;
  UnixMicros locked_until = 0;
};

}  // namespace gatehouse

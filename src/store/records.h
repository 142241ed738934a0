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

}  // namespace gatehouse

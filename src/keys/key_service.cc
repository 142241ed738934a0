#include "keys/key_service.h"

#include "store/columns.h"

#include <algorithm>
#include <set>

#include "core/json_input.h"
#include "core/random.h"
#include "core/time_format.h"

namespace gatehouse {

namespace {
constexpr UnixMicros kMaxLifetime = 10LL * 365 * 86400 * kMicrosPerSecond;
constexpr std::size_t kMaxLabelBytes = 200;
constexpr std::size_t kMaxScopes = 64;
constexpr std::size_t kMaxAllowlist = 100;
}  // namespace

KeyService::KeyService(Store& store, KeyVerifier& verifier, const Clock& clock,
                       std::shared_ptr<const Config> config)
    : store_(store), verifier_(verifier), clock_(clock), config_(std::move(config)) {}

Principal KeyService::Operator(std::string org_id) {
  return Principal{std::move(org_id), "operator", "operator", {"admin"}, "live", 0, {}, {}};
}

Result<IssuedKey> KeyService::Prepare(const Principal& creator, std::string_view org_id,
                                      const NewKeyParams& p) const {
  if (p.label.empty()) return FailField("label", "label is required");
  if (!IsPrintableText(p.label, kMaxLabelBytes)) {
    return FailField("label", "label must be at most 200 bytes with no control characters");
  }
  auto env = ParseEnvironment(p.environment);
  if (!env) return tl::unexpected(env.error());
  if (p.scopes.size() > kMaxScopes) return FailField("scopes", "at most 64 scopes");
  std::set<std::string, std::less<>> seen;
  for (const auto& s : p.scopes) {
    if (!config_->KnowsScope(s)) {
      std::string shown = IsPrintableText(s, 64) ? s : "(unprintable)";
      return FailField("scopes", "unknown scope " + shown + " (not in the scopes catalogue)");
    }
    if (!seen.insert(s).second) return FailField("scopes", "scope " + s + " is listed twice");
  }
  // A key never carries more than its creator holds.
  if (auto r = RequireScopes(creator, p.scopes); !r) {
    Error e = r.error();
    e.message = "cannot grant scopes you do not hold: " + JoinScopes(e.required, ',');
    return tl::unexpected(std::move(e));
  }
  UnixMicros now = clock_.Now();
  std::optional<UnixMicros> expires_at;
  if (p.expires_in && p.expires_at) {
    return FailField("expires_at", "give expires_in or expires_at, not both");
  }
  if (p.expires_in) {
    auto d = ParseDuration(*p.expires_in);
    if (!d) return FailField("expires_in", d.error().message);
    if (*d > kMaxLifetime) return FailField("expires_in", "a key lives at most 10 years");
    expires_at = now + *d;
  }
  if (p.expires_at) {
    auto t = ParseRfc3339(*p.expires_at);
    if (!t) return FailField("expires_at", t.error().message);
    if (*t <= now) return FailField("expires_at", "expires_at must be in the future");
    if (*t - now > kMaxLifetime) return FailField("expires_at", "a key lives at most 10 years");
    expires_at = *t;
  }
  if (p.ip_allowlist.size() > kMaxAllowlist) {
    return FailField("ip_allowlist", "at most 100 CIDR blocks");
  }
  std::vector<std::string> allowlist;
  for (const auto& c : p.ip_allowlist) {
    auto parsed = Cidr::Parse(c);
    if (!parsed) return tl::unexpected(parsed.error());
    allowlist.push_back(parsed->text());
  }

  IssuedKey out;
  out.secret = verifier_.format().Generate(*env);
  ApiKeyRecord& r = out.record;
  r.id = NewId("key");
  r.org_id = std::string(org_id);
  r.label = p.label;
  r.scopes = p.scopes;
  r.environment = std::string(EnvironmentName(*env));
  r.key_hash = verifier_.HashKey(out.secret);
  r.last4 = std::string(KeyLast4(out.secret));
  r.expires_at = expires_at;
  r.ip_allowlist = std::move(allowlist);
  r.created_by = creator.id;
  r.created_at = now;
  return out;
}

Result<IssuedKey> KeyService::Create(const Principal& creator, std::string_view org_id,
                                     const NewKeyParams& params, AuditSource source) {
  if (auto r = RequireOrg(creator, org_id); !r) return tl::unexpected(r.error());
  auto issued = Prepare(creator, org_id, params);
  if (!issued) return issued;
  if (source.actor.empty()) source.actor = creator.id;
  AuditEvent event =
      source.Event(org_id, "key.create", "key:" + issued->record.id, 201, clock_.Now());
  event.details = DetailsOf({{"label", issued->record.label},
                             {"scopes", JoinWords(issued->record.scopes)},
                             {"environment", issued->record.environment}});
  if (auto r = store_.InsertKey(issued->record, event); !r) return tl::unexpected(r.error());
  return issued;
}

Result<KeyPage> KeyService::List(std::string_view org_id, const KeyListQuery& query) {
  if (query.limit < 1 || query.limit > 200) return FailField("limit", "limit must be 1-200");
  return store_.ListKeys(org_id, query);
}

Result<ApiKeyRecord> KeyService::Get(std::string_view org_id, std::string_view key_id) {
  return store_.GetKey(org_id, key_id);
}

Result<ApiKeyRecord> KeyService::Revoke(std::string_view org_id, std::string_view key_id,
                                        const AuditSource& source) {
  UnixMicros now = clock_.Now();
  auto r =
      store_.RevokeKey(org_id, key_id, now,
                       source.Event(org_id, "key.revoke", "key:" + std::string(key_id), 200, now));
  if (r) verifier_.Invalidate(r->key_hash);
  return r;
}

Result<IssuedKey> KeyService::Rotate(const Principal& actor, std::string_view org_id,
                                     std::string_view key_id, UnixMicros grace,
                                     AuditSource source) {
  if (grace < 0 || grace > 30LL * 86400 * kMicrosPerSecond) {
    return FailField("grace_period", "grace_period must be between 0s and 30d");
  }
  auto old = store_.GetKey(org_id, key_id);
  if (!old) return tl::unexpected(old.error());
  if (State(*old) != "active") {
    return Fail(ErrorCode::kAlreadyExists,
                "only an active key can be rotated; this one is " + std::string(State(*old)));
  }
  UnixMicros now = clock_.Now();
  // The rotating principal acts for the old key's settings: it may not use rotation to obtain
  // scopes it could not grant directly.
  NewKeyParams params;
  params.label = old->label;
  params.scopes = old->scopes;
  params.environment = old->environment;
  params.ip_allowlist = old->ip_allowlist;
  auto issued = Prepare(actor, org_id, params);
  if (!issued) return issued;
  issued->record.expires_at = old->expires_at;
  issued->record.rotated_from = old->id;
  UnixMicros old_end = now + grace;
  if (old->expires_at && *old->expires_at < old_end) old_end = *old->expires_at;
  if (source.actor.empty()) source.actor = actor.id;
  AuditEvent event = source.Event(org_id, "key.rotate", "key:" + old->id, 201, now);
  event.details = DetailsOf(
      {{"replacement", issued->record.id}, {"old_key_expires_at", std::to_string(old_end)}});
  if (auto r = store_.RotateKey(org_id, key_id, issued->record, old_end, event); !r) {
    return tl::unexpected(r.error());
  }
  verifier_.Invalidate(old->key_hash);
  return issued;
}

std::string_view KeyService::State(const ApiKeyRecord& r) const {
  if (r.revoked_at) return "revoked";
  if (r.expires_at && *r.expires_at <= clock_.Now()) return "expired";
  return "active";
}

std::string KeyService::Masked(const ApiKeyRecord& r) const {
  auto env = ParseEnvironment(r.environment);
  return verifier_.format().Mask(env ? *env : KeyEnvironment::kLive, r.last4);
}

}  // namespace gatehouse

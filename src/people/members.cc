#include "people/members.h"

#include <set>

#include "core/json_input.h"
#include "core/random.h"
#include "people/email.h"
#include "store/columns.h"

namespace gatehouse {

namespace {
constexpr std::size_t kTokenRandomChars = 43;
constexpr std::size_t kMaxPermissions = 128;
}  // namespace

MemberService::MemberService(Store& store, PeopleRepository& people, AccountService& accounts,
                             const Clock& clock, std::shared_ptr<const Config> config,
                             const Peppers& peppers)
    : store_(store),
      people_(people),
      accounts_(accounts),
      clock_(clock),
      config_(std::move(config)),
      token_key_(peppers, "gatehouse-invitation-token-v1") {}

Result<RoleView> MemberService::ResolveRole(std::string_view org_id, std::string_view role) {
  if (auto b = BuiltinRole(*config_, role)) return *b;
  auto custom = people_.GetRole(org_id, role);
  if (!custom) return tl::unexpected(custom.error());
  if (!*custom) return Fail(ErrorCode::kNotFound, "role not found");
  return FromRecord(**custom);
}

Result<Principal> MemberService::PrincipalFor(const SessionRecord& session,
                                              std::string_view org_id) {
  auto m = people_.GetMember(org_id, session.user_id);
  if (!m) return tl::unexpected(m.error());
  if (!*m) {
    return Fail(ErrorCode::kOrgMismatch, "this credential belongs to a different organization");
  }
  auto role = ResolveRole(org_id, (*m)->role);
  // A member whose custom role was removed meanwhile holds nothing, rather than failing.
  std::vector<std::string> permissions = role ? role->permissions : std::vector<std::string>{};
  return Principal{std::string(org_id),
                   session.user_id,
                   "user",
                   std::move(permissions),
                   "live",
                   session.auth_time,
                   {},
                   {}};
}

Result<void> MemberService::CanGrant(const Principal& actor,
                                     const std::vector<std::string>& permissions,
                                     std::string_view what) const {
  auto r = RequireScopes(actor, permissions);
  if (r) return {};
  Error e = r.error();
  e.message =
      std::string(what) + " needs permissions you do not hold: " + JoinScopes(e.required, ',');
  return tl::unexpected(std::move(e));
}

Result<std::vector<Membership>> MemberService::Members(std::string_view org_id) {
  return people_.ListMembers(org_id);
}

Result<void> MemberService::AddMember(std::string_view org_id, std::string_view user_id,
                                      std::string_view role, const AuditSource& source) {
  auto resolved = ResolveRole(org_id, role);
  if (!resolved) return tl::unexpected(resolved.error());
  UnixMicros now = clock_.Now();
  Membership m{std::string(org_id), std::string(user_id), std::string(role), now, {}, {}, {}};
  AuditEvent e = source.Event(org_id, "member.add", "user:" + std::string(user_id), 201, now);
  e.details = DetailsOf({{"role", role}});
  return people_.AddMember(m, e);
}

Result<Membership> MemberService::ChangeRole(const Principal& actor, std::string_view user_id,
                                             std::string_view role, const AuditSource& source) {
  auto next = ResolveRole(actor.org_id, role);
  if (!next) {
    if (next.error().code == ErrorCode::kNotFound) return FailField("role", "no such role");
    return tl::unexpected(next.error());
  }
  if (auto r = CanGrant(actor, next->permissions, "giving this role"); !r) {
    return tl::unexpected(r.error());
  }
  auto current = people_.GetMember(actor.org_id, user_id);
  if (!current) return tl::unexpected(current.error());
  if (!*current) return Fail(ErrorCode::kNotFound, "member not found");
  // Taking a role away is granting in reverse: an admin cannot demote an owner.
  if (auto held = ResolveRole(actor.org_id, (*current)->role)) {
    if (auto r = CanGrant(actor, held->permissions, "changing this member's role"); !r) {
      return tl::unexpected(r.error());
    }
  }
  AuditEvent e =
      source.Event(actor.org_id, "member.role", "user:" + std::string(user_id), 200, clock_.Now());
  e.details = DetailsOf({{"before", (*current)->role}, {"after", role}});
  return people_.SetRole(actor.org_id, user_id, role, e);
}

Result<void> MemberService::Remove(const Principal& actor, std::string_view user_id,
                                   const AuditSource& source) {
  auto current = people_.GetMember(actor.org_id, user_id);
  if (!current) return tl::unexpected(current.error());
  if (!*current) return Fail(ErrorCode::kNotFound, "member not found");
  // Leaving needs no permission; removing someone else needs their role's permissions too.
  if (actor.id != user_id) {
    if (!HasScope(actor, "members:write")) {
      return tl::unexpected(Error{ErrorCode::kPermissionDenied,
                                  "missing required scope: members:write",
                                  {},
                                  {"members:write"}});
    }
    if (auto held = ResolveRole(actor.org_id, (*current)->role)) {
      if (auto r = CanGrant(actor, held->permissions, "removing this member"); !r) return r;
    }
  }
  AuditEvent e = source.Event(actor.org_id, actor.id == user_id ? "member.leave" : "member.remove",
                              "user:" + std::string(user_id), 200, clock_.Now());
  e.details = DetailsOf({{"role", (*current)->role}});
  return people_.RemoveMember(actor.org_id, user_id, e);
}

Result<int> MemberService::ForceLogout(const Principal& actor, std::string_view user_id,
                                       const AuditSource& source) {
  auto current = people_.GetMember(actor.org_id, user_id);
  if (!current) return tl::unexpected(current.error());
  if (!*current) return Fail(ErrorCode::kNotFound, "member not found");
  if (auto held = ResolveRole(actor.org_id, (*current)->role)) {
    if (auto r = CanGrant(actor, held->permissions, "ending this member's sessions"); !r) {
      return tl::unexpected(r.error());
    }
  }
  AuditEvent e = source.Event(actor.org_id, "member.force_logout", "user:" + std::string(user_id),
                              200, clock_.Now());
  return people_.RevokeSessions({std::string(user_id), "", ""}, clock_.Now(), {e});
}

Result<IssuedInvitation> MemberService::Invite(const Principal& actor, std::string_view email_in,
                                               std::string_view role, const AuditSource& source) {
  auto email = NormalizeEmail(email_in);
  if (!email) return tl::unexpected(email.error());
  auto resolved = ResolveRole(actor.org_id, role);
  if (!resolved) {
    if (resolved.error().code == ErrorCode::kNotFound) return FailField("role", "no such role");
    return tl::unexpected(resolved.error());
  }
  if (auto r = CanGrant(actor, resolved->permissions, "offering this role"); !r) {
    return tl::unexpected(r.error());
  }
  if (auto existing = people_.FindUserByEmail(*email); existing && *existing) {
    auto m = people_.GetMember(actor.org_id, (*existing)->id);
    if (m && *m) return Fail(ErrorCode::kAlreadyExists, "that email is already a member");
  }
  UnixMicros now = clock_.Now();
  IssuedInvitation out;
  out.token = std::string(kInvitationPrefix) + RandomBase62(kTokenRandomChars);
  Invitation& v = out.record;
  v.id = NewId("inv");
  v.org_id = actor.org_id;
  v.email = *email;
  v.role = std::string(role);
  v.token_hash = token_key_.Hex(out.token);
  v.invited_by = actor.id;
  v.created_at = now;
  v.expires_at = now + ToMicros(config_->sessions.invitation_ttl);
  AuditEvent e = source.Event(actor.org_id, "invitation.create", "invitation:" + v.id, 201, now);
  e.details = DetailsOf({{"email", v.email}, {"role", v.role}});
  if (auto r = people_.InsertInvitation(v, e); !r) return tl::unexpected(r.error());
  return out;
}

Result<std::vector<Invitation>> MemberService::Invitations(std::string_view org_id) {
  return people_.ListInvitations(org_id);
}

Result<Invitation> MemberService::RevokeInvitation(std::string_view org_id, std::string_view id,
                                                   const AuditSource& source) {
  UnixMicros now = clock_.Now();
  return people_.RevokeInvitation(
      org_id, id, now,
      source.Event(org_id, "invitation.revoke", "invitation:" + std::string(id), 200, now));
}

std::string_view MemberService::InvitationState(const Invitation& inv) const {
  if (inv.accepted_at) return "accepted";
  if (inv.revoked_at) return "revoked";
  if (clock_.Now() >= inv.expires_at) return "expired";
  return "pending";
}

Result<Membership> MemberService::Accept(std::string_view token,
                                         const std::optional<SessionRecord>& session,
                                         std::string_view password, std::string_view name,
                                         const AuditSource& source) {
  auto invalid = [] {
    return Fail(ErrorCode::kNotFound, "the invitation is not valid (used, revoked or expired)");
  };
  if (!token.starts_with(kInvitationPrefix) ||
      token.size() != kInvitationPrefix.size() + kTokenRandomChars) {
    return invalid();
  }
  auto found = people_.FindInvitation(token_key_.Hex(token));
  if (found && !*found) {  // sent under another pepper
    for (const auto& other : token_key_.OtherHexes(token)) {
      found = people_.FindInvitation(other);
      if (!found || *found) break;
    }
  }
  if (!found) return tl::unexpected(found.error());
  if (!*found || InvitationState(**found) != "pending") return invalid();
  const Invitation& inv = **found;
  UnixMicros now = clock_.Now();
  std::optional<UserRecord> new_user;
  std::string user_id;
  if (session) {
    auto user = people_.GetUser(session->user_id);
    if (!user) return tl::unexpected(user.error());
    if (user->email != inv.email) {
      return Fail(ErrorCode::kPermissionDenied,
                  "this invitation is for another email address than the signed-in user's");
    }
    user_id = user->id;
  } else {
    auto existing = people_.FindUserByEmail(inv.email);
    if (!existing) return tl::unexpected(existing.error());
    if (*existing) {
      return Fail(ErrorCode::kUnauthenticated,
                  "an account with the invited email exists: sign in, then accept");
    }
    if (password.empty()) return FailField("password", "password is required for a new account");
    std::vector<std::string> context;
    if (auto org = store_.GetOrg(inv.org_id)) context.push_back(org->name);
    auto prepared = accounts_.PrepareUser(inv.email, password, name, context);
    if (!prepared) return tl::unexpected(prepared.error());
    user_id = prepared->id;
    new_user = std::move(*prepared);
  }
  Membership m{inv.org_id, user_id, inv.role, now, inv.email, {}, {}};
  AuditSource as_user = source;
  as_user.actor = user_id;
  std::vector<AuditEvent> events;
  if (new_user) {
    AuditEvent created = as_user.Event(inv.org_id, "user.create", "user:" + user_id, 201, now);
    created.details = DetailsOf({{"email", inv.email}});
    events.push_back(std::move(created));
  }
  AuditEvent joined =
      as_user.Event(inv.org_id, "invitation.accept", "invitation:" + inv.id, 200, now);
  joined.details = DetailsOf({{"role", inv.role}, {"user", user_id}});
  events.push_back(std::move(joined));
  if (auto r = people_.AcceptInvitation(inv, new_user, m, now, events); !r) {
    return tl::unexpected(r.error());
  }
  return m;
}

Result<std::vector<std::string>> MemberService::ValidPermissions(
    const std::vector<std::string>& perms) const {
  if (perms.size() > kMaxPermissions) return FailField("permissions", "at most 128 permissions");
  std::set<std::string> seen;
  for (const auto& p : perms) {
    if (!config_->KnowsScope(p)) {
      std::string shown = IsPrintableText(p, 64) ? p : "(unprintable)";
      return FailField("permissions", "unknown permission " + shown);
    }
    if (!seen.insert(p).second) return FailField("permissions", p + " is listed twice");
  }
  return perms;
}

Result<std::vector<RoleView>> MemberService::Roles(std::string_view org_id) {
  std::vector<RoleView> out = BuiltinRoles(*config_);
  auto custom = people_.ListRoles(org_id);
  if (!custom) return tl::unexpected(custom.error());
  for (const auto& r : *custom) out.push_back(FromRecord(r));
  return out;
}

Result<RoleView> MemberService::CreateRole(const Principal& actor, std::string_view name,
                                           std::string_view description,
                                           const std::vector<std::string>& permissions,
                                           const AuditSource& source) {
  if (!IsValidRoleName(name)) {
    return FailField("name", "name must be 1-64 of a-z, 0-9, _ and -, starting with a letter");
  }
  if (BuiltinRole(*config_, name))
    return Fail(ErrorCode::kAlreadyExists, "that is a built-in role");
  if (!IsPrintableText(description, 500)) {
    return FailField("description", "description must be at most 500 bytes of text");
  }
  auto perms = ValidPermissions(permissions);
  if (!perms) return tl::unexpected(perms.error());
  if (auto r = CanGrant(actor, *perms, "defining this role"); !r) return tl::unexpected(r.error());
  UnixMicros now = clock_.Now();
  RoleRecord record{actor.org_id, std::string(name), std::string(description), *perms, now};
  AuditEvent e = source.Event(actor.org_id, "role.create", "role:" + record.name, 201, now);
  e.details = DetailsOf({{"permissions", JoinWords(record.permissions)}});
  if (auto r = people_.InsertRole(record, e); !r) return tl::unexpected(r.error());
  return FromRecord(record);
}

Result<RoleView> MemberService::UpdateRole(
    const Principal& actor, std::string_view name, const std::optional<std::string>& description,
    const std::optional<std::vector<std::string>>& permissions, const AuditSource& source) {
  if (BuiltinRole(*config_, name)) {
    return Fail(ErrorCode::kAlreadyExists, "built-in roles cannot be changed");
  }
  auto current = people_.GetRole(actor.org_id, name);
  if (!current) return tl::unexpected(current.error());
  if (!*current) return Fail(ErrorCode::kNotFound, "role not found");
  RoleRecord next = **current;
  if (description) {
    if (!IsPrintableText(*description, 500)) {
      return FailField("description", "description must be at most 500 bytes of text");
    }
    next.description = *description;
  }
  if (permissions) {
    auto perms = ValidPermissions(*permissions);
    if (!perms) return tl::unexpected(perms.error());
    next.permissions = *perms;
  }
  // Both what it gave and what it will give: no one reshapes a role above their own.
  if (auto r = CanGrant(actor, (*current)->permissions, "changing this role"); !r) {
    return tl::unexpected(r.error());
  }
  if (auto r = CanGrant(actor, next.permissions, "changing this role"); !r) {
    return tl::unexpected(r.error());
  }
  AuditEvent e = source.Event(actor.org_id, "role.update", "role:" + next.name, 200, clock_.Now());
  e.details = DetailsOf(
      {{"before", JoinWords((*current)->permissions)}, {"after", JoinWords(next.permissions)}});
  auto updated = people_.UpdateRole(next, e);
  if (!updated) return tl::unexpected(updated.error());
  return FromRecord(*updated);
}

Result<void> MemberService::DeleteRole(const Principal& actor, std::string_view name,
                                       const AuditSource& source) {
  if (BuiltinRole(*config_, name)) {
    return Fail(ErrorCode::kAlreadyExists, "built-in roles cannot be deleted");
  }
  auto current = people_.GetRole(actor.org_id, name);
  if (!current) return tl::unexpected(current.error());
  if (!*current) return Fail(ErrorCode::kNotFound, "role not found");
  if (auto r = CanGrant(actor, (*current)->permissions, "deleting this role"); !r) return r;
  return people_.DeleteRole(
      actor.org_id, name,
      source.Event(actor.org_id, "role.delete", "role:" + std::string(name), 200, clock_.Now()));
}

}  // namespace gatehouse

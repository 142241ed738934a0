// Who belongs to an org and what they may do there: memberships, roles (built-in and custom) and
// invitations. The rules:
//   - nobody grants what they do not hold: a role given, offered or defined has only
//     permissions its granter holds (so only owners make owners);
//   - the last owner cannot leave or be demoted (checked in the store, atomically);
//   - an invitation is a single-use token with an expiry, shown once, for one email address.
//
// Thread-safety: safe for concurrent use; methods block on the store.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "authz/principal.h"
#include "core/crypto.h"
#include "people/accounts.h"
#include "people/roles.h"

namespace gatehouse {

struct IssuedInvitation {
  Invitation record;
  std::string token;  // shown once, to the inviter, to pass on
};

class MemberService {
 public:
  static constexpr std::string_view kInvitationPrefix = "ghi_";

  // Invitations sent under the previous or the next pepper (a rotation under way) stay valid.
  MemberService(Store& store, PeopleRepository& people, AccountService& accounts,
                const Clock& clock, std::shared_ptr<const Config> config, const Peppers& peppers);

  // A signed-in user acting in `org_id`: their role's permissions there. kOrgMismatch when
  // they are not a member (the same answer whether or not the org exists).
  Result<Principal> PrincipalFor(const SessionRecord& session, std::string_view org_id);
  Result<RoleView> ResolveRole(std::string_view org_id, std::string_view role);

  Result<std::vector<Membership>> Members(std::string_view org_id);
  // For `gatehouse init` and the CLI: adds an existing user with `role`.
  Result<void> AddMember(std::string_view org_id, std::string_view user_id, std::string_view role,
                         const AuditSource& source);
  Result<Membership> ChangeRole(const Principal& actor, std::string_view user_id,
                                std::string_view role, const AuditSource& source);
  Result<void> Remove(const Principal& actor, std::string_view user_id, const AuditSource& source);
  // Ends every session of a member at once (admin force logout).
  Result<int> ForceLogout(const Principal& actor, std::string_view user_id,
                          const AuditSource& source);

  Result<IssuedInvitation> Invite(const Principal& actor, std::string_view email,
                                  std::string_view role, const AuditSource& source);
  Result<std::vector<Invitation>> Invitations(std::string_view org_id);
  Result<Invitation> RevokeInvitation(std::string_view org_id, std::string_view id,
                                      const AuditSource& source);
  // With `session`, the signed-in user joins (their email must be the invited one). Without,
  // a new user is created with `password` and `name`; an existing account must sign in first.
  Result<Membership> Accept(std::string_view token, const std::optional<SessionRecord>& session,
                            std::string_view password, std::string_view name,
                            const AuditSource& source);
  std::string_view InvitationState(const Invitation& inv) const;

  Result<std::vector<RoleView>> Roles(std::string_view org_id);
  Result<RoleView> CreateRole(const Principal& actor, std::string_view name,
                              std::string_view description,
                              const std::vector<std::string>& permissions,
                              const AuditSource& source);
  Result<RoleView> UpdateRole(const Principal& actor, std::string_view name,
                              const std::optional<std::string>& description,
                              const std::optional<std::vector<std::string>>& permissions,
                              const AuditSource& source);
  Result<void> DeleteRole(const Principal& actor, std::string_view name, const AuditSource& source);

 private:
  // kPermissionDenied naming what `actor` lacks of `permissions`.
  Result<void> CanGrant(const Principal& actor, const std::vector<std::string>& permissions,
                        std::string_view what) const;
  Result<std::vector<std::string>> ValidPermissions(const std::vector<std::string>& perms) const;

  Store& store_;
  PeopleRepository& people_;
  AccountService& accounts_;
  const Clock& clock_;
  std::shared_ptr<const Config> config_;
  PepperedKey token_key_;
};

}  // namespace gatehouse

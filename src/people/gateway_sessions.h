// Session tokens as credentials at the gateway (proxy and forward-auth), for programs that act
// as a signed-in person: `Authorization: Bearer ghs_…`. The person acts in one org at a time:
// the one named by the request's X-Gatehouse-Org header (stripped before any upstream sees
// it), or their only org. Their permissions there are their role's, checked against the
// route's scopes like a key's.
//
// The console's cookie is not accepted here: it authenticates the control plane only, where
// cookie requests carry a CSRF defence; upstream APIs would have none. The proxy removes it
// from what upstreams receive.
#pragma once

#include "authz/authenticator.h"
#include "people/members.h"

namespace gatehouse {

Authenticator::SessionResolver GatewaySessionResolver(SessionService& sessions,
                                                      MemberService& members,
                                                      AccountService& accounts);

}  // namespace gatehouse

// Sign-in and sessions (/v1/auth/…), the caller's own account (/v1/me/…), and an org's people
// (members, roles, invitations). Domain rules live in people/; this file reads bodies, picks the
// session's transport (cookie for browsers, bearer token for programs) and renders JSON.
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "api/guard.h"
#include "core/json_input.h"
#include "core/text.h"
#include "core/time_format.h"

namespace gatehouse {

namespace {

namespace json = boost::json;

json::object UserJson(const UserRecord& u) {
  json::object o;
  o["id"] = u.id;
  o["email"] = u.email;
  o["name"] = u.name;
  o["created_at"] = FormatRfc3339(u.created_at);
  o["last_login_at"] = OptTime(u.last_login_at);
  o["disabled"] = u.disabled_at.has_value();
  return o;
}

json::object RoleJson(const RoleView& r) {
  json::object o;
  o["name"] = r.name;
  o["description"] = r.description;
  o["permissions"] = Strings(r.permissions);
  o["builtin"] = r.builtin;
  return o;
}

json::object MemberJson(const Membership& m) {
  json::object o;
  o["user_id"] = m.user_id;
  o["email"] = m.email;
  o["role"] = m.role;
  o["joined_at"] = FormatRfc3339(m.created_at);
  return o;
}

json::object InvitationJson(const MemberService& members, const Invitation& v) {
  json::object o;
  o["id"] = v.id;
  o["email"] = v.email;
  o["role"] = v.role;
  o["state"] = members.InvitationState(v);
  o["invited_by"] = v.invited_by;
  o["created_at"] = FormatRfc3339(v.created_at);
  o["expires_at"] = FormatRfc3339(v.expires_at);
  o["accepted_at"] = OptTime(v.accepted_at);
  return o;
}

json::object SessionInfo(const ControlPlaneDeps& d, const SessionRecord& s) {
  const auto& cfg = d.sessions.config().sessions;
  json::object o;
  o["id"] = s.family_id;
  o["signed_in_at"] = FormatRfc3339(s.family_created_at);
  o["auth_time"] = FormatRfc3339(s.auth_time);
  o["expires_at"] = FormatRfc3339(s.expires_at);
  o["idle_expires_at"] = FormatRfc3339(std::min(s.expires_at, s.last_seen_at + s.idle_timeout));
  o["refresh_after"] = FormatRfc3339(s.created_at + ToMicros(cfg.refresh_after));
  o["csrf_token"] = d.sessions.CsrfToken(s);
  return o;
}

// The session reaches its holder as a cookie (browsers: HttpOnly, so page scripts never see
// it) or in the body (programs), never both.
HttpResponse SessionResponse(const ControlPlaneDeps& d, int status, json::object body,
                             const IssuedSession& issued, bool cookie) {
  body["session"] = SessionInfo(d, issued.record);
  if (!cookie) body["token"] = issued.token;
  HttpResponse r = Json(status, body);
  r.SetHeader("Cache-Control", "no-store");
  if (cookie) {
    UnixMicros left = issued.record.expires_at - d.clock.Now();
    r.headers.emplace_back("Set-Cookie",
                           std::string(SessionService::kCookieName) + "=" + issued.token +
                               "; Path=/; Max-Age=" +
                               std::to_string(std::max<UnixMicros>(0, left) / kMicrosPerSecond) +
                               "; Secure; HttpOnly; SameSite=Lax");
  }
  return r;
}

void ClearCookie(HttpResponse& r) {
  r.headers.emplace_back("Set-Cookie", std::string(SessionService::kCookieName) +
                                           "=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax");
}

Result<json::array> OrgsJson(ControlPlaneDeps& d, const std::vector<Membership>& orgs) {
  json::array out;
  for (const auto& m : orgs) {
    json::object o;
    o["id"] = m.org_id;
    o["name"] = m.org_name;
    o["role"] = m.role;
    auto role = d.members.ResolveRole(m.org_id, m.role);
    o["permissions"] = role ? Strings(role->permissions) : json::array();
    out.emplace_back(std::move(o));
  }
  return out;
}

Result<HttpResponse> Login(ControlPlaneDeps& d, HttpRequest& req) {
  auto in = JsonObjectReader::Parse(req.body);
  if (!in) return tl::unexpected(in.error());
  auto email = in->OptString("email");
  auto password = in->OptString("password");
  auto mode = in->OptString("session");
  for (auto* r : {&email, &password, &mode}) {
    if (!*r) return tl::unexpected(r->error());
  }
  if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
  if (!*email || (*email)->empty()) return FailField("email", "email is required");
  if (!*password || (*password)->empty()) return FailField("password", "password is required");
  // Browsers (they send Origin on a POST) get the cookie unless they ask otherwise.
  bool cookie = req.Header("origin").has_value();
  if (*mode) {
    if (**mode != "cookie" && **mode != "bearer") {
      return FailField("session", "session must be \"cookie\" or \"bearer\"");
    }
    cookie = **mode == "cookie";
  }
  if (auto r = CheckOrigin(d, req); !r) {
    RecordDecision(req, "", "", "auth.login", "login", "cross_site");
    return tl::unexpected(r.error());
  }
  LoginAttempt attempt;
  AuditSource source = SourceOf(req, "");
  auto signed_in = d.accounts.Login(**email, **password, source, attempt);
  std::string resource = attempt.actor.empty() ? "login" : "user:" + attempt.actor;
  RecordDecision(req, "", attempt.actor, "auth.login", resource,
                 signed_in ? "" : std::string_view(attempt.reason), attempt.email);
  if (!signed_in) return tl::unexpected(signed_in.error());
  req.principal_id = signed_in->user.id;
  // A session the client held before signing in ends now (ASVS 7.2.4): whatever a fixation or a
  // shared browser left behind does not outlive the new sign-in.
  if (auto before = SessionCredentialOf(req)) {
    if (auto old = d.sessions.Authenticate(before->token, req.client_ip)) {
      (void)d.accounts.Logout(*old, source);
    }
  }
  json::object body;
  body["user"] = UserJson(signed_in->user);
  auto orgs = OrgsJson(d, signed_in->orgs);
  if (!orgs) return tl::unexpected(orgs.error());
  body["orgs"] = std::move(*orgs);
  return SessionResponse(d, 200, std::move(body), signed_in->session, cookie);
}

Result<HttpResponse> Me(ControlPlaneDeps& d, const SessionRecord& s) {
  auto user = d.accounts.Get(s.user_id);
  if (!user) return tl::unexpected(user.error());
  auto memberships = d.accounts.OrgsOf(s.user_id);
  if (!memberships) return tl::unexpected(memberships.error());
  json::object o;
  o["user"] = UserJson(*user);
  auto orgs = OrgsJson(d, *memberships);
  if (!orgs) return tl::unexpected(orgs.error());
  o["orgs"] = std::move(*orgs);
  o["session"] = SessionInfo(d, s);
  HttpResponse r = Json(200, o);
  r.SetHeader("Cache-Control", "no-store");
  return r;
}

Result<HttpResponse> MySessions(ControlPlaneDeps& d, const SessionRecord& current) {
  auto list = d.sessions.List(current.user_id);
  if (!list) return tl::unexpected(list.error());
  json::array out;
  UnixMicros now = d.clock.Now();
  for (const auto& s : *list) {
    if (now >= s.expires_at || now >= s.last_seen_at + s.idle_timeout) continue;
    json::object o;
    o["id"] = s.family_id;
    o["current"] = s.family_id == current.family_id;
    o["signed_in_at"] = FormatRfc3339(s.family_created_at);
    o["last_seen_at"] = FormatRfc3339(s.last_seen_at);
    o["client_ip"] = s.client_ip;
    o["user_agent"] = ValidUtf8(s.user_agent, std::string::npos);  // stored before it was made so
    o["expires_at"] = FormatRfc3339(s.expires_at);
    out.emplace_back(std::move(o));
  }
  json::object o;
  o["sessions"] = std::move(out);
  return Json(200, o);
}

Result<HttpResponse> Reauth(ControlPlaneDeps& d, HttpRequest& req, const SessionRecord& s,
                            bool cookie) {
  auto in = JsonObjectReader::Parse(req.body);
  if (!in) return tl::unexpected(in.error());
  auto password = in->OptString("password");
  if (!password) return tl::unexpected(password.error());
  if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
  if (!*password || (*password)->empty()) return FailField("password", "password is required");
  LoginAttempt attempt;
  auto issued = d.accounts.Reauthenticate(s, **password, SourceOf(req, s.user_id), attempt);
  if (!issued) {
    RecordDecision(req, "", s.user_id, "auth.reauth", "user:" + s.user_id, attempt.reason,
                   attempt.email);
    return tl::unexpected(issued.error());
  }
  RecordDecision(req, "", s.user_id, "auth.reauth", "user:" + s.user_id, "");
  return SessionResponse(d, 200, json::object(), *issued, cookie);
}

Result<HttpResponse> ChangePassword(ControlPlaneDeps& d, HttpRequest& req, const SessionRecord& s,
                                    const Principal& p) {
  auto in = JsonObjectReader::Parse(req.body);
  if (!in) return tl::unexpected(in.error());
  auto current = in->OptString("current_password");
  auto next = in->OptString("new_password");
  for (auto* r : {&current, &next}) {
    if (!*r) return tl::unexpected(r->error());
  }
  if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
  if (!*current) return FailField("current_password", "current_password is required");
  if (!*next) return FailField("new_password", "new_password is required");
  if (auto r = RequireRecentSignIn(d, p); !r) return tl::unexpected(r.error());
  if (auto r = d.accounts.ChangePassword(s, **current, **next, SourceOf(req, s.user_id)); !r) {
    return tl::unexpected(r.error());
  }
  return Json(200, json::object{{"changed", true}, {"other_sessions_ended", true}});
}

Result<HttpResponse> AcceptInvitation(ControlPlaneDeps& d, HttpRequest& req) {
  auto in = JsonObjectReader::Parse(req.body);
  if (!in) return tl::unexpected(in.error());
  auto token = in->OptString("token");
  auto password = in->OptString("password");
  auto name = in->OptString("name");
  for (auto* r : {&token, &password, &name}) {
    if (!*r) return tl::unexpected(r->error());
  }
  if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
  if (!*token || (*token)->empty()) return FailField("token", "token is required");
  std::optional<SessionRecord> session;
  if (auto cred = SessionCredentialOf(req)) {
    SessionRecord s;
    auto p = SessionPrincipal(d, req, *cred, &s);
    if (!p) return tl::unexpected(p.error());
    session = std::move(s);
  } else if (auto r = CheckOrigin(d, req); !r) {
    return tl::unexpected(r.error());
  }
  auto m = d.members.Accept(**token, session, password->value_or(""), name->value_or(""),
                            SourceOf(req, session ? session->user_id : ""));
  if (!m) {
    RecordDecision(req, "", session ? session->user_id : "", "auth.invitation", "invitation",
                   ErrorCodeName(m.error().code));
    return tl::unexpected(m.error());
  }
  RecordDecision(req, m->org_id, m->user_id, "auth.invitation", "org:" + m->org_id, "");
  json::object o;
  o["org_id"] = m->org_id;
  o["user_id"] = m->user_id;
  o["email"] = m->email;
  o["role"] = m->role;
  return Json(201, o);
}

Result<HttpResponse> Invite(ControlPlaneDeps& d, HttpRequest& req, const Principal& p) {
  auto in = JsonObjectReader::Parse(req.body);
  if (!in) return tl::unexpected(in.error());
  auto email = in->OptString("email");
  auto role = in->OptString("role");
  for (auto* r : {&email, &role}) {
    if (!*r) return tl::unexpected(r->error());
  }
  if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
  if (!*email) return FailField("email", "email is required");
  if (!*role) return FailField("role", "role is required");
  auto issued = d.members.Invite(p, **email, **role, SourceOf(req, p.id));
  if (!issued) return tl::unexpected(issued.error());
  json::object o = InvitationJson(d.members, issued->record);
  o["token"] = issued->token;  // the only time it is shown
  HttpResponse r = Json(201, o);
  r.SetHeader("Cache-Control", "no-store");
  return r;
}

Result<HttpResponse> RoleBody(ControlPlaneDeps& d, HttpRequest& req, const Principal& p,
                              bool create) {
  auto in = JsonObjectReader::Parse(req.body);
  if (!in) return tl::unexpected(in.error());
  auto name = create ? in->OptString("name") : Result<std::optional<std::string>>(std::nullopt);
  auto description = in->OptString("description");
  auto permissions = in->OptStringArray("permissions");
  for (auto* r : {&name, &description}) {
    if (!*r) return tl::unexpected(r->error());
  }
  if (!permissions) return tl::unexpected(permissions.error());
  if (auto r = in->RejectUnknownFields(); !r) return tl::unexpected(r.error());
  // Roles decide what everyone holding them may do: changing them is sensitive.
  if (auto r = RequireRecentSignIn(d, p); !r) return tl::unexpected(r.error());
  AuditSource source = SourceOf(req, p.id);
  if (create) {
    if (!*name) return FailField("name", "name is required");
    if (!*permissions) return FailField("permissions", "permissions is required");
    auto role = d.members.CreateRole(p, **name, description->value_or(""), **permissions, source);
    if (!role) return tl::unexpected(role.error());
    return Json(201, RoleJson(*role));
  }
  if (!*description && !*permissions) {
    return FailField("permissions", "nothing to change: give description and/or permissions");
  }
  auto role = d.members.UpdateRole(p, req.PathParam("name"), *description, *permissions, source);
  if (!role) return tl::unexpected(role.error());
  return Json(200, RoleJson(*role));
}

}  // namespace

void RegisterPeopleRoutes(Router& router, std::shared_ptr<ControlPlaneDeps> d) {
  router.Add("POST", "/v1/auth/login", HandlerKind::kCostly, [d](HttpRequest& req) {
    auto r = Login(*d, req);
    return r ? std::move(*r) : ErrorResponse(r.error(), req.request_id);
  });
  router.Add("POST", "/v1/auth/refresh", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return SessionGuarded(
        *d, req,
        [&](const SessionRecord& s, const Principal&, bool cookie) -> Result<HttpResponse> {
          auto issued = d->accounts.Refresh(s, SourceOf(req, s.user_id));
          if (!issued) return tl::unexpected(issued.error());
          return SessionResponse(*d, 200, json::object(), *issued, cookie);
        });
  });
  router.Add("POST", "/v1/auth/reauth", HandlerKind::kCostly, [d](HttpRequest& req) {
    return SessionGuarded(*d, req, [&](const SessionRecord& s, const Principal&, bool cookie) {
      return Reauth(*d, req, s, cookie);
    });
  });
  router.Add("POST", "/v1/auth/logout", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return SessionGuarded(
        *d, req, [&](const SessionRecord& s, const Principal&, bool) -> Result<HttpResponse> {
          if (auto r = d->accounts.Logout(s, SourceOf(req, s.user_id)); !r) {
            return tl::unexpected(r.error());
          }
          HttpResponse out = Json(200, json::object{{"signed_out", true}});
          ClearCookie(out);
          return out;
        });
  });
  router.Add("POST", "/v1/auth/logout-all", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return SessionGuarded(
        *d, req, [&](const SessionRecord& s, const Principal&, bool) -> Result<HttpResponse> {
          auto n = d->accounts.LogoutEverywhere(s, SourceOf(req, s.user_id));
          if (!n) return tl::unexpected(n.error());
          HttpResponse out = Json(200, json::object{{"sessions_ended", *n}});
          ClearCookie(out);
          return out;
        });
  });
  router.Add("GET", "/v1/me", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return SessionGuarded(
        *d, req, [&](const SessionRecord& s, const Principal&, bool) { return Me(*d, s); });
  });
  router.Add("GET", "/v1/me/sessions", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return SessionGuarded(
        *d, req, [&](const SessionRecord& s, const Principal&, bool) { return MySessions(*d, s); });
  });
  router.Add("DELETE", "/v1/me/sessions/{id}", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return SessionGuarded(
        *d, req, [&](const SessionRecord& s, const Principal&, bool) -> Result<HttpResponse> {
          auto n = d->accounts.EndSession(s, req.PathParam("id"), SourceOf(req, s.user_id));
          if (!n) return tl::unexpected(n.error());
          HttpResponse out = Json(200, json::object{{"ended", true}});
          if (req.PathParam("id") == s.family_id) ClearCookie(out);
          return out;
        });
  });
  router.Add("POST", "/v1/me/password", HandlerKind::kCostly, [d](HttpRequest& req) {
    return SessionGuarded(*d, req, [&](const SessionRecord& s, const Principal& p, bool) {
      return ChangePassword(*d, req, s, p);
    });
  });
  router.Add("POST", "/v1/invitations/accept", HandlerKind::kCostly, [d](HttpRequest& req) {
    auto r = AcceptInvitation(*d, req);
    return r ? std::move(*r) : ErrorResponse(r.error(), req.request_id);
  });

  router.Add("GET", "/v1/orgs/{org}/members", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermMembersRead, [&](const Principal& p) -> Result<HttpResponse> {
      auto list = d->members.Members(p.org_id);
      if (!list) return tl::unexpected(list.error());
      json::array out;
      for (const auto& m : *list) out.emplace_back(MemberJson(m));
      return Json(200, json::object{{"members", std::move(out)}});
    });
  });
  router.Add(
      "PATCH", "/v1/orgs/{org}/members/{user}", HandlerKind::kBlocking, [d](HttpRequest& req) {
        return Guarded(*d, req, kPermMembersWrite, [&](const Principal& p) -> Result<HttpResponse> {
          auto in = JsonObjectReader::Parse(req.body);
          if (!in) return tl::unexpected(in.error());
          auto role = in->OptString("role");
          if (!role) return tl::unexpected(role.error());
          if (auto r = in->RejectUnknownFields(); !r) {
            return tl::unexpected(r.error());
          }
          if (!*role) return FailField("role", "role is required");
          if (auto r = RequireRecentSignIn(*d, p); !r) {
            return tl::unexpected(r.error());
          }
          auto m = d->members.ChangeRole(p, req.PathParam("user"), **role, SourceOf(req, p.id));
          if (!m) return tl::unexpected(m.error());
          json::object o;
          o["user_id"] = m->user_id;
          o["role"] = m->role;
          return Json(200, o);
        });
      });
  // Leaving an org needs only membership (members:read); removing someone else, members:write
  // (checked by MemberService).
  router.Add(
      "DELETE", "/v1/orgs/{org}/members/{user}", HandlerKind::kBlocking, [d](HttpRequest& req) {
        return Guarded(*d, req, kPermMembersRead, [&](const Principal& p) -> Result<HttpResponse> {
          if (auto r = RequireRecentSignIn(*d, p); !r) {
            return tl::unexpected(r.error());
          }
          if (auto r = d->members.Remove(p, req.PathParam("user"), SourceOf(req, p.id)); !r) {
            return tl::unexpected(r.error());
          }
          return Json(200, json::object{{"removed", true}});
        });
      });
  router.Add("DELETE", "/v1/orgs/{org}/members/{user}/sessions", HandlerKind::kBlocking,
             [d](HttpRequest& req) {
               return Guarded(
                   *d, req, kPermMembersWrite, [&](const Principal& p) -> Result<HttpResponse> {
                     auto n = d->members.ForceLogout(p, req.PathParam("user"), SourceOf(req, p.id));
                     if (!n) return tl::unexpected(n.error());
                     return Json(200, json::object{{"sessions_ended", *n}});
                   });
             });

  router.Add("POST", "/v1/orgs/{org}/invitations", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermMembersWrite,
                   [&](const Principal& p) { return Invite(*d, req, p); });
  });
  router.Add("GET", "/v1/orgs/{org}/invitations", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermMembersRead, [&](const Principal& p) -> Result<HttpResponse> {
      auto list = d->members.Invitations(p.org_id);
      if (!list) return tl::unexpected(list.error());
      json::array out;
      for (const auto& v : *list) out.emplace_back(InvitationJson(d->members, v));
      return Json(200, json::object{{"invitations", std::move(out)}});
    });
  });
  router.Add(
      "DELETE", "/v1/orgs/{org}/invitations/{id}", HandlerKind::kBlocking, [d](HttpRequest& req) {
        return Guarded(*d, req, kPermMembersWrite, [&](const Principal& p) -> Result<HttpResponse> {
          auto v = d->members.RevokeInvitation(p.org_id, req.PathParam("id"), SourceOf(req, p.id));
          if (!v) return tl::unexpected(v.error());
          return Json(200, InvitationJson(d->members, *v));
        });
      });

  router.Add("GET", "/v1/orgs/{org}/roles", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermRolesRead, [&](const Principal& p) -> Result<HttpResponse> {
      auto roles = d->members.Roles(p.org_id);
      if (!roles) return tl::unexpected(roles.error());
      json::array out;
      for (const auto& r : *roles) out.emplace_back(RoleJson(r));
      return Json(200, json::object{{"roles", std::move(out)}});
    });
  });
  router.Add("POST", "/v1/orgs/{org}/roles", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermRolesWrite,
                   [&](const Principal& p) { return RoleBody(*d, req, p, true); });
  });
  router.Add("PATCH", "/v1/orgs/{org}/roles/{name}", HandlerKind::kBlocking, [d](HttpRequest& req) {
    return Guarded(*d, req, kPermRolesWrite,
                   [&](const Principal& p) { return RoleBody(*d, req, p, false); });
  });
  router.Add(
      "DELETE", "/v1/orgs/{org}/roles/{name}", HandlerKind::kBlocking, [d](HttpRequest& req) {
        return Guarded(*d, req, kPermRolesWrite, [&](const Principal& p) -> Result<HttpResponse> {
          if (auto r = RequireRecentSignIn(*d, p); !r) {
            return tl::unexpected(r.error());
          }
          if (auto r = d->members.DeleteRole(p, req.PathParam("name"), SourceOf(req, p.id)); !r) {
            return tl::unexpected(r.error());
          }
          return Json(200, json::object{{"deleted", true}});
        });
      });
}

}  // namespace gatehouse

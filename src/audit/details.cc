#include "audit/details.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "core/text.h"
#include "core/time_format.h"

namespace gatehouse {

boost::json::object AuditEventJson(const AuditEvent& e) {
  boost::json::object o;
  o["seq"] = e.seq;
  o["time"] = FormatRfc3339(e.at);
  o["time_us"] = e.at;  // exact, as the hash covers it: an export can be checked offline
  o["org_id"] = e.org_id;
  o["actor"] = e.actor;
  o["action"] = e.action;
  // Events stored before client text was made UTF-8 may hold other bytes; JSON may not.
  o["resource"] = ValidUtf8(e.resource, std::string::npos);
  o["result"] = e.result;
  o["status"] = e.status;
  o["client_ip"] = e.client_ip;
  o["user_agent"] = ValidUtf8(e.user_agent, std::string::npos);
  o["request_id"] = e.request_id;
  boost::system::error_code ec;
  boost::json::value details = boost::json::parse(e.details, ec);
  o["details"] = ec ? boost::json::value(boost::json::object()) : std::move(details);
  o["prev_hash"] = e.prev_hash;
  o["hash"] = e.hash;
  return o;
}

std::optional<AuditEvent> AuditEventFromJson(std::string_view line) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(line, ec);
  const auto* o = ec ? nullptr : v.if_object();
  if (!o) return std::nullopt;
  AuditEvent e;
  for (auto [name, field] :
       {std::pair{"org_id", &e.org_id}, std::pair{"actor", &e.actor},
        std::pair{"action", &e.action}, std::pair{"resource", &e.resource},
        std::pair{"result", &e.result}, std::pair{"client_ip", &e.client_ip},
        std::pair{"user_agent", &e.user_agent}, std::pair{"request_id", &e.request_id}}) {
    const auto* f = o->if_contains(name);
    if (!f || !f->is_string()) return std::nullopt;
    *field = std::string(f->get_string());
  }
  const auto* status = o->if_contains("status");
  if (!status || !status->is_int64() || status->get_int64() < 0 || status->get_int64() > 999) {
    return std::nullopt;
  }
  e.status = static_cast<int>(status->get_int64());
  if (const auto* us = o->if_contains("time_us"); us && us->is_int64()) {
    e.at = us->get_int64();
  } else if (const auto* t = o->if_contains("time"); t && t->is_string()) {
    auto at = ParseRfc3339(t->get_string());
    if (!at) return std::nullopt;
    e.at = *at;
  } else {
    return std::nullopt;
  }
  const auto* details = o->if_contains("details");
  e.details = details && details->is_object() ? boost::json::serialize(*details) : "{}";
  if (e.org_id.empty() || e.action.empty()) return std::nullopt;
  return e;
}

namespace {
boost::json::object OrgSettings(const Org& org) {
  boost::json::object o;
  o["name"] = org.name;
  o["audit_retention_days"] = org.audit_retention_days;
  return o;
}
}  // namespace

std::string OrgChangeDetails(const Org& before, const Org& after) {
  boost::json::object o;
  o["before"] = OrgSettings(before);
  o["after"] = OrgSettings(after);
  return boost::json::serialize(o);
}

AuditEvent AuditSource::Event(std::string_view org_id, std::string_view action,
                              std::string resource, int http_status, UnixMicros at) const {
  AuditEvent e;
  e.org_id = std::string(org_id);
  e.at = at;
  e.actor = actor.empty() ? "operator" : actor;
  e.action = std::string(action);
  e.resource = std::move(resource);
  e.result = "success";
  e.status = http ? http_status : 0;
  e.client_ip = client_ip;
  e.user_agent = user_agent;
  e.request_id = request_id;
  e.details = "{}";
  return e;
}

AuditEvent DecisionEvent(std::string_view org, std::string_view actor, std::string_view action,
                         std::string resource, std::string details) {
  AuditEvent e;
  e.org_id.assign(org.empty() ? "system" : org);
  e.actor.assign(actor.empty() ? "anonymous" : actor);
  e.action.assign(action);
  e.resource = std::move(resource);
  e.details = std::move(details);
  return e;
}

std::string_view ResultOfStatus(int status) {
  if (status < 400) return "success";
  return status == 401 || status == 403 ? "denied" : "failure";
}

std::string DetailsOf(const std::vector<std::pair<std::string_view, std::string_view>>& fields) {
  boost::json::object o;
  for (const auto& [name, value] : fields) o[name] = value;
  return boost::json::serialize(o);
}

}  // namespace gatehouse

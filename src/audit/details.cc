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

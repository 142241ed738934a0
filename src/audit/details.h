// The `details` of audit events: small JSON objects, built in one place so that both stores and
// the services describe the same change the same way.
#pragma once

#include <boost/json/object.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/records.h"

namespace gatehouse {

// {"before":{…},"after":{…}} with the org's settings.
std::string OrgChangeDetails(const Org& before, const Org& after);

// What every audit event of one request shares: who asked, and from where. The CLI's source is
// the default: actor "operator", no address, status 0.
struct AuditSource {
  std::string actor;  // empty: the acting principal's id, or "operator"
  std::string client_ip;
  std::string user_agent;
  std::string request_id;
  bool http = false;  // events carry an HTTP status only when the change came over HTTP

  // An event of `org_id` at `at`, result "success".
  AuditEvent Event(std::string_view org_id, std::string_view action, std::string resource,
                   int http_status, UnixMicros at) const;
};

// An authentication decision's event before the server completes it: an empty org is the
// operator's "system" chain (the credential named no org), an empty actor is "anonymous".
AuditEvent DecisionEvent(std::string_view org, std::string_view actor, std::string_view action,
                         std::string resource, std::string details = "{}");

// "success" below 400, "denied" for 401 and 403, "failure" otherwise.
std::string_view ResultOfStatus(int status);

// An event as the audit API and `gatehouse audit export` show it.
boost::json::object AuditEventJson(const AuditEvent& e);
// Reads back a line that AuditEventJson wrote (a quarantined event), without its place in a
// chain (seq and hashes). The time is "time_us" when the line has it, else "time" (seconds).
// Anything else is nullopt.
std::optional<AuditEvent> AuditEventFromJson(std::string_view line);

// A flat object of string fields, e.g. {"reason":"expired","route":"/api"}.
std::string DetailsOf(const std::vector<std::pair<std::string_view, std::string_view>>& fields);

}  // namespace gatehouse

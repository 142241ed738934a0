// The audit endpoints' query strings (filters, times, cursor, limit) and the usage endpoint's,
// through the real handlers on an in-memory store: any bytes get a JSON answer, never a crash.
#include <cstdint>
#include <string>

#include "support/domain_env.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using gatehouse::testing::DomainEnv;
  static DomainEnv* env = new DomainEnv();
  static gatehouse::NewOrgResult org = env->NewOrg("fuzz");
  std::string query(reinterpret_cast<const char*>(data), size);
  if (query.find_first_of("\r\n") != std::string::npos) return 0;  // the parser refuses these
  const std::string& key = org.owner_key.secret;
  const std::string base = "/v1/orgs/" + org.org.id;
  auto a = env->Call("GET", base + "/audit?" + query, key);
  auto u = env->Call("GET", base + "/keys/" + org.owner_key.record.id + "/usage?" + query, key);
  if (a.status == 0 || u.status == 0) __builtin_trap();
  return 0;
}

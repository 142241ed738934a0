// openapi.yaml and the router must describe the same endpoints: a route added without its
// documentation (or documentation of a route that does not exist) fails here.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>

#include "support/domain_env.h"

namespace gatehouse {
namespace {

std::set<std::string> SpecEndpoints() {
  std::ifstream in(std::string(GATEHOUSE_SOURCE_DIR) + "/openapi.yaml");
  EXPECT_TRUE(in) << "openapi.yaml not found";
  std::set<std::string> out;
  std::string line, path;
  bool in_paths = false;
  std::regex path_re("^  (/[^:]*):\\s*$");
  std::regex method_re("^    (get|post|put|patch|delete|head|options):\\s*$");
  std::smatch m;
  while (std::getline(in, line)) {
    if (line == "paths:") {
      in_paths = true;
      continue;
    }
    if (in_paths && !line.empty() && line[0] != ' ') break;
    if (!in_paths) continue;
    if (std::regex_match(line, m, path_re)) {
      path = m[1];
    } else if (std::regex_match(line, m, method_re)) {
      std::string method = m[1];
      for (auto& ch : method) ch = static_cast<char>(std::toupper(ch));
      out.insert(method + " " + path);
    }
  }
  return out;
}

TEST(OpenApi, DocumentsExactlyTheServedEndpoints) {
  testing::DomainEnv env;
  std::set<std::string> served;
  for (const auto& r : env.router.routes()) {
    std::string pattern = r.pattern;
    // A tail parameter {*rest} is written {rest} in OpenAPI.
    auto star = pattern.find("{*");
    if (star != std::string::npos) pattern.erase(star + 1, 1);
    served.insert(r.method + " " + pattern);
  }
  std::set<std::string> documented = SpecEndpoints();
  EXPECT_FALSE(documented.empty());
  for (const auto& s : served) EXPECT_TRUE(documented.contains(s)) << "undocumented: " << s;
  for (const auto& d : documented) EXPECT_TRUE(served.contains(d)) << "not served: " << d;
}

}  // namespace
}  // namespace gatehouse

// Users, sessions and members through the real handlers and services on an in-memory SQLite
// store, with a fake clock that tests move instead of sleeping.
#pragma once

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "core/text.h"
#include "support/domain_env.h"

namespace gatehouse::testing {

namespace json = boost::json;

inline json::value Body(const HttpResponse& r) { return json::parse(r.body); }
inline std::string Code(const HttpResponse& r) {
  auto v = Body(r);
  if (!v.is_object() || !v.as_object().contains("error")) return "";
  return std::string(v.at("error").at("code").as_string());
}
inline std::string Header(const HttpResponse& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (EqualsIgnoreCase(k, name)) return v;
  }
  return "";
}

class PeopleTest : public ::testing::Test {
 protected:
  static constexpr const char* kOwnerPassword = "tulip orbit canyon ferry 42";
  static constexpr const char* kPassword = "marble harvest lantern quiet";

  void SetUp() override {
    org_ = env_.NewOrg("Northwind Traders");
    owner_ = AddUser("owner@example.com", kOwnerPassword, "owner");
  }
  std::string Org() const { return org_.org.id; }
  std::string OrgPath(const std::string& rest = "") const { return "/v1/orgs/" + Org() + rest; }

  UserRecord AddUser(const std::string& email, const std::string& password, const std::string& role,
                     const std::string& org = "") {
    auto u = env_.accounts->CreateUser(email, password, "", {});
    EXPECT_TRUE(u) << (u ? "" : u.error().message);
    if (!role.empty()) {
      auto m = env_.members->AddMember(org.empty() ? Org() : org, u->id, role, {});
      EXPECT_TRUE(m) << (m ? "" : m.error().message);
    }
    return *u;
  }

  HttpResponse LoginCall(const std::string& email, const std::string& password,
                         const std::string& ip = "10.0.0.1") {
    json::object body{{"email", email}, {"password", password}};
    return env_.Call("POST", "/v1/auth/login", "", json::serialize(body), ip);
  }
  // A bearer session token.
  std::string Login(const std::string& email, const std::string& password,
                    const std::string& ip = "10.0.0.1") {
    auto r = LoginCall(email, password, ip);
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200) return "";
    return std::string(Body(r).at("token").as_string());
  }
  std::string TokenOf(const HttpResponse& r) {
    return std::string(Body(r).at("token").as_string());
  }
  void Advance(std::chrono::microseconds d) { env_.clock.Advance(d); }

  DomainEnv env_;
  NewOrgResult org_;
  UserRecord owner_;
};

}  // namespace gatehouse::testing

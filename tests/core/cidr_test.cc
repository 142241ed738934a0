#include "core/cidr.h"

#include <gtest/gtest.h>

namespace gatehouse {
namespace {

std::vector<Cidr> List(std::initializer_list<const char*> items) {
  std::vector<Cidr> out;
  for (auto i : items) out.push_back(*Cidr::Parse(i));
  return out;
}

TEST(Cidr, MatchesIpv4AndIpv6Blocks) {
  auto list = List({"203.0.113.0/24", "2001:db8::/32", "10.1.2.3"});
  EXPECT_TRUE(AllowedBy(list, "203.0.113.77"));
  EXPECT_FALSE(AllowedBy(list, "203.0.114.1"));
  EXPECT_TRUE(AllowedBy(list, "2001:db8:1::5"));
  EXPECT_FALSE(AllowedBy(list, "2001:db9::1"));
  EXPECT_TRUE(AllowedBy(list, "10.1.2.3"));
  EXPECT_FALSE(AllowedBy(list, "10.1.2.4"));
  EXPECT_FALSE(AllowedBy(list, "not an ip"));
}

TEST(Cidr, EmptyListAllowsAndOddPrefixesWork) {
  EXPECT_TRUE(AllowedBy({}, "192.0.2.1"));
  auto list = List({"192.168.0.0/13"});
  EXPECT_TRUE(AllowedBy(list, "192.175.255.255"));
  EXPECT_FALSE(AllowedBy(list, "192.176.0.0"));
  EXPECT_TRUE(AllowedBy(List({"0.0.0.0/0"}), "8.8.8.8"));
  EXPECT_FALSE(AllowedBy(List({"0.0.0.0/0"}), "::1"));  // v4 /0 does not admit IPv6
}

TEST(Cidr, RefusesMalformedBlocks) {
  for (const char* bad : {"", "1.2.3.4/33", "1.2.3.4/-1", "1.2.3.0/24x", "::/129", "10.0.0.1/8",
                          "1.2.3", "host.example/8", "1.2.3.4/", "/8"}) {
    EXPECT_FALSE(Cidr::Parse(bad)) << bad;
  }
}

}  // namespace
}  // namespace gatehouse

namespace gatehouse {
namespace {

TEST(AddressBucket, GroupsAddressesByNetwork) {
  EXPECT_EQ(AddressBucket("192.0.2.77", 24, 48), "192.0.2.0/24");
  EXPECT_EQ(AddressBucket("192.0.2.77", 32, 64), "192.0.2.77");
  EXPECT_EQ(AddressBucket("10.1.2.3", 8, 48), "10.0.0.0/8");
  EXPECT_EQ(AddressBucket("2001:db8:1:2:3:4:5:6", 24, 64), "2001:db8:1:2::/64");
  EXPECT_EQ(AddressBucket("2001:db8:1:2:3:4:5:6", 24, 48), "2001:db8:1::/48");
  EXPECT_EQ(AddressBucket("::1", 24, 128), "::1");
  EXPECT_EQ(AddressBucket("not an address", 24, 48), "not an address");
}

}  // namespace
}  // namespace gatehouse

#include "core/text.h"

#include <gtest/gtest.h>

#include <string>

namespace gatehouse {
namespace {

TEST(Text, HttpTokensAreRfc9110Tchars) {
  EXPECT_TRUE(IsHttpToken("X-Gatehouse-Org"));
  EXPECT_TRUE(IsHttpToken("!#$%&'*+-.^_`|~09azAZ"));
  EXPECT_FALSE(IsHttpToken(""));
  for (std::string_view bad : {"a b", "a:b", "a\r", "a\n", "a\"", "a(b)", "a/b", "a@b", "a[b]",
                               "a{b}", "a,b", "a;b", "a=b", "a?b", "a\\b", "a\tb", "\x7f"}) {
    EXPECT_FALSE(IsHttpToken(bad)) << bad;
  }
  EXPECT_FALSE(IsHttpToken(std::string("a\0b", 3)));
  EXPECT_FALSE(IsHttpToken("caf\xc3\xa9"));  // bytes above 0x7f
}

TEST(Text, LineBreaksAnywhereAreFound) {
  EXPECT_FALSE(ContainsLineBreak(""));
  EXPECT_FALSE(ContainsLineBreak("text/plain; charset=utf-8"));
  EXPECT_TRUE(ContainsLineBreak("a\r"));
  EXPECT_TRUE(ContainsLineBreak("\nSet-Cookie: x=1"));
  EXPECT_TRUE(ContainsLineBreak("a\r\nb"));
}

}  // namespace
}  // namespace gatehouse

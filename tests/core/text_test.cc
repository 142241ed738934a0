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

TEST(Text, ValidUtf8KeepsWellFormedTextAndReplacesEveryOtherByte) {
  const std::string kFffd = "\xef\xbf\xbd";
  EXPECT_EQ(ValidUtf8("curl/8.1.2", 256), "curl/8.1.2");
  EXPECT_EQ(ValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 256),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(ValidUtf8("a\xff"
                      "b",
                      256),
            "a" + kFffd + "b");
  EXPECT_EQ(ValidUtf8("\xc0\xaf", 256), kFffd + kFffd);              // overlong '/'
  EXPECT_EQ(ValidUtf8("\xe0\x80\xaf", 256), kFffd + kFffd + kFffd);  // overlong, 3 bytes
  EXPECT_EQ(ValidUtf8("\xed\xa0\x80", 256), kFffd + kFffd + kFffd);  // a surrogate
  EXPECT_EQ(ValidUtf8("\xf4\x90\x80\x80", 256), kFffd + kFffd + kFffd + kFffd);  // > U+10FFFF
  EXPECT_EQ(ValidUtf8("\xf5", 256), kFffd);
  EXPECT_EQ(ValidUtf8("ab\xc3", 256), "ab" + kFffd);  // cut short
  EXPECT_EQ(ValidUtf8("\xe2\x82"
                      "x",
                      256),
            kFffd + kFffd + "x");
  EXPECT_EQ(ValidUtf8(std::string("a\0b", 3), 256), std::string("a\0b", 3));
}

TEST(Text, ValidUtf8CutsAtACharacterBoundary) {
  EXPECT_EQ(ValidUtf8("abcdef", 4), "abcd");
  EXPECT_EQ(ValidUtf8("abc\xc3\xa9", 4), "abc");  // é does not fit whole
  EXPECT_EQ(ValidUtf8("ab\xff", 4), "ab");        // nor does its replacement
  EXPECT_EQ(ValidUtf8("\xf0\x9f\x98\x80", 4), "\xf0\x9f\x98\x80");
  EXPECT_EQ(ValidUtf8("", 0), "");
  EXPECT_EQ(ValidUtf8("a", 0), "");
}

}  // namespace
}  // namespace gatehouse

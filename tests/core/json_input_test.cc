#include "core/json_input.h"

#include <gtest/gtest.h>

namespace gatehouse {
namespace {

TEST(JsonObjectReader, ReadsTypedFieldsAndRejectsUnknownOnes) {
  auto r = JsonObjectReader::Parse(R"({"label":"x","scopes":["a"],"n":3,"extra":1})");
  ASSERT_TRUE(r);
  EXPECT_EQ(**r->OptString("label"), "x");
  EXPECT_EQ((**r->OptStringArray("scopes")).size(), 1u);
  EXPECT_EQ(**r->OptInt("n"), 3);
  auto unknown = r->RejectUnknownFields();
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().field, "extra");
}

TEST(JsonObjectReader, NamesTheFieldOfAWrongType) {
  auto r = JsonObjectReader::Parse(R"({"label":5,"scopes":"read"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->OptString("label").error().field, "label");
  EXPECT_EQ(r->OptStringArray("scopes").error().field, "scopes");
}

TEST(JsonObjectReader, RefusesMalformedNonObjectDeepAndInvalidUtf8) {
  EXPECT_FALSE(JsonObjectReader::Parse("{"));
  EXPECT_FALSE(JsonObjectReader::Parse("[1,2]"));
  EXPECT_FALSE(JsonObjectReader::Parse("\"s\""));
  EXPECT_FALSE(JsonObjectReader::Parse(std::string(100, '[') + std::string(100, ']')));
  EXPECT_FALSE(JsonObjectReader::Parse("{\"label\":\"\xff\xfe\"}"));
  EXPECT_TRUE(JsonObjectReader::Parse(""));  // an empty body is {}
}

}  // namespace
}  // namespace gatehouse

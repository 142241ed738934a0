#include "http/message.h"

#include <gtest/gtest.h>

namespace gatehouse {
namespace {

TEST(HttpRequest, QueryParamsArePercentDecodedAndAlwaysUtf8) {
  HttpRequest req;
  req.query = "actor=key%5Fabc&empty=&bare&agent=caf%C3%A9&bad=%FFx&cut=%C3&a%20b=1";
  EXPECT_EQ(req.QueryParam("actor"), "key_abc");
  EXPECT_EQ(req.QueryParam("empty"), "");
  EXPECT_EQ(req.QueryParam("bare"), "");
  EXPECT_EQ(req.QueryParam("agent"), "caf\xc3\xa9");
  EXPECT_EQ(req.QueryParam("bad"), "\xef\xbf\xbdx");
  EXPECT_EQ(req.QueryParam("cut"), "\xef\xbf\xbd");
  EXPECT_EQ(req.QueryParam("a b"), "1");
  EXPECT_EQ(req.QueryParam("missing"), std::nullopt);
}

}  // namespace
}  // namespace gatehouse

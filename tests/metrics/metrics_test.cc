// The Prometheus text gatehouse renders: label values escaped, families named once.
#include "metrics/metrics.h"

#include <gtest/gtest.h>

namespace gatehouse {
namespace {

TEST(Metrics, LabelValuesAreEscapedAsTheTextFormatAsks) {
  EXPECT_EQ(Metrics::Label("server", "http://a:9000"), R"(server="http://a:9000")");
  EXPECT_EQ(Metrics::Label("route", "say \"hi\"\\now\n"), R"(route="say \"hi\"\\now\n")");
}

TEST(Metrics, ALabeledFamilyHasOneHeaderAndALineEach) {
  Metrics m;
  m.DefineRoutes({"odd\"name"});
  m.AddFamily("gatehouse_test_total", "Things.", "counter", [] {
    return Metrics::LabeledValues{{Metrics::Label("server", "a"), 1},
                                  {Metrics::Label("server", "b"), 2}};
  });
  std::string text = m.Render();
  EXPECT_NE(
      text.find("# HELP gatehouse_test_total Things.\n# TYPE gatehouse_test_total counter\n"
                "gatehouse_test_total{server=\"a\"} 1\ngatehouse_test_total{server=\"b\"} 2\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(gatehouse_request_duration_seconds_sum{route="odd\"name"} 0)"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace gatehouse

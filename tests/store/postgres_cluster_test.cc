// The throwaway PostgreSQL cluster the PostgreSQL store's tests run against: it starts without
// any machine set-up beyond the Debian packages, listens on loopback only, and several can run
// side by side (one per test process).
#include <gtest/gtest.h>

#include "support/postgres.h"

namespace gatehouse::testing {
namespace {

TEST(PostgresCluster, StartsOnLoopbackAtItsOwnPort) {
  PostgresCluster a;
  EXPECT_EQ(a.Sql("SELECT 1"), "1");
  EXPECT_EQ(a.Sql("SHOW listen_addresses"), "127.0.0.1");
  EXPECT_EQ(a.Sql("SHOW port"), std::to_string(a.port()));
  EXPECT_EQ(a.Sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"), "t");
  PostgresCluster b;
  EXPECT_NE(a.port(), b.port());
  a.Sql("CREATE TABLE only_in_a (x int)");
  EXPECT_EQ(b.Sql("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"), "0");
}

}  // namespace
}  // namespace gatehouse::testing

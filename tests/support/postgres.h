// A throwaway PostgreSQL cluster for tests: initdb in a temporary directory, listening on
// 127.0.0.1 at a free port, stopped and deleted with the object. Uses the server binaries of
// Debian's postgresql package; as root (CI), the cluster runs as the `postgres` system user,
// because PostgreSQL refuses to run as root.
#pragma once

#include <memory>
#include <string>

#include "support/process.h"

namespace gatehouse::testing {

class PostgresCluster {
 public:
  // Throws std::runtime_error naming what failed (no binaries, initdb, start).
  PostgresCluster();
  ~PostgresCluster();
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  int port() const { return port_; }
  // The bootstrap superuser, who owns the cluster.
  static constexpr const char* kSuperuser = "gatehouse_admin";
  // postgres://user@127.0.0.1:port/database
  std::string Url(const std::string& user = kSuperuser,
                  const std::string& database = "postgres") const;
  // Runs SQL through psql as the superuser; returns its output (unaligned, tuples only).
  std::string Sql(const std::string& sql, const std::string& database = "postgres") const;
  // The same as another role; errors are returned as the output, with `ok` false.
  std::string SqlAs(const std::string& user, const std::string& sql, const std::string& database,
                    bool* ok) const;
  // Stops the server (immediate shutdown), as a database outage would.
  void Stop();
  // Starts it again after Stop, on the same port, as the end of an outage.
  void Start();

 private:
  bool StartOnPort(std::string* out);
  std::vector<std::string> AsOwner(std::vector<std::string> argv) const;
  TempDir dir_;
  std::string bin_;
  std::string data_;
  int port_ = 0;
  bool as_postgres_user_ = false;
  bool stopped_ = false;
};

}  // namespace gatehouse::testing

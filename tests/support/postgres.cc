#include "support/postgres.h"

#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

namespace gatehouse::testing {
namespace {

// The newest installed server version's binaries (/usr/lib/postgresql/<major>/bin).
std::string FindServerBinaries() {
  std::string best;
  int best_major = -1;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
    int major = std::atoi(e.path().filename().c_str());
    if (major > best_major && std::filesystem::exists(e.path() / "bin" / "initdb")) {
      best_major = major;
      best = (e.path() / "bin").string();
    }
  }
  if (best.empty()) {
    throw std::runtime_error(
        "no PostgreSQL server binaries under /usr/lib/postgresql "
        "(scripts/install-deps installs postgresql-15)");
  }
  return best;
}

}  // namespace

std::vector<std::string> PostgresCluster::AsOwner(std::vector<std::string> argv) const {
  if (!as_postgres_user_) return argv;
  argv.insert(argv.begin(), {"/usr/sbin/runuser", "-u", "postgres", "--"});
  return argv;
}

PostgresCluster::PostgresCluster() : bin_(FindServerBinaries()), data_(dir_.path() + "/data") {
  if (::geteuid() == 0) {
    passwd* pw = ::getpwnam("postgres");
    if (!pw) throw std::runtime_error("running as root, and there is no postgres user to run as");
    as_postgres_user_ = true;
    if (::chown(dir_.path().c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      throw std::runtime_error("cannot hand " + dir_.path() + " to the postgres user");
    }
  }
  int status = 0;
  std::string out =
      RunCommand(AsOwner({bin_ + "/initdb", "-D", data_, "-U", kSuperuser, "--auth=trust",
                          "--encoding=UTF8", "--no-sync", "--locale=C"}),
                 &status);
  if (status != 0) throw std::runtime_error("initdb failed: " + out);
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = FreePort();
    if (StartOnPort(&out)) return;
  }
  throw std::runtime_error("the PostgreSQL test cluster did not start: " + out);
}

bool PostgresCluster::StartOnPort(std::string* out) {
  // Loopback only, sockets in the temporary directory, and no fsync: a test cluster is thrown
  // away, and durability is tested against the store's own guarantees elsewhere. Commits stay
  // synchronous, though: Stop() kills the server, and with asynchronous commit a transaction
  // committed a moment before (the test's org, say) can vanish in the restart's recovery, which
  // no outage of a real database does.
  std::string options = "-c listen_addresses=127.0.0.1 -c port=" + std::to_string(port_) +
                        " -c unix_socket_directories=" + dir_.path() +
                        " -c fsync=off -c full_page_writes=off"
                        " -c max_connections=200";
  int status = 0;
  *out = RunCommand(AsOwner({bin_ + "/pg_ctl", "-D", data_, "-l", dir_.path() + "/server.log", "-o",
                             options, "-w", "-t", "30", "start"}),
                    &status);
  return status == 0;
}

void PostgresCluster::Start() {
  if (!stopped_) return;
  std::string out;
  if (!StartOnPort(&out)) throw std::runtime_error("PostgreSQL did not start again: " + out);
  stopped_ = false;
}

PostgresCluster::~PostgresCluster() { Stop(); }

void PostgresCluster::Stop() {
  if (stopped_) return;
  stopped_ = true;
  int status = 0;
  RunCommand(AsOwner({bin_ + "/pg_ctl", "-D", data_, "-m", "immediate", "-w", "stop"}), &status);
}

std::string PostgresCluster::SqlAs(const std::string& user, const std::string& sql,
                                   const std::string& database, bool* ok) const {
  int status = 0;
  std::string out = RunCommand({"/bin/sh", "-c",
                                "exec /usr/bin/psql -X -q -A -t -v ON_ERROR_STOP=1 -d \"$0\" -c "
                                "\"$1\" 2>&1",
                                Url(user, database), sql},
                               &status);
  *ok = status == 0;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string PostgresCluster::Url(const std::string& user, const std::string& database) const {
  return "postgres://" + user + "@127.0.0.1:" + std::to_string(port_) + "/" + database;
}

std::string PostgresCluster::Sql(const std::string& sql, const std::string& database) const {
  int status = 0;
  std::string out = RunCommand({"/usr/bin/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                "-d", Url(kSuperuser, database), "-c", sql},
                               &status);
  if (status != 0) throw std::runtime_error("psql failed (" + sql + "): " + out);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace gatehouse::testing

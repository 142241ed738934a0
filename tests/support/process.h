// Runs the real gatehouse binary for integration tests: a temporary data directory, port 0, and
// the bound port read from the server's {"listening":...} line.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace gatehouse::testing {

// The binary under test: GATEHOUSE_BIN from the environment (e.g. a sanitizer build, or the
// forgetful build of the cross-tenant suite), else the one the tests were built with.
std::string Binary();

// Runs a command to completion; returns its stdout. `status` gets the exit code.
std::string RunCommand(const std::vector<std::string>& argv, int* status = nullptr,
                       const std::map<std::string, std::string>& env = {});

// A loopback port nothing listens on right now. Another process could take it before the
// caller binds it; callers retry then.
int FreePort();

class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class ServerProcess {
 public:
  // Starts `gatehouse serve --config <config_file>` and waits until it listens.
  explicit ServerProcess(const std::string& config_file,
                         const std::map<std::string, std::string>& env = {});
  ~ServerProcess();

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // Waits for exit; returns the exit status (or -1 on timeout, after SIGKILL).
  int Wait(int timeout_ms = 10000);
  // Everything the server wrote to stdout and stderr so far.
  std::string Output() const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_path_;
};

// `gatehouse init --json` in `data_dir`; returns {org_id, api_key}.
// `gatehouse init` on a data directory (and, when given, a storage URL); returns the first org's
// id and owner key.
std::pair<std::string, std::string> InitDataDir(const std::string& data_dir,
                                                const std::string& storage = "");

}  // namespace gatehouse::testing

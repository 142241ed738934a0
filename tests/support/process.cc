#include "support/process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json/parse.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace gatehouse::testing {

std::string Binary() {
  const char* env = std::getenv("GATEHOUSE_BIN");
  return env && *env ? env : GATEHOUSE_BIN;
}

namespace {

std::vector<char*> Argv(const std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}
}  // namespace

std::string RunCommand(const std::vector<std::string>& argv, int* status,
                       const std::map<std::string, std::string>& env) {
  int out[2];
  if (pipe(out) != 0) throw std::runtime_error("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    close(out[1]);
    for (auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    auto a = Argv(argv);
    execv(a[0], a.data());
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<std::size_t>(n));
  close(out[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (status) *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return text;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/gatehouse-test-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
  path_ = tmpl;
}

TempDir::~TempDir() { RunCommand({"/bin/rm", "-rf", path_}); }

ServerProcess::ServerProcess(const std::string& config_file,
                             const std::map<std::string, std::string>& env) {
  // One log per process: several nodes may share a config file (the cluster tests), and a
  // shared log would hand every node the first node's port.
  static std::atomic<int> started{0};
  log_path_ = config_file + "." + std::to_string(started.fetch_add(1)) + ".log";
  pid_ = fork();
  if (pid_ == 0) {
    FILE* f = fopen(log_path_.c_str(), "w");
    dup2(fileno(f), 1);
    dup2(fileno(f), 2);
    for (auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<std::string> args = {Binary(), "serve", "--config", config_file};
    auto a = Argv(args);
    execv(a[0], a.data());
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string out = Output();
    auto at = out.find("{\"listening\":\"");
    if (at != std::string::npos) {
      auto colon = out.find(':', at + 14);
      auto quote = out.find('"', colon);
      if (colon != std::string::npos && quote != std::string::npos) {
        port_ = std::stoi(out.substr(colon + 1, quote - colon - 1));
        return;
      }
    }
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("gatehouse exited at start: " + Output());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("gatehouse did not start: " + Output());
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void ServerProcess::Signal(int sig) { kill(pid_, sig); }

int ServerProcess::Wait(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
  return -1;
}

std::string ServerProcess::Output() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::pair<std::string, std::string> InitDataDir(const std::string& data_dir,
                                                const std::string& storage) {
  int status = 0;
  std::vector<std::string> argv = {Binary(), "init", "--data-dir", data_dir, "--json"};
  if (!storage.empty()) argv.insert(argv.end(), {"--storage", storage});
  std::string out = RunCommand(argv, &status);
  if (status != 0) throw std::runtime_error("init failed: " + out);
  auto v = boost::json::parse(out);
  return {std::string(v.at("org_id").as_string()), std::string(v.at("api_key").as_string())};
}

// A port nothing listens on right now. Another process could take it before the cluster does;
// the caller retries then.
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

}  // namespace gatehouse::testing

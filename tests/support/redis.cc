#include "support/redis.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace gatehouse::testing {

namespace {

bool Accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

RedisServer::RedisServer(std::string password, std::optional<Tls> tls)
    : password_(std::move(password)), tls_(std::move(tls)) {
  if (access("/usr/bin/redis-server", X_OK) != 0) {
    throw std::runtime_error("no /usr/bin/redis-server (scripts/install-deps installs it)");
  }
  port_ = FreePort();
  Start();
}

void RedisServer::Start() {
  std::string port = std::to_string(port_);
  std::vector<std::string> args = {"/usr/bin/redis-server",
                                   "--port",
                                   tls_ ? "0" : port,
                                   "--bind",
                                   "127.0.0.1",
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--dir",
                                   dir_.path(),
                                   "--logfile",
                                   dir_.path() + "/redis.log",
                                   "--daemonize",
                                   "no"};
  if (tls_) {
    for (const std::string& a :
         {std::string("--tls-port"), port, std::string("--tls-cert-file"), tls_->cert_file,
          std::string("--tls-key-file"), tls_->key_file, std::string("--tls-auth-clients"),
          std::string(tls_->client_ca_file.empty() ? "no" : "yes")}) {
      args.push_back(a);
    }
    if (!tls_->client_ca_file.empty()) {
      args.emplace_back("--tls-ca-cert-file");
      args.push_back(tls_->client_ca_file);
    }
  }
  if (!password_.empty()) {
    args.emplace_back("--requirepass");
    args.push_back(password_);
  }
  pid_ = fork();
  if (pid_ == 0) {
    std::vector<char*> a;
    for (auto& s : args) a.push_back(s.data());
    a.push_back(nullptr);
    execv(a[0], a.data());
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!Accepts(port_)) {
    if (std::chrono::steady_clock::now() > deadline) {
      Stop();
      throw std::runtime_error("redis-server did not start on port " + port);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void RedisServer::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

RedisServer::~RedisServer() { Stop(); }

}  // namespace gatehouse::testing

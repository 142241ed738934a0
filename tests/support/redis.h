// A throwaway Redis for tests: Debian's redis-server on 127.0.0.1 at a free port, without
// persistence, in a temporary directory; stopped with the object.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "support/process.h"

namespace gatehouse::testing {

class RedisServer {
 public:
  // TLS only (rediss://): the server's certificate and key, and the CA clients' certificates
  // must come from (empty: clients need none).
  struct Tls {
    std::string cert_file, key_file, client_ca_file;
  };
  // Throws std::runtime_error when redis-server is missing or does not start. With a
  // password, clients must AUTH with it.
  explicit RedisServer(std::string password = {}, std::optional<Tls> tls = std::nullopt);
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string Url() const {
    return (tls_ ? "rediss://127.0.0.1:" : "redis://127.0.0.1:") + std::to_string(port_);
  }
  // An outage: the server is killed and stays down until Start().
  void Stop();
  void Start();

 private:
  TempDir dir_;
  std::string password_;
  std::optional<Tls> tls_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace gatehouse::testing

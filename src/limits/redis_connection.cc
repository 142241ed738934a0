#include "limits/redis_connection.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "core/tls_client.h"

namespace gatehouse {

namespace {

tl::unexpected<Error> Unreachable(const RedisAddress& a, std::string_view why) {
  return tl::unexpected(
      Error{ErrorCode::kUnavailable,
            "Redis at " + a.host + ":" + std::to_string(a.port) + ": " + std::string(why),
            {},
            {}});
}

// A connected socket, blocking, with every read and write bounded by `timeout`; -1 otherwise.
int ConnectSocket(const RedisAddress& a, std::chrono::milliseconds timeout, std::string& why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(a.port);
  if (int rc = ::getaddrinfo(a.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    why = std::string("cannot resolve the host: ") + ::gai_strerror(rc);
    return -1;
  }
  int fd = -1;
  why = "no address to connect to";
  for (addrinfo* ai = found; ai && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
      int err = 0;
      socklen_t len = sizeof err;
      if (rc == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
        rc = 0;
      } else {
        errno = rc == 0 ? ETIMEDOUT : (err != 0 ? err : errno);
        rc = -1;
      }
    }
    if (rc != 0) {
      why = std::string("cannot connect: ") + std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) return -1;
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

}  // namespace

Result<std::shared_ptr<RedisTlsContext>> RedisTlsContext::Load(const RedisAddress& address) {
  auto ctx =
      MakeClientTlsContext({address.tls_ca_file, address.tls_cert_file, address.tls_key_file});
  if (!ctx) return Unreachable(address, ctx.error().message);
  return std::shared_ptr<RedisTlsContext>(new RedisTlsContext(*ctx));
}

RedisTlsContext::~RedisTlsContext() { SSL_CTX_free(ctx_); }

Result<std::unique_ptr<RedisConnection>> RedisConnection::Open(const RedisAddress& address,
                                                               std::chrono::milliseconds timeout,
                                                               const RedisTlsContext* tls) {
  if (address.tls && !tls) return Unreachable(address, "TLS is required but not set up");
  std::string why;
  int fd = ConnectSocket(address, timeout, why);
  if (fd < 0) return Unreachable(address, why);
  if (!address.tls) return std::unique_ptr<RedisConnection>(new RedisConnection(fd, nullptr));
  ERR_clear_error();
  SSL* ssl = SSL_new(tls->native());
  if (!ssl) {
    ::close(fd);
    return Unreachable(address, "cannot set up TLS: " + TakeOpenSslError());
  }
  std::unique_ptr<RedisConnection> conn(new RedisConnection(fd, ssl));
  SSL_set_fd(ssl, fd);
  // The certificate must name what we asked for: the configured server name, or the URL's host.
  const std::string& name =
      address.tls_server_name.empty() ? address.host : address.tls_server_name;
  ExpectPeerName(ssl, name);
  if (SSL_connect(ssl) != 1) {
    const long verdict = SSL_get_verify_result(ssl);
    if (verdict != X509_V_OK) {
      ERR_clear_error();
      return Unreachable(address, std::string("its TLS certificate is not trusted for \"") + name +
                                      "\": " + X509_verify_cert_error_string(verdict));
    }
    return Unreachable(address, "the TLS handshake failed: " + TakeOpenSslError());
  }
  return conn;
}

RedisConnection::RedisConnection(int fd, ssl_st* ssl)
    : fd_(fd), ssl_(ssl), reader_(redisReaderCreate()) {}

RedisConnection::~RedisConnection() {
  if (ssl_) SSL_free(ssl_);
  ::close(fd_);
  redisReaderFree(reader_);
}

void RedisConnection::Format(std::span<const std::string> argv, std::string& out) {
  char digits[24];
  auto number = [&](char kind, std::size_t n) {
    out.push_back(kind);
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, n);
    out.append(digits, end);
    out.append("\r\n");
  };
  number('*', argv.size());
  for (const auto& a : argv) {
    number('$', a.size());
    out.append(a);
    out.append("\r\n");
  }
}

bool RedisConnection::Failed(long n) {
  const int saved = errno;
  if (ssl_) {
    switch (SSL_get_error(ssl_, static_cast<int>(n))) {
      case SSL_ERROR_ZERO_RETURN:
        failure_ = "Redis closed the connection";
        return false;
      case SSL_ERROR_SSL:
        failure_ = TakeOpenSslError();
        return false;
      default:
        break;
    }
  }
  ERR_clear_error();
  if (n == 0) {
    failure_ = "Redis closed the connection";
  } else if (saved == EAGAIN || saved == EWOULDBLOCK) {
    failure_ = "no answer within the timeout";
  } else {
    failure_ = std::strerror(saved);
  }
  return false;
}

bool RedisConnection::Send(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = 0;
    if (ssl_) {
      ERR_clear_error();
      n = SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()));
      if (n <= 0) return Failed(n);
    } else {
      n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Failed(n);
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool RedisConnection::Fill() {
  char buf[16384];
  for (;;) {
    ssize_t n = 0;
    if (ssl_) {
      ERR_clear_error();
      n = SSL_read(ssl_, buf, sizeof buf);
    } else {
      n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
    }
    if (n <= 0) return Failed(n);
    return redisReaderFeed(reader_, buf, static_cast<std::size_t>(n)) == REDIS_OK;
  }
}

void* RedisConnection::Receive() {
  for (;;) {
    void* reply = nullptr;
    if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
      failure_ = "Redis's reply is not RESP";
      return nullptr;
    }
    if (reply) return reply;
    if (!Fill()) return nullptr;
  }
}

void* RedisConnection::Command(std::span<const std::string> argv) {
  out_.clear();
  Format(argv, out_);
  if (!Send(out_)) return nullptr;
  return Receive();
}

}  // namespace gatehouse

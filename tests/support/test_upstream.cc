#include "support/test_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>

namespace gatehouse::testing {

TestUpstream::TestUpstream(Handler handler, const std::string& address, int port)
    : handler_(std::move(handler)) {
  const bool ipv6 = address.find(':') != std::string::npos;
  // CLOEXEC: a server process the test starts later must not inherit (and keep) the port.
  listen_fd_ = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_storage storage{};
  socklen_t len = 0;
  bool parsed = false;
  if (ipv6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    parsed = inet_pton(AF_INET6, address.c_str(), &a->sin6_addr) == 1;
    a->sin6_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    parsed = inet_pton(AF_INET, address.c_str(), &a->sin_addr) == 1;
    a->sin_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof(sockaddr_in);
  }
  if (!parsed) throw std::runtime_error("upstream address " + address);
  auto* addr = reinterpret_cast<sockaddr*>(&storage);
  if (bind(listen_fd_, addr, len) != 0 || listen(listen_fd_, 64) != 0) {
    throw std::runtime_error("upstream bind");
  }
  getsockname(listen_fd_, addr, &len);
  port_ = ipv6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port)
               : ntohs(reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
  acceptor_ = std::thread([this] {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      connections++;
      std::lock_guard lock(mu_);
      workers_.emplace_back([this, fd] { Serve(fd); });
    }
  });
}

TestUpstream::~TestUpstream() {
  stop_ = true;
  acceptor_.join();
  close(listen_fd_);
  std::lock_guard lock(mu_);
  for (auto& w : workers_) w.join();
}

std::string TestUpstream::last_head() const {
  std::lock_guard lock(const_cast<std::mutex&>(mu_));
  return last_head_;
}

std::string TestUpstream::last_body() const {
  std::lock_guard lock(const_cast<std::mutex&>(mu_));
  return last_body_;
}

void TestUpstream::WriteAll(int fd, const std::string& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<std::size_t>(n);
  }
}

std::string TestUpstream::Ok(const std::string& body) {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

void TestUpstream::Serve(int fd) {
  std::string buf;
  auto fill = [&]() {
    pollfd p{fd, POLLIN, 0};
    while (!stop_) {
      int r = poll(&p, 1, 50);
      if (r < 0) return false;
      if (r == 0) continue;
      char tmp[65536];
      ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
      if (n <= 0) return false;
      buf.append(tmp, static_cast<std::size_t>(n));
      return true;
    }
    return false;
  };
  for (;;) {
    std::size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) {
        close(fd);
        return;
      }
    }
    std::string head = buf.substr(0, end + 2);
    buf.erase(0, end + 4);
    std::string lower = head;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    std::string body;
    if (lower.find("transfer-encoding: chunked") != std::string::npos) {
      for (;;) {
        std::size_t le;
        while ((le = buf.find("\r\n")) == std::string::npos) {
          if (!fill()) return (void)close(fd);
        }
        std::size_t size = std::stoul(buf.substr(0, le), nullptr, 16);
        buf.erase(0, le + 2);
        while (size > 0 && buf.size() < size + 2) {
          if (!fill()) return (void)close(fd);
        }
        if (size == 0) {
          // Trailer fields, then the empty line: "0\r\n" + fields + "\r\n".
          std::size_t end_of_trailers;
          buf.insert(0, "\r\n");
          while ((end_of_trailers = buf.find("\r\n\r\n")) == std::string::npos) {
            if (!fill()) return (void)close(fd);
          }
          buf.erase(0, end_of_trailers + 4);
          break;
        }
        body += buf.substr(0, size);
        buf.erase(0, size + 2);
      }
    } else if (auto cl = lower.find("content-length: "); cl != std::string::npos) {
      std::size_t n = std::stoul(lower.substr(cl + 16));
      while (buf.size() < n) {
        if (!fill()) return (void)close(fd);
      }
      body = buf.substr(0, n);
      buf.erase(0, n);
    }
    {
      std::lock_guard lock(mu_);
      last_head_ = head;
      last_body_ = body;
    }
    requests++;
    if (!handler_(fd, head, body)) {
      close(fd);
      closed_by_handler++;
      return;
    }
  }
}

}  // namespace gatehouse::testing

#include "support/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>

namespace gatehouse::testing {

std::string Response::Header(const std::string& name) const {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  auto it = headers.find(lower);
  return it == headers.end() ? "" : it->second;
}

Connection::Connection(int port, const char* source) {
  fd_ = socket(AF_INET, SOCK_STREAM, 0);
  if (source) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    inet_pton(AF_INET, source, &local.sin_addr);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
      close(fd_);
      throw std::runtime_error(std::string("cannot bind to ") + source);
    }
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd_);
    throw std::runtime_error("connect failed to port " + std::to_string(port));
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

Connection::~Connection() {
  if (fd_ >= 0) close(fd_);
}

void Connection::Send(const std::string& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server may close early (e.g. 413); reads will show it
    sent += static_cast<std::size_t>(n);
  }
}

void Connection::CloseSending() { ::shutdown(fd_, SHUT_WR); }

bool Connection::Fill(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
  char tmp[16384];
  ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
  if (n <= 0) return false;
  buf_.append(tmp, static_cast<std::size_t>(n));
  return true;
}

bool Connection::ClosedByPeer(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char tmp[4096];
    ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return true;
  }
}

Response Connection::Read(std::chrono::milliseconds timeout,
                          const std::function<void(const std::string&)>& on_chunk) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  Response r;
  std::size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (!Fill(deadline)) return r;
  }
  std::string head = buf_.substr(0, end);
  buf_.erase(0, end + 4);
  auto line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  if (status_line.size() < 12) return r;
  r.status = std::stoi(status_line.substr(9, 3));
  std::size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    auto next = head.find("\r\n", pos);
    if (next == std::string::npos) next = head.size();
    std::string line = head.substr(pos, next - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      r.headers[name] = value;
    }
    pos = next + 2;
  }
  auto emit = [&](const std::string& s) {
    r.body += s;
    if (on_chunk && !s.empty()) on_chunk(s);
  };
  if (r.status == 204 || r.status == 304 || (r.status >= 100 && r.status < 200)) return r;
  if (r.Header("transfer-encoding") == "chunked") {
    for (;;) {
      std::size_t le;
      while ((le = buf_.find("\r\n")) == std::string::npos) {
        if (!Fill(deadline)) return r;
      }
      std::size_t size = std::stoul(buf_.substr(0, le), nullptr, 16);
      buf_.erase(0, le + 2);
      while (buf_.size() < size + 2) {
        if (!Fill(deadline)) return r;
      }
      if (size == 0) {
        buf_.erase(0, 2);
        return r;
      }
      emit(buf_.substr(0, size));
      buf_.erase(0, size + 2);
    }
  }
  std::string cl = r.Header("content-length");
  if (!cl.empty()) {
    std::size_t n = std::stoul(cl);
    while (buf_.size() < n) {
      if (!buf_.empty()) {
        emit(buf_);
        n -= buf_.size();
        buf_.clear();
      }
      if (!Fill(deadline)) return r;
    }
    emit(buf_.substr(0, n));
    buf_.erase(0, n);
    return r;
  }
  // To the close: each read is a piece, so streaming tests see when the data arrived.
  do {
    emit(buf_);
    buf_.clear();
  } while (Fill(deadline));
  emit(buf_);
  buf_.clear();
  return r;
}

std::string BuildRequest(const std::string& method, const std::string& target,
                         const std::vector<std::pair<std::string, std::string>>& headers,
                         const std::string& body) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  bool has_length = false;
  for (auto& [k, v] : headers) {
    req += k + ": " + v + "\r\n";
    if (k == "Content-Length" || k == "Transfer-Encoding") has_length = true;
  }
  if (!body.empty() && !has_length)
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  return req;
}

Response Request(int port, const std::string& method, const std::string& target,
                 const std::vector<std::pair<std::string, std::string>>& headers,
                 const std::string& body) {
  Connection c(port);
  c.Send(BuildRequest(method, target, headers, body));
  return c.Read();
}

Response RequestFrom(const char* source, int port, const std::string& method,
                     const std::string& target,
                     const std::vector<std::pair<std::string, std::string>>& headers,
                     const std::string& body) {
  Connection c(port, source);
  c.Send(BuildRequest(method, target, headers, body));
  return c.Read();
}

}  // namespace gatehouse::testing

// A deliberately small HTTP/1.1 client over raw sockets, so that tests can send exactly the
// bytes they want (malformed, slow, pipelined) and read exactly what comes back.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace gatehouse::testing {

struct Response {
  int status = 0;  // 0: the connection closed (or timed out) before a status line
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string Header(const std::string& name) const;
};

class Connection {
 public:
  // `source`: the local address to connect from (any 127.0.0.0/8 address works on loopback).
  explicit Connection(int port, const char* source = nullptr);
  ~Connection();
  Connection(const Connection&) = delete;

  void Send(const std::string& bytes);
  // Half-closes: the server reads EOF after what was sent, and may still answer.
  void CloseSending();
  // Reads one response (Content-Length, chunked, or to EOF). `on_chunk` sees body bytes as
  // they arrive (for streaming tests).
  Response Read(std::chrono::milliseconds timeout = std::chrono::seconds(10),
                const std::function<void(const std::string&)>& on_chunk = nullptr);
  // True when the server closed the connection (reads EOF within the timeout).
  bool ClosedByPeer(std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  bool Fill(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  std::string buf_;
};

// Convenience: one request on a fresh connection.
Response Request(int port, const std::string& method, const std::string& target,
                 const std::vector<std::pair<std::string, std::string>>& headers = {},
                 const std::string& body = "");

// The same from another loopback address (a "different client").
Response RequestFrom(const char* source, int port, const std::string& method,
                     const std::string& target,
                     const std::vector<std::pair<std::string, std::string>>& headers = {},
                     const std::string& body = "");

std::string BuildRequest(const std::string& method, const std::string& target,
                         const std::vector<std::pair<std::string, std::string>>& headers,
                         const std::string& body);

}  // namespace gatehouse::testing

// An upstream service for proxy tests, on raw sockets so that a test controls timing exactly
// (slow answers, streamed events, dropped connections).
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace gatehouse::testing {

class TestUpstream {
 public:
  // Called once per request with the socket, the request head and the de-chunked body.
  // Returns false to close the connection afterwards.
  using Handler = std::function<bool(int fd, const std::string& head, const std::string& body)>;

  // Listens on the loopback address (::1 with `ipv6`), on `port` (0: any free one).
  explicit TestUpstream(Handler handler, int port = 0, bool ipv6 = false)
      : TestUpstream(std::move(handler), ipv6 ? "::1" : "127.0.0.1", port) {}
  // Listens on `address` (an IPv4 or IPv6 literal, such as 127.0.0.2: all of 127/8 is loopback).
  TestUpstream(Handler handler, const std::string& address, int port);
  ~TestUpstream();

  int port() const { return port_; }
  std::string last_head() const;
  std::string last_body() const;
  std::atomic<int> connections{0};
  std::atomic<int> requests{0};
  // Connections closed because the handler said so, counted once closed.
  std::atomic<int> closed_by_handler{0};

  static void WriteAll(int fd, const std::string& bytes);
  // A complete 200 response with a JSON body.
  static std::string Ok(const std::string& body);

 private:
  void Serve(int fd);
  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> workers_;
  std::string last_head_, last_body_;
};

}  // namespace gatehouse::testing

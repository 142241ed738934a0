// Per-connection plumbing for http/server.cc and proxy/forwarder.h, the only two places that
// touch Asio: an input buffer that requests are parsed from in place, and deadlines.
//
// Deadlines are not one timer per read or write: arming and cancelling a timer on every I/O
// operation cost more than the rest of a cached forward-auth check. Each worker keeps a list of
// its sockets' deadlines and sweeps it every few tens of milliseconds; a socket whose deadline
// has passed has its pending operation cancelled, and the coroutine that owns it sees `fired()`.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstring>
#include <ctime>
#include <span>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace gatehouse::io {

using tcp = boost::asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

// The monotonic clock at the kernel tick's resolution (a few ms), read without the TSC: every
// request arms a deadline or two, and deadlines are seconds long and swept every few tens of ms.
// Same clock as SteadyClock (CLOCK_MONOTONIC), so the two compare.
inline SteadyClock::time_point CoarseNow() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return SteadyClock::time_point(std::chrono::seconds(ts.tv_sec) +
                                 std::chrono::nanoseconds(ts.tv_nsec));
}

// Bytes read but not yet consumed. Views into data() stay valid until the next Prepare().
class InputBuffer {
 public:
  std::string_view data() const { return {buf_.data() + begin_, end_ - begin_}; }
  bool empty() const { return begin_ == end_; }
  std::size_t size() const { return end_ - begin_; }

  void Consume(std::size_t n) {
    begin_ += std::min(n, size());
    if (begin_ == end_) begin_ = end_ = 0;
  }

  // Free space to read into: at least `want` bytes when the total stays within `limit`,
  // otherwise whatever fits (empty when `limit` bytes are already buffered).
  std::span<char> Prepare(std::size_t want, std::size_t limit) {
    if (buf_.size() - end_ < want && begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (buf_.size() - end_ < want && buf_.size() < limit) {
      buf_.resize(std::min(limit, std::max(buf_.size() * 2, end_ + want)));
    }
    return {buf_.data() + end_, std::min(buf_.size(), limit) - std::min(end_, limit)};
  }
  void Commit(std::size_t n) { end_ += n; }

  // Gives memory back after a large request, so idle keep-alive connections stay small.
  void ShrinkIfIdle(std::size_t keep) {
    if (empty() && buf_.size() > keep) {
      buf_.resize(keep);
      buf_.shrink_to_fit();
    }
  }

 private:
  std::vector<char> buf_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

struct Watch {
  tcp::socket* socket = nullptr;
  SteadyClock::time_point deadline = SteadyClock::time_point::max();
  bool fired = false;
  bool idle = false;  // a client connection waiting for its next request: drain closes it
  std::size_t slot = 0;
};

// One per worker thread; touched only on that thread.
class WatchList {
 public:
  void Add(Watch* w) {
    w->slot = items_.size();
    items_.push_back(w);
  }
  void Remove(Watch* w) {
    Watch* last = items_.back();
    items_[w->slot] = last;
    last->slot = w->slot;
    items_.pop_back();
  }
  // Closes every connection that waits for its next request (graceful drain).
  void CloseIdle() {
    for (Watch* w : items_) {
      if (w->idle && w->socket) {
        boost::system::error_code ignored;
        w->socket->shutdown(tcp::socket::shutdown_both, ignored);
        w->socket->close(ignored);
        w->idle = false;
      }
    }
  }
  void Sweep(SteadyClock::time_point now) {
    for (Watch* w : items_) {
      if (!w->fired && w->deadline <= now) {
        w->fired = true;
        boost::system::error_code ignored;
        if (w->socket) w->socket->cancel(ignored);
      }
    }
  }

 private:
  std::vector<Watch*> items_;
};

// A socket's deadline, registered with its worker for as long as this object lives.
class Deadline {
 public:
  Deadline(WatchList& list, tcp::socket* socket) : list_(list) {
    watch_.socket = socket;
    list_.Add(&watch_);
  }
  ~Deadline() { list_.Remove(&watch_); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  void Bind(tcp::socket* socket) { watch_.socket = socket; }
  // Starts a new deadline `timeout` from now and forgets an earlier expiry.
  void Arm(Millis timeout) {
    watch_.deadline = CoarseNow() + timeout;
    watch_.fired = false;
  }
  void Disarm() {
    watch_.deadline = SteadyClock::time_point::max();
    watch_.fired = false;
  }
  bool fired() const { return watch_.fired; }
  void SetIdle(bool idle) { watch_.idle = idle; }

 private:
  WatchList& list_;
  Watch watch_;
};

}  // namespace gatehouse::io

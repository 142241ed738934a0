// One blocking connection to Redis, plain or TLS (rediss://), for the Redis thread of
// limits/redis_limiter.h. Commands go out as RESP written here; replies are parsed by hiredis's
// reader into redisReply objects. hiredis does its own I/O only over plain sockets (Debian's
// 0.14 has no TLS), so the socket and the TLS session are ours.
//
// Every read and write is bounded by the timeout given at Open: a Redis that stops answering
// makes the call fail, and the caller drops the connection and starts over.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "config/config.h"
#include "core/error.h"

struct ssl_ctx_st;
struct ssl_st;
struct redisReader;

namespace gatehouse {

// The TLS settings of a rediss:// address, loaded once: CAs, client certificate. Shared by
// every connection the Redis thread makes.
class RedisTlsContext {
 public:
  static Result<std::shared_ptr<RedisTlsContext>> Load(const RedisAddress& address);
  ~RedisTlsContext();
  RedisTlsContext(const RedisTlsContext&) = delete;
  RedisTlsContext& operator=(const RedisTlsContext&) = delete;
  ssl_ctx_st* native() const { return ctx_; }

 private:
  explicit RedisTlsContext(ssl_ctx_st* ctx) : ctx_(ctx) {}
  ssl_ctx_st* ctx_;
};

class RedisConnection {
 public:
  // Connects to `address` within `timeout`; with `tls` (required for a rediss:// address), also
  // completes the handshake and verifies Redis's certificate for the address's server name.
  static Result<std::unique_ptr<RedisConnection>> Open(const RedisAddress& address,
                                                       std::chrono::milliseconds timeout,
                                                       const RedisTlsContext* tls);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Appends `argv` to `out` as one RESP command (an array of bulk strings).
  static void Format(std::span<const std::string> argv, std::string& out);
  // Writes all of `bytes`; false when the connection failed or timed out.
  bool Send(std::string_view bytes);
  // The next reply (a redisReply*, for freeReplyObject), or null when the connection failed,
  // timed out, or Redis sent something that is not RESP.
  void* Receive();
  // Send and Receive of one command.
  void* Command(std::span<const std::string> argv);
  // Why the last Send or Receive failed, for the log.
  const std::string& failure() const { return failure_; }

 private:
  RedisConnection(int fd, ssl_st* ssl);
  // Reads what is available into the reader; false on failure, timeout or end of stream.
  bool Fill();
  // Records why an I/O call that returned `n` failed; returns false.
  bool Failed(long n);

  int fd_;
  ssl_st* ssl_;
  redisReader* reader_;
  std::string out_;
  std::string failure_;
};

}  // namespace gatehouse

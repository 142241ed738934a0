// HTTP/1.1 message framing (RFC 9112) for the server and the proxy: request and response heads
// parsed in place, and a chunked-body decoder. No allocation per message: fields are views into
// the caller's buffer, stored in a vector the caller keeps and reuses.
//
// Strict on purpose, because gatehouse sits in front of other HTTP parsers and any disagreement
// about where a message ends is request smuggling: CRLF line endings only, no obs-fold, no
// whitespace before the colon, no control characters in values, one Content-Length value,
// Transfer-Encoding only as exactly "chunked" and never together with Content-Length, and exactly
// one Host in HTTP/1.1 requests.
#pragma once

#include <boost/container/small_vector.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/text.h"

namespace gatehouse::h1 {

struct Field {
  std::string_view name;
  std::string_view value;  // without surrounding whitespace
};

// How the message body is delimited.
enum class Framing {
  kNone,       // no body
  kLength,     // Content-Length bytes
  kChunked,    // chunked transfer coding
  kUntilClose  // responses only: everything until the upstream closes
};

enum class Status {
  kComplete,
  kIncomplete,          // need more bytes
  kTooLarge,            // head longer than the limit -> 431
  kTooManyFields,       // -> 431
  kMalformed,           // -> 400 (or 502 from an upstream)
  kBadFraming,          // conflicting or invalid Content-Length / Transfer-Encoding -> 400
  kUnsupportedVersion,  // not HTTP/1.x -> 505, reported as 400
};

struct Limits {
  std::size_t max_head_bytes = 16 * 1024;
  std::size_t max_fields = 100;
};

// The names a message's Connection fields list; a handful at most in practice.
struct ConnectionTokens {
  boost::container::small_vector<std::string_view, 4> tokens;
  bool Contains(std::string_view name) const {
    for (std::string_view t : tokens) {
      if (EqualsIgnoreCase(t, name)) return true;
    }
    return false;
  }
};

struct Head {
  int minor_version = 1;
  std::vector<Field> fields;
  Framing framing = Framing::kNone;
  std::uint64_t content_length = 0;  // with kLength
  bool keep_alive = true;            // after Connection and the version are applied
  bool expect_continue = false;
  std::size_t head_bytes = 0;  // bytes of the head, final CRLF included

  // First field with that name, compared case-insensitively.
  std::optional<std::string_view> Find(std::string_view name) const;
  // Every token the Connection fields list (those fields are hop-by-hop too), as views into
  // their values: read once by code that asks about each field in turn.
  ConnectionTokens ListedInConnection() const;
};

struct RequestHead : Head {
  std::string_view method;
  std::string_view target;
};

struct ResponseHead : Head {
  int status = 0;
  std::string_view reason;
};

// Parses the request head at the start of `in`. On kComplete, `out` views point into `in`.
Status ParseRequest(std::string_view in, const Limits& limits, RequestHead& out);

// Parses a response head; `request_method_was_head` decides framing, since such a response has
// no body whatever its headers say.
Status ParseResponse(std::string_view in, const Limits& limits, bool request_method_was_head,
                     ResponseHead& out);

// Hop-by-hop fields (RFC 9110 §7.6.1) that a proxy must not forward, besides those the
// Connection header names. Content-Length and Transfer-Encoding are not among them: they
// describe framing that gatehouse relays as is.
bool IsHopByHop(std::string_view name);

// Follows a chunked body byte by byte, so a relay knows where the message ends without
// buffering it, and a reader can collect the data.
class ChunkedDecoder {
 public:
  // Consumes bytes of `in` up to the end of the body at most, appending chunk data to `data`
  // when it is not null. Returns how many bytes it consumed; check failed() and done().
  std::size_t Feed(std::string_view in, std::string* data);
  bool done() const { return state_ == State::kDone; }
  bool failed() const { return state_ == State::kFailed; }
  std::uint64_t data_bytes() const { return data_bytes_; }

 private:
  enum class State {
    kSize,
    kExtension,
    kSizeLf,
    kData,
    kDataCr,
    kDataLf,
    kTrailerStart,
    kTrailerLine,
    kTrailerLf,
    kFinalLf,
    kDone,
    kFailed
  };
  State state_ = State::kSize;
  std::uint64_t remaining_ = 0;
  std::uint64_t data_bytes_ = 0;
  int size_digits_ = 0;
  std::size_t line_bytes_ = 0;
  std::size_t trailer_bytes_ = 0;
};

}  // namespace gatehouse::h1

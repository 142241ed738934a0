// Request and response heads and chunked bodies, as they arrive from clients and upstreams. Also
// checks an invariant: a parsed head never claims more bytes than it was given. And header
// values made UTF-8 for the audit log: within the bound, and already valid when made again.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/text.h"
#include "http/h1.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  gatehouse::h1::Limits limits{4096, 50};
  gatehouse::h1::RequestHead req;
  if (gatehouse::h1::ParseRequest(in, limits, req) == gatehouse::h1::Status::kComplete) {
    if (req.head_bytes > in.size()) std::abort();
    // Connection's tokens are views into the input, never past it.
    for (std::string_view t : req.ListedInConnection().tokens) {
      if (t.data() < in.data() || t.data() + t.size() > in.data() + in.size()) std::abort();
    }
    std::string_view rest = in.substr(req.head_bytes);
    if (req.framing == gatehouse::h1::Framing::kChunked) {
      gatehouse::h1::ChunkedDecoder d;
      std::string body;
      if (d.Feed(rest, &body) > rest.size() || body.size() != d.data_bytes()) std::abort();
    }
  }
  gatehouse::h1::ResponseHead res;
  if (gatehouse::h1::ParseResponse(in, limits, size % 2 == 0, res) ==
      gatehouse::h1::Status::kComplete) {
    if (res.head_bytes > in.size()) std::abort();
  }
  const std::size_t bound = size % 300;
  const std::string text = gatehouse::ValidUtf8(in, bound);
  if (text.size() > bound || gatehouse::ValidUtf8(text, bound) != text) std::abort();
  // Raw chunked input, fed in two pieces.
  gatehouse::h1::ChunkedDecoder d;
  std::size_t half = size / 2;
  std::size_t used = d.Feed(in.substr(0, half), nullptr);
  if (!d.done() && !d.failed() && used == half) d.Feed(in.substr(half), nullptr);
  return 0;
}

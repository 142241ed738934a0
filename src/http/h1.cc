#include "http/h1.h"

#include <array>

#include "core/text.h"

namespace gatehouse::h1 {
namespace {

constexpr std::string_view kCrlf = "\r\n";

// Character classes, one table lookup per byte on the hot path.
enum : unsigned char { kToken = 1, kFieldValue = 2, kTargetChar = 4, kHex = 8 };

constexpr std::array<unsigned char, 256> MakeClasses() {
  std::array<unsigned char, 256> t{};
  for (int c = 0x21; c <= 0x7e; ++c) t[c] |= kTargetChar | kFieldValue;
  for (int c = 0x80; c <= 0xff; ++c) t[c] |= kFieldValue;  // obs-text
  t[' '] |= kFieldValue;
  t['\t'] |= kFieldValue;
  for (int c = '0'; c <= '9'; ++c) t[c] |= kToken | kHex;
  for (int c = 'a'; c <= 'z'; ++c) t[c] |= kToken;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] |= kToken;
  for (int c = 'a'; c <= 'f'; ++c) t[c] |= kHex;
  for (int c = 'A'; c <= 'F'; ++c) t[c] |= kHex;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] |= kToken;
  return t;
}
constexpr auto kClasses = MakeClasses();

bool Is(char c, unsigned char cls) { return (kClasses[static_cast<unsigned char>(c)] & cls) != 0; }

bool AllOf(std::string_view s, unsigned char cls) {
  for (char c : s) {
    if (!Is(c, cls)) return false;
  }
  return true;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// 1*DIGIT without overflow; nullopt otherwise (no sign, no list, no spaces).
std::optional<std::uint64_t> ParseLength(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

// Calls f(token) for each comma-separated element of a list header, trimmed, empty ones skipped.
template <typename F>
void ForEachListItem(std::string_view list, F&& f) {
  while (!list.empty()) {
    auto comma = list.find(',');
    std::string_view item = TrimOws(list.substr(0, comma));
    if (!item.empty()) f(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

// Locates the head: skips blank lines before it (RFC 9112 §2.2) and finds the empty line after
// it. Returns the offset where the head starts, or a status.
Status LocateHead(std::string_view in, const Limits& limits, std::size_t& start, std::size_t& end) {
  start = 0;
  while (in.size() - start >= 2 && in.substr(start, 2) == kCrlf) start += 2;
  std::size_t window = std::min(in.size(), limits.max_head_bytes);
  if (start >= window)
    return in.size() >= limits.max_head_bytes ? Status::kTooLarge : Status::kIncomplete;
  auto blank = in.substr(0, window).find("\r\n\r\n", start);
  if (blank == std::string_view::npos) {
    return in.size() >= limits.max_head_bytes ? Status::kTooLarge : Status::kIncomplete;
  }
  end = blank + 4;
  return Status::kComplete;
}

// "HTTP/1.x" -> minor version.
std::optional<int> ParseVersion(std::string_view v) {
  if (v.size() != 8 || v.substr(0, 5) != "HTTP/") return std::nullopt;
  if (v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9') return std::nullopt;
  if (v[5] != '1') return -1;
  return v[7] - '0';
}

// Parses the field lines in [pos, end) into `out`, applying the rules every message shares.
// `is_request` adds the Host and request-framing rules.
Status ParseFields(std::string_view in, std::size_t pos, std::size_t end, const Limits& limits,
                   bool is_request, Head& out) {
  out.fields.clear();
  out.content_length = 0;
  out.expect_continue = false;
  bool has_length = false, has_te = false, chunked = false, close = false, keep_alive = false;
  int hosts = 0;
  // The head ends with CRLF CRLF: lines run up to end - 2.
  while (pos < end - 2) {
    auto eol = in.find(kCrlf, pos);
    std::string_view line = in.substr(pos, eol - pos);
    pos = eol + 2;
    if (line.empty() || line.front() == ' ' || line.front() == '\t') return Status::kMalformed;
    auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return Status::kMalformed;
    std::string_view name = line.substr(0, colon);
    std::string_view value = TrimOws(line.substr(colon + 1));
    if (!AllOf(name, kToken) || !AllOf(value, kFieldValue)) return Status::kMalformed;
    if (out.fields.size() >= limits.max_fields) return Status::kTooManyFields;
    out.fields.push_back({name, value});

    if (EqualsIgnoreCase(name, "content-length")) {
      auto n = ParseLength(value);
      if (!n || (has_length && *n != out.content_length)) return Status::kBadFraming;
      has_length = true;
      out.content_length = *n;
    } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
      // Only a single, plain "chunked" is understood; anything else could be framed differently
      // by the next parser along.
      if (has_te || !EqualsIgnoreCase(value, "chunked")) return Status::kBadFraming;
      has_te = chunked = true;
    } else if (EqualsIgnoreCase(name, "connection")) {
      ForEachListItem(value, [&](std::string_view t) {
        if (EqualsIgnoreCase(t, "close")) close = true;
        if (EqualsIgnoreCase(t, "keep-alive")) keep_alive = true;
      });
    } else if (is_request && EqualsIgnoreCase(name, "host")) {
      ++hosts;
    } else if (is_request && EqualsIgnoreCase(name, "expect")) {
      if (EqualsIgnoreCase(value, "100-continue")) out.expect_continue = true;
    }
  }
  if (has_te && has_length) return Status::kBadFraming;
  if (is_request) {
    if (has_te && out.minor_version == 0) return Status::kBadFraming;
    if (out.minor_version >= 1 ? hosts != 1 : hosts > 1) return Status::kMalformed;
    if (chunked)
      out.framing = Framing::kChunked;
    else if (has_length && out.content_length > 0)
      out.framing = Framing::kLength;
    else
      out.framing = Framing::kNone;
  } else {
    out.framing = chunked      ? Framing::kChunked
                  : has_length ? (out.content_length > 0 ? Framing::kLength : Framing::kNone)
                               : Framing::kUntilClose;
  }
  out.keep_alive = !close && (out.minor_version >= 1 || keep_alive);
  out.head_bytes = end;
  return Status::kComplete;
}

}  // namespace

std::optional<std::string_view> Head::Find(std::string_view name) const {
  for (const auto& f : fields) {
    if (EqualsIgnoreCase(f.name, name)) return f.value;
  }
  return std::nullopt;
}

ConnectionTokens Head::ListedInConnection() const {
  ConnectionTokens listed;
  for (const auto& f : fields) {
    if (!EqualsIgnoreCase(f.name, "connection")) continue;
    ForEachListItem(f.value, [&](std::string_view t) { listed.tokens.push_back(t); });
  }
  return listed;
}

Status ParseRequest(std::string_view in, const Limits& limits, RequestHead& out) {
  std::size_t start = 0, end = 0;
  if (auto s = LocateHead(in, limits, start, end); s != Status::kComplete) return s;
  auto eol = in.find(kCrlf, start);
  std::string_view line = in.substr(start, eol - start);
  // method SP request-target SP HTTP-version, single spaces only.
  auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return Status::kMalformed;
  auto sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return Status::kMalformed;
  out.method = line.substr(0, sp1);
  out.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  auto version = ParseVersion(line.substr(sp2 + 1));
  if (out.method.empty() || !AllOf(out.method, kToken)) return Status::kMalformed;
  if (out.target.empty() || !AllOf(out.target, kTargetChar)) return Status::kMalformed;
  if (!version) return Status::kMalformed;
  if (*version < 0) return Status::kUnsupportedVersion;
  out.minor_version = *version;
  return ParseFields(in, eol + 2, end, limits, true, out);
}

Status ParseResponse(std::string_view in, const Limits& limits, bool request_method_was_head,
                     ResponseHead& out) {
  std::size_t start = 0, end = 0;
  if (auto s = LocateHead(in, limits, start, end); s != Status::kComplete) return s;
  auto eol = in.find(kCrlf, start);
  std::string_view line = in.substr(start, eol - start);
  // HTTP-version SP 3DIGIT SP [reason-phrase]
  if (line.size() < 12 || line[8] != ' ') return Status::kMalformed;
  auto version = ParseVersion(line.substr(0, 8));
  if (!version) return Status::kMalformed;
  if (*version < 0) return Status::kUnsupportedVersion;
  out.minor_version = *version;
  std::string_view code = line.substr(9, 3);
  if (code.find_first_not_of("0123456789") != std::string_view::npos) return Status::kMalformed;
  out.status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  if (out.status < 100) return Status::kMalformed;
  if (line.size() > 12) {
    if (line[12] != ' ') return Status::kMalformed;
    out.reason = line.substr(13);
    if (!AllOf(out.reason, kFieldValue)) return Status::kMalformed;
  } else {
    out.reason = {};
  }
  auto s = ParseFields(in, eol + 2, end, limits, false, out);
  if (s != Status::kComplete) return s;
  if (request_method_was_head || out.status < 200 || out.status == 204 || out.status == 304) {
    out.framing = Framing::kNone;
  }
  return s;
}

// Every field of every proxied request and response passes through here: the length picks the
// one or two names worth comparing.
bool IsHopByHop(std::string_view name) {
  switch (name.size()) {
    case 2:
      return EqualsIgnoreCase(name, "te");
    case 7:
      return EqualsIgnoreCase(name, "trailer") || EqualsIgnoreCase(name, "upgrade");
    case 10:
      return EqualsIgnoreCase(name, "connection") || EqualsIgnoreCase(name, "keep-alive");
    case 16:
      return EqualsIgnoreCase(name, "proxy-connection");
    case 18:
      return EqualsIgnoreCase(name, "proxy-authenticate");
    case 19:
      return EqualsIgnoreCase(name, "proxy-authorization");
    default:
      return false;
  }
}

std::size_t ChunkedDecoder::Feed(std::string_view in, std::string* data) {
  // Bounds on the parts nobody needs to be long: a chunk-size line with its extensions, and the
  // trailer section.
  constexpr std::size_t kMaxLine = 4096;
  constexpr std::size_t kMaxTrailers = 16 * 1024;
  std::size_t i = 0;
  while (i < in.size() && state_ != State::kDone && state_ != State::kFailed) {
    char c = in[i];
    switch (state_) {
      case State::kSize:
        if (Is(c, kHex)) {
          // 15 hex digits is far beyond any limit gatehouse enforces, and cannot overflow.
          if (++size_digits_ > 15) {
            state_ = State::kFailed;
            break;
          }
          int v = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
          remaining_ = remaining_ * 16 + static_cast<std::uint64_t>(v);
        } else if (size_digits_ > 0 && (c == ';' || c == ' ' || c == '\t')) {
          state_ = State::kExtension;
          line_bytes_ = 0;
        } else if (size_digits_ > 0 && c == '\r') {
          state_ = State::kSizeLf;
        } else {
          state_ = State::kFailed;
        }
        ++i;
        break;
      case State::kExtension:
        if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (!Is(c, kFieldValue) || ++line_bytes_ > kMaxLine) {
          state_ = State::kFailed;
        }
        ++i;
        break;
      case State::kSizeLf:
        if (c != '\n') {
          state_ = State::kFailed;
        } else {
          state_ = remaining_ == 0 ? State::kTrailerStart : State::kData;
        }
        ++i;
        break;
      case State::kData: {
        std::size_t n = static_cast<std::size_t>(
            std::min<std::uint64_t>(remaining_, static_cast<std::uint64_t>(in.size() - i)));
        if (data) data->append(in.data() + i, n);
        remaining_ -= n;
        data_bytes_ += n;
        i += n;
        if (remaining_ == 0) state_ = State::kDataCr;
        break;
      }
      case State::kDataCr:
        state_ = c == '\r' ? State::kDataLf : State::kFailed;
        ++i;
        break;
      case State::kDataLf:
        if (c == '\n') {
          state_ = State::kSize;
          size_digits_ = 0;
        } else {
          state_ = State::kFailed;
        }
        ++i;
        break;
      case State::kTrailerStart:
        if (c == '\r') {
          state_ = State::kFinalLf;
        } else if (Is(c, kToken)) {
          state_ = State::kTrailerLine;
        } else {
          state_ = State::kFailed;
        }
        if (++trailer_bytes_ > kMaxTrailers) state_ = State::kFailed;
        ++i;
        break;
      case State::kTrailerLine:
        if (c == '\r') {
          state_ = State::kTrailerLf;
        } else if (!Is(c, kFieldValue) && c != ':') {
          state_ = State::kFailed;
        }
        if (++trailer_bytes_ > kMaxTrailers) state_ = State::kFailed;
        ++i;
        break;
      case State::kTrailerLf:
        state_ = c == '\n' ? State::kTrailerStart : State::kFailed;
        ++i;
        break;
      case State::kFinalLf:
        state_ = c == '\n' ? State::kDone : State::kFailed;
        ++i;
        break;
      case State::kDone:
      case State::kFailed:
        break;
    }
  }
  return i;
}

}  // namespace gatehouse::h1

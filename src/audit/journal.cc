#include "audit/journal.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "core/crypto.h"
#include "core/random.h"

namespace gatehouse {
namespace {

namespace fs = std::filesystem;

constexpr std::uint8_t kRecordVersion = 1;
constexpr std::size_t kHeaderBytes = 8;
// An event's strings are bounded long before this (user agent 256 bytes, details a few KiB); a
// larger length can only be damage.
constexpr std::uint32_t kMaxPayload = 16u << 20;
constexpr int kMaxSlots = 256;

void PutU32(std::string& out, std::uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out.append(b, 4);
}
void PutU64(std::string& out, std::uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out.append(b, 8);
}
void PutText(std::string& out, std::string_view s) {
  PutU32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}

std::uint64_t GetLE(std::string_view in, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |=
        static_cast<std::uint64_t>(static_cast<unsigned char>(in[at + static_cast<std::size_t>(i)]))
        << (8 * i);
  }
  return v;
}

struct Reader {
  std::string_view in;
  std::size_t at = 0;
  bool ok = true;
  std::uint64_t Int(int bytes) {
    if (!ok || in.size() - at < static_cast<std::size_t>(bytes)) {
      ok = false;
      return 0;
    }
    auto v = GetLE(in, at, bytes);
    at += static_cast<std::size_t>(bytes);
    return v;
  }
  void Text(std::string& out) {
    auto n = Int(4);
    if (!ok || in.size() - at < n) {
      ok = false;
      return;
    }
    out.assign(in.substr(at, n));
    at += n;
  }
};

std::string SegmentName(std::int64_t n) {
  std::string digits = std::to_string(n);
  return std::string(20 - std::min<std::size_t>(20, digits.size()), '0') + digits + ".journal";
}

Error SystemError(std::string_view what, const fs::path& path) {
  return Error{
      ErrorCode::kInternal,
      fmt::format("audit journal: cannot {} {}: {}", what, path.string(), std::strerror(errno)),
      {},
      {}};
}

Result<std::string> ReadWhole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return tl::unexpected(SystemError("read", path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

bool SyncDirectory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

bool WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

void EncodeJournalRecord(const AuditEvent& e, std::string& out) {
  const std::size_t start = out.size();
  out.append(kHeaderBytes, '\0');  // length and checksum, filled in below
  out.push_back(static_cast<char>(kRecordVersion));
  PutU64(out, static_cast<std::uint64_t>(e.at));
  PutU32(out, static_cast<std::uint32_t>(e.status));
  for (std::string_view s :
       {std::string_view(e.org_id), std::string_view(e.actor), std::string_view(e.action),
        std::string_view(e.resource), std::string_view(e.result), std::string_view(e.client_ip),
        std::string_view(e.user_agent), std::string_view(e.request_id),
        std::string_view(e.details)}) {
    PutText(out, s);
  }
  std::string_view payload(out.data() + start + kHeaderBytes, out.size() - start - kHeaderBytes);
  std::string header;
  PutU32(header, static_cast<std::uint32_t>(payload.size()));
  PutU32(header, Crc32(payload));
  out.replace(start, kHeaderBytes, header);
}

bool DecodeJournalPayloadInto(std::string_view payload, AuditEvent& e) {
  Reader r{payload};
  if (r.Int(1) != kRecordVersion) return false;
  e.at = static_cast<UnixMicros>(r.Int(8));
  e.status = static_cast<int>(static_cast<std::int32_t>(r.Int(4)));
  for (std::string* s : {&e.org_id, &e.actor, &e.action, &e.resource, &e.result, &e.client_ip,
                         &e.user_agent, &e.request_id, &e.details}) {
    r.Text(*s);
  }
  return r.ok && r.at == payload.size();
}

Result<AuditEvent> DecodeJournalPayload(std::string_view payload) {
  AuditEvent e;
  if (!DecodeJournalPayloadInto(payload, e)) {
    return tl::unexpected(Error{ErrorCode::kInternal, "audit journal: malformed record", {}, {}});
  }
  return e;
}

namespace {

// The next whole, intact record at the start of `bytes`: its payload, or nullopt. `needed` is
// set to the bytes the record needs when `bytes` holds only part of it (0 otherwise).
std::optional<std::string_view> NextRecord(std::string_view bytes, std::size_t* needed) {
  *needed = 0;
  if (bytes.size() < kHeaderBytes) {
    *needed = kHeaderBytes;
    return std::nullopt;
  }
  auto length = static_cast<std::uint32_t>(GetLE(bytes, 0, 4));
  auto crc = static_cast<std::uint32_t>(GetLE(bytes, 4, 4));
  if (length > kMaxPayload) return std::nullopt;
  if (bytes.size() - kHeaderBytes < length) {
    *needed = kHeaderBytes + length;
    return std::nullopt;
  }
  std::string_view payload = bytes.substr(kHeaderBytes, length);
  if (Crc32(payload) != crc) return std::nullopt;
  return payload;
}

}  // namespace

std::size_t ScanJournalSegment(std::string_view bytes,
                               const std::function<void(AuditEvent&&, std::size_t end)>& visit) {
  std::size_t at = 0;
  std::size_t needed = 0;
  while (auto payload = NextRecord(bytes.substr(at), &needed)) {
    auto event = DecodeJournalPayload(*payload);
    if (!event) break;
    at += kHeaderBytes + payload->size();
    visit(std::move(*event), at);
  }
  return at;
}

Result<std::unique_ptr<AuditJournal>> AuditJournal::Open(const fs::path& root,
                                                         std::int64_t segment_bytes, bool sync) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) {
    return Fail(ErrorCode::kInternal,
                fmt::format("audit journal: cannot create {}: {}", root.string(), ec.message()));
  }
  for (int slot = 0; slot < kMaxSlots; ++slot) {
    auto taken = TakeSlot(root / std::to_string(slot), true, sync);
    if (!taken) return tl::unexpected(taken.error());
    if (*taken) {
      (*taken)->segment_bytes_ = segment_bytes;
      return std::move(*taken);
    }
  }
  return Fail(ErrorCode::kInternal,
              fmt::format("audit journal: all {} slots under {} are held by running processes",
                          kMaxSlots, root.string()));
}

// A null journal (and no error) when another process holds the slot.
Result<std::unique_ptr<AuditJournal>> AuditJournal::TakeSlot(const fs::path& dir,
                                                             bool create_segment, bool sync) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return Fail(ErrorCode::kInternal,
                fmt::format("audit journal: cannot create {}: {}", dir.string(), ec.message()));
  }
  std::unique_ptr<AuditJournal> j(new AuditJournal());
  j->dir_ = dir;
  j->sync_ = sync;
  j->lock_fd_ = ::open((dir / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (j->lock_fd_ < 0) return tl::unexpected(SystemError("open", dir / "lock"));
  if (::flock(j->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return std::unique_ptr<AuditJournal>();
    return tl::unexpected(SystemError("lock", dir / "lock"));
  }
  // The identity is written once, through a rename, so that a crash never leaves half of one.
  const fs::path id_file = dir / "id";
  if (fs::exists(id_file)) {
    auto id = ReadWhole(id_file);
    if (!id) return tl::unexpected(id.error());
    j->id_ = *id;
  }
  if (j->id_.empty()) {
    j->id_ = "journal_" + RandomBase62(22);
    const fs::path temp = dir / "id.new";
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return tl::unexpected(SystemError("create", temp));
    bool written = WriteAll(fd, j->id_) && ::fsync(fd) == 0;
    ::close(fd);
    if (!written) return tl::unexpected(SystemError("write", temp));
    fs::rename(temp, id_file, ec);
    if (ec) return tl::unexpected(SystemError("rename", temp));
  }
  auto existing = j->Segments();
  j->first_own_segment_ = existing.empty() ? 1 : existing.back() + 1;
  if (create_segment) {
    if (auto r = j->StartSegment(j->first_own_segment_); !r) return tl::unexpected(r.error());
  }
  return j;
}

AuditJournal::~AuditJournal() {
  if (read_fd_ >= 0) ::close(read_fd_);
  std::lock_guard lock(fds_mu_);
  for (int fd : full_fds_) ::close(fd);
  if (fd_ >= 0) ::close(fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the slot
}

std::vector<std::int64_t> AuditJournal::Segments() const {
  std::vector<std::int64_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".journal")) continue;
    std::int64_t n = 0;
    auto [end, err] = std::from_chars(name.data(), name.data() + name.size() - 8, n);
    if (err == std::errc() && end == name.data() + name.size() - 8) out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<void> AuditJournal::StartSegment(std::int64_t number) {
  const fs::path path = dir_ / SegmentName(number);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return tl::unexpected(SystemError("create", path));
  std::lock_guard lock(fds_mu_);
  directory_unsynced_ = true;
  if (fd_ >= 0) {
    if (sync_) {
      full_fds_.push_back(fd_);  // closed by the next Sync, once its records are stable
    } else {
      ::close(fd_);
    }
  }
  fd_ = fd;
  segment_ = number;
  offset_ = 0;
  return {};
}

Result<JournalMark> AuditJournal::Append(const AuditEvent& event) {
  buffer_.clear();
  EncodeJournalRecord(event, buffer_);
  return AppendRecords(buffer_);
}

Result<JournalMark> AuditJournal::AppendRecords(std::string_view records) {
  if (offset_ >= segment_bytes_) {
    if (auto r = StartSegment(segment_ + 1); !r) return tl::unexpected(r.error());
  }
  if (!WriteAll(fd_, records)) {
    // A short write leaves a partial record at the tail. Later records go to a new segment, so
    // that replay meets the damage only at a segment's end, where it stops reading that one.
    auto error = SystemError("append to", dir_ / SegmentName(segment_));
    (void)StartSegment(segment_ + 1);
    return tl::unexpected(error);
  }
  offset_ += static_cast<std::int64_t>(records.size());
  return JournalMark{segment_, offset_};
}

Result<void> AuditJournal::Sync() {
  std::vector<int> full;
  int current = -1;
  bool directory = false;
  {
    std::lock_guard lock(fds_mu_);
    full.swap(full_fds_);
    current = fd_;
    directory = std::exchange(directory_unsynced_, false);
  }
  // A segment made since the last sync is found after a power cut only if its name is stable.
  bool ok = !directory || SyncDirectory(dir_);
  for (int fd : full) {
    ok = ::fdatasync(fd) == 0 && ok;
    ::close(fd);
  }
  // `current` stays open while this runs: a segment change moves it to full_fds_, never closes.
  if (current >= 0) ok = ::fdatasync(current) == 0 && ok;
  if (!ok) return tl::unexpected(SystemError("flush", dir_));
  return {};
}

Result<void> AuditJournal::Replay(
    const JournalMark& from,
    const std::function<void(AuditEvent&&, const JournalMark& end)>& visit) {
  for (std::int64_t n : Segments()) {
    if (n < from.segment || n >= first_own_segment_) continue;
    const fs::path path = dir_ / SegmentName(n);
    auto bytes = ReadWhole(path);
    if (!bytes) return tl::unexpected(bytes.error());
    std::string_view view(*bytes);
    const std::size_t skip =
        n == from.segment
            ? std::min<std::size_t>(view.size(), static_cast<std::size_t>(from.offset))
            : 0;
    std::size_t end =
        skip + ScanJournalSegment(view.substr(skip), [&](AuditEvent&& e, std::size_t at) {
          visit(std::move(e), JournalMark{n, static_cast<std::int64_t>(skip + at)});
        });
    if (end != view.size()) {
      // A crash mid-write leaves a partial record; nobody was answered for it.
      spdlog::warn("audit journal: {} ends in {} bytes that are not a whole record; ignored",
                   path.string(), view.size() - end);
    }
  }
  return {};
}

Result<JournalMark> AuditJournal::ReadOwn(const JournalMark& until, std::size_t max,
                                          std::vector<AuditEvent>& out,
                                          std::vector<JournalMark>* ends) {
  if (read_.segment == 0) read_ = JournalMark{first_own_segment_, 0};
  if (ends) ends->clear();
  std::size_t n = 0;
  auto before_until = [&] {
    return read_.segment < until.segment ||
           (read_.segment == until.segment && read_.offset < until.offset);
  };
  while (n < max && before_until()) {
    const fs::path path = dir_ / SegmentName(read_.segment);
    if (read_fd_segment_ != read_.segment) {
      if (read_fd_ >= 0) ::close(read_fd_);
      read_fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      read_fd_segment_ = read_fd_ >= 0 ? read_.segment : -1;
      if (read_fd_ < 0) return tl::unexpected(SystemError("read", path));
    }
    std::int64_t limit = until.offset;
    if (read_.segment < until.segment) {  // a full segment: all of it
      struct stat st {};
      if (::fstat(read_fd_, &st) != 0) return tl::unexpected(SystemError("read", path));
      limit = st.st_size;
    }
    const auto left = static_cast<std::size_t>(std::max<std::int64_t>(0, limit - read_.offset));
    std::size_t want = std::min<std::size_t>(left, 1 << 20);
    std::size_t parsed = 0;
    for (;;) {
      read_buffer_.resize(want);
      std::size_t got = 0;
      while (got < want) {
        ssize_t r = ::pread(read_fd_, read_buffer_.data() + got, want - got,
                            read_.offset + static_cast<std::int64_t>(got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return tl::unexpected(SystemError("read", path));
        got += static_cast<std::size_t>(r);
      }
      std::string_view bytes(read_buffer_);
      std::size_t needed = 0;
      while (n < max) {
        auto payload = NextRecord(bytes.substr(parsed), &needed);
        if (!payload) break;
        if (n == out.size()) out.emplace_back();
        if (!DecodeJournalPayloadInto(*payload, out[n])) break;
        parsed += kHeaderBytes + payload->size();
        ++n;
        if (ends) {
          ends->push_back(
              JournalMark{read_.segment, read_.offset + static_cast<std::int64_t>(parsed)});
        }
      }
      // One record larger than the read: read again, whole, if the segment holds all of it.
      if (parsed == 0 && needed > want && needed <= left) {
        want = needed;
        continue;
      }
      break;
    }
    read_.offset += static_cast<std::int64_t>(parsed);
    if (parsed == 0) {
      // What is left of a full segment is the part of a record whose write failed; nobody was
      // answered for it, and appending went on in the next segment.
      if (read_.segment < until.segment) {
        read_ = JournalMark{read_.segment + 1, 0};
        continue;
      }
      return Fail(ErrorCode::kInternal, fmt::format("audit journal: {} is damaged at offset {}",
                                                    path.string(), read_.offset));
    }
  }
  out.resize(n);
  return read_;
}

void AuditJournal::ForgetBefore(const JournalMark& mark) {
  for (std::int64_t n : Segments()) {
    if (n >= mark.segment || n == segment_) break;
    std::error_code ec;
    fs::remove(dir_ / SegmentName(n), ec);
    if (ec) spdlog::warn("audit journal: cannot remove {}: {}", SegmentName(n), ec.message());
  }
}

std::vector<std::unique_ptr<AuditJournal>> AuditJournal::TakeOrphans(const fs::path& root,
                                                                     const AuditJournal* own) {
  std::vector<std::unique_ptr<AuditJournal>> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (!entry.is_directory() || (own && entry.path() == own->dir_)) continue;
    if (!fs::exists(entry.path() / "id")) continue;
    auto taken = TakeSlot(entry.path(), false, false);
    if (!taken) {
      spdlog::warn("{}", taken.error().message);
      continue;
    }
    if (*taken && !(*taken)->Segments().empty()) out.push_back(std::move(*taken));
  }
  return out;
}

}  // namespace gatehouse

#include "people/password_hasher.h"

#include <sodium.h>

#include <future>

#include "core/random.h"
#include "core/thread_name.h"

namespace gatehouse {

namespace {
constexpr std::string_view kPepperKeyPurpose = "gatehouse-password-pepper-v1";
}  // namespace

PasswordHasher::PasswordHasher(const PasswordConfig& config, const Peppers& peppers)
    : ops_(config.argon2_iterations),
      mem_bytes_(static_cast<std::size_t>(config.argon2_memory_kib) * 1024),
      queue_capacity_(config.hash_queue),
      pepper_(DeriveSubkey(peppers.current, kPepperKeyPurpose)),
      tag_(TagOf(peppers.current)) {
  if (!peppers.previous.empty()) {
    previous_pepper_.emplace(DeriveSubkey(peppers.previous, kPepperKeyPurpose));
    previous_tag_ = TagOf(peppers.previous);
  }
  if (!peppers.next.empty()) {
    next_pepper_.emplace(DeriveSubkey(peppers.next, kPepperKeyPurpose));
    next_tag_ = TagOf(peppers.next);
  }
  if (sodium_init() < 0) std::abort();  // no CSPRNG: nothing here can be trusted
  int workers = config.hash_workers > 0
                    ? config.hash_workers
                    : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  for (int i = 0; i < workers; ++i) {
    workers_.emplace_back([this] {
      NameThisThread("gh-password");
      Work();
    });
  }
  std::string random = RandomBase62(32);
  std::string keyed = Keyed(pepper_, random);
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, keyed.data(), keyed.size(), ops_, mem_bytes_,
                            crypto_pwhash_ALG_ARGON2ID13) != 0) {
    std::abort();  // out of memory at start: fail loudly rather than verify against nothing
  }
  nobody_ = out;
}

PasswordHasher::~PasswordHasher() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

std::string PasswordHasher::Keyed(const HmacSha256Key& pepper, std::string_view password) {
  auto mac = pepper.Mac(password);
  return std::string(reinterpret_cast<const char*>(mac.data()), mac.size());
}

std::string PasswordHasher::TagOf(std::string_view pepper) {
  return "#" + PepperFingerprint(pepper);
}

void PasswordHasher::Work() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

Result<void> PasswordHasher::RunBounded(const std::function<void()>& job) {
  std::promise<void> done;
  auto finished = done.get_future();
  {
    std::lock_guard lock(mu_);
    if (jobs_.size() >= queue_capacity_) {
      ++rejected_;
      return FailRetryAfter(ErrorCode::kUnavailable, "too many sign-ins at once; try again shortly",
                            1);
    }
    jobs_.emplace_back([&] {
      job();
      done.set_value();
    });
  }
  wake_.notify_one();
  finished.wait();
  return {};
}

Result<std::string> PasswordHasher::Hash(std::string_view password) {
  std::string keyed = Keyed(pepper_, password);
  char out[crypto_pwhash_STRBYTES];
  int rc = -1;
  auto ran = RunBounded([&] {
    rc = crypto_pwhash_str_alg(out, keyed.data(), keyed.size(), ops_, mem_bytes_,
                               crypto_pwhash_ALG_ARGON2ID13);
  });
  sodium_memzero(keyed.data(), keyed.size());
  if (!ran) return tl::unexpected(ran.error());
  if (rc != 0) return Fail(ErrorCode::kUnavailable, "not enough memory to hash; try again");
  return std::string(out) + tag_;
}

Result<bool> PasswordHasher::Verify(std::string_view password, std::string_view stored) {
  const std::size_t hash_mark = stored.find('#');
  const std::string_view tag =
      hash_mark == std::string_view::npos ? std::string_view() : stored.substr(hash_mark);
  std::string hash(stored.substr(0, hash_mark));
  // The peppers to try, in order. A tag of none: keyed with a pepper retired since, which
  // nothing here can verify (the user resets the password).
  std::vector<const HmacSha256Key*> peppers;
  if (tag.empty() || tag == tag_) peppers.push_back(&pepper_);
  if (previous_pepper_ && (tag.empty() || tag == previous_tag_)) {
    peppers.push_back(&*previous_pepper_);
  }
  if (next_pepper_ && tag == next_tag_) peppers.push_back(&*next_pepper_);
  if (peppers.empty()) return false;
  bool ok = false;
  auto ran = RunBounded([&] {
    for (const HmacSha256Key* pepper : peppers) {
      std::string keyed = Keyed(*pepper, password);
      ok = crypto_pwhash_str_verify(hash.c_str(), keyed.data(), keyed.size()) == 0;
      sodium_memzero(keyed.data(), keyed.size());
      if (ok) break;
    }
  });
  if (!ran) return tl::unexpected(ran.error());
  return ok;
}

Result<void> PasswordHasher::VerifyNobody(std::string_view password) {
  auto r = Verify(password, nobody_);
  if (!r) return tl::unexpected(r.error());
  return {};
}

bool PasswordHasher::NeedsRehash(std::string_view stored) const {
  const std::size_t hash_mark = stored.find('#');
  if (hash_mark == std::string_view::npos) return true;
  const std::string_view tag = stored.substr(hash_mark);
  if (next_pepper_ && tag == next_tag_) return false;
  if (tag != tag_) return true;
  std::string hash(stored.substr(0, hash_mark));
  return crypto_pwhash_str_needs_rehash(hash.c_str(), ops_, mem_bytes_) != 0;
}

std::string_view PasswordHasher::PepperOf(std::string_view phc) {
  const std::size_t hash_mark = phc.find('#');
  return hash_mark == std::string_view::npos ? std::string_view() : phc.substr(hash_mark + 1);
}

std::uint64_t PasswordHasher::rejected() const {
  std::lock_guard lock(mu_);
  return rejected_;
}

}  // namespace gatehouse

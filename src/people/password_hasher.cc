#include "people/password_hasher.h"

#include <sodium.h>

#include <future>

#include "core/random.h"

namespace gatehouse {

PasswordHasher::PasswordHasher(const PasswordConfig& config, std::string_view pepper)
    : ops_(config.argon2_iterations),
      mem_bytes_(static_cast<std::size_t>(config.argon2_memory_kib) * 1024),
      queue_capacity_(config.hash_queue),
      pepper_(DeriveSubkey(pepper, "gatehouse-password-pepper-v1")) {
  if (sodium_init() < 0) std::abort();  // no CSPRNG: nothing here can be trusted
  int workers = config.hash_workers > 0
                    ? config.hash_workers
                    : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { Work(); });
  std::string random = RandomBase62(32);
  std::string keyed = Keyed(random);
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

std::string PasswordHasher::Keyed(std::string_view password) const {
  auto mac = pepper_.Mac(password);
  return std::string(reinterpret_cast<const char*>(mac.data()), mac.size());
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
  std::string keyed = Keyed(password);
  char out[crypto_pwhash_STRBYTES];
  int rc = -1;
  auto ran = RunBounded([&] {
    rc = crypto_pwhash_str_alg(out, keyed.data(), keyed.size(), ops_, mem_bytes_,
                               crypto_pwhash_ALG_ARGON2ID13);
  });
  sodium_memzero(keyed.data(), keyed.size());
  if (!ran) return tl::unexpected(ran.error());
  if (rc != 0) return Fail(ErrorCode::kUnavailable, "not enough memory to hash; try again");
  return std::string(out);
}

Result<bool> PasswordHasher::Verify(std::string_view password, std::string_view phc) {
  std::string keyed = Keyed(password);
  std::string hash(phc);
  bool ok = false;
  auto ran = RunBounded(
      [&] { ok = crypto_pwhash_str_verify(hash.c_str(), keyed.data(), keyed.size()) == 0; });
  sodium_memzero(keyed.data(), keyed.size());
  if (!ran) return tl::unexpected(ran.error());
  return ok;
}

Result<void> PasswordHasher::VerifyNobody(std::string_view password) {
  auto r = Verify(password, nobody_);
  if (!r) return tl::unexpected(r.error());
  return {};
}

bool PasswordHasher::NeedsRehash(std::string_view phc) const {
  std::string hash(phc);
  return crypto_pwhash_str_needs_rehash(hash.c_str(), ops_, mem_bytes_) != 0;
}

std::uint64_t PasswordHasher::rejected() const {
  std::lock_guard lock(mu_);
  return rejected_;
}

}  // namespace gatehouse

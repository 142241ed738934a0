#include "cli/app.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "core/crypto.h"
#include "core/random.h"
#include "store/postgres/pg_store.h"
#include "store/sqlite/sqlite_store.h"

namespace gatehouse {

namespace {

Result<void> CreatePepperFile(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) return Fail(ErrorCode::kInternal, "cannot create " + path + ": " + ec.message());
  std::array<unsigned char, 32> bytes{};
  FillRandom(bytes);
  std::string hex = HexEncode(bytes.data(), bytes.size());
  // Created with 0600 before anything is written, so the secret is never readable by others.
  mode_t old = ::umask(077);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ::umask(old);
  if (!out) return Fail(ErrorCode::kInternal, "cannot write " + path);
  out << hex << "\n";
  SecureZero(hex);
  return {};
}

// A secret that may be left unset: empty when neither its variable nor its file is set.
// Otherwise at least 32 characters, like the pepper.
Result<std::string> ReadOptionalSecret(const SecretSource& source, const EnvLookup& env,
                                       const std::string& what) {
  const bool in_env = !source.env.empty() && env(source.env.c_str()).value_or("") != "";
  if (!in_env && source.file.empty()) return std::string();
  auto secret = ReadSecret(source, env, what);
  if (!secret) return tl::unexpected(secret.error());
  if (secret->size() < 32) {
    SecureZero(*secret);
    return Fail(ErrorCode::kInvalidArgument, what + " must be at least 32 characters");
  }
  return secret;
}

// The previous or next pepper of a rotation (`what` names which); empty when none is
// configured. One equal to a pepper already read is a mistake: nothing would ever move, and the
// operator would believe a rotation is under way.
Result<std::string> ReadRotationPepper(
    const SecretSource& source, const EnvLookup& env, const std::string& what,
    std::initializer_list<std::pair<std::string_view, const char*>> read_already) {
  auto pepper = ReadOptionalSecret(source, env, what);
  if (!pepper || pepper->empty()) return pepper;
  for (const auto& [other, its_name] : read_already) {
    if (!other.empty() && ConstantTimeEquals(*pepper, other)) {
      SecureZero(*pepper);
      return Fail(ErrorCode::kInvalidArgument, what + " is " + its_name);
    }
  }
  return pepper;
}

}  // namespace

Result<std::unique_ptr<App>> App::Open(std::shared_ptr<const Config> config, bool create_pepper) {
  auto app = std::make_unique<App>();
  app->config = config;
  app->clock = std::make_unique<SystemClock>();
  auto env = ProcessEnv();
  SecretSource pepper_source{config->pepper.env, config->PepperFile()};
  auto pepper = ReadSecret(pepper_source, env, "the key pepper");
  if (!pepper && create_pepper) {
    if (auto r = CreatePepperFile(config->PepperFile()); !r) return tl::unexpected(r.error());
    pepper = ReadSecret(pepper_source, env, "the key pepper");
  }
  if (!pepper) {
    return Fail(
        ErrorCode::kInvalidArgument,
        pepper.error().message + " (run `gatehouse init`, or set " + config->pepper.env + ")");
  }
  if (pepper->size() < 32) {
    return Fail(ErrorCode::kInvalidArgument, "the key pepper must be at least 32 characters");
  }
  std::error_code ec;
  std::filesystem::create_directories(config->data_dir, ec);
  if (config->UsesPostgres()) {
    auto store = PgStore::Open(config->storage, config->storage_connections);
    if (!store) return tl::unexpected(store.error());
    app->store = std::move(*store);
  } else {
    auto store = SqliteStore::Open(config->SqlitePath(), config->storage_connections);
    if (!store) return tl::unexpected(store.error());
    app->store = std::move(*store);
  }
  app->policies = std::make_unique<PolicyRepository>(*app->store);
  PolicyRepository* policies = app->policies.get();
  app->org_policies = std::make_unique<OrgPolicyCache>(
      [policies](std::string_view org) { return policies->Get(org, ""); });
  OrgPolicyCache* org_policies = app->org_policies.get();
  KeyVerifier::Options vo;
  vo.cache_capacity = config->keys.cache_capacity;
  vo.negative_ttl = ToMicros(config->keys.negative_cache_ttl);
  const Clock* clock = app->clock.get();
  vo.load_policy = [policies, clock](std::string_view org, std::string_view key) {
    return policies->LoadForKey(org, key, clock->Now());
  };
  vo.on_other_invalidation = [org_policies](std::string_view what) {
    if (what.starts_with("org:")) org_policies->Invalidate(what.substr(4));
  };
  app->verifier = std::make_unique<KeyVerifier>(
      KeyFormat(config->keys.prefix), HmacSha256Key(*pepper), *app->store, *app->clock, vo);
  auto previous_pepper = ReadRotationPepper(config->previous_pepper, env, "the previous key pepper",
                                            {{*pepper, "the pepper itself"}});
  if (!previous_pepper) return tl::unexpected(previous_pepper.error());
  auto next_pepper =
      ReadRotationPepper(config->next_pepper, env, "the next key pepper",
                         {{*pepper, "the pepper itself"}, {*previous_pepper, "the previous one"}});
  if (!next_pepper) return tl::unexpected(next_pepper.error());
  const Peppers peppers{*pepper, *previous_pepper, *next_pepper};
  for (auto [held, fingerprint] : {std::pair{peppers.current, &app->pepper_fingerprints.current},
                                   std::pair{peppers.previous, &app->pepper_fingerprints.previous},
                                   std::pair{peppers.next, &app->pepper_fingerprints.next}}) {
    if (!held.empty()) *fingerprint = PepperFingerprint(held);
  }
  if (!previous_pepper->empty()) {
    app->verifier->AcceptPreviousPepper(HmacSha256Key(*previous_pepper));
  }
  if (!next_pepper->empty()) app->verifier->AcceptNextPepper(HmacSha256Key(*next_pepper));
  // Its own secret, or empty: the pepper derives the signing key.
  auto signing = ReadOptionalSecret(config->audit_signing_key, env, "the audit signing key");
  if (!signing) return tl::unexpected(signing.error());
  app->audit = std::make_unique<AuditService>(
      *app->store, *app->clock, *pepper, config->audit.system_retention_days,
      AuditService::SigningKeys{*signing, config->audit.retired_signing_public_keys,
                                *previous_pepper, *next_pepper});
  SecureZero(*signing);
  auto policy = PasswordPolicy::Load(config->passwords);
  if (!policy) return tl::unexpected(policy.error());
  app->password_policy = std::make_unique<PasswordPolicy>(std::move(*policy));
  app->people = std::make_unique<PeopleRepository>(*app->store);
  app->hasher = std::make_unique<PasswordHasher>(config->passwords, peppers);
  app->login_guard = std::make_unique<LoginGuard>(config->login, *app->clock);
  app->sessions = std::make_unique<SessionService>(*app->people, *app->clock, config, peppers);
  app->accounts = std::make_unique<AccountService>(*app->people, *app->sessions, *app->hasher,
                                                   *app->password_policy, *app->login_guard,
                                                   *app->clock, config, peppers);
  app->members = std::make_unique<MemberService>(*app->store, *app->people, *app->accounts,
                                                 *app->clock, config, peppers);
  SecureZero(*pepper);
  SecureZero(*previous_pepper);
  SecureZero(*next_pepper);
  app->keys = std::make_unique<KeyService>(*app->store, *app->verifier, *app->clock, config);
  app->orgs = std::make_unique<OrgService>(*app->store, *app->keys, *app->clock);
  return app;
}

}  // namespace gatehouse

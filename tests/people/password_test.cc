// Password rules (NIST SP 800-63B rev. 4 §3.1.1.2, ASVS 6.2) and Argon2id hashing.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "people/password_hasher.h"
#include "people/password_policy.h"

namespace gatehouse {
namespace {

PasswordPolicy TestPolicy() {
  return PasswordPolicy(PasswordConfig{}, {"password", "letmein", "dragon", "sunshine"});
}

PasswordConfig QuickHashing() {
  PasswordConfig c;
  c.argon2_memory_kib = 19456;  // OWASP's minimum
  c.argon2_iterations = 2;
  return c;
}

std::string Reason(const Result<void>& r) { return r ? "" : r.error().message; }

TEST(PasswordPolicy, FifteenCharactersAcceptedFourteenRefusedWithNoCompositionRules) {
  auto p = TestPolicy();
  EXPECT_NE(Reason(p.Check("plumtreeorchar", {})).find("at least 15"), std::string::npos);
  EXPECT_TRUE(p.Check("plumtreeorchard", {}));  // all lower-case: no composition rules
  // Code points, not bytes: 15 accented letters are 30 bytes and enough; 14 are not.
  std::string accented;
  for (int i = 0; i < 14; ++i) accented += i % 2 ? "\xc3\xa9" : "\xc3\xb8";  // é ø
  EXPECT_FALSE(p.Check(accented, {}));
  EXPECT_TRUE(p.Check(accented + "\xc3\xa5", {}));
}

TEST(PasswordPolicy, LongPassphrasesAcceptedUpToTheStatedBound) {
  auto p = TestPolicy();
  std::string words = "a walk through the quiet harbour town before dawn, ";
  std::string s64 = (words + words).substr(0, 64);
  std::string s128 = (words + words + words).substr(0, 128);
  EXPECT_TRUE(p.Check(s64, {})) << Reason(p.Check(s64, {}));
  EXPECT_TRUE(p.Check(s128, {}));
  std::string huge(1025, 'x');
  for (std::size_t i = 0; i < huge.size(); ++i) huge[i] = static_cast<char>('a' + (i * 7) % 26);
  EXPECT_NE(Reason(p.Check(huge, {})).find("at most 1024 bytes"), std::string::npos);
}

TEST(PasswordPolicy, BlocklistedAndPaddedPasswordsAreRefusedWithTheReason) {
  auto p = TestPolicy();
  EXPECT_NE(Reason(p.Check("Password1234567", {})).find("common password"), std::string::npos);
  EXPECT_NE(Reason(p.Check("!!!sunshine2024!!!", {})).find("common password"), std::string::npos);
  EXPECT_NE(Reason(p.Check("aaaaaaaaaaaaaaaa", {})).find("repeats"), std::string::npos);
  EXPECT_NE(Reason(p.Check("123456789012345", {})).find("sequence"), std::string::npos);
  EXPECT_NE(Reason(p.Check("abcdefghijklmnop", {})).find("sequence"), std::string::npos);
}

TEST(PasswordPolicy, ContextWordsAreRefusedWithTheReason) {
  auto p = TestPolicy();
  auto r = p.Check("Northwind Traders Limited", {"Northwind Traders Limited"});
  EXPECT_NE(Reason(r).find("northwind traders limited"), std::string::npos) << Reason(r);
  EXPECT_FALSE(p.Check("northwind-2024-northwind", {"Northwind Traders Limited"}));
  EXPECT_FALSE(p.Check("gatehouse-gatehouse!", {}));
  EXPECT_FALSE(p.Check("alice.liddell@example.com", {"alice.liddell@example.com"}));
  // A context word inside a long passphrase is fine: it is not what the password is made of.
  EXPECT_TRUE(p.Check("my northwind laptop sits on a walnut desk", {"Northwind Traders"}));
}

TEST(PasswordPolicy, NormalisesToNfcAndRefusesControlsAndBadUtf8) {
  auto composed = NormalizePassword("caf\xc3\xa9 au lait, please");
  auto decomposed = NormalizePassword("cafe\xcc\x81 au lait, please");
  ASSERT_TRUE(composed && decomposed);
  EXPECT_EQ(*composed, *decomposed);
  EXPECT_FALSE(NormalizePassword(std::string("abc\0def", 7)));
  EXPECT_FALSE(NormalizePassword("tab\tinside"));
  EXPECT_FALSE(NormalizePassword("\xff\xfe broken"));
  // Never truncated: what goes in comes out, whatever its length.
  std::string long_one(900, 'q');
  EXPECT_EQ(NormalizePassword(long_one)->size(), 900u);
}

TEST(PasswordHasher, StoresArgon2idPhcStringsAndVerifiesExactly) {
  PasswordHasher h(QuickHashing(), Peppers{"pepper-0123456789abcdef0123456789"});
  std::string pw = "the owl flies at midnight over Zurich";
  auto phc = h.Hash(pw);
  ASSERT_TRUE(phc);
  EXPECT_TRUE(phc->starts_with("$argon2id$v=19$m=19456,t=2,p=1$")) << *phc;
  EXPECT_EQ(phc->find(pw), std::string::npos);
  EXPECT_TRUE(*h.Verify(pw, *phc));
  EXPECT_FALSE(*h.Verify(pw.substr(0, pw.size() - 1), *phc));  // last character dropped
  std::string flipped = pw;
  flipped[4] = 'O';
  EXPECT_FALSE(*h.Verify(flipped, *phc));  // case flipped
  std::string hundred(100, 'k');
  auto long_phc = h.Hash(hundred);
  std::string differs_at_90 = hundred;
  differs_at_90[90] = 'j';
  EXPECT_TRUE(*h.Verify(hundred, *long_phc));
  EXPECT_FALSE(*h.Verify(differs_at_90, *long_phc));  // no truncation anywhere
  EXPECT_FALSE(*h.Verify(pw, "not a hash"));
  EXPECT_FALSE(h.NeedsRehash(*phc));
  // Salted: the same password hashes differently each time.
  EXPECT_NE(*h.Hash(pw), *phc);
}

TEST(PasswordHasher, ThePepperIsPartOfTheHash) {
  PasswordHasher a(QuickHashing(), Peppers{"pepper-0123456789abcdef0123456789"});
  PasswordHasher b(QuickHashing(), Peppers{"another-pepper-0123456789abcdef01"});
  auto phc = a.Hash("the owl flies at midnight over Zurich");
  EXPECT_FALSE(*b.Verify("the owl flies at midnight over Zurich", *phc));
}

TEST(PasswordHasher, APasswordKeyedWithThePreviousPepperVerifiesAndMovesToTheCurrentOne) {
  const std::string pw = "the owl flies at midnight over Zurich";
  const char* old_pepper = "pepper-0123456789abcdef0123456789";
  const char* new_pepper = "another-pepper-0123456789abcdef01";
  PasswordHasher before(QuickHashing(), Peppers{old_pepper});
  auto old_phc = before.Hash(pw);
  ASSERT_TRUE(old_phc);
  // Tagged with the pepper that keyed it.
  EXPECT_EQ(PasswordHasher::PepperOf(*old_phc), PepperFingerprint(old_pepper)) << *old_phc;

  PasswordHasher rotating(QuickHashing(), Peppers{new_pepper, old_pepper});
  EXPECT_TRUE(*rotating.Verify(pw, *old_phc));
  EXPECT_FALSE(*rotating.Verify(pw + "!", *old_phc));
  EXPECT_TRUE(rotating.NeedsRehash(*old_phc));
  auto moved = rotating.Hash(pw);
  EXPECT_FALSE(rotating.NeedsRehash(*moved));
  // The previous pepper's tag names it: the tag cannot be swapped to have it tried with the
  // current pepper instead.
  std::string retagged = old_phc->substr(0, old_phc->find('#')) + moved->substr(moved->find('#'));
  EXPECT_FALSE(*rotating.Verify(pw, retagged));

  // Once the previous pepper is retired, a hash it keyed verifies no more; a moved one does.
  PasswordHasher after(QuickHashing(), Peppers{new_pepper});
  EXPECT_FALSE(*after.Verify(pw, *old_phc));
  EXPECT_TRUE(*after.Verify(pw, *moved));
  // A hash from before tags existed is tried with the current pepper, then the previous one.
  const std::string untagged = old_phc->substr(0, old_phc->find('#'));
  EXPECT_TRUE(*before.Verify(pw, untagged));
  EXPECT_TRUE(*rotating.Verify(pw, untagged));
  EXPECT_FALSE(*after.Verify(pw, untagged));
  EXPECT_TRUE(before.NeedsRehash(untagged));  // tagged at its next sign-in
  EXPECT_EQ(PasswordHasher::PepperOf(untagged), "");
}

TEST(PasswordHasher, ANodeNotYetSwitchedVerifiesWhatTheNextPepperKeyedAndNeverMovesItBack) {
  const std::string pw = "the owl flies at midnight over Zurich";
  const char* old_pepper = "pepper-0123456789abcdef0123456789";
  const char* new_pepper = "another-pepper-0123456789abcdef01";
  // A rolling rotation: this node has the new pepper announced; another has switched to it.
  PasswordHasher announced(QuickHashing(), Peppers{old_pepper, {}, new_pepper});
  PasswordHasher switched(QuickHashing(), Peppers{new_pepper, old_pepper});
  auto moved = switched.Hash(pw);
  ASSERT_TRUE(moved);
  EXPECT_TRUE(*announced.Verify(pw, *moved));
  EXPECT_FALSE(*announced.Verify(pw + "!", *moved));
  // Keyed with the current pepper again here, the switched node would move it forth at once,
  // and the two would pass it back and forth until the last node switched.
  EXPECT_FALSE(announced.NeedsRehash(*moved));
  // What this node hashes is keyed with its own current pepper, and the switched node moves it.
  auto made_here = announced.Hash(pw);
  ASSERT_TRUE(made_here);
  EXPECT_TRUE(*switched.Verify(pw, *made_here));
  EXPECT_TRUE(switched.NeedsRehash(*made_here));
  EXPECT_FALSE(announced.NeedsRehash(*made_here));
  // Without the announcement, the switched node's hashes verify nowhere but there.
  PasswordHasher unaware(QuickHashing(), Peppers{old_pepper});
  EXPECT_FALSE(*unaware.Verify(pw, *moved));
}

TEST(PasswordHasher, OlderParametersAreReportedForUpgrade) {
  PasswordConfig weak = QuickHashing();
  weak.argon2_memory_kib = 8192;
  weak.argon2_iterations = 1;
  PasswordHasher old(weak, Peppers{"pepper-0123456789abcdef0123456789"});
  PasswordHasher current(QuickHashing(), Peppers{"pepper-0123456789abcdef0123456789"});
  auto phc = old.Hash("the owl flies at midnight over Zurich");
  EXPECT_TRUE(current.NeedsRehash(*phc));
  EXPECT_TRUE(*current.Verify("the owl flies at midnight over Zurich", *phc));
}

TEST(PasswordHasher, ASaturatedPoolRefusesAtOnceInsteadOfQueueingWithoutBound) {
  PasswordConfig c = QuickHashing();
  c.hash_workers = 1;
  c.hash_queue = 1;
  PasswordHasher h(c, Peppers{"pepper-0123456789abcdef0123456789"});
  std::atomic<int> refused{0}, done{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < 8; ++i) {
    callers.emplace_back([&] {
      auto r = h.Hash("the owl flies at midnight over Zurich");
      if (!r && r.error().code == ErrorCode::kUnavailable) ++refused;
      if (r) ++done;
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_GT(refused.load(), 0);
  EXPECT_GT(done.load(), 0);
  EXPECT_EQ(h.rejected(), static_cast<std::uint64_t>(refused.load()));
}

}  // namespace
}  // namespace gatehouse

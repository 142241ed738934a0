#include "people/password_policy.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

namespace gatehouse {

namespace {

std::string AsciiLower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool IsDigitOrSymbol(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return u < 0x80 && !std::isalpha(u);
}

// "abcabcabc", "aaaaaaaa": the whole password is one short unit said again and again.
bool IsRepetition(std::string_view p) {
  for (std::size_t unit = 1; unit <= p.size() / 2; ++unit) {
    if (p.size() % unit != 0) continue;
    bool same = true;
    for (std::size_t i = unit; i < p.size() && same; ++i) same = p[i] == p[i - unit];
    if (same) return true;
  }
  return false;
}

// "abcdefghijklmno", "123456789012345", "zyxwvu…": most steps are ±1 (digits wrap 9→0).
bool IsSequence(std::string_view p) {
  if (p.size() < 2) return false;
  std::size_t up = 0, down = 0;
  for (std::size_t i = 1; i < p.size(); ++i) {
    int a = static_cast<unsigned char>(p[i - 1]), b = static_cast<unsigned char>(p[i]);
    if (b - a == 1 || (a == '9' && b == '0')) ++up;
    if (a - b == 1 || (a == '0' && b == '9')) ++down;
  }
  std::size_t steps = p.size() - 1;
  return up * 10 >= steps * 8 || down * 10 >= steps * 8;
}

}  // namespace

Result<std::string> NormalizePassword(std::string_view password) {
  for (unsigned char c : password) {
    if (c < 0x20 || c == 0x7f) {
      return FailField("password", "password must not contain control characters");
    }
  }
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(password.data()),
                   static_cast<utf8proc_ssize_t>(password.size()), &out,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) {
    std::free(out);
    return FailField("password", "password must be valid UTF-8");
  }
  std::string normalized(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
  std::free(out);
  return normalized;
}

std::size_t CodePoints(std::string_view utf8) {
  std::size_t n = 0;
  for (unsigned char c : utf8) {
    if ((c & 0xC0) != 0x80) ++n;
  }
  return n;
}

Result<PasswordPolicy> PasswordPolicy::Load(const PasswordConfig& config) {
  std::unordered_set<std::string> words;
  if (!config.blocklist_file.empty()) {
    std::ifstream in(config.blocklist_file);
    if (!in) {
      return Fail(ErrorCode::kInvalidArgument,
                  "passwords.blocklist_file: cannot read " + config.blocklist_file +
                      " (install john-data, name another list, or set it to \"\")");
    }
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with("#!comment")) continue;
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty()) words.insert(AsciiLower(line));
    }
  }
  return PasswordPolicy(config, std::move(words));
}

PasswordPolicy::PasswordPolicy(const PasswordConfig& config,
                               std::unordered_set<std::string> blocklist)
    : min_length_(config.min_length),
      max_bytes_(config.max_bytes),
      blocklist_(std::move(blocklist)) {}

Result<void> PasswordPolicy::Check(std::string_view password,
                                   const std::vector<std::string>& context) const {
  auto refuse = [](std::string why) { return FailField("password", "password " + why); };
  std::size_t length = CodePoints(password);
  if (length < min_length_) {
    return refuse("must be at least " + std::to_string(min_length_) + " characters (it has " +
                  std::to_string(length) + ")");
  }
  if (password.size() > max_bytes_) {
    return refuse("must be at most " + std::to_string(max_bytes_) + " bytes");
  }
  std::string lower = AsciiLower(password);
  if (blocklist_.contains(lower)) return refuse("is on the list of common or breached passwords");
  // A listed password with digits or symbols around it is as easy to guess: "Password1234567".
  std::size_t first = 0, last = lower.size();
  while (first < last && IsDigitOrSymbol(lower[first])) ++first;
  while (last > first && IsDigitOrSymbol(lower[last - 1])) --last;
  std::string stem = lower.substr(first, last - first);
  if (stem.size() >= 3 && stem.size() < lower.size() && blocklist_.contains(stem)) {
    return refuse("is a common password (\"" + stem + "\") with digits or symbols added");
  }
  if (IsRepetition(lower)) return refuse("repeats the same characters");
  if (IsSequence(lower)) return refuse("is a sequence of characters");
  std::vector<std::string> words = {"gatehouse"};
  for (const auto& c : context) {
    std::string w = AsciiLower(c);
    words.push_back(w);
    // The parts of a name or an email address count as well: "acme" of "Acme Corp".
    std::string part;
    for (char ch : w + " ") {
      if (std::isalnum(static_cast<unsigned char>(ch)) || static_cast<unsigned char>(ch) >= 0x80) {
        part += ch;
      } else {
        if (!part.empty()) words.push_back(part);
        part.clear();
      }
    }
  }
  // Mostly made of those words: fewer than half its letters remain once they are taken out.
  auto letters = [](std::string_view t) {
    std::size_t n = 0;
    for (char ch : t) {
      unsigned char u = static_cast<unsigned char>(ch);
      if (std::isalpha(u) || u >= 0x80) ++n;
    }
    return n;
  };
  std::string rest = lower;
  std::string first_found;
  std::sort(words.begin(), words.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const auto& w : words) {
    if (w.size() < 4) continue;
    for (auto at = rest.find(w); at != std::string::npos; at = rest.find(w)) {
      rest.erase(at, w.size());
      if (first_found.empty()) first_found = w;
    }
  }
  if (!first_found.empty() && letters(rest) * 2 < letters(lower)) {
    return refuse("is mostly made of a word from this context (\"" + first_found + "\")");
  }
  return {};
}

}  // namespace gatehouse

#include "people/email.h"

namespace gatehouse {

Result<std::string> NormalizeEmail(std::string_view email) {
  while (!email.empty() && (email.front() == ' ' || email.front() == '\t')) email.remove_prefix(1);
  while (!email.empty() && (email.back() == ' ' || email.back() == '\t')) email.remove_suffix(1);
  auto bad = [] { return FailField("email", "email must be an address like name@example.com"); };
  if (email.empty() || email.size() > 254) return bad();
  auto at = email.rfind('@');
  if (at == std::string_view::npos || at == 0 || at > 64 || at + 1 >= email.size()) return bad();
  std::string_view domain = email.substr(at + 1);
  if (domain.find('.') == std::string_view::npos || domain.front() == '.' || domain.back() == '.' ||
      domain.find("..") != std::string_view::npos) {
    return bad();
  }
  std::string out;
  out.reserve(email.size());
  for (std::size_t i = 0; i < email.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(email[i]);
    if (c <= 0x20 || c == 0x7f) return bad();
    if (c == '@' && i != at) return bad();
    if (i > at && !(std::isalnum(c) || c == '-' || c == '.' || c >= 0x80)) return bad();
    out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : static_cast<char>(c);
  }
  return out;
}

}  // namespace gatehouse

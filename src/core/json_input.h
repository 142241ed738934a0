// Strict reading of JSON request bodies. Attacker-controlled: every parse is bounded in depth and
// size, and an object is read field by field so that unknown fields and wrong types become a
// 400 that names the field instead of being silently ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include "core/error.h"

namespace gatehouse {

class JsonObjectReader {
 public:
  // An empty body reads as {}. Invalid JSON (including invalid UTF-8), a non-object, or nesting
  // deeper than 32 levels is kInvalidArgument.
  static Result<JsonObjectReader> Parse(std::string_view body);

  Result<std::optional<std::string>> OptString(std::string_view name);
  Result<std::optional<std::vector<std::string>>> OptStringArray(std::string_view name);
  Result<std::optional<std::int64_t>> OptInt(std::string_view name);
  Result<std::optional<bool>> OptBool(std::string_view name);
  // The field is present with the value null (an explicit "remove"), as opposed to absent.
  bool IsNull(std::string_view name) const;
  // A nested object, read the same way; its fields are named "name.field" in messages.
  Result<std::optional<JsonObjectReader>> OptObject(std::string_view name);

  // Fails naming the first field that no Opt* call asked for.
  Result<void> RejectUnknownFields() const;

 private:
  explicit JsonObjectReader(boost::json::value v, std::string prefix = {})
      : value_(std::move(v)), prefix_(std::move(prefix)) {}
  const boost::json::value* Find(std::string_view name);
  std::string Named(std::string_view name) const { return prefix_ + std::string(name); }

  boost::json::value value_;
  std::string prefix_;  // "outer." for a nested object
  std::set<std::string, std::less<>> seen_;
};

// True when the text has no control characters (C0, DEL) and is at most max_bytes long; used for
// labels and names that end up in logs and in the console.
bool IsPrintableText(std::string_view text, std::size_t max_bytes);

}  // namespace gatehouse

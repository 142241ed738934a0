#include "core/json_input.h"

#include <boost/json/parse.hpp>

namespace gatehouse {

Result<JsonObjectReader> JsonObjectReader::Parse(std::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return JsonObjectReader(boost::json::object{});
  }
  boost::json::parse_options opts;
  opts.max_depth = 32;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(body, ec, {}, opts);
  if (ec) {
    return Fail(ErrorCode::kInvalidArgument, "request body is not valid JSON");
  }
  if (!v.is_object()) {
    return Fail(ErrorCode::kInvalidArgument, "request body must be a JSON object");
  }
  return JsonObjectReader(std::move(v));
}

const boost::json::value* JsonObjectReader::Find(std::string_view name) {
  seen_.emplace(name);
  return value_.as_object().if_contains(name);
}

Result<std::optional<std::string>> JsonObjectReader::OptString(std::string_view name) {
  const auto* v = Find(name);
  if (!v || v->is_null()) return std::optional<std::string>{};
  if (!v->is_string()) return FailField(Named(name), Named(name) + " must be a string");
  return std::optional<std::string>(std::string(v->as_string()));
}

Result<std::optional<std::vector<std::string>>> JsonObjectReader::OptStringArray(
    std::string_view name) {
  const auto* v = Find(name);
  if (!v || v->is_null()) return std::optional<std::vector<std::string>>{};
  auto bad = [&] { return FailField(Named(name), Named(name) + " must be an array of strings"); };
  if (!v->is_array()) return bad();
  std::vector<std::string> out;
  for (const auto& item : v->as_array()) {
    if (!item.is_string()) return bad();
    out.emplace_back(item.as_string());
  }
  return std::optional<std::vector<std::string>>(std::move(out));
}

Result<std::optional<std::int64_t>> JsonObjectReader::OptInt(std::string_view name) {
  const auto* v = Find(name);
  if (!v || v->is_null()) return std::optional<std::int64_t>{};
  if (v->is_int64()) return std::optional<std::int64_t>(v->as_int64());
  if (v->is_uint64() && v->as_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
    return std::optional<std::int64_t>(static_cast<std::int64_t>(v->as_uint64()));
  }
  return FailField(Named(name), Named(name) + " must be an integer");
}

Result<std::optional<bool>> JsonObjectReader::OptBool(std::string_view name) {
  const auto* v = Find(name);
  if (!v || v->is_null()) return std::optional<bool>{};
  if (!v->is_bool()) return FailField(Named(name), Named(name) + " must be a boolean");
  return std::optional<bool>(v->as_bool());
}

bool JsonObjectReader::IsNull(std::string_view name) const {
  const auto* v = value_.as_object().if_contains(name);
  return v && v->is_null();
}

Result<std::optional<JsonObjectReader>> JsonObjectReader::OptObject(std::string_view name) {
  const auto* v = Find(name);
  if (!v || v->is_null()) return std::optional<JsonObjectReader>{};
  if (!v->is_object()) return FailField(Named(name), Named(name) + " must be an object");
  return std::optional<JsonObjectReader>(JsonObjectReader(*v, Named(name) + "."));
}

Result<void> JsonObjectReader::RejectUnknownFields() const {
  for (const auto& kv : value_.as_object()) {
    if (!seen_.contains(std::string_view(kv.key()))) {
      std::string key(kv.key());
      if (!IsPrintableText(key, 64)) key = "(unprintable)";
      key = prefix_ + key;
      return FailField(key, "unknown field " + key);
    }
  }
  return {};
}

bool IsPrintableText(std::string_view text, std::size_t max_bytes) {
  if (text.size() > max_bytes) return false;
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace gatehouse

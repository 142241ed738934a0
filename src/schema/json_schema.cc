#include "schema/json_schema.h"

#include <re2/re2.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <deque>
#include <map>
#include <utility>
#include <vector>

#include "core/text.h"
#include "schema/formats.h"

#include <fmt/format.h>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace gatehouse {

namespace json = boost::json;

namespace {

// Kinds as bits, so that "type": ["string","null"] is one mask test. An integer is also a
// number; a double with no fractional part is an integer too (draft-07).
enum : std::uint8_t {
  kNullBit = 1,
  kBooleanBit = 2,
  kObjectBit = 4,
  kArrayBit = 8,
  kNumberBit = 16,
  kIntegerBit = 32,
  kStringBit = 64,
};

constexpr std::pair<std::string_view, std::uint8_t> kTypeNames[] = {
    {"null", kNullBit},     {"boolean", kBooleanBit}, {"object", kObjectBit}, {"array", kArrayBit},
    {"number", kNumberBit}, {"integer", kIntegerBit}, {"string", kStringBit}};

// Validating a body visits at most this many (schema, value) pairs. Ordinary schemas visit each
// value a few times; only combinators nested inside recursion multiply, and a body must not be
// able to turn that into unbounded work.
constexpr std::size_t kMaxSteps = 4'000'000;
// Nested schema evaluations; only $ref cycles that do not descend into the body come near it.
constexpr int kMaxSchemaDepth = 1024;

std::uint8_t KindBits(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return kNullBit;
    case json::kind::bool_:
      return kBooleanBit;
    case json::kind::object:
      return kObjectBit;
    case json::kind::array:
      return kArrayBit;
    case json::kind::string:
      return kStringBit;
    case json::kind::int64:
    case json::kind::uint64:
      return kNumberBit | kIntegerBit;
    case json::kind::double_: {
      double d = v.get_double();
      return std::isfinite(d) && std::floor(d) == d ? kNumberBit | kIntegerBit : kNumberBit;
    }
  }
  return 0;
}

// Long double holds every int64, uint64 and double exactly on the targets we build for, so
// comparisons across the three representations are exact.
long double AsNumber(const json::value& v) {
  switch (v.kind()) {
    case json::kind::int64:
      return static_cast<long double>(v.get_int64());
    case json::kind::uint64:
      return static_cast<long double>(v.get_uint64());
    case json::kind::double_:
      return static_cast<long double>(v.get_double());
    default:
      return 0;
  }
}

bool JsonEqual(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) return AsNumber(a) == AsNumber(b);
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case json::kind::null:
      return true;
    case json::kind::bool_:
      return a.get_bool() == b.get_bool();
    case json::kind::string:
      return a.get_string() == b.get_string();
    case json::kind::array: {
      const auto& x = a.get_array();
      const auto& y = b.get_array();
      if (x.size() != y.size()) return false;
      for (std::size_t i = 0; i < x.size(); ++i) {
        if (!JsonEqual(x[i], y[i])) return false;
      }
      return true;
    }
    case json::kind::object: {
      const auto& x = a.get_object();
      const auto& y = b.get_object();
      if (x.size() != y.size()) return false;
      for (const auto& m : x) {
        const json::value* other = y.if_contains(m.key());
        if (!other || !JsonEqual(m.value(), *other)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

// Equal values (by JsonEqual) hash equally: numbers by their double value, objects whatever the
// order of their members.
std::size_t JsonHash(const json::value& v) {
  if (v.is_number()) {
    double d = static_cast<double>(AsNumber(v));
    if (d == 0) d = 0;  // -0.0 equals 0
    return std::hash<double>{}(d) ^ 0x9e3779b97f4a7c15ULL;
  }
  switch (v.kind()) {
    case json::kind::null:
      return 0x51ed270b;
    case json::kind::bool_:
      return v.get_bool() ? 0x2545f491 : 0x7f4a7c15;
    case json::kind::string:
      return std::hash<std::string_view>{}(v.get_string());
    case json::kind::array: {
      std::size_t h = 0xa0761d65;
      for (const auto& item : v.get_array()) h = h * 1099511628211ULL ^ JsonHash(item);
      return h;
    }
    case json::kind::object: {
      std::size_t h = 0xe7037ed1;
      for (const auto& m : v.get_object()) {
        h += std::hash<std::string_view>{}(m.key()) * 31 ^ JsonHash(m.value());
      }
      return h;
    }
    default:
      return 0;
  }
}

std::size_t CodePoints(std::string_view s) {
  std::size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

void AppendPointerToken(std::string& out, std::string_view token) {
  out += '/';
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
}

void AppendIndexToken(std::string& out, std::size_t index) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, index);
  out += '/';
  out.append(buf, end);
}

std::string Serialize(const json::value& v) { return json::serialize(v); }

struct NumberLimit {
  long double value = 0;
  std::string text;  // as the schema wrote it, for messages
};

struct Node;

struct Dependency {
  std::string property;
  std::vector<std::string> required;
  const Node* schema = nullptr;
};

struct Node {
  std::optional<bool> fixed;  // a boolean schema
  const Node* ref = nullptr;  // $ref: in draft-07 it replaces every sibling keyword
  std::uint8_t types = 0;
  std::string type_phrase;
  std::optional<json::value> const_value;
  std::optional<json::array> enum_values;
  std::optional<NumberLimit> minimum, maximum, exclusive_minimum, exclusive_maximum, multiple_of;
  std::optional<std::uint64_t> min_length, max_length, min_items, max_items, min_properties,
      max_properties;
  std::unique_ptr<RE2> pattern;
  std::string pattern_text;
  std::optional<StringFormat> format;  // strict mode asserts it
  std::string format_name;
  const Node* items = nullptr;  // one schema for every item
  bool tuple = false;           // items was an array: one schema per position
  std::vector<const Node*> tuple_items;
  const Node* additional_items = nullptr;
  const Node* contains = nullptr;
  std::optional<std::uint64_t> min_contains, max_contains;  // 2019-09 on
  bool contains_marks_items = false;  // 2020-12: items that match contains count as evaluated
  bool unique_items = false;
  std::vector<std::pair<std::string, const Node*>> properties;  // sorted by name
  std::vector<std::pair<std::unique_ptr<RE2>, const Node*>> pattern_properties;
  const Node* additional_properties = nullptr;
  std::vector<std::string> required;
  const Node* property_names = nullptr;
  std::vector<Dependency> dependencies;
  std::vector<const Node*> all_of, any_of, one_of;
  const Node* not_schema = nullptr;
  const Node* if_schema = nullptr;
  const Node* then_schema = nullptr;
  const Node* else_schema = nullptr;
  // 2019-09 on: apply to what no in-place applicator of this schema evaluated.
  const Node* unevaluated_properties = nullptr;
  const Node* unevaluated_items = nullptr;

  const Node* Property(std::string_view name) const {
    auto it = std::lower_bound(properties.begin(), properties.end(), name,
                               [](const auto& p, std::string_view n) { return p.first < n; });
    return it != properties.end() && it->first == name ? it->second : nullptr;
  }
};

}  // namespace

struct JsonSchema::Impl {
  json::value document;
  std::deque<Node> nodes;  // stable addresses: nodes point at each other
};

namespace {

// --- Compiling ---------------------------------------------------------------------------

// RFC 3986 reference resolution, enough for $id and $ref inside one document.
std::string WithoutFragment(std::string_view uri) {
  return std::string(uri.substr(0, uri.find('#')));
}

bool HasScheme(std::string_view uri) {
  if (uri.empty() || !std::isalpha(static_cast<unsigned char>(uri[0]))) return false;
  for (char c : uri) {
    if (c == ':') return true;
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.')
      return false;
  }
  return false;
}

std::string RemoveDotSegments(std::string_view path) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  bool absolute = path.starts_with('/');
  if (absolute) start = 1;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(start, end - start);
    if (seg == "..") {
      if (!out.empty()) out.pop_back();
      if (end == path.size()) out.emplace_back();
    } else if (seg == ".") {
      if (end == path.size()) out.emplace_back();
    } else {
      out.push_back(seg);
    }
    start = end + 1;
  }
  std::string r = absolute ? "/" : "";
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (i > 0) r += '/';
    r += out[i];
  }
  return r;
}

std::string ResolveUri(std::string_view base_with_fragment, std::string_view ref) {
  if (HasScheme(ref)) return std::string(ref);
  std::string base = WithoutFragment(base_with_fragment);
  if (ref.empty()) return base;
  if (ref.front() == '#') return base + std::string(ref);
  std::size_t colon = HasScheme(base) ? base.find(':') : std::string::npos;
  std::string scheme = colon == std::string::npos ? "" : base.substr(0, colon + 1);
  std::string rest = colon == std::string::npos ? base : base.substr(colon + 1);
  std::string authority;
  if (rest.starts_with("//")) {
    std::size_t slash = rest.find_first_of("/?", 2);
    authority = rest.substr(0, slash);
    rest = slash == std::string::npos ? "" : rest.substr(slash);
  }
  rest = rest.substr(0, rest.find('?'));
  if (ref.starts_with("//")) return scheme + std::string(ref);
  std::string_view ref_path = ref.substr(0, ref.find_first_of("?#"));
  std::string_view ref_tail = ref.substr(ref_path.size());
  std::string path;
  if (ref_path.starts_with('/')) {
    path = std::string(ref_path);
  } else if (ref_path.empty()) {
    path = rest;
  } else {
    std::size_t slash = rest.rfind('/');
    std::string dir =
        slash == std::string::npos ? (authority.empty() ? "" : "/") : rest.substr(0, slash + 1);
    path = dir + std::string(ref_path);
  }
  return scheme + authority + RemoveDotSegments(path) + std::string(ref_tail);
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      c = static_cast<char>(c | 0x20);
      return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    if (s[i] == '%' && i + 2 < s.size() + 0 && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// RFC 6901 evaluation against the schema document.
const json::value* AtPointer(const json::value& root, std::string_view pointer) {
  const json::value* v = &root;
  std::size_t start = 0;
  while (start < pointer.size()) {
    if (pointer[start] != '/') return nullptr;
    std::size_t end = pointer.find('/', start + 1);
    if (end == std::string_view::npos) end = pointer.size();
    std::string token;
    for (std::size_t i = start + 1; i < end; ++i) {
      if (pointer[i] == '~' && i + 1 < end && (pointer[i + 1] == '0' || pointer[i + 1] == '1')) {
        token += pointer[i + 1] == '0' ? '~' : '/';
        ++i;
      } else {
        token += pointer[i];
      }
    }
    if (v->is_object()) {
      v = v->get_object().if_contains(token);
    } else if (v->is_array()) {
      std::size_t index = 0;
      auto [p, ec] = std::from_chars(token.data(), token.data() + token.size(), index);
      if (ec != std::errc{} || p != token.data() + token.size() || token.empty() ||
          index >= v->get_array().size()) {
        return nullptr;
      }
      v = &v->get_array()[index];
    } else {
      return nullptr;
    }
    if (!v) return nullptr;
    start = end;
  }
  return v;
}

// Keywords whose values are schemas, one schema per member, or one per array element; the
// walk that finds $id and the compiler agree on them.
constexpr std::string_view kSchemaKeywords[] = {"additionalItems",
                                                "additionalProperties",
                                                "contains",
                                                "propertyNames",
                                                "not",
                                                "if",
                                                "then",
                                                "else",
                                                "unevaluatedItems",
                                                "unevaluatedProperties"};
constexpr std::string_view kSchemaMapKeywords[] = {
    "properties", "patternProperties", "definitions", "dependencies", "$defs", "dependentSchemas"};
constexpr std::string_view kSchemaArrayKeywords[] = {"allOf", "anyOf", "oneOf", "prefixItems"};

// The document's dialect, from its root "$schema". Without one it is draft-07.
enum class Dialect { kDraft7, kDraft2019, kDraft2020 };

std::optional<Dialect> DialectOf(std::string_view uri) {
  if (uri.find("draft-07") != std::string_view::npos ||
      uri.find("draft-06") != std::string_view::npos) {
    return Dialect::kDraft7;
  }
  if (uri.find("draft/2019-09") != std::string_view::npos) return Dialect::kDraft2019;
  if (uri.find("draft/2020-12") != std::string_view::npos) return Dialect::kDraft2020;
  return std::nullopt;
}

const char* DialectName(Dialect d) {
  switch (d) {
    case Dialect::kDraft7:
      return "draft-07";
    case Dialect::kDraft2019:
      return "2019-09";
    case Dialect::kDraft2020:
      return "2020-12";
  }
  return "";
}

// Keywords that later drafts added, with the first draft that has them. In a document of an
// earlier dialect they are refused, not ignored as the draft would have it: an ignored
// "unevaluatedProperties": false would let through bodies that the operator meant to refuse.
constexpr std::pair<std::string_view, Dialect> kLaterKeywords[] = {
    {"$defs", Dialect::kDraft2019},
    {"$anchor", Dialect::kDraft2019},
    {"$recursiveRef", Dialect::kDraft2019},
    {"$recursiveAnchor", Dialect::kDraft2019},
    {"minContains", Dialect::kDraft2019},
    {"maxContains", Dialect::kDraft2019},
    {"dependentRequired", Dialect::kDraft2019},
    {"dependentSchemas", Dialect::kDraft2019},
    {"unevaluatedProperties", Dialect::kDraft2019},
    {"unevaluatedItems", Dialect::kDraft2019},
    {"prefixItems", Dialect::kDraft2020},
    {"$dynamicRef", Dialect::kDraft2020},
    {"$dynamicAnchor", Dialect::kDraft2020},
};

constexpr std::string_view kDialectUris[] = {"http://json-schema.org/draft-07/schema#",
                                             "https://json-schema.org/draft/2019-09/schema",
                                             "https://json-schema.org/draft/2020-12/schema"};

// Every other keyword of draft-07's core, validation and annotation vocabularies (the later
// drafts' are kLaterKeywords and kAnnotationKeywords). "definitions" and "dependencies" stay
// known in 2019-09 and 2020-12, which still honour them here.
constexpr std::string_view kDraft7Keywords[] = {"$schema",
                                                "$id",
                                                "$ref",
                                                "definitions",
                                                "type",
                                                "enum",
                                                "const",
                                                "multipleOf",
                                                "maximum",
                                                "minimum",
                                                "exclusiveMaximum",
                                                "exclusiveMinimum",
                                                "maxLength",
                                                "minLength",
                                                "pattern",
                                                "items",
                                                "additionalItems",
                                                "maxItems",
                                                "minItems",
                                                "uniqueItems",
                                                "contains",
                                                "maxProperties",
                                                "minProperties",
                                                "required",
                                                "properties",
                                                "patternProperties",
                                                "additionalProperties",
                                                "dependencies",
                                                "propertyNames",
                                                "if",
                                                "then",
                                                "else",
                                                "allOf",
                                                "anyOf",
                                                "oneOf",
                                                "not"};
// Keywords that assert nothing in any dialect: known everywhere, and harmless beside a draft-07
// $ref, which makes every other sibling be ignored.
constexpr std::string_view kAnnotationKeywords[] = {
    "$comment",      "title",       "description", "default",          "examples",
    "readOnly",      "writeOnly",   "deprecated",  "contentMediaType", "contentEncoding",
    "contentSchema", "$vocabulary", "format"};

bool IsKeyword(std::string_view k) {
  auto in = [&](const auto& table) {
    return std::find(std::begin(table), std::end(table), k) != std::end(table);
  };
  return in(kDraft7Keywords) || in(kAnnotationKeywords) ||
         std::any_of(std::begin(kLaterKeywords), std::end(kLaterKeywords),
                     [&](const auto& later) { return later.first == k; });
}

// The known keyword closest to a misspelt one (at most two edits, or a difference of case),
// or "" when none is.
std::string_view NearestKeyword(std::string_view k) {
  auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t diagonal = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        std::size_t above = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diagonal = above;
      }
    }
    return row[b.size()];
  };
  std::string_view best;
  if (k.size() > 64) return best;  // a long key is no misspelling: no quadratic work on it
  std::size_t best_distance = 3;
  auto consider = [&](std::string_view candidate) {
    std::size_t d = EqualsIgnoreCase(candidate, k) ? 0 : distance(k, candidate);
    if (d < best_distance) {
      best = candidate;
      best_distance = d;
    }
  };
  for (auto candidate : kDraft7Keywords) consider(candidate);
  for (auto candidate : kAnnotationKeywords) consider(candidate);
  for (auto [candidate, since] : kLaterKeywords) consider(candidate);
  return best;
}

bool IsPlainName(std::string_view name) {
  if (name.empty()) return false;
  auto letter = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; };
  if (!letter(name.front())) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) {
    return letter(c) || std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.';
  });
}

class Compiler {
 public:
  Compiler(JsonSchema::Impl& impl, bool strict) : impl_(impl), strict_(strict) {}

  tl::expected<const Node*, std::string> Run() {
    if (const auto* root = impl_.document.if_object()) {
      if (const auto* s = root->if_contains("$schema")) {
        auto dialect = s->is_string() ? DialectOf(s->get_string()) : std::nullopt;
        if (!dialect) {
          return tl::unexpected(std::string(
              "#/$schema: gatehouse validates JSON Schema draft-07, 2019-09 and 2020-12; "
              "declare one of \"http://json-schema.org/draft-07/schema#\", "
              "\"https://json-schema.org/draft/2019-09/schema\" or "
              "\"https://json-schema.org/draft/2020-12/schema\", or leave $schema out "
              "for draft-07"));
        }
        dialect_ = *dialect;
      }
    }
    ids_[""] = "";
    Walk("", impl_.document, "");
    auto root = Compile("", impl_.document);
    if (!root) return tl::unexpected(error_);
    return root;
  }

 private:
  // Records every subschema's base URI and the locations that $id names.
  void Walk(const std::string& location, const json::value& v, std::string base) {
    if (!v.is_object()) return;
    const auto& o = v.get_object();
    if (const auto* id = o.if_contains("$id"); id && id->is_string()) {
      std::string resolved = ResolveUri(base, std::string_view(id->get_string()));
      std::size_t hash = resolved.find('#');
      if (hash != std::string::npos && hash + 1 < resolved.size()) {
        ids_.emplace(resolved, location);  // a plain-name fragment: "#foo"
      } else {
        base = WithoutFragment(resolved);
        ids_.emplace(base, location);
      }
    }
    // A $dynamicAnchor is also a plain-name target for $ref; $dynamicRef itself is refused.
    for (std::string_view keyword : {"$anchor", "$dynamicAnchor"}) {
      if (const auto* a = o.if_contains(keyword); a && a->is_string()) {
        ids_.emplace(base + "#" + std::string(a->get_string()), location);
      }
    }
    bases_[location] = base;
    for (std::string_view k : kSchemaKeywords) {
      if (const auto* s = o.if_contains(k)) Walk(Child(location, k), *s, base);
    }
    for (std::string_view k : kSchemaMapKeywords) {
      const auto* m = o.if_contains(k);
      if (!m || !m->is_object()) continue;
      for (const auto& member : m->get_object()) {
        Walk(Child(Child(location, k), member.key()), member.value(), base);
      }
    }
    for (std::string_view k : kSchemaArrayKeywords) {
      const auto* a = o.if_contains(k);
      if (!a || !a->is_array()) continue;
      for (std::size_t i = 0; i < a->get_array().size(); ++i) {
        Walk(Index(Child(location, k), i), a->get_array()[i], base);
      }
    }
    if (const auto* items = o.if_contains("items")) {
      if (items->is_array()) {
        for (std::size_t i = 0; i < items->get_array().size(); ++i) {
          Walk(Index(Child(location, "items"), i), items->get_array()[i], base);
        }
      } else {
        Walk(Child(location, "items"), *items, base);
      }
    }
  }

  static std::string Child(const std::string& location, std::string_view key) {
    std::string r = location;
    AppendPointerToken(r, key);
    return r;
  }
  static std::string Index(const std::string& location, std::size_t i) {
    std::string r = location;
    AppendIndexToken(r, i);
    return r;
  }

  // The base URI in force at a location: its own, or its nearest walked ancestor's.
  std::string BaseAt(std::string location) const {
    for (;;) {
      if (auto it = bases_.find(location); it != bases_.end()) return it->second;
      if (location.empty()) return "";
      location.resize(location.rfind('/'));
    }
  }

  // Strict mode: a keyword that the drafts say to ignore is refused instead, since an ignored
  // assertion lets through the bodies it was written to stop: an unknown (often misspelt) one,
  // and in draft-07 any assertion beside $ref. True when it refused one (error_ says which).
  bool RefusesIgnoredKeywords(const std::string& location, const json::object& o) {
    for (const auto& member : o) {
      std::string_view k = member.key();
      if (k.starts_with("x-") || IsKeyword(k)) continue;
      std::string_view nearest = NearestKeyword(k);
      Bad(Child(location, k),
          fmt::format("is not a JSON Schema {} keyword{}; unknown keywords are refused, "
                      "not ignored, so that a misspelt one cannot let bodies through "
                      "(name keywords of your own x-…)",
                      DialectName(dialect_),
                      nearest.empty() ? "" : fmt::format(" (did you mean \"{}\"?)", nearest)));
      return true;
    }
    if (dialect_ == Dialect::kDraft7 && o.contains("$ref")) {
      for (const auto& member : o) {
        std::string_view k = member.key();
        // format asserts in strict mode, so it is no annotation here.
        if (k.starts_with("x-") || k == "$ref" || k == "$schema" || k == "$id" ||
            k == "definitions" ||
            (k != "format" &&
             std::find(std::begin(kAnnotationKeywords), std::end(kAnnotationKeywords), k) !=
                 std::end(kAnnotationKeywords))) {
          continue;
        }
        Bad(Child(location, k),
            "would be ignored: in draft-07, $ref replaces the keywords beside it; put the "
            "$ref and this keyword in an allOf, or declare \"$schema\": "
            "\"https://json-schema.org/draft/2020-12/schema\", where $ref applies beside "
            "them");
        return true;
      }
    }
    return false;
  }

  const Node* Bad(const std::string& location, std::string message) {
    if (error_.empty()) error_ = "#" + location + ": " + std::move(message);
    return nullptr;
  }

  std::optional<std::string> ResolveRef(const std::string& location, std::string_view ref) {
    std::string full = ResolveUri(BaseAt(location), ref);
    std::size_t hash = full.find('#');
    std::string uri = full.substr(0, hash);
    std::string fragment = hash == std::string::npos ? "" : full.substr(hash + 1);
    auto doc = ids_.find(uri);
    if (doc == ids_.end()) return std::nullopt;
    if (fragment.empty()) return doc->second;
    if (fragment.front() == '/') {
      std::string target = doc->second + PercentDecode(fragment);
      if (!AtPointer(impl_.document, target)) return std::nullopt;
      return target;
    }
    auto named = ids_.find(full);
    if (named == ids_.end()) return std::nullopt;
    return named->second;
  }

  const Node* CompileAt(const std::string& location) {
    const json::value* v = AtPointer(impl_.document, location);
    if (!v) return Bad(location, "no schema here");
    return Compile(location, *v);
  }

  std::optional<std::uint64_t> Count(const std::string& location, const json::value& v,
                                     std::string_view keyword, bool& ok) {
    if (v.is_uint64()) return v.get_uint64();
    if (v.is_int64() && v.get_int64() >= 0) return static_cast<std::uint64_t>(v.get_int64());
    if (v.is_double() && v.get_double() >= 0 && v.get_double() < 1.8e19 &&
        std::floor(v.get_double()) == v.get_double()) {
      return static_cast<std::uint64_t>(v.get_double());
    }
    ok = false;
    Bad(Child(location, keyword), "must be a non-negative integer");
    return std::nullopt;
  }

  std::optional<NumberLimit> Number(const std::string& location, const json::value& v,
                                    std::string_view keyword, bool& ok) {
    if (!v.is_number()) {
      ok = false;
      Bad(Child(location, keyword), "must be a number");
      return std::nullopt;
    }
    return NumberLimit{AsNumber(v), Serialize(v)};
  }

  std::unique_ptr<RE2> Regex(const std::string& location, std::string_view text, bool& ok) {
    RE2::Options options;
    options.set_log_errors(false);
    auto re = std::make_unique<RE2>(re2::StringPiece(text.data(), text.size()), options);
    if (!re->ok()) {
      ok = false;
      Bad(location, "pattern \"" + std::string(text) + "\" is not supported (" + re->error() +
                        "); patterns run on RE2, which has no lookaround or backreferences");
      return nullptr;
    }
    return re;
  }

  const Node* Compile(const std::string& location, const json::value& v) {
    if (auto it = compiled_.find(location); it != compiled_.end()) return it->second;
    Node& n = impl_.nodes.emplace_back();
    compiled_[location] = &n;
    if (v.is_bool()) {
      n.fixed = v.get_bool();
      return &n;
    }
    if (!v.is_object()) return Bad(location, "a schema must be an object or a boolean");
    const auto& o = v.get_object();
    bool ok = true;

    if (const auto* s = o.if_contains("$schema")) {
      auto dialect = s->is_string() ? DialectOf(s->get_string()) : std::nullopt;
      if (dialect != dialect_) {
        return Bad(Child(location, "$schema"),
                   std::string("must name the dialect of the whole document, ") +
                       DialectName(dialect_) + " (\"" +
                       std::string(kDialectUris[static_cast<int>(dialect_)]) + "\")");
      }
    }
    if (strict_ && RefusesIgnoredKeywords(location, o)) return nullptr;
    if (const auto* r = o.if_contains("$ref")) {
      if (!r->is_string()) return Bad(Child(location, "$ref"), "must be a string");
      auto target = ResolveRef(location, std::string_view(r->get_string()));
      if (!target) {
        return Bad(Child(location, "$ref"),
                   "\"" + std::string(r->get_string()) +
                       "\" does not point inside this schema (remote references are not fetched)");
      }
      n.ref = CompileAt(*target);
      if (!n.ref) return nullptr;
      // In draft-07 $ref replaces its siblings; from 2019-09 on it applies beside them.
      if (dialect_ == Dialect::kDraft7) return &n;
    }
    for (auto [keyword, since] : kLaterKeywords) {
      if (!o.contains(keyword) || dialect_ >= since) continue;
      return Bad(Child(location, keyword),
                 fmt::format("is a JSON Schema {} keyword, which this {} document cannot use: "
                             "declare \"$schema\": \"{}\" at its root",
                             DialectName(since), DialectName(dialect_),
                             kDialectUris[static_cast<int>(since)]));
    }
    for (std::string_view keyword : {"$dynamicRef", "$recursiveRef"}) {
      if (o.contains(keyword)) {
        return Bad(Child(location, keyword),
                   "is not supported: gatehouse resolves every reference when the schema is "
                   "loaded; use $ref");
      }
    }
    for (std::string_view keyword : {"$anchor", "$dynamicAnchor"}) {
      const auto* a = o.if_contains(keyword);
      if (a && (!a->is_string() || !IsPlainName(a->get_string()))) {
        return Bad(Child(location, keyword),
                   "must be a plain name: a letter or _, then letters, digits, -, _ or .");
      }
    }

    if (const auto* t = o.if_contains("type")) {
      auto add = [&](const json::value& name) {
        if (name.is_string()) {
          for (auto [text, bit] : kTypeNames) {
            if (name.get_string() == text) {
              n.types |= bit;
              if (!n.type_phrase.empty()) n.type_phrase += " or ";
              n.type_phrase +=
                  (text == "array" || text == "object" || text == "integer") ? "an " : "a ";
              if (text == "null") n.type_phrase = n.type_phrase.substr(0, n.type_phrase.size() - 2);
              n.type_phrase += text;
              return true;
            }
          }
        }
        return false;
      };
      bool good = t->is_array() ? !t->get_array().empty() : add(*t);
      if (t->is_array()) {
        for (const auto& name : t->get_array()) good = good && add(name);
      }
      if (!good) {
        return Bad(Child(location, "type"),
                   "must name JSON types: null, boolean, object, array, number, integer, string");
      }
    }
    if (const auto* c = o.if_contains("const")) n.const_value = *c;
    if (const auto* e = o.if_contains("enum")) {
      if (!e->is_array()) return Bad(Child(location, "enum"), "must be an array");
      n.enum_values = e->get_array();
    }
    struct NumberKeyword {
      std::string_view name;
      std::optional<NumberLimit> Node::*member;
    };
    for (auto [name, member] :
         {NumberKeyword{"minimum", &Node::minimum}, NumberKeyword{"maximum", &Node::maximum},
          NumberKeyword{"exclusiveMinimum", &Node::exclusive_minimum},
          NumberKeyword{"exclusiveMaximum", &Node::exclusive_maximum},
          NumberKeyword{"multipleOf", &Node::multiple_of}}) {
      if (const auto* x = o.if_contains(name)) n.*member = Number(location, *x, name, ok);
    }
    if (n.multiple_of && !(n.multiple_of->value > 0)) {
      return Bad(Child(location, "multipleOf"), "must be greater than 0");
    }
    struct CountKeyword {
      std::string_view name;
      std::optional<std::uint64_t> Node::*member;
    };
    for (auto [name, member] :
         {CountKeyword{"minLength", &Node::min_length},
          CountKeyword{"maxLength", &Node::max_length}, CountKeyword{"minItems", &Node::min_items},
          CountKeyword{"maxItems", &Node::max_items},
          CountKeyword{"minProperties", &Node::min_properties},
          CountKeyword{"maxProperties", &Node::max_properties}}) {
      if (const auto* x = o.if_contains(name)) n.*member = Count(location, *x, name, ok);
    }
    if (!ok) return nullptr;
    if (const auto* f = o.if_contains("format"); f && strict_) {
      if (!f->is_string()) return Bad(Child(location, "format"), "must be a string");
      n.format_name = std::string(f->get_string());
      n.format = FormatNamed(n.format_name);
      if (!n.format) {
        return Bad(Child(location, "format"),
                   fmt::format("\"{}\" is not a format gatehouse checks ({}); strict mode "
                               "asserts formats, so one it cannot check is refused rather than "
                               "ignored",
                               n.format_name, KnownFormatNames()));
      }
    }
    if (const auto* p = o.if_contains("pattern")) {
      if (!p->is_string()) return Bad(Child(location, "pattern"), "must be a string");
      n.pattern_text = std::string(p->get_string());
      n.pattern = Regex(Child(location, "pattern"), n.pattern_text, ok);
      if (!ok) return nullptr;
    }
    if (const auto* u = o.if_contains("uniqueItems")) {
      if (!u->is_bool()) return Bad(Child(location, "uniqueItems"), "must be true or false");
      n.unique_items = u->get_bool();
    }

    auto sub = [&](std::string_view keyword, const Node*& out) {
      if (const auto* s = o.if_contains(keyword)) {
        out = Compile(Child(location, keyword), *s);
        if (!out) ok = false;
      }
    };
    // Per-position schemas: "items" as an array up to 2019-09, "prefixItems" in 2020-12, where
    // "items" then takes the place of "additionalItems".
    const std::string_view tuple_keyword =
        dialect_ == Dialect::kDraft2020 ? "prefixItems" : "items";
    const std::string_view rest_keyword =
        dialect_ == Dialect::kDraft2020 ? "items" : "additionalItems";
    if (dialect_ == Dialect::kDraft2020) {
      if (const auto* items = o.if_contains("items"); items && items->is_array()) {
        return Bad(Child(location, "items"),
                   "must be one schema in 2020-12; per-position schemas go in prefixItems");
      }
      if (o.contains("additionalItems")) {
        return Bad(Child(location, "additionalItems"),
                   "is not a 2020-12 keyword; \"items\" applies to the items after prefixItems");
      }
    }
    if (const auto* tuple = o.if_contains(tuple_keyword); tuple && tuple->is_array()) {
      n.tuple = true;
      for (std::size_t i = 0; i < tuple->get_array().size(); ++i) {
        const Node* item = Compile(Index(Child(location, tuple_keyword), i), tuple->get_array()[i]);
        if (!item) return nullptr;
        n.tuple_items.push_back(item);
      }
    } else if (tuple && dialect_ == Dialect::kDraft2020) {
      return Bad(Child(location, "prefixItems"), "must be an array of schemas");
    }
    if (n.tuple || dialect_ != Dialect::kDraft2020) sub(rest_keyword, n.additional_items);
    if (!n.tuple && o.contains("items")) sub("items", n.items);
    sub("contains", n.contains);
    if (n.contains) {
      n.contains_marks_items = dialect_ == Dialect::kDraft2020;
      for (auto [name, member] : {CountKeyword{"minContains", &Node::min_contains},
                                  CountKeyword{"maxContains", &Node::max_contains}}) {
        if (const auto* x = o.if_contains(name)) n.*member = Count(location, *x, name, ok);
      }
    }
    sub("unevaluatedProperties", n.unevaluated_properties);
    sub("unevaluatedItems", n.unevaluated_items);
    sub("additionalProperties", n.additional_properties);
    sub("propertyNames", n.property_names);
    sub("not", n.not_schema);
    sub("if", n.if_schema);
    sub("then", n.then_schema);
    sub("else", n.else_schema);
    if (!ok) return nullptr;

    auto schema_map = [&](std::string_view keyword) -> const json::object* {
      const auto* m = o.if_contains(keyword);
      if (!m) return nullptr;
      if (!m->is_object()) {
        ok = false;
        Bad(Child(location, keyword), "must be an object");
        return nullptr;
      }
      return &m->get_object();
    };
    if (const auto* props = schema_map("properties")) {
      for (const auto& m : *props) {
        const Node* p = Compile(Child(Child(location, "properties"), m.key()), m.value());
        if (!p) return nullptr;
        n.properties.emplace_back(std::string(m.key()), p);
      }
      std::sort(n.properties.begin(), n.properties.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
    }
    if (const auto* props = schema_map("patternProperties")) {
      for (const auto& m : *props) {
        std::string at = Child(Child(location, "patternProperties"), m.key());
        auto re = Regex(at, m.key(), ok);
        if (!ok) return nullptr;
        const Node* p = Compile(at, m.value());
        if (!p) return nullptr;
        n.pattern_properties.emplace_back(std::move(re), p);
      }
    }
    for (std::string_view keyword : {"definitions", "$defs"}) {
      // Compiled although only $ref reaches them, so that a mistake in one fails at load time.
      const auto* defs = schema_map(keyword);
      if (!defs) continue;
      for (const auto& m : *defs) {
        if (!Compile(Child(Child(location, keyword), m.key()), m.value())) return nullptr;
      }
    }
    // draft-07 "dependencies" takes either form per property; 2019-09 split it in two.
    enum Form { kList = 1, kSchema = 2 };
    for (auto [keyword, forms] : {std::pair<std::string_view, int>{"dependencies", kList | kSchema},
                                  {"dependentRequired", kList},
                                  {"dependentSchemas", kSchema}}) {
      const auto* deps = schema_map(keyword);
      if (!deps) continue;
      for (const auto& m : *deps) {
        Dependency d;
        d.property = std::string(m.key());
        std::string at = Child(Child(location, keyword), m.key());
        if ((forms & kList) && (m.value().is_array() || !(forms & kSchema))) {
          if (!m.value().is_array()) return Bad(at, "must list property names");
          for (const auto& name : m.value().get_array()) {
            if (!name.is_string()) return Bad(at, "must list property names");
            d.required.emplace_back(name.get_string());
          }
        } else {
          d.schema = Compile(at, m.value());
          if (!d.schema) return nullptr;
        }
        n.dependencies.push_back(std::move(d));
      }
    }
    if (!ok) return nullptr;
    if (const auto* r = o.if_contains("required")) {
      if (!r->is_array()) return Bad(Child(location, "required"), "must list property names");
      for (const auto& name : r->get_array()) {
        if (!name.is_string()) return Bad(Child(location, "required"), "must list property names");
        n.required.emplace_back(name.get_string());
      }
    }
    struct ListKeyword {
      std::string_view name;
      std::vector<const Node*> Node::*member;
    };
    for (auto [name, member] :
         {ListKeyword{"allOf", &Node::all_of}, ListKeyword{"anyOf", &Node::any_of},
          ListKeyword{"oneOf", &Node::one_of}}) {
      const auto* list = o.if_contains(name);
      if (!list) continue;
      if (!list->is_array() || list->get_array().empty()) {
        return Bad(Child(location, name), "must be a non-empty array of schemas");
      }
      for (std::size_t i = 0; i < list->get_array().size(); ++i) {
        const Node* s = Compile(Index(Child(location, name), i), list->get_array()[i]);
        if (!s) return nullptr;
        (n.*member).push_back(s);
      }
    }
    return &n;
  }

  JsonSchema::Impl& impl_;
  std::map<std::string, std::string> ids_;    // absolute URI (and "uri#name") -> location
  std::map<std::string, std::string> bases_;  // location -> base URI
  std::map<std::string, const Node*> compiled_;
  std::string error_;
  Dialect dialect_ = Dialect::kDraft7;
  bool strict_ = true;
};

// --- Validating --------------------------------------------------------------------------

// What the in-place applicators of a schema evaluated of the one value they were applied to:
// property names of an object, positions of an array. unevaluatedProperties and unevaluatedItems
// apply to the rest. Only gathered below a schema that has one of those two keywords.
struct Evaluated {
  bool all = false;
  std::vector<std::string_view> names;
  std::vector<bool> items;

  void Name(std::string_view name) { names.push_back(name); }
  void Item(std::size_t i) {
    if (items.size() <= i) items.resize(i + 1);
    items[i] = true;
  }
  void Merge(const Evaluated& other) {
    all = all || other.all;
    names.insert(names.end(), other.names.begin(), other.names.end());
    if (items.size() < other.items.size()) items.resize(other.items.size());
    for (std::size_t i = 0; i < other.items.size(); ++i) {
      if (other.items[i]) items[i] = true;
    }
  }
};

class Validator {
 public:
  explicit Validator(SchemaViolation* out) : out_(out) {}

  // `evaluated`, when given, gathers what this schema evaluated of `v` for an enclosing schema
  // with unevaluatedProperties or unevaluatedItems.
  bool Check(const Node& n, const json::value& v, int depth, Evaluated* evaluated = nullptr) {
    if (aborted_) return false;
    if (++steps_ > kMaxSteps) return Abort("the request body is too complex to check");
    if (depth > kMaxSchemaDepth) return Abort("the route's schema recurses too deeply");
    if (n.fixed) return *n.fixed || Fail([] { return std::string("is not allowed here"); });
    const bool gathers =
        (n.unevaluated_properties && v.is_object()) || (n.unevaluated_items && v.is_array());
    Evaluated own;
    Evaluated* ev = gathers ? &own : evaluated;
    if (!CheckApplied(n, v, depth, ev)) return false;
    if (!gathers) return true;
    if (!CheckUnevaluated(n, v, depth, own)) return false;
    if (evaluated) {
      evaluated->Merge(own);
      evaluated->all = true;  // the unevaluated keyword took whatever was left
    }
    return true;
  }

  bool aborted() const { return aborted_; }
  const std::string& abort_reason() const { return abort_reason_; }

 private:
  bool CheckApplied(const Node& n, const json::value& v, int depth, Evaluated* ev) {
    // In draft-07 a $ref node has nothing else; from 2019-09 on its siblings apply too.
    if (n.ref && !Check(*n.ref, v, depth + 1, ev)) return false;

    const std::uint8_t kind = KindBits(v);
    if (n.types && !(n.types & kind)) {
      return Fail([&] { return "must be " + n.type_phrase; });
    }
    if (n.const_value && !JsonEqual(*n.const_value, v)) {
      return Fail([&] { return "must be " + Serialize(*n.const_value); });
    }
    if (n.enum_values) {
      bool found = false;
      for (const auto& e : *n.enum_values) found = found || JsonEqual(e, v);
      if (!found) return Fail([&] { return "must be one of " + Serialize(*n.enum_values); });
    }
    if (n.format && !MatchesFormat(*n.format, v)) {
      return Fail([&] { return "must be a valid " + n.format_name; });
    }
    if (kind & kNumberBit) {
      if (!CheckNumber(n, v)) return false;
    } else if (kind & kStringBit) {
      if (!CheckString(n, v.get_string())) return false;
    } else if (kind & kArrayBit) {
      if (!CheckArray(n, v.get_array(), depth, ev)) return false;
    } else if (kind & kObjectBit) {
      if (!CheckObject(n, v, depth, ev)) return false;
    }
    return CheckCombinators(n, v, depth, ev);
  }

  bool CheckUnevaluated(const Node& n, const json::value& v, int depth, Evaluated& own) {
    if (own.all) return true;
    if (v.is_object()) {
      std::sort(own.names.begin(), own.names.end());
      for (const auto& m : v.get_object()) {
        const std::string_view key = m.key();
        if (std::binary_search(own.names.begin(), own.names.end(), key)) continue;
        auto scope = Enter(key);
        if (n.unevaluated_properties->fixed == false) {
          return Fail([] { return std::string("is not an allowed property"); });
        }
        if (!Check(*n.unevaluated_properties, m.value(), depth + 1)) return false;
      }
      return true;
    }
    const json::array& a = v.get_array();
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (i < own.items.size() && own.items[i]) continue;
      auto scope = Enter(i);
      if (n.unevaluated_items->fixed == false) {
        return Fail([] { return std::string("is not an allowed item"); });
      }
      if (!Check(*n.unevaluated_items, a[i], depth + 1)) return false;
    }
    return true;
  }

  template <class Message>
  bool Fail(Message&& message) {
    if (out_ && out_->message.empty()) {
      out_->pointer = Pointer();
      out_->message = message();
    }
    return false;
  }

  bool Abort(std::string reason) {
    aborted_ = true;
    abort_reason_ = std::move(reason);
    return false;
  }

  // Evaluates a subschema for its verdict alone: anyOf, oneOf, not and if do not report what
  // inside them failed.
  bool Quietly(const Node& n, const json::value& v, int depth, Evaluated* ev = nullptr) {
    SchemaViolation* saved = out_;
    out_ = nullptr;
    bool ok = Check(n, v, depth + 1, ev);
    out_ = saved;
    return ok;
  }

  // A subschema whose annotations count only if it passes (anyOf, oneOf, if).
  bool QuietlyGathering(const Node& n, const json::value& v, int depth, Evaluated* ev) {
    if (!ev) return Quietly(n, v, depth);
    Evaluated branch;
    if (!Quietly(n, v, depth, &branch)) return false;
    ev->Merge(branch);
    return true;
  }

  // Where in the body the check is. Kept as segments and spelled out as a pointer only when a
  // violation is reported, so that a body that matches pays no string building.
  struct Segment {
    std::string_view key;
    std::size_t index = 0;
    bool is_index = false;
  };
  struct PathScope {
    explicit PathScope(std::vector<Segment>& s) : segments(s) {}
    std::vector<Segment>& segments;
    PathScope(const PathScope&) = delete;
    PathScope& operator=(const PathScope&) = delete;
    ~PathScope() { segments.pop_back(); }
  };
  PathScope Enter(std::string_view key) {
    segments_.push_back(Segment{key, 0, false});
    return PathScope{segments_};
  }
  PathScope Enter(std::size_t index) {
    segments_.push_back(Segment{{}, index, true});
    return PathScope{segments_};
  }
  std::string Pointer() const {
    std::string pointer;
    for (const auto& s : segments_) {
      if (s.is_index) {
        AppendIndexToken(pointer, s.index);
      } else {
        AppendPointerToken(pointer, s.key);
      }
    }
    return pointer;
  }

  bool CheckNumber(const Node& n, const json::value& v) {
    const long double x = AsNumber(v);
    if (n.minimum && x < n.minimum->value) {
      return Fail([&] { return "must be at least " + n.minimum->text; });
    }
    if (n.maximum && x > n.maximum->value) {
      return Fail([&] { return "must be at most " + n.maximum->text; });
    }
    if (n.exclusive_minimum && x <= n.exclusive_minimum->value) {
      return Fail([&] { return "must be greater than " + n.exclusive_minimum->text; });
    }
    if (n.exclusive_maximum && x >= n.exclusive_maximum->value) {
      return Fail([&] { return "must be less than " + n.exclusive_maximum->text; });
    }
    if (n.multiple_of) {
      const long double q = x / n.multiple_of->value;
      const bool multiple = std::isfinite(q) && std::fabs(q - std::nearbyint(q)) < 1e-9L;
      if (!multiple) return Fail([&] { return "must be a multiple of " + n.multiple_of->text; });
    }
    return true;
  }

  bool CheckString(const Node& n, std::string_view s) {
    // A string has at most as many code points as bytes and at least a quarter as many, so
    // most strings are settled without counting.
    const bool may_be_long = n.max_length && s.size() > *n.max_length;
    const bool may_be_short = n.min_length && s.size() / 4 < *n.min_length;
    if (may_be_long || may_be_short) {
      const std::size_t length = CodePoints(s);
      if (n.min_length && length < *n.min_length) {
        return Fail(
            [&] { return fmt::format("must be at least {} characters long", *n.min_length); });
      }
      if (n.max_length && length > *n.max_length) {
        return Fail(
            [&] { return fmt::format("must be at most {} characters long", *n.max_length); });
      }
    }
    if (n.pattern && !RE2::PartialMatch(re2::StringPiece(s.data(), s.size()), *n.pattern)) {
      return Fail([&] { return "must match the pattern " + n.pattern_text; });
    }
    return true;
  }

  bool CheckArray(const Node& n, const json::array& a, int depth, Evaluated* ev) {
    if (n.min_items && a.size() < *n.min_items) {
      return Fail([&] { return fmt::format("must have at least {} items", *n.min_items); });
    }
    if (n.max_items && a.size() > *n.max_items) {
      return Fail([&] { return fmt::format("must have at most {} items", *n.max_items); });
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
      const Node* schema = n.items;
      if (n.tuple) schema = i < n.tuple_items.size() ? n.tuple_items[i] : n.additional_items;
      if (!schema) continue;
      auto scope = Enter(i);
      if (!Check(*schema, a[i], depth + 1)) return false;
      if (ev) ev->Item(i);
    }
    if (n.unique_items && !CheckUnique(a)) return false;
    if (n.contains) return CheckContains(n, a, depth, ev);
    return true;
  }

  bool CheckContains(const Node& n, const json::array& a, int depth, Evaluated* ev) {
    const std::uint64_t least = n.min_contains.value_or(1);
    const bool marks = ev && n.contains_marks_items;
    // Every item is tried only when the count has an upper bound or the matches are evaluated
    // items; otherwise the first `least` matches settle it.
    const bool count_all = n.max_contains.has_value() || marks;
    std::uint64_t matches = 0;
    for (std::size_t i = 0; i < a.size() && (count_all || matches < least); ++i) {
      if (!Quietly(*n.contains, a[i], depth)) continue;
      ++matches;
      if (marks) ev->Item(i);
    }
    if (aborted_) return false;
    if (matches < least) {
      if (!n.min_contains) {
        return Fail([] { return std::string("must contain an item the schema allows"); });
      }
      return Fail(
          [&] { return fmt::format("must contain at least {} items the schema allows", least); });
    }
    if (n.max_contains && matches > *n.max_contains) {
      return Fail([&] {
        return fmt::format("must contain at most {} items the schema allows", *n.max_contains);
      });
    }
    return true;
  }

  // Hashes first, so that a long array costs n log n, not n squared comparisons.
  bool CheckUnique(const json::array& a) {
    std::vector<std::pair<std::size_t, std::size_t>> hashed;  // (hash, index)
    hashed.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) hashed.emplace_back(JsonHash(a[i]), i);
    std::sort(hashed.begin(), hashed.end());
    for (std::size_t i = 0; i < hashed.size(); ++i) {
      for (std::size_t j = i + 1; j < hashed.size() && hashed[j].first == hashed[i].first; ++j) {
        steps_ += 1;
        if (steps_ > kMaxSteps) return Abort("the request body is too complex to check");
        if (JsonEqual(a[hashed[i].second], a[hashed[j].second])) {
          std::size_t later = std::max(hashed[i].second, hashed[j].second);
          auto scope = Enter(later);
          return Fail([] { return std::string("repeats an earlier item; items must be unique"); });
        }
      }
    }
    return true;
  }

  bool CheckObject(const Node& n, const json::value& v, int depth, Evaluated* ev) {
    const json::object& o = v.get_object();
    if (n.min_properties && o.size() < *n.min_properties) {
      return Fail(
          [&] { return fmt::format("must have at least {} properties", *n.min_properties); });
    }
    if (n.max_properties && o.size() > *n.max_properties) {
      return Fail(
          [&] { return fmt::format("must have at most {} properties", *n.max_properties); });
    }
    for (const auto& name : n.required) {
      if (!o.contains(name)) {
        auto scope = Enter(name);
        return Fail([] { return std::string("is required"); });
      }
    }
    for (const auto& m : o) {
      const std::string_view key = m.key();
      auto scope = Enter(key);
      if (n.property_names) {
        json::value name(key);
        if (!Check(*n.property_names, name, depth + 1)) {
          if (out_ && !out_->message.empty())
            out_->message = "is not an allowed property name: " + out_->message;
          return false;
        }
      }
      bool matched = false;
      if (const Node* p = n.Property(key)) {
        matched = true;
        if (!Check(*p, m.value(), depth + 1)) return false;
      }
      for (const auto& [re, schema] : n.pattern_properties) {
        if (!RE2::PartialMatch(re2::StringPiece(key.data(), key.size()), *re)) continue;
        matched = true;
        if (!Check(*schema, m.value(), depth + 1)) return false;
      }
      if (!matched && n.additional_properties) {
        if (n.additional_properties->fixed == false) {
          return Fail([] { return std::string("is not an allowed property"); });
        }
        if (!Check(*n.additional_properties, m.value(), depth + 1)) return false;
        matched = true;
      }
      if (matched && ev) ev->Name(key);
    }
    for (const auto& d : n.dependencies) {
      if (!o.contains(d.property)) continue;
      for (const auto& name : d.required) {
        if (!o.contains(name)) {
          auto scope = Enter(name);
          return Fail([&] { return "is required when " + d.property + " is present"; });
        }
      }
      if (d.schema && !Check(*d.schema, v, depth + 1, ev)) return false;
    }
    return true;
  }

  bool CheckCombinators(const Node& n, const json::value& v, int depth, Evaluated* ev) {
    for (const Node* s : n.all_of) {
      if (!Check(*s, v, depth + 1, ev)) return false;
    }
    if (!n.any_of.empty()) {
      // Gathering evaluations needs every branch that passes, not only the first.
      bool any = false;
      for (const Node* s : n.any_of) {
        if (QuietlyGathering(*s, v, depth, ev)) {
          any = true;
          if (!ev) break;
        }
      }
      if (aborted_) return false;
      if (!any) return Fail([] { return std::string("matches none of the schemas in anyOf"); });
    }
    if (!n.one_of.empty()) {
      int matches = 0;
      for (const Node* s : n.one_of) {
        if (QuietlyGathering(*s, v, depth, ev) && ++matches > 1) break;
      }
      if (aborted_) return false;
      if (matches == 0)
        return Fail([] { return std::string("matches none of the schemas in oneOf"); });
      if (matches > 1) {
        return Fail([] { return std::string("matches more than one of the schemas in oneOf"); });
      }
    }
    if (n.not_schema) {
      bool matched = Quietly(*n.not_schema, v, depth);
      if (aborted_) return false;
      if (matched) return Fail([] { return std::string("matches a schema it must not match"); });
    }
    if (n.if_schema) {
      bool condition = QuietlyGathering(*n.if_schema, v, depth, ev);
      if (aborted_) return false;
      const Node* branch = condition ? n.then_schema : n.else_schema;
      if (branch && !Check(*branch, v, depth + 1, ev)) return false;
    }
    return true;
  }

  SchemaViolation* out_;
  std::vector<Segment> segments_;
  std::size_t steps_ = 0;
  bool aborted_ = false;
  std::string abort_reason_;
};

}  // namespace

tl::expected<JsonSchema, std::string> JsonSchema::Compile(const json::value& schema,
                                                          CompileOptions options) {
  auto impl = std::make_shared<Impl>();
  impl->document = schema;
  Compiler compiler(*impl, options.strict);
  auto root = compiler.Run();
  if (!root) return tl::unexpected(root.error());
  // The root is the first node compiled.
  return JsonSchema(std::move(impl));
}

std::optional<SchemaViolation> JsonSchema::Validate(const json::value& instance) const {
  SchemaViolation violation;
  Validator validator(&violation);
  if (validator.Check(impl_->nodes.front(), instance, 0)) return std::nullopt;
  if (validator.aborted()) return SchemaViolation{"", validator.abort_reason()};
  return violation;
}

bool JsonSchema::IsValid(const json::value& instance) const {
  Validator validator(nullptr);
  return validator.Check(impl_->nodes.front(), instance, 0);
}

Result<void> JsonSchema::ValidateBody(std::string_view body) const {
  json::parse_options options;
  options.max_depth = kMaxSchemaBodyDepth;
  boost::system::error_code ec;
  json::value v = json::parse(body, ec, {}, options);
  if (ec) {
    Error e{ErrorCode::kInvalidArgument, "request body is not valid JSON", {}, {}};
    e.pointer = "";
    return tl::unexpected(std::move(e));
  }
  auto violation = Validate(v);
  if (!violation) return {};
  std::string where = violation->pointer.empty() ? "the body" : violation->pointer;
  Error e{ErrorCode::kInvalidArgument,
          "request body does not match the route's schema: " + where + " " + violation->message,
          {},
          {}};
  e.pointer = std::move(violation->pointer);
  return tl::unexpected(std::move(e));
}

}  // namespace gatehouse

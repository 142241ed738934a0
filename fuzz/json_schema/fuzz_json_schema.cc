// Request bodies checked against a route's JSON Schema: the body is the attacker's. The first
// byte picks the mode: bodies against a fixed draft-07 schema that uses every keyword family,
// (with '2') the rest against a fixed 2020-12 one, or (with 'S') the input as a schema, compiled
// and applied to itself, so that compiling never crashes on an operator's mistake either. The
// quick verdict and the reporting one must always agree.
#include <cstdint>
#include <string_view>

#include <boost/json/parse.hpp>

#include "schema/json_schema.h"

namespace {

constexpr std::string_view kSchema = R"({
  "type": "object",
  "required": ["model"],
  "properties": {
    "model": {"type": "string", "pattern": "^[a-z][a-z0-9.-]{0,40}$"},
    "messages": {"type": "array", "maxItems": 64, "uniqueItems": true,
                 "items": {"$ref": "#/definitions/message"}},
    "n": {"type": "integer", "minimum": 1, "maximum": 8, "multipleOf": 1},
    "temperature": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 2.5},
    "tree": {"$ref": "#/definitions/tree"},
    "choice": {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "string", "minLength": 2}]},
    "either": {"anyOf": [{"const": {"a": [1, 2.0]}}, {"enum": [null, true, "x"]}]},
    "cond": {"if": {"type": "object"}, "then": {"minProperties": 1}, "else": {"not": {"type": "null"}}}
  },
  "patternProperties": {"^x-": {"type": ["string", "number"]}},
  "propertyNames": {"maxLength": 32},
  "dependencies": {"stream": ["model"], "tools": {"required": ["tool_choice"]}},
  "additionalProperties": {"contains": {"type": "integer"}},
  "definitions": {
    "message": {"type": "object", "required": ["role"],
                "properties": {"role": {"enum": ["user", "assistant"]}, "content": {"type": "string"}}},
    "tree": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/definitions/tree"}}},
             "anyOf": [{"required": ["leaf"]}, {"required": ["children"]}]}
  }
})";

// Annotations flow through every in-place applicator into unevaluatedProperties/Items.
constexpr std::string_view kSchema2020 = R"({
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$defs": {
    "base": {"properties": {"model": {"type": "string"}}, "required": ["model"]},
    "node": {"$anchor": "node", "properties": {"kids": {"items": {"$ref": "#node"}}},
             "unevaluatedProperties": {"type": "integer"}}
  },
  "allOf": [{"$ref": "#/$defs/base"}],
  "anyOf": [{"properties": {"a": {"type": "string"}}}, {"properties": {"b": true}, "required": ["b"]}],
  "if": {"properties": {"stream": {"const": true}}, "required": ["stream"]},
  "then": {"properties": {"stream_options": {"type": "object"}}},
  "dependentSchemas": {"tools": {"properties": {"tool_choice": true}}},
  "dependentRequired": {"tools": ["tool_choice"]},
  "properties": {
    "tools": {"prefixItems": [{"type": "string"}], "items": {"type": "object"},
              "contains": {"type": "object"}, "minContains": 0, "maxContains": 3,
              "unevaluatedItems": false},
    "tree": {"$ref": "#/$defs/node"},
    "list": {"contains": {"const": 1}, "unevaluatedItems": {"type": "string"}},
    "formats": {"properties": {
      "at": {"format": "date-time"}, "span": {"format": "duration"}, "mail": {"format": "email"},
      "site": {"format": "uri"}, "ref": {"format": "uri-reference"}, "ip": {"format": "ipv6"},
      "host": {"format": "hostname"}, "id": {"format": "uuid"}, "n": {"format": "int32"},
      "ptr": {"format": "relative-json-pointer"}, "raw": {"format": "byte"},
      "iri": {"format": "iri"}, "tpl": {"format": "uri-template"}, "re": {"format": "regex"},
      "idn": {"format": "idn-hostname"}, "imail": {"format": "idn-email"}}}
  },
  "unevaluatedProperties": false
})";

gatehouse::JsonSchema MustCompile(std::string_view text) {
  auto s = gatehouse::JsonSchema::Compile(boost::json::parse(text));
  if (!s) __builtin_trap();
  return *s;
}

const gatehouse::JsonSchema& Fixed() {
  static const gatehouse::JsonSchema schema = MustCompile(kSchema);
  return schema;
}

const gatehouse::JsonSchema& Fixed2020() {
  static const gatehouse::JsonSchema schema = MustCompile(kSchema2020);
  return schema;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (input.starts_with('S')) {
    boost::system::error_code ec;
    boost::json::parse_options options;
    options.max_depth = 32;
    auto doc = boost::json::parse(input.substr(1), ec, {}, options);
    if (ec) return 0;
    auto schema = gatehouse::JsonSchema::Compile(doc);
    if (schema && schema->IsValid(doc) != !schema->Validate(doc)) __builtin_trap();
    // Strict mode only refuses more: what it compiles, the drafts' own rules compile too.
    auto lax = gatehouse::JsonSchema::Compile(doc, {.strict = false});
    if (schema && !lax) __builtin_trap();
    if (lax && lax->IsValid(doc) != !lax->Validate(doc)) __builtin_trap();
    return 0;
  }
  const bool is_2020 = input.starts_with('2');
  if (is_2020) input.remove_prefix(1);
  const auto& schema = is_2020 ? Fixed2020() : Fixed();
  auto verdict = schema.ValidateBody(input);
  boost::system::error_code ec;
  boost::json::parse_options options;
  options.max_depth = gatehouse::kMaxSchemaBodyDepth;
  auto doc = boost::json::parse(input, ec, {}, options);
  if (ec) {
    if (verdict) __builtin_trap();  // not JSON can never pass
    return 0;
  }
  if (schema.IsValid(doc) != verdict.has_value()) __builtin_trap();
  if (!verdict && !verdict.error().pointer) __builtin_trap();
  return 0;
}

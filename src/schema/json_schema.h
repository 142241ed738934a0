// JSON Schema validation of request bodies at the edge, before they reach an upstream. The
// document's root "$schema" picks draft-07 (also without one), 2019-09 or 2020-12.
//
// A schema is compiled once, when the config is read, into a tree of nodes with its regular
// expressions built and its local $refs resolved, so that validating a body only walks that tree.
// The body is attacker-controlled and the schema is the operator's: everything that could make
// validation slow or unbounded for some body is settled at compile time or bounded here.
//  - `pattern` and `patternProperties` use RE2, which matches in linear time. ECMA-262 features
//    RE2 does not have (lookaround, backreferences) are refused when the schema is compiled.
//  - Recursion through $ref is bounded; a schema that recurses without descending into the
//    body is answered with a violation, never a stack overflow.
//  - $ref reaches only the schema's own document (JSON pointers, and $id names inside it).
//    Remote references are refused at compile time: the gateway fetches nothing.
//  - Strict mode (the default): keywords the drafts would ignore are refused at compile time, as
//    Ajv's strict mode does. An unknown keyword (a misspelt "requried") or, in draft-07, an
//    assertion beside $ref would otherwise pass bodies the operator meant to refuse. Keywords
//    named x-… are the operator's own and stay ignored. `format` is asserted (schema/formats.h),
//    and a format gatehouse cannot check is refused. Without strict, the drafts' rules apply:
//    unknown keywords are ignored and `format` is an annotation.
//  - A keyword that the document's dialect would ignore but a later draft asserts is refused at
//    compile time: ignoring "unevaluatedProperties": false would pass bodies meant to be refused.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json/value.hpp>
#include <tl/expected.hpp>

#include "core/error.h"

namespace gatehouse {

struct SchemaViolation {
  std::string pointer;  // RFC 6901 pointer into the body: "" is the whole document
  std::string message;  // what the schema asked for there, never the offending value itself
};

class JsonSchema {
 public:
  // A compile error names the schema location ("#/properties/model") and what is wrong there.
  struct CompileOptions {
    bool strict = true;
  };
  static tl::expected<JsonSchema, std::string> Compile(const boost::json::value& schema,
                                                       CompileOptions options);
  static tl::expected<JsonSchema, std::string> Compile(const boost::json::value& schema) {
    return Compile(schema, CompileOptions{});
  }

  // The first violation in document order of the schema's keywords, or none.
  std::optional<SchemaViolation> Validate(const boost::json::value& instance) const;
  bool IsValid(const boost::json::value& instance) const;

  // Parses and validates a request body: kInvalidArgument with `field` set to the pointer of the
  // first violation, or with a message saying the body is not JSON at all.
  Result<void> ValidateBody(std::string_view body) const;

  struct Impl;

 private:
  explicit JsonSchema(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// The deepest nesting a validated body may have.
inline constexpr std::size_t kMaxSchemaBodyDepth = 64;

}  // namespace gatehouse

#include "schema/json_schema.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace gatehouse {
namespace {

namespace json = boost::json;

// Debian's json-schema-test-suite (installed by scripts/install-deps): the official draft-07
// cases, every one of them run, none skipped.
constexpr const char* kSuiteDir = "/usr/share/json-schema-test-suite/tests/draft7";

json::value ReadJsonFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

JsonSchema MustCompile(std::string_view text) {
  auto schema = JsonSchema::Compile(json::parse(text));
  EXPECT_TRUE(schema) << schema.error();
  return std::move(*schema);
}

// Groups whose schema reaches outside its own document: the gateway fetches nothing, so these
// must be refused when the config is read, never validated against something else.
bool NeedsRemoteDocument(const std::string& file, const json::value& schema) {
  if (file.ends_with("/refRemote.json")) return true;
  std::string text = json::serialize(schema);
  return text.find("\"$ref\":\"http://json-schema.org/draft-07/schema") != std::string::npos;
}

TEST(JsonSchemaSuite, EveryDraft07CaseOfTheOfficialSuite) {
  ASSERT_TRUE(std::filesystem::is_directory(kSuiteDir))
      << kSuiteDir << " is missing: scripts/install-deps installs json-schema-test-suite";
  int cases = 0, refused_groups = 0;
  std::set<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(kSuiteDir)) {
    if (entry.path().extension() == ".json") files.insert(entry.path().string());
  }
  ASSERT_GT(files.size(), 30u);
  for (const auto& file : files) {
    const json::value groups = ReadJsonFile(file);
    for (const auto& group : groups.as_array()) {
      const auto& g = group.as_object();
      std::string where = file + ": " + std::string(g.at("description").as_string());
      // Not strict: the suite checks the drafts' own rules, which ignore unknown keywords and a
      // draft-07 $ref's siblings (JsonSchemaStrict below covers what strict mode refuses).
      auto schema = JsonSchema::Compile(g.at("schema"), {.strict = false});
      if (NeedsRemoteDocument(file, g.at("schema"))) {
        ASSERT_FALSE(schema) << where << ": a remote $ref must be refused";
        EXPECT_NE(schema.error().find("remote references are not fetched"), std::string::npos)
            << schema.error();
        ++refused_groups;
        continue;
      }
      ASSERT_TRUE(schema) << where << ": " << schema.error();
      for (const auto& test : g.at("tests").as_array()) {
        const auto& t = test.as_object();
        const bool expected = t.at("valid").as_bool();
        std::string what = where + " / " + std::string(t.at("description").as_string());
        EXPECT_EQ(schema->IsValid(t.at("data")), expected) << what;
        // The reporting path reaches the same verdict as the quick one.
        auto violation = schema->Validate(t.at("data"));
        EXPECT_EQ(!violation.has_value(), expected) << what;
        if (violation) {
          EXPECT_FALSE(violation->message.empty()) << what;
        }
        ++cases;
      }
    }
  }
  EXPECT_GT(cases, 380);
  // refRemote.json's groups and the two that $ref the draft-07 meta-schema by its URL.
  EXPECT_LE(refused_groups, 12);
}

constexpr std::string_view kChatSchema = R"({
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["model", "messages"],
  "additionalProperties": false,
  "properties": {
    "model": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]*$", "maxLength": 64},
    "messages": {
      "type": "array", "minItems": 1, "maxItems": 256,
      "items": {"$ref": "#/definitions/message"}
    },
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "max_tokens": {"type": "integer", "exclusiveMinimum": 0},
    "stream": {"type": "boolean"}
  },
  "definitions": {
    "message": {
      "type": "object",
      "required": ["role", "content"],
      "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": ["string", "null"], "maxLength": 100000}
      }
    }
  }
})";

TEST(JsonSchema, PointsAtTheFirstViolation) {
  JsonSchema schema = MustCompile(kChatSchema);
  auto check = [&](std::string_view body) {
    auto v = schema.Validate(json::parse(body));
    return v ? v->pointer + " | " + v->message : std::string("valid");
  };
  EXPECT_EQ(check(R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})"), "valid");
  EXPECT_EQ(check(R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"},
                      {"role":"king","content":"x"}]})"),
            "/messages/1/role | must be one of [\"system\",\"user\",\"assistant\",\"tool\"]");
  EXPECT_EQ(check(R"({"messages":[]})"), "/model | is required");
  EXPECT_EQ(check(R"({"model":"m","messages":[]})"), "/messages | must have at least 1 items");
  EXPECT_EQ(check(R"({"model":"m","messages":[{"role":"user"}]})"),
            "/messages/0/content | is required");
  EXPECT_EQ(check(R"({"model":"m","messages":[{"role":"user","content":7}]})"),
            "/messages/0/content | must be a string or null");
  EXPECT_EQ(check(R"({"model":"Bad Model","messages":[{"role":"user","content":""}]})"),
            "/model | must match the pattern ^[a-z0-9][a-z0-9.-]*$");
  EXPECT_EQ(check(R"({"model":"m","messages":[{"role":"user","content":""}],"temperature":3})"),
            "/temperature | must be at most 2");
  EXPECT_EQ(check(R"({"model":"m","messages":[{"role":"user","content":""}],"max_tokens":0})"),
            "/max_tokens | must be greater than 0");
  EXPECT_EQ(check(R"({"model":"m","messages":[{"role":"user","content":""}],"max_tokens":1.5})"),
            "/max_tokens | must be an integer");
  EXPECT_EQ(check(R"({"model":"m","messages":[{"role":"user","content":""}],"a/b~c":1})"),
            "/a~1b~0c | is not an allowed property");
  EXPECT_EQ(check(R"([1,2])"), " | must be an object");
}

TEST(JsonSchema, ValidateBodyGivesInvalidRequestWithThePointer) {
  JsonSchema schema = MustCompile(kChatSchema);
  auto bad = schema.ValidateBody(R"({"model":"m","messages":[{"role":"x","content":""}]})");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
  ASSERT_TRUE(bad.error().pointer);
  EXPECT_EQ(*bad.error().pointer, "/messages/0/role");
  EXPECT_NE(bad.error().message.find("/messages/0/role"), std::string::npos);

  auto not_json = schema.ValidateBody(R"({"model":)");
  ASSERT_FALSE(not_json);
  EXPECT_EQ(not_json.error().message, "request body is not valid JSON");

  std::string deep(200, '[');
  deep += std::string(200, ']');
  EXPECT_FALSE(schema.ValidateBody(deep));  // deeper than the parser allows: refused, no crash
  EXPECT_TRUE(schema.ValidateBody(R"({"model":"m","messages":[{"role":"user","content":null}]})"));
}

TEST(JsonSchema, ViolationMessagesNeverQuoteTheBody) {
  JsonSchema schema = MustCompile(R"({"properties":{"password":{"maxLength":3}}})");
  auto v = schema.Validate(json::parse(R"({"password":"hunter2-secret"})"));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->message.find("hunter2"), std::string::npos);
}

TEST(JsonSchema, RefusesWhatItCannotHonourWhenCompiled) {
  auto compile_error = [](std::string_view text) {
    auto s = JsonSchema::Compile(json::parse(text));
    return s ? std::string("compiled") : s.error();
  };
  EXPECT_NE(compile_error(R"j({"properties":{"a":{"pattern":"^(?=x)"}}})j")
                .find("#/properties/a/pattern: pattern \"^(?=x)\" is not supported"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"$schema":"https://json-schema.org/draft/2021-01/schema"})")
                .find("draft-07, 2019-09 and 2020-12"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"$ref":"#/definitions/missing"})").find("#/$ref"), std::string::npos);
  EXPECT_NE(compile_error(R"({"$ref":"https://example.com/schema.json"})")
                .find("remote references are not fetched"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"type":"text"})").find("#/type"), std::string::npos);
  EXPECT_NE(compile_error(R"({"minLength":-1})").find("#/minLength"), std::string::npos);
  EXPECT_NE(compile_error(R"({"multipleOf":0})").find("#/multipleOf"), std::string::npos);
  EXPECT_NE(compile_error(R"({"anyOf":[]})").find("#/anyOf"), std::string::npos);
  EXPECT_NE(compile_error(R"(7)").find("object or a boolean"), std::string::npos);
}

TEST(JsonSchema, ARefCycleThatNeverDescendsIsAnsweredNotOverflowed) {
  JsonSchema schema = MustCompile(R"({"definitions":{"a":{"$ref":"#/definitions/b"},
                                      "b":{"$ref":"#/definitions/a"}},
                                      "$ref":"#/definitions/a"})");
  auto v = schema.Validate(json::parse("{}"));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->message, "the route's schema recurses too deeply");
  EXPECT_FALSE(schema.IsValid(json::parse("{}")));
}

TEST(JsonSchema, NestedCombinatorsCannotBeMadeToWorkWithoutBound) {
  // Every level tries both branches, each of which descends: 2^depth evaluations unbounded.
  JsonSchema schema = MustCompile(R"({"anyOf":[{"items":{"$ref":"#"},"maxItems":0},
                                               {"items":{"$ref":"#"}}]})");
  std::string body;
  for (int i = 0; i < 30; ++i) body += '[';
  for (int i = 0; i < 30; ++i) body += ']';
  auto v = schema.Validate(json::parse(body));
  // Either it finishes within the step budget or it says the body was too complex; it ends.
  if (v) {
    EXPECT_EQ(v->message, "the request body is too complex to check");
  }
}

TEST(JsonSchema, UniqueItemsOnALongArrayIsNotQuadratic) {
  JsonSchema schema = MustCompile(R"({"uniqueItems":true})");
  std::string body = "[";
  for (int i = 0; i < 200'000; ++i) body += std::to_string(i) + ",";
  EXPECT_TRUE(schema.IsValid(json::parse(body.substr(0, body.size() - 1) + "]")));
  body += "1.0]";  // equal to 1 as a JSON number
  auto v = schema.Validate(json::parse(body));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->pointer, "/200000");
}

TEST(JsonSchema, IdsAndPlainNameFragmentsResolveInsideTheDocument) {
  JsonSchema schema = MustCompile(R"({
    "$id": "https://api.example.com/schemas/root.json",
    "properties": {
      "a": {"$ref": "item.json"},
      "b": {"$ref": "#positive"}
    },
    "definitions": {
      "item": {"$id": "item.json", "type": "string"},
      "pos": {"$id": "#positive", "minimum": 1}
    }
  })");
  EXPECT_TRUE(schema.IsValid(json::parse(R"({"a":"x","b":2})")));
  EXPECT_EQ(schema.Validate(json::parse(R"({"a":1})"))->pointer, "/a");
  EXPECT_EQ(schema.Validate(json::parse(R"({"b":0})"))->pointer, "/b");
}

constexpr const char* kFormatSuiteDir =
    "/usr/share/json-schema-test-suite/tests/draft7/optional/format";

// The official suite's optional format cases, through a strict route schema: gatehouse checks
// every format the suite has, and agrees with every case.
TEST(JsonSchemaFormats, TheOfficialSuitesFormatCases) {
  ASSERT_TRUE(std::filesystem::is_directory(kFormatSuiteDir)) << kFormatSuiteDir;
  int cases = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kFormatSuiteDir)) {
    const std::string name = entry.path().stem().string();
    const json::value groups = ReadJsonFile(entry.path());
    for (const auto& group : groups.as_array()) {
      const auto& g = group.as_object();
      auto schema = JsonSchema::Compile(g.at("schema"));
      ASSERT_TRUE(schema) << name << ": " << schema.error();
      for (const auto& test : g.at("tests").as_array()) {
        const auto& t = test.as_object();
        EXPECT_EQ(schema->IsValid(t.at("data")), t.at("valid").as_bool())
            << name << " / " << t.at("description").as_string() << ": "
            << json::serialize(t.at("data"));
        ++cases;
      }
    }
  }
  EXPECT_GT(cases, 115);
}

// --- 2019-09 and 2020-12 -------------------------------------------------------------------
// Debian ships the official suite only up to draft-07, so these cases are written here, one
// group per keyword, each with bodies on both sides of the line.

struct Case {
  const char* data;
  bool valid;
};

void ExpectVerdicts(std::string_view schema_text, std::initializer_list<Case> cases,
                    JsonSchema::CompileOptions options = {}) {
  auto schema = JsonSchema::Compile(json::parse(schema_text), options);
  ASSERT_TRUE(schema) << schema_text << ": " << schema.error();
  for (const auto& c : cases) {
    const json::value data = json::parse(c.data);
    EXPECT_EQ(schema->IsValid(data), c.valid) << schema_text << " with " << c.data;
    auto violation = schema->Validate(data);
    EXPECT_EQ(!violation.has_value(), c.valid) << schema_text << " with " << c.data;
  }
}

#define GH_2020 "\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
#define GH_2019 "\"$schema\":\"https://json-schema.org/draft/2019-09/schema\","

TEST(JsonSchema2020, PrefixItemsThenItems) {
  ExpectVerdicts(R"({)" GH_2020 R"("prefixItems":[{"type":"string"},{"type":"integer"}]})",
                 {{R"(["a",1])", true},
                  {R"(["a"])", true},
                  {R"(["a",1,null])", true},
                  {R"([1,"a"])", false},
                  {R"({"0":1})", true}});
  ExpectVerdicts(R"({)" GH_2020 R"("prefixItems":[{"type":"string"}],"items":false})",
                 {{R"(["a"])", true}, {R"([])", true}, {R"(["a","b"])", false}});
  ExpectVerdicts(R"({)" GH_2020 R"("items":{"type":"integer"}})",
                 {{R"([1,2,3])", true}, {R"([1,"2"])", false}});
}

TEST(JsonSchema2020, TheDraft07FormsOfItemsKeepTheirMeaningIn201909) {
  ExpectVerdicts(R"({)" GH_2019 R"("items":[{"type":"string"}],"additionalItems":false})",
                 {{R"(["a"])", true}, {R"(["a","b"])", false}});
}

TEST(JsonSchema2020, MinAndMaxContains) {
  ExpectVerdicts(R"({)" GH_2020 R"("contains":{"const":1},"minContains":2,"maxContains":3})",
                 {{R"([1,1])", true},
                  {R"([1,1,1,2])", true},
                  {R"([1,2])", false},
                  {R"([1,1,1,1])", false},
                  {R"("not an array")", true}});
  // minContains 0 makes contains hold for any array, even an empty one.
  ExpectVerdicts(R"({)" GH_2020 R"("contains":{"const":1},"minContains":0})",
                 {{R"([])", true}, {R"([2])", true}});
  ExpectVerdicts(R"({)" GH_2020 R"("contains":{"const":1},"minContains":0,"maxContains":1})",
                 {{R"([])", true}, {R"([1,1])", false}});
}

TEST(JsonSchema2020, DependentRequiredAndDependentSchemas) {
  ExpectVerdicts(R"({)" GH_2020 R"("dependentRequired":{"card":["billing_address"]}})",
                 {{R"({})", true},
                  {R"({"card":1,"billing_address":"x"})", true},
                  {R"({"card":1})", false},
                  {R"({"billing_address":"x"})", true}});
  ExpectVerdicts(R"({)" GH_2020
                 R"("dependentSchemas":{"stream":{"properties":{"n":{"const":1}}}}})",
                 {{R"({"stream":true,"n":1})", true},
                  {R"({"stream":true,"n":2})", false},
                  {R"({"n":2})", true}});
}

TEST(JsonSchema2020, DefsAnchorsAndRefBesideOtherKeywords) {
  ExpectVerdicts(R"({)" GH_2020 R"("$defs":{"id":{"$anchor":"ident","type":"string"}},
                   "properties":{"a":{"$ref":"#/$defs/id"},"b":{"$ref":"#ident"}}})",
                 {{R"({"a":"x","b":"y"})", true}, {R"({"a":1})", false}, {R"({"b":1})", false}});
  // From 2019-09 on, $ref applies together with its siblings (in draft-07 it replaces them).
  ExpectVerdicts(R"({)" GH_2020 R"("$defs":{"s":{"type":"string"}},"$ref":"#/$defs/s",
                   "maxLength":3})",
                 {{R"("abc")", true}, {R"("abcd")", false}, {R"(1)", false}});
  ExpectVerdicts(R"({"definitions":{"s":{"type":"string"}},"$ref":"#/definitions/s",
                   "maxLength":3})",
                 {{R"("abcd")", true}}, {.strict = false});
}

// Strict mode (the default) refuses, when the schema is loaded, the keywords that the drafts
// would have ignored: each one is an assertion the operator wrote that would never apply.
TEST(JsonSchemaStrict, RefusesKeywordsTheDraftsWouldIgnore) {
  auto refused = [](std::string_view text) {
    auto s = JsonSchema::Compile(json::parse(text));
    EXPECT_FALSE(s) << text;
    return s ? std::string() : s.error();
  };
  // A misspelling is named, with the keyword it probably meant.
  std::string typo = refused(R"({"type":"object","properties":{"a":{"type":"string"}},
                                 "requried":["a"]})");
  EXPECT_NE(typo.find("#/requried: is not a JSON Schema draft-07 keyword"), std::string::npos)
      << typo;
  EXPECT_NE(typo.find(R"(did you mean "required"?)"), std::string::npos) << typo;
  EXPECT_NE(refused(R"({"properties":{"a":{"MaxLength":3}}})").find(R"(#/properties/a/MaxLength)"),
            std::string::npos);
  EXPECT_NE(refused(R"({"properties":{"a":{"MaxLength":3}}})").find(R"("maxLength")"),
            std::string::npos);
  // OpenAPI 3.0's dialect is not JSON Schema: "nullable" would be ignored, so it is refused.
  EXPECT_NE(refused(R"({"type":"string","nullable":true})").find("#/nullable"), std::string::npos);
  EXPECT_EQ(refused(R"({"type":"string","zzzzzzzzzz":1})").find("did you mean"), std::string::npos);
  // In 2020-12 as well, deep inside applicators.
  EXPECT_NE(refused(R"({)" GH_2020 R"("allOf":[{"prefixItems":[{"tpye":"string"}]}]})")
                .find("#/allOf/0/prefixItems/0/tpye: is not a JSON Schema 2020-12 keyword"),
            std::string::npos);
  // Draft-07: an assertion beside $ref never applies.
  std::string beside = refused(R"({"definitions":{"s":{"type":"string"}},
                                   "properties":{"a":{"$ref":"#/definitions/s","maxLength":3}}})");
  EXPECT_NE(beside.find("#/properties/a/maxLength: would be ignored"), std::string::npos) << beside;
  EXPECT_NE(beside.find("allOf"), std::string::npos) << beside;
}

TEST(JsonSchemaStrict, AcceptsAnnotationsAndKeywordsOfYourOwn) {
  // Annotations of every draft, x- keywords, and annotations beside a draft-07 $ref.
  ExpectVerdicts(R"({"$comment":"c","title":"t","description":"d","default":{},"examples":[{}],
                     "definitions":{"s":{"type":"string","readOnly":true,"deprecated":true,
                                         "contentMediaType":"text/plain","format":"email"}},
                     "x-owner":"payments","x-rules":{"requried":"not a schema: not checked"},
                     "properties":{"a":{"$ref":"#/definitions/s","description":"the a",
                                        "x-note":1}}})",
                 {{R"({"a":"a@example.com"})", true}, {R"({"a":1})", false}});
  // A property *named* like a misspelt keyword is a name, not a keyword.
  ExpectVerdicts(R"({"properties":{"requried":{"type":"integer"}},"required":["requried"]})",
                 {{R"({"requried":1})", true}, {R"({})", false}});
  // Without strict mode, the drafts' rules: unknown keywords and a $ref's siblings are ignored.
  ExpectVerdicts(R"({"type":"object","requried":["a"]})", {{R"({})", true}}, {.strict = false});
}

TEST(JsonSchema2020, UnevaluatedPropertiesSeesEveryInPlaceApplicator) {
  // The usual reason for the keyword: additionalProperties cannot see through allOf.
  ExpectVerdicts(R"({)" GH_2020 R"("$defs":{"base":{"properties":{"model":{"type":"string"}}}},
                   "allOf":[{"$ref":"#/$defs/base"}],
                   "properties":{"stream":{"type":"boolean"}},
                   "unevaluatedProperties":false})",
                 {{R"({"model":"m","stream":true})", true},
                  {R"({"model":"m","temperature":1})", false},
                  {R"([])", true}});
  // anyOf: every branch that passes counts, failing branches count for nothing.
  ExpectVerdicts(R"({)" GH_2020 R"("anyOf":[
                     {"properties":{"a":{"const":1}},"required":["a"]},
                     {"properties":{"b":{"const":2}},"required":["b"]}],
                   "unevaluatedProperties":false})",
                 {{R"({"a":1})", true}, {R"({"a":1,"b":2})", true}, {R"({"a":1,"b":3})", false}});
  // oneOf and if/then/else; "not" keeps nothing.
  ExpectVerdicts(R"({)" GH_2020 R"("oneOf":[{"properties":{"a":true},"required":["a"]},
                                            {"properties":{"b":true},"required":["b"]}],
                   "unevaluatedProperties":false})",
                 {{R"({"a":1})", true}, {R"({"a":1,"c":1})", false}});
  ExpectVerdicts(R"({)" GH_2020
                 R"("if":{"properties":{"kind":{"const":"chat"}},"required":["kind"]},
                   "then":{"properties":{"messages":true}},
                   "else":{"properties":{"prompt":true}},
                   "unevaluatedProperties":false})",
                 {{R"({"kind":"chat","messages":[]})", true},
                  {R"({"kind":"chat","prompt":""})", false},
                  {R"({"kind":"text","prompt":""})", false},
                  {R"({"prompt":""})", true}});
  ExpectVerdicts(R"({)" GH_2020 R"("not":{"not":{"properties":{"a":true}}},
                   "unevaluatedProperties":false})",
                 {{R"({"a":1})", false}, {R"({})", true}});
  ExpectVerdicts(R"({)" GH_2020 R"("dependentSchemas":{"a":{"properties":{"b":true}}},
                   "properties":{"a":true},"unevaluatedProperties":false})",
                 {{R"({"a":1,"b":1})", true}, {R"({"b":1})", false}});
}

TEST(JsonSchema2020, UnevaluatedPropertiesAsASchemaAndNested) {
  ExpectVerdicts(R"({)" GH_2020 R"("properties":{"a":true},
                   "unevaluatedProperties":{"type":"string","maxLength":2}})",
                 {{R"({"a":123,"b":"xy"})", true}, {R"({"b":"xyz"})", false}});
  // An inner unevaluatedProperties evaluates everything it was applied to...
  ExpectVerdicts(R"({)" GH_2020 R"("allOf":[{"unevaluatedProperties":true}],
                   "unevaluatedProperties":false})",
                 {{R"({"a":1})", true}});
  // ...but a sibling branch of allOf does not see what its cousin evaluated.
  ExpectVerdicts(R"({)" GH_2020 R"("allOf":[{"properties":{"a":true}},
                                            {"unevaluatedProperties":false}]})",
                 {{R"({"a":1})", false}, {R"({})", true}});
  // Properties of nested objects are their own business.
  ExpectVerdicts(R"({)" GH_2020 R"("properties":{"inner":{"properties":{"x":true}}},
                   "unevaluatedProperties":false})",
                 {{R"({"inner":{"x":1,"y":2}})", true}, {R"({"inner":{},"y":2})", false}});
  // A recursive schema: every level closes itself.
  ExpectVerdicts(R"({)" GH_2020
                 R"("$defs":{"node":{"properties":{"children":{"items":{"$ref":"#/$defs/node"}},
                   "name":{"type":"string"}},"unevaluatedProperties":false}},"$ref":"#/$defs/node"})",
                 {{R"({"name":"a","children":[{"name":"b","children":[]}]})", true},
                  {R"({"name":"a","children":[{"name":"b","extra":1}]})", false}});
}

TEST(JsonSchema2020, UnevaluatedItems) {
  ExpectVerdicts(R"({)" GH_2020 R"("prefixItems":[{"type":"string"}],"unevaluatedItems":false})",
                 {{R"(["a"])", true}, {R"(["a","b"])", false}, {R"({})", true}});
  ExpectVerdicts(R"({)" GH_2020 R"("allOf":[{"prefixItems":[true,true]}],
                   "unevaluatedItems":{"type":"integer"}})",
                 {{R"(["a","b",3])", true}, {R"(["a","b","c"])", false}});
  // 2020-12: items that matched contains are evaluated.
  ExpectVerdicts(R"({)" GH_2020
                 R"("contains":{"type":"string"},"unevaluatedItems":{"type":"integer"}})",
                 {{R"(["a",1,"b"])", true}, {R"(["a",1.5])", false}});
  // 2019-09: contains leaves items unevaluated (its unevaluatedItems reads items and
  // additionalItems only; 2020-12 added contains).
  ExpectVerdicts(R"({)" GH_2019 R"("contains":{"type":"string"},"unevaluatedItems":false})",
                 {{R"(["a"])", false}, {R"([])", false}});
  ExpectVerdicts(R"({)" GH_2019 R"("items":[true],"additionalItems":{"type":"integer"},
                   "unevaluatedItems":false})",
                 {{R"(["x",1,2])", true}, {R"(["x","y"])", false}});
  const std::string error_pointer = [] {
    auto s = JsonSchema::Compile(json::parse(R"({)" GH_2020 R"("unevaluatedItems":false})"));
    auto v = s->Validate(json::parse("[1,2]"));
    return v ? v->pointer + " " + v->message : std::string("valid");
  }();
  EXPECT_EQ(error_pointer, "/0 is not an allowed item");
}

TEST(JsonSchema2020, RefusesWhatADocumentCannotMean) {
  auto compile_error = [](std::string_view text) {
    auto s = JsonSchema::Compile(json::parse(text));
    return s ? std::string("compiled") : s.error();
  };
  // A later keyword in a draft-07 document would be ignored by draft-07 and so fail open.
  EXPECT_EQ(compile_error(R"({"properties":{"a":{"unevaluatedProperties":false}}})"),
            "#/properties/a/unevaluatedProperties: is a JSON Schema 2019-09 keyword, which this "
            "draft-07 document cannot use: declare \"$schema\": "
            "\"https://json-schema.org/draft/2019-09/schema\" at its root");
  EXPECT_NE(compile_error(R"({)" GH_2019 R"("prefixItems":[true]})").find("2020-12 keyword"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({)" GH_2020 R"("items":[true]})").find("prefixItems"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({)" GH_2020 R"("additionalItems":false})").find("#/additionalItems"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({)" GH_2020 R"("$dynamicRef":"#x"})").find("use $ref"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({)" GH_2019 R"("$recursiveRef":"#"})").find("use $ref"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({)" GH_2020 R"("$anchor":"1x"})").find("plain name"),
            std::string::npos);
  EXPECT_NE(
      compile_error(R"({)" GH_2020
                    R"("properties":{"a":{"$schema":"http://json-schema.org/draft-07/schema#"}}})")
          .find("#/properties/a/$schema: must name the dialect of the whole document, "
                "2020-12"),
      std::string::npos);
  EXPECT_NE(
      compile_error(R"({)" GH_2020 R"("minContains":-1,"contains":true})").find("#/minContains"),
      std::string::npos);
}

}  // namespace
}  // namespace gatehouse

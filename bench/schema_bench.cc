// JSON Schema validation of request bodies (issue 6, part 7): what a schema route adds to a
// request. The peer in the same run is parsing the body alone with Boost.JSON, which any
// gateway that looks inside a JSON body pays; validation's cost is the ratio over it.
#include <benchmark/benchmark.h>

#include <string>

#include <boost/json/parse.hpp>

#include "schema/json_schema.h"

namespace gh = gatehouse;

namespace {

constexpr std::string_view kChatSchema = R"({
  "type": "object",
  "required": ["model", "messages"],
  "additionalProperties": false,
  "properties": {
    "model": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]*$", "maxLength": 64},
    "messages": {"type": "array", "minItems": 1, "maxItems": 1024,
                 "items": {"$ref": "#/definitions/message"}},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "max_tokens": {"type": "integer", "exclusiveMinimum": 0},
    "stream": {"type": "boolean"},
    "tools": {"type": "array", "items": {"type": "object", "required": ["type"]}}
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

// A conversation of `turns` messages of about 200 bytes each.
std::string ChatBody(int turns) {
  std::string body = R"({"model":"gpt-4o-mini","temperature":0.7,"max_tokens":512,"stream":true,)"
                     R"("messages":[)";
  for (int i = 0; i < turns; ++i) {
    if (i > 0) body += ',';
    body += R"({"role":")";
    body += i == 0 ? "system" : (i % 2 ? "user" : "assistant");
    body += R"(","content":")" + std::string(180, static_cast<char>('a' + i % 26)) + R"("})";
  }
  body += "]}";
  return body;
}

void BM_ParseOnly(benchmark::State& state) {
  const std::string body = ChatBody(static_cast<int>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(boost::json::parse(body));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ParseOnly)->Arg(4)->Arg(300);

void BM_ParseAndValidate(benchmark::State& state) {
  const auto schema = *gh::JsonSchema::Compile(boost::json::parse(kChatSchema));
  const std::string body = ChatBody(static_cast<int>(state.range(0)));
  if (!schema.ValidateBody(body)) state.SkipWithError("the body should match");
  for (auto _ : state) benchmark::DoNotOptimize(schema.ValidateBody(body));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_ParseAndValidate)->Arg(4)->Arg(300);

}  // namespace

BENCHMARK_MAIN();

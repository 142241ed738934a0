#include "schema/formats.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

#include "schema/json_schema.h"

namespace gatehouse {
namespace {

namespace json = boost::json;

struct FormatCase {
  std::string text;
  bool valid;
};

void Expect(const char* format, std::initializer_list<FormatCase> cases) {
  auto f = FormatNamed(format);
  ASSERT_TRUE(f) << format;
  for (const auto& c : cases) {
    EXPECT_EQ(MatchesFormat(*f, std::string_view(c.text)), c.valid) << format << ": " << c.text;
  }
}

TEST(JsonSchemaFormats, DatesAndTimesFollowRfc3339) {
  Expect("date", {{"2024-02-29", true},
                  {"2023-02-29", false},  // not a leap year
                  {"1900-02-29", false},
                  {"2000-02-29", true},
                  {"2024-04-31", false},
                  {"2024-13-01", false},
                  {"2024-00-10", false},
                  {"2024-1-01", false},
                  {"2024-01-01T00:00:00Z", false},
                  {"２０２４-01-01", false}});  // only ASCII digits
  Expect("time", {{"23:59:60Z", true},          // a leap second, at 23:59 UTC only
                  {"22:59:60Z", false},
                  {"01:29:60+01:30", true},
                  {"23:29:60-00:30", true},
                  {"12:00:00", false},  // the offset is required
                  {"12:00:00.Z", false},
                  {"12:00:00.5z", true},
                  {"24:00:00Z", false},
                  {"12:00:00+24:00", false},
                  {"12:00:00+0100", false}});
  Expect("date-time", {{"2024-06-19T08:30:06.283185Z", true},
                       {"2024-06-19 08:30:06Z", false},
                       {"2024-06-19T08:30:06", false}});
  Expect("duration", {{"P4DT12H30M5S", true},
                      {"P1Y2M3D", true},
                      {"PT0.5S", false},  // RFC 3339's grammar has whole numbers only
                      {"P1Y1D", false},   // units contiguous: Y, M, D
                      {"P2W", true},
                      {"P1W1D", false},
                      {"PT1H1S", false},
                      {"P", false},
                      {"PT", false},
                      {"P1DT", false},
                      {"P1H", false},
                      {"PT36H", true},
                      {"1D", false}});
}

TEST(JsonSchemaFormats, NetworkNamesAndAddresses) {
  Expect("ipv4", {{"192.168.0.1", true},
                  {"0.0.0.0", true},
                  {"192.168.00.1", false},
                  {"1.2.3", false},
                  {"1.2.3.4.", false},
                  {"1.2.3.256", false},
                  {"1.2.3.4 ", false}});
  Expect("ipv6", {{"::1", true},
                  {"2001:db8::7", true},
                  {"::ffff:192.0.2.1", true},
                  {"1::2::3", false},
                  {"fe80::1%eth0", false},
                  {"12345::", false}});
  Expect("hostname", {{"www.example.com", true},
                      {"a", true},
                      {"a..b", false},
                      {"-a.b", false},
                      {"a-.b", false},
                      {std::string(63, 'a').c_str(), true},
                      {std::string(64, 'a').c_str(), false},
                      {"exa mple.com", false}});
  Expect("email", {{"joe.bloggs@example.com", true},
                   {"a+tag@sub.example.org", true},
                   {"\"john doe\"@example.com", true},
                   {"\"unterminated@example.com", false},
                   {"a..b@example.com", false},
                   {".a@example.com", false},
                   {"a.@example.com", false},
                   {"@example.com", false},
                   {"a@", false},
                   {"a@[192.0.2.1]", true},
                   {"a@[IPv6:2001:db8::1]", true},
                   {"a@[300.0.0.1]", false},
                   {"a@b@example.com", false}});
}

TEST(JsonSchemaFormats, InternationalHostNamesAndAddresses) {
  Expect("idn-hostname", {{"bücher.example", true},
                          {"실례.테스트", true},
                          {"xn--bcher-kva.example", true},  // an A-label that decodes
                          {"example.com", true},
                          {"xn--bcher-xxx.example", false},  // one that does not
                          {"Bücher.example", false},         // upper case is not IDNA2008
                          {"\u302e실례.테스트", false},      // a leading combining mark
                          {"a\u200db.example", false},       // ZWJ outside its context
                          {"\u0660\u0663.example", false},   // digits breaking the bidi rule
                          {"-bücher.example", false},
                          {"bü--cher.example", false},  // characters 3 and 4, not bytes
                          {"büc--her.example", true},
                          {"ab--cd.example", false},  // reserved for A-labels' xn--
                          {"a.b", true},
                          {"bücher..example", false},
                          {std::string(64, 'a') + ".example", false},
                          {"", false}});
  Expect("idn-email", {{"用户@例子.广告", true},
                       {"josé@bücher.example", true},
                       {"plain@example.com", true},
                       {"\"quoted ü\"@example.com", true},
                       {"a@[192.0.2.1]", true},
                       {"josé@-bücher.example", false},
                       {"josé.@example.com", false},
                       {"no-at-sign", false},
                       {std::string(65, 'a') + "@example.com", false}});
  // The plain formats stay ASCII.
  Expect("email", {{"josé@example.com", false}});
  Expect("hostname", {{"bücher.example", false}});
}

TEST(JsonSchemaFormats, IdentifiersAndPointers) {
  Expect("uuid", {{"2eb8aa08-aa98-11ea-b4aa-73b441d16380", true},
                  {"2EB8AA08-AA98-11EA-B4AA-73B441D16380", true},
                  {"2eb8aa08aa9811eab4aa73b441d16380", false},
                  {"2eb8aa08-aa98-11ea-b4aa-73b441d1638", false},
                  {"2eb8aa08-aa98-11ea-b4aa-73b441d1638g", false}});
  Expect("uri", {{"https://example.com/a?b=c#d", true},
                 {"https://[2001:db8::1]:8443/", true},
                 {"https://[2001:db8::1/", false},
                 {"https://example.com:80a/", false},
                 {"https://example.com/%zz", false},
                 {"1http://example.com", false},
                 {"https://exa mple.com", false}});
  Expect("uri-reference", {{"../a/b", true}, {"?q", true}, {"a:b/c", true}, {"%", false}});
  Expect("relative-json-pointer", {{"0", true}, {"01", false}, {"2#", true}, {"1/a~2", false}});
  Expect("byte", {{"", true}, {"aGk=", true}, {"aGk", false}, {"a===", false}, {"aG!=", false}});
}

TEST(JsonSchemaFormats, IrisTemplatesAndPatterns) {
  Expect("iri", {{"https://bücher.example/straße?q=größe#teil", true},
                 {"https://example.com/plain", true},
                 {"/relative/only", false},
                 {"https://exa mple.com/", false},  // a space is no more allowed than in a URI
                 {"https://example.com/%zz", false}});
  Expect("iri-reference", {{"/über/uns", true}, {"#fragmänt", true}, {"a\\b", false}});
  Expect("uri-template", {{"https://api.example/{version}/users{/id*}{?fields,limit}", true},
                          {"/search{?q:30}", true},
                          {"{+path}/here{#section}", true},
                          {"{var.sub}{x%20y}", true},
                          {"/no/expressions", true},
                          {"/open/{brace", false},
                          {"/close}/brace", false},
                          {"/{}", false},     // an expression names a variable
                          {"/{a,}", false},   // so does each varspec
                          {"/{q:0}", false},  // a prefix is 1 to 9999
                          {"/{q:10000}", false},
                          {"/{a..b}", false},
                          {"/{a b}", false},
                          {"/{=reserved}", false},  // operators RFC 6570 keeps for later
                          {"/a<b", false}});
  Expect("regex", {{"^[a-z]+(-[a-z]+)*$", true},
                   {"\\d{3}", true},
                   {"(unclosed", false},
                   {"(?=lookahead)", false},  // what `pattern` refuses too (RE2)
                   {"(a)\\1", false}});
}

TEST(JsonSchemaFormats, OpenApisIntegerFormatsBoundNumbers) {
  auto int32 = JsonSchema::Compile(json::parse(R"({"format":"int32"})"));
  ASSERT_TRUE(int32);
  EXPECT_TRUE(int32->IsValid(json::parse("2147483647")));
  EXPECT_FALSE(int32->IsValid(json::parse("2147483648")));
  EXPECT_TRUE(int32->IsValid(json::parse("-2147483648")));
  EXPECT_FALSE(int32->IsValid(json::parse("1.5")));
  EXPECT_TRUE(int32->IsValid(json::parse("7.0")));
  EXPECT_TRUE(int32->IsValid(json::parse(R"("a string: not a number, so not checked")")));
  auto int64 = JsonSchema::Compile(json::parse(R"({"format":"int64"})"));
  ASSERT_TRUE(int64);
  EXPECT_TRUE(int64->IsValid(json::parse("9223372036854775807")));
  EXPECT_FALSE(int64->IsValid(json::parse("9223372036854775808")));
  EXPECT_FALSE(int64->IsValid(json::parse("1e300")));
}

TEST(JsonSchemaFormats, StrictAssertsAndNonStrictAnnotates) {
  const auto schema = json::parse(R"({"properties":{"email":{"type":"string","format":"email"}}})");
  auto strict = JsonSchema::Compile(schema);
  ASSERT_TRUE(strict);
  auto v = strict->Validate(json::parse(R"({"email":"not-an-address"})"));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->pointer, "/email");
  EXPECT_EQ(v->message, "must be a valid email");
  auto lax = JsonSchema::Compile(schema, {.strict = false});
  ASSERT_TRUE(lax);
  EXPECT_TRUE(lax->IsValid(json::parse(R"({"email":"not-an-address"})")));
  // A format gatehouse cannot check is refused in strict mode, and an annotation otherwise.
  auto unknown = JsonSchema::Compile(json::parse(R"({"format":"phone"})"));
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().find("#/format: \"phone\" is not a format gatehouse checks"),
            std::string::npos)
      << unknown.error();
  EXPECT_TRUE(JsonSchema::Compile(json::parse(R"({"format":"phone"})"), {.strict = false}));
  // Beside a draft-07 $ref, format would never run: refused like any other assertion there.
  EXPECT_FALSE(JsonSchema::Compile(
      json::parse(R"({"definitions":{"s":{}},"$ref":"#/definitions/s","format":"email"})")));
}

}  // namespace
}  // namespace gatehouse

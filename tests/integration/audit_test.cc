// The audit log end to end, on the real binary (SQLite, and PostgreSQL with
// GATEHOUSE_TEST_STORAGE=postgres): decisions and changes appear with who, what and from where;
// reading needs audit:read; export streams; verify and `gatehouse audit verify` find a direct
// edit; key usage comes from the pipeline; and after kill -9 under load, every request that got
// an answer has its event on disk.
#include <openssl/sha.h>
#include <signal.h>

#include <boost/json.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "core/signing.h"
#include "integration/fixture.h"
#include "store/postgres/pg_store.h"
#include "store/sqlite/sqlite_store.h"

namespace gatehouse::testing {
namespace {

namespace json = boost::json;

class AuditTest : public GatewayFixture {
 protected:
  json::array Events(const std::string& query = "") {
    auto r = Call("GET", "/v1/orgs/" + org_ + "/audit?limit=500" + query, key_);
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body).at("events").as_array();
  }

  static const json::object* Find(const json::array& events, const std::string& request_id) {
    for (const auto& e : events) {
      if (e.at("request_id").as_string() == request_id.c_str()) return &e.as_object();
    }
    return nullptr;
  }

  // Edits one stored event directly in the database, as someone with database access would.
  void TamperWithEvent(std::int64_t seq) {
    std::string sql = "UPDATE " + std::string(OnPostgres() ? "gatehouse." : "") +
                      "audit_events SET actor = 'key_forged' WHERE org_id = '" + org_ +
                      "' AND seq = " + std::to_string(seq);
    if (OnPostgres()) {
      postgres_->Sql(sql, "postgres");
    } else {
      int status = 0;
      std::string out =
          RunCommand({"/usr/bin/sqlite3", dir_.path() + "/data/gatehouse.db", sql}, &status);
      ASSERT_EQ(status, 0) << out;
    }
  }

  std::unique_ptr<Store> OpenStore() {
    if (OnPostgres()) return std::move(*PgStore::Open(storage_, 1));
    return std::move(*SqliteStore::Open(dir_.path() + "/data/gatehouse.db", 1));
  }

  // kill -9 at an arbitrary moment under load: every request that received an answer must have
  // its event on disk (in the journal, if the store did not have it yet), and, once `gatehouse
  // audit verify` or the next start has replayed the journal, in the log exactly once, with the
  // chain intact.
  void KillNineUnderLoadLosesNoAnsweredRequest() {
    std::string reader = NewKey(R"(["read:findings"])");
    std::mutex mu;
    std::set<std::string> answered;
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int t = 0; t < 6; ++t) {
      clients.emplace_back([&, t] {
        while (!stop.load()) {
          Response r;
          try {
            r = t % 2 ? Call("GET", "/api/v1/findings/x", reader)
                      : Call("GET", "/v1/authz/check", reader, "",
                             {{"X-Original-URI", "/api/v1/findings/y"}});
          } catch (const std::runtime_error&) {
            return;  // the connection was refused: the server is gone
          }
          if (r.status == 0) return;  // the server is gone
          std::lock_guard lock(mu);
          answered.insert(r.Header("x-request-id"));
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    server_->Signal(SIGKILL);
    server_->Wait();
    stop = true;
    for (auto& c : clients) c.join();
    ASSERT_GT(answered.size(), 50u);

    // `gatehouse audit verify` first moves what the dead server journaled into the store, then
    // finds the chain intact; a later start of the server finds nothing more to replay.
    int status = -1;
    std::vector<std::string> cli = {Binary(), "audit", "verify", "--config",
                                    config_,  "--org", org_};
    for (const auto& f : StorageFlags()) cli.push_back(f);
    std::string out = RunCommand(cli, &status);
    EXPECT_EQ(status, 0) << out;
    server_ = std::make_unique<ServerProcess>(config_);
    server_->Signal(SIGTERM);
    ASSERT_EQ(server_->Wait(), 0);
    auto store = OpenStore();
    std::multiset<std::string> recorded;
    std::int64_t after = 0;
    for (;;) {
      auto page = store->AuditChain(org_, after, 1000);
      ASSERT_TRUE(page) << page.error().message;
      for (const auto& e : *page) {
        if (!e.request_id.empty()) recorded.insert(e.request_id + " " + e.action);
      }
      if (page->size() < 1000) break;
      after = page->back().seq;
    }
    std::size_t missing = 0;
    for (const auto& id : answered) {
      missing += !recorded.count(id + " auth.proxy") && !recorded.count(id + " auth.forward");
    }
    EXPECT_EQ(missing, 0u) << "of " << answered.size() << " answered requests";
    // A request may also have raised a security event; none has the same event twice.
    std::size_t twice = 0;
    for (auto it = recorded.begin(); it != recorded.end(); it = recorded.upper_bound(*it)) {
      if (recorded.count(*it) > 1) {
        ++twice;
        ADD_FAILURE() << "twice: " << *it;
      }
    }
    EXPECT_EQ(twice, 0u) << "events recorded more than once";
    RecordProperty("answered_before_kill", static_cast<int>(answered.size()));
    out = RunCommand(cli, &status);
    EXPECT_EQ(status, 0) << out;
  }
};

TEST_F(AuditTest, DecisionsAndChangesAreRecordedWithWhoWhatAndWhere) {
  std::string reader = NewKey(R"(["read:findings"])");
  auto allowed = Call("GET", "/api/v1/findings/1", reader, "", {{"User-Agent", "audit-test/1"}});
  ASSERT_EQ(allowed.status, 200);
  auto unknown = Call("GET", "/api/v1/findings/1", "sk_live_notarealkeyatall000000000000000000");
  ASSERT_EQ(unknown.status, 401);
  auto forbidden = Call("POST", "/api/v1/evidence/x", reader, "{}");
  ASSERT_EQ(forbidden.status, 403);
  auto down = Call("GET", "/api/down/x", key_);
  ASSERT_EQ(down.status, 502);

  auto events = Events();
  const auto* ok = Find(events, allowed.Header("x-request-id"));
  ASSERT_TRUE(ok) << json::serialize(events);
  EXPECT_EQ(ok->at("action"), "auth.proxy");
  EXPECT_EQ(ok->at("result"), "success");
  EXPECT_EQ(ok->at("status"), 200);
  EXPECT_EQ(ok->at("resource"), "route:/api/v1/findings");
  EXPECT_EQ(ok->at("client_ip"), "127.0.0.1");
  EXPECT_EQ(ok->at("user_agent"), "audit-test/1");
  EXPECT_TRUE(ok->at("actor").as_string().starts_with("key_"));
  const auto* denied = Find(events, forbidden.Header("x-request-id"));
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->at("result"), "denied");
  EXPECT_EQ(denied->at("status"), 403);
  const auto* failed = Find(events, down.Header("x-request-id"));
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->at("result"), "failure");
  EXPECT_EQ(failed->at("status"), 502);
  // An unknown key names no org: its decision is in the operator's "system" chain, not here.
  EXPECT_FALSE(Find(events, unknown.Header("x-request-id")));

  // The key's creation: a change, with its actor and before/after details.
  auto created = Events("&action=key.create");
  ASSERT_GE(created.size(), 1u);
  EXPECT_NE(created[0].at("actor").as_string(), "");
  EXPECT_EQ(created[0].at("status"), 201);
  EXPECT_EQ(created[0].at("details").at("scopes"), "read:findings");
  auto renamed =
      Call("PATCH", "/v1/orgs/" + org_, key_, R"({"name":"Renamed","audit_retention_days":90})");
  ASSERT_EQ(renamed.status, 200) << renamed.body;
  auto update = Events("&action=org.update");
  ASSERT_EQ(update.size(), 1u);
  EXPECT_EQ(update[0].at("details").at("after").at("name"), "Renamed");
  EXPECT_EQ(update[0].at("details").at("after").at("audit_retention_days"), 90);
  EXPECT_EQ(update[0].at("request_id").as_string(), renamed.Header("x-request-id").c_str());

  // Filters: by result, and newest first with a cursor.
  for (const auto& e : Events("&result=denied")) EXPECT_EQ(e.at("result"), "denied");
  auto first = Call("GET", "/v1/orgs/" + org_ + "/audit?limit=2", key_);
  auto page = json::parse(first.body).as_object();
  ASSERT_EQ(page.at("events").as_array().size(), 2u);
  std::string cursor(page.at("next_cursor").as_string());
  auto second =
      json::parse(Call("GET", "/v1/orgs/" + org_ + "/audit?limit=2&cursor=" + cursor, key_).body);
  EXPECT_LT(second.at("events").as_array()[0].at("seq").as_int64(),
            page.at("events").as_array()[1].at("seq").as_int64());
  EXPECT_EQ(Call("GET", "/v1/orgs/" + org_ + "/audit?since=yesterday", key_).status, 400);
  EXPECT_EQ(Call("GET", "/v1/orgs/" + org_ + "/audit?cursor=abc", key_).status, 400);
}

// Header bytes are whatever a client sends. An event must still be stored (PostgreSQL's text
// refuses invalid UTF-8), and a batch that can never be stored would stop the log for everyone.
TEST_F(AuditTest, AUserAgentThatIsNotUtf8IsRecordedAndTheLogGoesOn) {
  std::string reader = NewKey(R"(["read:findings"])");
  // Invalid bytes, and a valid two-byte character cut by the 256-byte bound.
  std::string agent = "probe/\xff\xfe\xc3";
  std::string long_agent = std::string(255, 'a') + "\xc3\xa9";
  auto r = Call("GET", "/api/v1/findings/x", reader, "", {{"User-Agent", agent}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto r2 = Call("GET", "/api/v1/findings/y", reader, "", {{"User-Agent", long_agent}});
  ASSERT_EQ(r2.status, 200) << r2.body;
  auto events = Events();
  const json::object* e = Find(events, r.Header("x-request-id"));
  ASSERT_NE(e, nullptr) << json::serialize(events);
  EXPECT_EQ(e->at("user_agent").as_string(), "probe/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  const json::object* e2 = Find(events, r2.Header("x-request-id"));
  ASSERT_NE(e2, nullptr);
  EXPECT_EQ(e2->at("user_agent").as_string(), std::string(255, 'a'));
  // nginx passes a URI's raw bytes on in X-Original-URI.
  auto f = Call("GET", "/v1/authz/check", reader, "",
                {{"X-Original-URI", "/api/v1/findings?q=\xff\xc3\xa9"}});
  ASSERT_EQ(f.status, 200) << f.body;
  events = Events();
  const json::object* forward = Find(events, f.Header("x-request-id"));
  ASSERT_NE(forward, nullptr);
  EXPECT_EQ(forward->at("resource").as_string(),
            "forward:GET /api/v1/findings?q=\xef\xbf\xbd\xc3\xa9");
  EXPECT_EQ(Call("GET", "/api/v1/findings/z", reader).status, 200);
  if (!OnPostgres()) {
    // An event stored before header text was made UTF-8 (SQLite took any bytes) still reads
    // as JSON.
    int status = 0;
    std::string out = RunCommand({"/usr/bin/sqlite3", dir_.path() + "/data/gatehouse.db",
                                  "UPDATE audit_events SET user_agent = CAST(X'6f6c64ff' AS TEXT) "
                                  "WHERE request_id = '" +
                                      f.Header("x-request-id") + "'"},
                                 &status);
    ASSERT_EQ(status, 0) << out;
    events = Events();
    const json::object* old = Find(events, f.Header("x-request-id"));
    ASSERT_NE(old, nullptr);
    EXPECT_EQ(old->at("user_agent").as_string(), "old\xef\xbf\xbd");
  }
}

TEST_F(AuditTest, FiltersInBytesThatAreNotUtf8MatchNothingAndFailNothing) {
  for (const char* query : {"&actor=%FF", "&resource=forward%3A%C3", "&action=%ED%A0%80",
                            "&result=%C0%AF", "&cursor=%FF"}) {
    auto r = Call("GET", "/v1/orgs/" + org_ + "/audit?limit=5" + std::string(query), key_);
    EXPECT_TRUE(r.status == 200 || r.status == 400) << query << " " << r.status << " " << r.body;
    json::parse(r.body);  // whatever the answer, it is JSON
    if (r.status == 200) {
      EXPECT_TRUE(json::parse(r.body).at("events").as_array().empty()) << query << r.body;
    }
  }
  auto events = Call("GET", "/v1/orgs/" + org_ + "/security-events?kind=%FF", key_);
  EXPECT_TRUE(events.status == 200 || events.status == 400) << events.status << events.body;
  auto keys = Call("GET", "/v1/orgs/" + org_ + "/keys?cursor=%FF", key_);
  EXPECT_TRUE(keys.status == 200 || keys.status == 400) << keys.status << keys.body;
}

// Valid JSON, valid UTF-8, and still text no PostgreSQL column takes (NUL), in every field the
// control plane stores: a clear refusal or a stored value, never a 500.
TEST_F(AuditTest, TextWithANulCharacterIsRefusedWhereverItWouldBeStored) {
  const std::string org = "/v1/orgs/" + org_;
  const std::vector<std::pair<std::string, std::string>> calls = {
      {org + "/keys", R"({"label":"a\u0000b","scopes":["read:findings"]})"},
      {org + "/keys",
       R"({"label":"q","scopes":["read:findings"],"quota":{"credits":5,"refill":"daily","pool":"p\u0000"}})"},
      {org + "/roles", R"({"name":"r\u0000","description":"d","permissions":["read:findings"]})"},
      {org + "/roles", R"({"name":"r2","description":"d\u0000","permissions":["read:findings"]})"},
      {org + "/invitations", R"({"email":"a\u0000@example.com","role":"viewer"})"},
      {"/v1/auth/login", R"({"email":"a\u0000@example.com","password":"x"})"},
      {"/v1/invitations/accept",
       R"({"token":"t\u0000","password":"correct horse battery","name":"n\u0000"})"},
      {"/v1/keys/verify", R"({"key":"sk_live_\u0000","scopes":[]})"},
  };
  for (const auto& [path, body] : calls) {
    auto r = Call("POST", path, key_, body);
    EXPECT_NE(r.status, 500) << path << " " << body << " " << r.body;
    EXPECT_TRUE(r.status < 300 || r.body.find("\"error\"") != std::string::npos) << r.body;
  }
  auto renamed = Call("PATCH", org, key_, R"({"name":"o\u0000"})");
  EXPECT_NE(renamed.status, 500) << renamed.body;
}

TEST_F(AuditTest, ReadingNeedsAuditRead) {
  std::string keys_only = NewKey(R"(["keys:read"])");
  auto r = Call("GET", "/v1/orgs/" + org_ + "/audit", keys_only);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("audit:read"), std::string::npos) << r.body;
  EXPECT_EQ(Call("POST", "/v1/orgs/" + org_ + "/audit/verify", keys_only).status, 403);
  EXPECT_EQ(Call("GET", "/v1/orgs/" + org_ + "/audit/export", keys_only).status, 403);
  std::string auditor = NewKey(R"(["audit:read"])");
  EXPECT_EQ(Call("GET", "/v1/orgs/" + org_ + "/audit", auditor).status, 200);
  // The refusal itself is on record.
  auto refused = Events("&result=denied");
  bool found = false;
  for (const auto& e : refused) {
    found = found || e.at("request_id").as_string() == r.Header("x-request-id").c_str();
  }
  EXPECT_TRUE(found);
}

// Whoever holds only /.well-known/jwks.json checks what verify signed, with openssl rather than
// gatehouse's own code: an auditor's tools are not ours.
TEST_F(AuditTest, VerifySignsTheHeadItFoundAndAnyoneWithTheJwksCanCheckIt) {
  auto jwks = Request(server_->port(), "GET", "/.well-known/jwks.json", {});
  ASSERT_EQ(jwks.status, 200) << jwks.body;
  EXPECT_EQ(jwks.Header("cache-control"), "public, max-age=3600");
  const json::value set = json::parse(jwks.body);
  ASSERT_EQ(set.at("keys").as_array().size(), 1u);
  const auto& jwk = set.at("keys").as_array().at(0).as_object();
  EXPECT_EQ(jwk.at("kty"), "OKP");
  EXPECT_EQ(jwk.at("crv"), "Ed25519");
  EXPECT_EQ(jwk.at("alg"), "EdDSA");
  const auto x = Base64UrlDecode(jwk.at("x").as_string());
  ASSERT_TRUE(x && x->size() == 32);

  ASSERT_EQ(Call("GET", "/api/v1/findings/1", NewKey(R"(["read:findings"])")).status, 200);
  auto verify = Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_);
  ASSERT_EQ(verify.status, 200) << verify.body;
  const auto report = json::parse(verify.body).as_object();
  ASSERT_TRUE(report.at("signed_head").is_object()) << verify.body;
  const auto& head = report.at("signed_head").as_object();
  EXPECT_EQ(head.at("kid"), jwk.at("kid"));
  const std::string statement(head.at("statement").as_string());
  EXPECT_TRUE(statement.starts_with("gatehouse-audit-head-v1\n" + org_ + "\n" +
                                    std::to_string(report.at("head_seq").as_int64()) + "\n" +
                                    std::string(report.at("head_hash").as_string()) + "\n"))
      << statement;
  EXPECT_TRUE(report.at("checkpoint").is_null());  // never pruned

  // An Ed25519 SubjectPublicKeyInfo is a fixed 12-byte DER prefix and the raw key (RFC 8410).
  const std::string der = std::string("\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00", 12) + *x;
  const std::string dir = dir_.path() + "/auditor";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/key.der", std::ios::binary) << der;
  std::ofstream(dir + "/statement", std::ios::binary) << statement;
  std::ofstream(dir + "/forged", std::ios::binary) << statement << "0";
  std::ofstream(dir + "/sig", std::ios::binary)
      << *Base64UrlDecode(head.at("signature").as_string());
  auto check = [&](const std::string& file) {
    int status = -1;
    std::string out =
        RunCommand({"/usr/bin/openssl", "pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey",
                    dir + "/key.der", "-rawin", "-in", dir + "/" + file, "-sigfile", dir + "/sig"},
                   &status);
    return std::pair{status, out};
  };
  auto [ok, out] = check("statement");
  EXPECT_EQ(ok, 0) << out;
  EXPECT_NE(out.find("Signature Verified Successfully"), std::string::npos) << out;
  EXPECT_NE(check("forged").first, 0);

  // The export is enough to recompute every hash up to the signed head, with nothing of
  // gatehouse's code: the canonical form as openapi.yaml states it, and OpenSSL's SHA-256.
  auto exported = Call("GET", "/v1/orgs/" + org_ + "/audit/export", key_);
  ASSERT_EQ(exported.status, 200);
  std::string prev(64, '0');
  std::int64_t reached = 0;
  std::size_t at = 0;
  while (at < exported.body.size()) {
    const auto end = exported.body.find('\n', at);
    const json::object e = json::parse(exported.body.substr(at, end - at)).as_object();
    at = end + 1;
    auto f = [](std::string_view x) {
      return std::to_string(x.size()) + ":" + std::string(x) + "\n";
    };
    auto str = [&](const char* name) { return f(std::string_view(e.at(name).as_string())); };
    auto num = [&](const char* name) { return f(std::to_string(e.at(name).as_int64())); };
    const std::string input = "gatehouse-audit-v1\n" + f(prev) + str("org_id") + num("seq") +
                              num("time_us") + str("actor") + str("action") + str("resource") +
                              str("result") + num("status") + str("client_ip") + str("user_agent") +
                              str("request_id") + f(json::serialize(e.at("details")));
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
    std::string hex;
    for (unsigned char b : digest)
      hex += "0123456789abcdef"[b >> 4], hex += "0123456789abcdef"[b & 15];
    ASSERT_EQ(e.at("prev_hash").as_string(), prev) << e;
    ASSERT_EQ(e.at("hash").as_string(), hex) << "recomputed differently: " << e;
    prev = hex;
    if (e.at("seq").as_int64() == report.at("head_seq").as_int64()) {
      EXPECT_EQ(hex, report.at("head_hash").as_string());  // what the signed head names
      reached = e.at("seq").as_int64();
    }
  }
  EXPECT_EQ(reached, report.at("head_seq").as_int64());

  // `gatehouse audit verify --json` signs with the same key (it derives from the same pepper).
  std::vector<std::string> cli = {Binary(), "audit", "verify", "--json", "--org", org_};
  for (const auto& f : StorageFlags()) cli.push_back(f);
  int status = -1;
  std::string line = RunCommand(cli, &status);
  ASSERT_EQ(status, 0) << line;
  EXPECT_EQ(json::parse(line).at("signed_head").at("kid"), jwk.at("kid")) << line;

  // The kept head is an anchor for later checks, over the API and on the command line.
  const std::string anchored = "{\"anchor\":" + json::serialize(head) + "}";
  auto again = Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_, anchored);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(json::parse(again.body).at("anchor"), "held") << again.body;
  json::object forged = head;
  forged["statement"] = statement + "0";
  auto refused = Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_,
                      "{\"anchor\":" + json::serialize(forged) + "}");
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_NE(refused.body.find("\"field\":\"anchor\""), std::string::npos) << refused.body;
  EXPECT_EQ(Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_, "{\"anchor\":7}").status, 400);
  std::ofstream(dir + "/anchor.json") << json::serialize(head);
  cli = {Binary(), "audit", "verify", "--org", org_, "--anchor", dir + "/anchor.json"};
  for (const auto& f : StorageFlags()) cli.push_back(f);
  line = RunCommand(cli, &status);
  EXPECT_EQ(status, 0) << line;
  EXPECT_NE(line.find("the anchor is held"), std::string::npos) << line;
}

// The signing key rotated apart from the pepper: API keys keep working, JWKS publishes the new
// key and the retired one, and a head signed before still anchors a verify.
TEST_F(AuditTest, ASigningKeyRotatedApartFromThePepperKeepsOldHeadsVerifiable) {
  auto before = Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_);
  ASSERT_EQ(before.status, 200) << before.body;
  const json::object kept = json::parse(before.body).at("signed_head").as_object();
  const json::object old_jwk =
      json::parse(Request(server_->port(), "GET", "/.well-known/jwks.json", {}).body)
          .at("keys")
          .at(0)
          .as_object();
  ASSERT_EQ(kept.at("kid"), old_jwk.at("kid"));

  server_.reset();
  const std::string secret = "a-signing-secret-of-its-own-0123456789";
  // Its error goes to stderr, which the shell joins to what RunCommand reads.
  std::vector<std::string> cli = {
      "/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", Binary(), "audit", "verify", "--org", org_};
  for (const auto& f : StorageFlags()) cli.push_back(f);
  int status = -1;
  std::string out = RunCommand(cli, &status, {{"GATEHOUSE_AUDIT_SIGNING_KEY", "too-short"}});
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("the audit signing key must be at least 32 characters"), std::string::npos)
      << out;
  EXPECT_EQ(out.find("too-short"), std::string::npos) << out;  // never echoed

  std::ofstream(config_, std::ios::app)
      << "[audit]\nretired_signing_keys = [\"" << old_jwk.at("x").as_string().c_str() << "\"]\n";
  server_ = std::make_unique<ServerProcess>(
      config_, std::map<std::string, std::string>{{"GATEHOUSE_AUDIT_SIGNING_KEY", secret}});
  const json::array keys =
      json::parse(Request(server_->port(), "GET", "/.well-known/jwks.json", {}).body)
          .at("keys")
          .as_array();
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_NE(keys.at(0).at("kid"), old_jwk.at("kid"));  // the key that signs now comes first
  EXPECT_EQ(keys.at(1).as_object(), old_jwk);

  auto after = Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_,
                    "{\"anchor\":" + json::serialize(kept) + "}");
  ASSERT_EQ(after.status, 200) << after.body;  // the pepper, and so every API key, is unchanged
  const json::object report = json::parse(after.body).as_object();
  EXPECT_EQ(report.at("anchor"), "held") << after.body;
  EXPECT_EQ(report.at("signed_head").at("kid"), keys.at(0).at("kid")) << after.body;
}

TEST_F(AuditTest, ExportStreamsEveryEventAndVerifyFindsADirectEdit) {
  std::string reader = NewKey(R"(["read:findings"])");
  for (int i = 0; i < 30; ++i)
    ASSERT_EQ(Call("GET", "/api/v1/findings/" + std::to_string(i), reader).status, 200);
  auto verify = Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_);
  ASSERT_EQ(verify.status, 200) << verify.body;
  auto report = json::parse(verify.body);
  EXPECT_EQ(report.at("intact"), true);
  std::int64_t head = report.at("head_seq").as_int64();
  EXPECT_GE(head, 32);

  auto exported = Call("GET", "/v1/orgs/" + org_ + "/audit/export", key_);
  ASSERT_EQ(exported.status, 200);
  EXPECT_EQ(exported.Header("transfer-encoding"), "chunked");
  EXPECT_EQ(exported.Header("content-type"), "application/x-ndjson");
  std::int64_t lines = 0, last_seq = 0;
  std::size_t at = 0;
  while (at < exported.body.size()) {
    auto end = exported.body.find('\n', at);
    ASSERT_NE(end, std::string::npos);
    auto e = json::parse(exported.body.substr(at, end - at));
    EXPECT_EQ(e.at("seq").as_int64(), last_seq + 1);  // oldest first, none missing
    last_seq = e.at("seq").as_int64();
    ++lines;
    at = end + 1;
  }
  EXPECT_GE(lines, head);  // the export and verify requests add their own events

  int status = -1;
  std::vector<std::string> cli = {Binary(), "audit", "verify", "--json"};
  for (const auto& f : StorageFlags()) cli.push_back(f);
  std::string out = RunCommand(cli, &status);
  EXPECT_EQ(status, 0) << out;

  TamperWithEvent(7);
  auto broken = json::parse(Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_).body);
  EXPECT_EQ(broken.at("intact"), false);
  EXPECT_EQ(broken.at("broken_at"), 7);
  out = RunCommand(cli, &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("\"broken_at\":7"), std::string::npos) << out;
}

TEST_F(AuditTest, KeyUsageComesFromThePipeline) {
  auto created = Call("POST", "/v1/orgs/" + org_ + "/keys", key_,
                      R"({"label":"usage","scopes":["read:findings"]})");
  ASSERT_EQ(created.status, 201);
  auto k = json::parse(created.body);
  std::string id(k.at("id").as_string()), secret(k.at("key").as_string());
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Call("GET", "/api/v1/findings/a", secret).status, 200);
  ASSERT_EQ(Call("POST", "/api/v1/evidence/a", secret, "{}").status, 403);
  // The writer stores counts at most once a second.
  Response usage;
  json::value u;
  for (int i = 0; i < 30; ++i) {
    usage = Call("GET", "/v1/orgs/" + org_ + "/keys/" + id + "/usage", key_);
    ASSERT_EQ(usage.status, 200) << usage.body;
    u = json::parse(usage.body);
    if (u.at("total_requests") == 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(u.at("days").as_array().size(), 1u) << usage.body;
  EXPECT_EQ(u.at("days").as_array()[0].at("2xx"), 3);
  EXPECT_EQ(u.at("days").as_array()[0].at("4xx"), 1);
  EXPECT_EQ(u.at("total_requests"), 4);
  EXPECT_EQ(Call("GET", "/v1/orgs/" + org_ + "/keys/" + id + "/usage?days=0", key_).status, 400);
  EXPECT_EQ(Call("GET", "/v1/orgs/" + org_ + "/keys/key_nope/usage", key_).status, 404);
}

TEST_F(AuditTest, AfterKillNineEveryAnsweredRequestHasItsEvent) {
  KillNineUnderLoadLosesNoAnsweredRequest();
}

// With fsync off, decisions go through the audit journal (one write() each) and the store
// takes them in the background. The journal directory is given relative: it is under data_dir,
// wherever the server and `gatehouse audit verify` were started from.
class AuditJournalTest : public AuditTest {
 protected:
  std::string ExtraConfig() override {
    return "[audit]\nfsync = false\njournal_dir = \"journal-here\"\n";
  }
};

TEST_F(AuditJournalTest, ARelativeJournalDirectoryIsUnderTheDataDirectory) {
  std::string reader = NewKey(R"(["read:findings"])");
  ASSERT_EQ(Call("GET", "/api/v1/findings/1", reader).status, 200);
  EXPECT_TRUE(std::filesystem::is_directory(dir_.path() + "/data/journal-here"));
  EXPECT_FALSE(std::filesystem::exists("journal-here"));  // not the working directory
}

TEST_F(AuditJournalTest, AfterKillNineEveryJournaledRequestHasItsEvent) {
  KillNineUnderLoadLosesNoAnsweredRequest();
}

TEST_F(AuditJournalTest, ADecisionIsInTheLogForAReadThatFollowsItsAnswer) {
  std::string reader = NewKey(R"(["read:findings"])");
  for (int i = 0; i < 20; ++i) {
    auto r = Call("GET", "/api/v1/findings/" + std::to_string(i), reader);
    ASSERT_EQ(r.status, 200);
    ASSERT_TRUE(Find(Events("&action=auth.proxy"), r.Header("x-request-id")))
        << "request " << i << " answered but not yet readable";
  }
}

// A batch the store refuses for good (here a trigger someone put on the table; in the field, an
// org deleted by hand, or a value the database cannot hold) must not stop the log: its events
// are set aside in the quarantine file, and later events are recorded as before.
TEST_F(AuditJournalTest, EventsTheStoreRefusesForGoodAreSetAsideAndTheLogGoesOn) {
  std::string reader = NewKey(R"(["read:findings"])");
  if (OnPostgres()) {
    postgres_->Sql(
        "CREATE FUNCTION gatehouse.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.resource LIKE '%poison%' THEN RAISE EXCEPTION 'poisoned' USING ERRCODE = "
        "'22023'; END IF; RETURN NEW; END $$; CREATE TRIGGER refuse_poison BEFORE INSERT ON "
        "gatehouse.audit_events FOR EACH ROW EXECUTE FUNCTION gatehouse.refuse_poison()",
        "postgres");
  } else {
    int status = 0;
    std::string out = RunCommand(
        {"/usr/bin/sqlite3", dir_.path() + "/data/gatehouse.db",
         "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events WHEN NEW.resource LIKE "
         "'%poison%' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"},
        &status);
    ASSERT_EQ(status, 0) << out;
  }
  auto check = [&](const std::string& uri) {
    return Call("GET", "/v1/authz/check", reader, "", {{"X-Original-URI", uri}});
  };
  auto poisoned = check("/api/v1/findings/poison");
  ASSERT_EQ(poisoned.status, 200) << poisoned.body;  // journaled, so answered
  auto mate = check("/api/v1/findings/mate");        // most likely in the same batch
  ASSERT_EQ(mate.status, 200);
  auto after_poison = Events();
  EXPECT_EQ(Find(after_poison, poisoned.Header("x-request-id")), nullptr);
  EXPECT_NE(Find(after_poison, mate.Header("x-request-id")), nullptr);
  auto fine = check("/api/v1/findings/fine");
  ASSERT_EQ(fine.status, 200);
  EXPECT_NE(Find(Events(), fine.Header("x-request-id")), nullptr);

  std::ifstream in(dir_.path() + "/data/journal-here/quarantine.jsonl");
  std::string line, kept;
  while (std::getline(in, line)) kept += line + "\n";
  EXPECT_NE(kept.find(poisoned.Header("x-request-id")), std::string::npos) << kept;
  EXPECT_NE(kept.find("forward:GET /api/v1/findings/poison"), std::string::npos);
  EXPECT_EQ(kept.find(mate.Header("x-request-id")), std::string::npos);
  const std::string metrics = Call("GET", "/metrics", "").body;
  EXPECT_EQ(metrics.find("gatehouse_audit_events_set_aside_total 0"), std::string::npos);
  EXPECT_NE(metrics.find("gatehouse_audit_events_set_aside_total"), std::string::npos) << metrics;
  EXPECT_NE(server_->Output().find("it is kept in"), std::string::npos);
  // `audit verify` finds the chain whole and says what was set aside beside it.
  std::vector<std::string> cli = {Binary(), "audit", "verify", "--config",
                                  config_,  "--org", org_,     "--json"};
  for (const auto& f : StorageFlags()) cli.push_back(f);
  int status = -1;
  std::string report = RunCommand(cli, &status);
  EXPECT_EQ(status, 0) << report;
  EXPECT_NE(report.find("\"intact\":true"), std::string::npos) << report;
  EXPECT_NE(report.find("\"set_aside\":1"), std::string::npos) << report;
  auto api = Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_);
  EXPECT_EQ(api.status, 200) << api.body;
  EXPECT_NE(api.body.find("\"set_aside\":1"), std::string::npos) << api.body;

  // While the cause is there, `audit requeue` changes nothing and says so (exit 1).
  std::vector<std::string> requeue = {Binary(), "audit", "requeue", "--config", config_};
  for (const auto& f : StorageFlags()) requeue.push_back(f);
  std::string out = RunCommand(requeue, &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("requeued 0 events"), std::string::npos) << out;
  // Once it is fixed, the event goes into the org's chain, with its own request id, while the
  // server runs; the file and the reports no longer count it.
  if (OnPostgres()) {
    postgres_->Sql("DROP TRIGGER refuse_poison ON gatehouse.audit_events", "postgres");
  } else {
    RunCommand(
        {"/usr/bin/sqlite3", dir_.path() + "/data/gatehouse.db", "DROP TRIGGER refuse_poison"},
        &status);
    ASSERT_EQ(status, 0);
  }
  out = RunCommand(requeue, &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("requeued 1 events into their chains; 0 remain"), std::string::npos) << out;
  const json::array now = Events();
  const json::object* back = Find(now, poisoned.Header("x-request-id"));
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->at("resource"), "forward:GET /api/v1/findings/poison");
  api = Call("POST", "/v1/orgs/" + org_ + "/audit/verify", key_);
  EXPECT_NE(api.body.find("\"intact\":true"), std::string::npos) << api.body;
  EXPECT_NE(api.body.find("\"set_aside\":0"), std::string::npos) << api.body;
  // The operator's act is in the operator's chain.
  std::vector<std::string> system = {Binary(), "audit",    "export", "--org",
                                     "system", "--config", config_};
  for (const auto& f : StorageFlags()) system.push_back(f);
  out = RunCommand(system, &status);
  EXPECT_NE(out.find("\"action\":\"audit.requeue\""), std::string::npos) << out;
}

}  // namespace
}  // namespace gatehouse::testing

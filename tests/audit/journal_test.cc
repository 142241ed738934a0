// The audit journal: records survive as written and a torn tail is cut; each process takes a
// slot of its own; and through the writer, journaled events reach the store once, whether the
// writer moves them or a later start replays them (its own slot's, or a slot left by a process
// that is gone).
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>

#include "audit/journal.h"
#include "audit/writer.h"
#include "store/sqlite/sqlite_store.h"

namespace gatehouse {
namespace {

namespace fs = std::filesystem;

AuditEvent Event(const std::string& request_id, const std::string& org = "org_a") {
  AuditEvent e;
  e.org_id = org;
  e.at = 1'700'000'000'000'000;
  e.actor = "key_x";
  e.action = "auth.proxy";
  e.resource = "route:/api";
  e.result = "success";
  e.status = 200;
  e.client_ip = "10.0.0.1";
  e.user_agent = "journal-test";
  e.request_id = request_id;
  e.details = "{}";
  return e;
}

TEST(JournalRecord, AnEventComesBackAsItWent) {
  AuditEvent e = Event("req_1");
  e.status = 503;
  e.details = std::string("{\"a\":\"\0\xff\"}", 10);  // any bytes
  e.user_agent.clear();
  std::string bytes;
  EncodeJournalRecord(e, bytes);
  std::vector<AuditEvent> seen;
  EXPECT_EQ(ScanJournalSegment(bytes, [&](AuditEvent&& got, std::size_t) { seen.push_back(got); }),
            bytes.size());
  ASSERT_EQ(seen.size(), 1u);
  const AuditEvent& got = seen[0];
  EXPECT_EQ(got.org_id, e.org_id);
  EXPECT_EQ(got.at, e.at);
  EXPECT_EQ(got.actor, e.actor);
  EXPECT_EQ(got.action, e.action);
  EXPECT_EQ(got.resource, e.resource);
  EXPECT_EQ(got.result, e.result);
  EXPECT_EQ(got.status, 503);
  EXPECT_EQ(got.client_ip, e.client_ip);
  EXPECT_EQ(got.user_agent, "");
  EXPECT_EQ(got.request_id, e.request_id);
  EXPECT_EQ(got.details, e.details);
}

TEST(JournalRecord, ATornOrDamagedTailEndsTheScanAtTheLastWholeRecord) {
  std::string bytes;
  EncodeJournalRecord(Event("req_1"), bytes);
  const std::size_t first = bytes.size();
  EncodeJournalRecord(Event("req_2"), bytes);
  const std::size_t second = bytes.size();
  EncodeJournalRecord(Event("req_3"), bytes);
  int count = 0;
  auto visit = [&](AuditEvent&&, std::size_t) { ++count; };
  // Cut inside the third record, as kill -9 in the middle of a write() could.
  EXPECT_EQ(ScanJournalSegment(std::string_view(bytes).substr(0, bytes.size() - 5), visit), second);
  EXPECT_EQ(count, 2);
  // A flipped byte in the second record's payload: its checksum fails, and the scan stops there.
  std::string damaged = bytes;
  damaged[first + 20] ^= 0x01;
  count = 0;
  EXPECT_EQ(ScanJournalSegment(damaged, visit), first);
  EXPECT_EQ(count, 1);
  // A length beyond anything written is damage too, not a reason to read far.
  std::string huge = bytes.substr(0, first);
  huge += std::string("\xff\xff\xff\x7f\0\0\0\0", 8);
  count = 0;
  EXPECT_EQ(ScanJournalSegment(huge, visit), first);
  EXPECT_EQ(count, 1);
  EXPECT_FALSE(DecodeJournalPayload(""));
}

class JournalTest : public ::testing::Test {
 public:  // the requeue helpers below drive it too
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gh-journal-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    store_ = std::move(*SqliteStore::Open((dir_ / "gatehouse.db").string()));
    for (const char* org : {"org_a", "org_b"}) {
      AuditEvent created = Event("req_org");
      created.org_id = org;
      created.action = "org.create";
      ASSERT_TRUE(store_->InsertOrg({org, org, 1}, created));
    }
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  std::unique_ptr<AuditJournal> OpenJournal(std::int64_t segment_bytes = 1 << 20) {
    auto j = AuditJournal::Open(dir_ / "journal", segment_bytes, false);
    EXPECT_TRUE(j) << j.error().message;
    return j ? std::move(*j) : nullptr;
  }

  AuditWriterOptions Options(bool fsync = false) {
    AuditWriterOptions o;
    o.fsync = fsync;
    o.journal_dir = dir_ / "journal";
    o.journal_segment_bytes = 4096;  // several segments in a test
    return o;
  }

  // request id -> how many times the org's chain holds an auth.proxy event of it
  // Runs `statement` on the database behind the store's back, as an operator would.
  void Sql(const char* statement) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "gatehouse.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, statement, nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  std::map<std::string, int> Recorded(const std::string& org = "org_a") {
    std::map<std::string, int> out;
    auto chain = store_->AuditChain(org, 0, 100000);
    EXPECT_TRUE(chain);
    for (const auto& e : *chain) {
      if (e.action == "auth.proxy") out[e.request_id]++;
    }
    return out;
  }

  fs::path dir_;
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(JournalTest, EachProcessTakesAFreeSlotAndKeepsItsIdentity) {
  auto first = OpenJournal();
  auto second = OpenJournal();
  ASSERT_TRUE(first && second);
  EXPECT_NE(first->directory(), second->directory());
  EXPECT_NE(first->id(), second->id());
  const std::string first_id = first->id();
  first.reset();  // its process is gone: the slot is free again, with the same identity
  auto again = OpenJournal();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id(), first_id);
}

TEST_F(JournalTest, ReplayReadsFromAMarkAcrossSegmentsAndSkipsThisProcesssOwn) {
  std::vector<JournalMark> marks;
  {
    auto j = OpenJournal(1);  // every append starts a new segment
    for (int i = 0; i < 5; ++i) marks.push_back(*j->Append(Event("req_" + std::to_string(i))));
  }
  EXPECT_LT(marks[0].segment, marks[4].segment);
  auto j = OpenJournal(1);
  ASSERT_TRUE(j->Append(Event("req_new")));  // this process's: not replayed
  std::vector<std::string> seen;
  JournalMark last;
  ASSERT_TRUE(j->Replay(marks[1], [&](AuditEvent&& e, const JournalMark& end) {
    seen.push_back(e.request_id);
    last = end;
  }));
  EXPECT_EQ(seen, (std::vector<std::string>{"req_2", "req_3", "req_4"}));
  EXPECT_EQ(last.segment, marks[4].segment);
  EXPECT_EQ(last.offset, marks[4].offset);
}

TEST_F(JournalTest, TheWriterMovesJournaledEventsIntoTheStoreAndReadersSeeThemAtOnce) {
  auto writer = AuditWriter::Open(*store_, Options());
  ASSERT_TRUE(writer) << writer.error().message;
  ASSERT_TRUE((*writer)->AnswersAtOnce());
  for (int i = 0; i < 300; ++i) {
    ASSERT_EQ((*writer)->Submit(Event("req_" + std::to_string(i), i % 2 ? "org_a" : "org_b"), {}),
              AuditWriter::Admission::kJournaled);
  }
  EXPECT_TRUE((*writer)->CatchUp(std::chrono::seconds(5)));
  EXPECT_EQ(Recorded("org_a").size(), 150u);
  EXPECT_EQ(Recorded("org_b").size(), 150u);
  (*writer)->Stop();
  // Moved segments are deleted; what is left is the one being written.
  int segments = 0;
  for (const auto& slot : fs::directory_iterator(dir_ / "journal")) {
    for (const auto& f : fs::directory_iterator(slot))
      segments += f.path().extension() == ".journal";
  }
  EXPECT_LE(segments, 2);
}

TEST_F(JournalTest, EventsFramedTogetherAreJournaledAllOrNone) {
  auto options = Options();
  options.capacity = 8;
  options.journal_gather = std::chrono::milliseconds(500);  // nothing moves for a while
  auto writer = AuditWriter::Open(*store_, options);
  ASSERT_TRUE(writer) << writer.error().message;
  auto framed = [](int first, int count) {
    std::string records;
    for (int i = first; i < first + count; ++i)
      EncodeJournalRecord(Event("req_" + std::to_string(i)), records);
    return records;
  };
  EXPECT_EQ((*writer)->SubmitRecords(framed(0, 5), 5), AuditWriter::Admission::kJournaled);
  EXPECT_EQ((*writer)->queue_depth(), 5u);
  // Three more would fit, four do not: none of the four is taken.
  EXPECT_EQ((*writer)->SubmitRecords(framed(5, 4), 4), AuditWriter::Admission::kRejected);
  EXPECT_EQ((*writer)->rejected(), 4u);
  EXPECT_EQ((*writer)->SubmitRecords(framed(9, 3), 3), AuditWriter::Admission::kJournaled);
  EXPECT_TRUE((*writer)->CatchUp(std::chrono::seconds(5)));
  std::map<std::string, int> expected;
  for (int i : {0, 1, 2, 3, 4, 9, 10, 11}) expected["req_" + std::to_string(i)] = 1;
  EXPECT_EQ(Recorded(), expected);
  (*writer)->Stop();
}

TEST_F(JournalTest, WithFsyncARequestIsAnsweredOnceTheJournalIsFlushed) {
  auto writer = AuditWriter::Open(*store_, Options(true));
  ASSERT_TRUE(writer) << writer.error().message;
  EXPECT_FALSE((*writer)->AnswersAtOnce());
  std::atomic<int> durable{0};
  for (int i = 0; i < 50; ++i) {
    auto admission = (*writer)->Submit(Event("req_" + std::to_string(i)), [&](bool ok) {
      if (ok) durable++;
    });
    ASSERT_EQ(admission, AuditWriter::Admission::kQueued);
  }
  (*writer)->Stop();
  EXPECT_EQ(durable.load(), 50);
  EXPECT_EQ(Recorded().size(), 50u);
}

TEST_F(JournalTest, WithFsyncEventsFramedTogetherWaitForOneFlush) {
  auto writer = AuditWriter::Open(*store_, Options(true));
  ASSERT_TRUE(writer) << writer.error().message;
  std::string records;
  for (int i = 0; i < 7; ++i) EncodeJournalRecord(Event("req_" + std::to_string(i)), records);
  std::promise<bool> flushed;
  auto admission = (*writer)->SubmitRecords(records, 7, [&](bool ok) { flushed.set_value(ok); });
  ASSERT_EQ(admission, AuditWriter::Admission::kQueued);
  auto answer = flushed.get_future();
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_TRUE(answer.get());
  EXPECT_TRUE((*writer)->CatchUp(std::chrono::seconds(5)));
  EXPECT_EQ(Recorded().size(), 7u);
  (*writer)->Stop();
}

TEST_F(JournalTest, WhatTheStoreDidNotTakeIsReplayedOnceAtTheNextStart) {
  // A process that journaled events and died before its writer moved them.
  {
    auto j = OpenJournal(4096);
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(j->Append(Event("req_" + std::to_string(i))));
  }
  for (int start = 0; start < 2; ++start) {  // the second start finds nothing left to replay
    auto writer = AuditWriter::Open(*store_, Options());
    ASSERT_TRUE(writer) << writer.error().message;
    (*writer)->Stop();
    auto recorded = Recorded();
    EXPECT_EQ(recorded.size(), 100u);
    for (const auto& [id, times] : recorded) EXPECT_EQ(times, 1) << id;
  }
}

TEST_F(JournalTest, AReplayedBatchTheStoreRefusesForGoodIsSetAsideAndTheServerStarts) {
  // A refusal that no wait ends, put on the table by hand (as the integration test does too).
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "gatehouse.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events WHEN "
                         "NEW.request_id = 'req_poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  {
    auto j = OpenJournal();
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(j->Append(Event("req_" + std::to_string(i))));
    ASSERT_TRUE(j->Append(Event("req_poison")));
  }
  auto writer = AuditWriter::Open(*store_, Options());
  ASSERT_TRUE(writer) << writer.error().message;  // before, the start failed here every time
  // Only the refused event went aside, in the file beside the slots; its batch-mates are stored.
  std::ifstream in(QuarantineFile(dir_ / "journal"));
  std::string line;
  std::vector<std::string> kept;
  while (std::getline(in, line)) kept.push_back(line);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_NE(kept[0].find("\"request_id\":\"req_poison\""), std::string::npos) << kept[0];
  // The mark moved past it: later events are stored, and nothing is set aside twice.
  ASSERT_EQ((*writer)->Submit(Event("req_later"), {}), AuditWriter::Admission::kJournaled);
  ASSERT_TRUE((*writer)->CatchUp(std::chrono::seconds(5)));
  (*writer)->Stop();
  EXPECT_EQ(Recorded(), (std::map<std::string, int>{
                            {"req_0", 1}, {"req_1", 1}, {"req_2", 1}, {"req_later", 1}}));
  auto again = AuditWriter::Open(*store_, Options());
  ASSERT_TRUE(again);
  (*again)->Stop();
  std::ifstream reread(QuarantineFile(dir_ / "journal"));
  std::size_t lines = 0;
  while (std::getline(reread, line)) ++lines;
  EXPECT_EQ(lines, 1u);
  EXPECT_EQ(Recorded().size(), 4u);
}

TEST_F(JournalTest, SetAsideEventsGoBackIntoTheirChainsOnceTheStoreTakesThem) {
  Sql("CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events WHEN NEW.request_id IN "
      "('req_poison_1', 'req_poison_2') BEGIN SELECT RAISE(ABORT, 'poisoned'); END");
  {
    auto j = OpenJournal();
    ASSERT_TRUE(j->Append(Event("req_0")));
    AuditEvent exact = Event("req_poison_1");
    exact.at += 123'456;  // microseconds, which the file's "time" would lose
    ASSERT_TRUE(j->Append(exact));
    ASSERT_TRUE(j->Append(Event("req_poison_2", "org_b")));
  }
  auto writer = AuditWriter::Open(*store_, Options());
  ASSERT_TRUE(writer) << writer.error().message;
  (*writer)->Stop();
  ASSERT_EQ(CountSetAside(dir_ / "journal"),
            (std::map<std::string, std::size_t>{{"org_a", 1}, {"org_b", 1}}));
  {  // a line nobody can read stays for a person to look at
    std::ofstream(QuarantineFile(dir_ / "journal"), std::ios::app) << "not json\n";
  }

  // While the cause is still there, nothing moves and the file is as it was.
  auto refused = RequeueSetAside(*store_, dir_ / "journal");
  ASSERT_TRUE(refused) << refused.error().message;
  EXPECT_EQ(refused->stored, 0u);
  EXPECT_EQ(refused->kept, 3u);
  ASSERT_EQ(refused->refusals.size(), 2u);
  EXPECT_FALSE(refused->refusals[0].empty());

  Sql("DROP TRIGGER refuse_poison");
  auto moved = RequeueSetAside(*store_, dir_ / "journal");
  ASSERT_TRUE(moved) << moved.error().message;
  EXPECT_EQ(moved->stored, 2u);
  EXPECT_EQ(moved->kept, 1u);
  EXPECT_EQ(Recorded(), (std::map<std::string, int>{{"req_0", 1}, {"req_poison_1", 1}}));
  EXPECT_EQ(Recorded("org_b"), (std::map<std::string, int>{{"req_poison_2", 1}}));
  auto chain = *store_->AuditChain("org_a", 0, 100);
  EXPECT_EQ(chain.back().request_id, "req_poison_1");
  EXPECT_EQ(chain.back().at, Event("x").at + 123'456);  // its own time, to the microsecond
  EXPECT_EQ(chain.back().user_agent, "journal-test");
  EXPECT_TRUE(CountSetAside(dir_ / "journal").empty());
  std::ifstream in(QuarantineFile(dir_ / "journal"));
  std::string rest((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rest, "not json\n");

  // Nothing is stored twice by running it again.
  auto again = RequeueSetAside(*store_, dir_ / "journal");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->stored, 0u);
  EXPECT_EQ(Recorded().size(), 2u);
}

// Three events set aside (two of org_a, one of org_b, which the file then holds twice), and a
// requeue cut short after storing two of them, as one killed at that moment would be: the file
// cannot be replaced, since where its next version goes is a directory. Traffic goes on after.
void CutARequeueShort(JournalTest& t) {
  t.Sql(
      "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events WHEN NEW.request_id IN "
      "('req_poison_1', 'req_poison_2', 'req_poison_3') BEGIN SELECT RAISE(ABORT, 'poisoned'); "
      "END");
  {
    auto j = t.OpenJournal();
    ASSERT_TRUE(j->Append(Event("req_poison_1")));
    ASSERT_TRUE(j->Append(Event("req_poison_2", "org_b")));
    ASSERT_TRUE(j->Append(Event("req_poison_3")));
  }
  auto writer = AuditWriter::Open(*t.store_, t.Options());
  ASSERT_TRUE(writer) << writer.error().message;
  (*writer)->Stop();
  t.Sql("DROP TRIGGER refuse_poison");
  t.Sql(
      "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events WHEN NEW.request_id = "
      "'req_poison_3' BEGIN SELECT RAISE(ABORT, 'poisoned'); END");
  const auto file = QuarantineFile(t.dir_ / "journal");
  {  // org_b's event is in the file twice, as after a crash that set it aside again
    std::ifstream in(file);
    std::string first, second;
    std::getline(in, first);
    std::getline(in, second);
    ASSERT_NE(second.find("req_poison_2"), std::string::npos) << second;
    std::ofstream(file, std::ios::app) << second << "\n";
  }
  std::filesystem::create_directory(file.string() + ".next");
  auto cut = RequeueSetAside(*t.store_, t.dir_ / "journal");
  ASSERT_FALSE(cut);
  EXPECT_EQ(t.Recorded(), (std::map<std::string, int>{{"req_poison_1", 1}}));
  EXPECT_EQ(t.Recorded("org_b"), (std::map<std::string, int>{{"req_poison_2", 1}}));
  EXPECT_EQ(CountSetAside(t.dir_ / "journal"),
            (std::map<std::string, std::size_t>{{"org_a", 2}, {"org_b", 2}}));
  std::vector<AuditEvent> live{Event("req_live")};
  ASSERT_TRUE(t.store_->AppendAudit(live, {}, true));
  std::filesystem::remove(file.string() + ".next");
}

// What the next requeue must leave, however it learned what the cut one stored.
void ExpectTheCutRequeueFinished(JournalTest& t, const Result<RequeueReport>& finished) {
  ASSERT_TRUE(finished) << finished.error().message;
  EXPECT_EQ(finished->already, 3u);
  EXPECT_EQ(finished->stored, 0u);
  EXPECT_EQ(finished->kept, 1u);  // still refused
  EXPECT_EQ(t.Recorded(), (std::map<std::string, int>{{"req_poison_1", 1}, {"req_live", 1}}));
  EXPECT_EQ(t.Recorded("org_b"), (std::map<std::string, int>{{"req_poison_2", 1}}));
  EXPECT_EQ(CountSetAside(t.dir_ / "journal"), (std::map<std::string, std::size_t>{{"org_a", 1}}));
  EXPECT_FALSE(std::filesystem::exists(QuarantineFile(t.dir_ / "journal").string() + ".requeuing"));
}

TEST_F(JournalTest, ARequeueCutShortIsFinishedWithoutStoringAnEventTwice) {
  CutARequeueShort(*this);
  if (HasFatalFailure()) return;
  ExpectTheCutRequeueFinished(*this, RequeueSetAside(*store_, dir_ / "journal"));

  // Once the cause is gone, the last one is stored, once.
  Sql("DROP TRIGGER refuse_poison");
  auto last = RequeueSetAside(*store_, dir_ / "journal");
  ASSERT_TRUE(last) << last.error().message;
  EXPECT_EQ(last->stored, 1u);
  EXPECT_EQ(last->already, 0u);
  EXPECT_EQ(Recorded(), (std::map<std::string, int>{
                            {"req_poison_1", 1}, {"req_live", 1}, {"req_poison_3", 1}}));
  EXPECT_TRUE(CountSetAside(dir_ / "journal").empty());
}

TEST_F(JournalTest, AnUnreadableRequeueMarkerCostsAWholeChainReadNeverADoubleEvent) {
  CutARequeueShort(*this);
  if (HasFatalFailure()) return;
  // The heads it noted are lost (a damaged disk, a hand edit): the chains of the orgs the file
  // names are read from their start instead.
  const auto marker = QuarantineFile(dir_ / "journal").string() + ".requeuing";
  ASSERT_TRUE(std::filesystem::exists(marker));
  std::ofstream(marker, std::ios::trunc) << "{\"org_a\": 3, \"org_b\"";
  ExpectTheCutRequeueFinished(*this, RequeueSetAside(*store_, dir_ / "journal"));
}

TEST_F(JournalTest, ASlotLeftByAProcessThatIsGoneIsReplayedByTheNextToStart) {
  auto running = OpenJournal();  // slot 0 stays held, as by a running process
  {
    auto left = OpenJournal();  // slot 1: taken by the writer below as its own
    auto gone = OpenJournal();  // slot 2: its process dies with events in it
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(gone->Append(Event("req_" + std::to_string(i))));
  }
  auto writer = AuditWriter::Open(*store_, Options());
  ASSERT_TRUE(writer) << writer.error().message;
  (*writer)->Stop();
  EXPECT_EQ(Recorded().size(), 10u);
}

TEST_F(JournalTest, AFullQueueRefusesInsteadOfGrowingWithoutBound) {
  auto options = Options();
  options.capacity = 5;
  options.journal_gather = std::chrono::milliseconds(500);  // nothing moves for a while
  auto writer = AuditWriter::Open(*store_, options);
  ASSERT_TRUE(writer);
  int refused = 0;
  for (int i = 0; i < 20; ++i) {
    refused += (*writer)->Submit(Event("req_" + std::to_string(i)), {}) ==
               AuditWriter::Admission::kRejected;
  }
  EXPECT_GE(refused, 15);
  EXPECT_EQ((*writer)->rejected(), static_cast<std::uint64_t>(refused));
  (*writer)->Stop();
  EXPECT_EQ(Recorded().size(), static_cast<std::size_t>(20 - refused));
}

}  // namespace
}  // namespace gatehouse

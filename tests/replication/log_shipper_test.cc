// The log shipper in-process: an in-memory log whose reads the test answers
// one by one, and a transport that records pushes and answers them as the
// test says.

#include "replication/log_shipper.h"

#include <gtest/gtest.h>
#include <kj/async.h>

#include <algorithm>
#include <deque>
#include <set>
#include <string>
#include <vector>

#include "crdt/lww_register.h"

namespace geokv {
namespace {

// A log of `entries` entries at positions 1..n, each about 100 bytes. Reads
// wait until the test answers them (AnswerRead), so the test sees how many
// are outstanding.
class FakeLog final : public ShipperLog {
 public:
  explicit FakeLog(uint64_t entries) {
    for (uint64_t p = 1; p <= entries; ++p) Append(p);
  }

  void Append(uint64_t position) {
    LogEntry e;
    e.seq = position;
    e.key = "key" + std::to_string(position % 7) + std::string(90, 'x');
    e.delta = LwwRegister(HlcTimestamp{position, 0}, 1, "v");
    log_.push_back(std::move(e));
  }
  void Trim(uint64_t through) { trimmed_ = through; }

  uint64_t LastSeq() const override { return log_.empty() ? 0 : log_.back().seq; }
  uint64_t TrimmedThrough() const override { return trimmed_; }

  kj::Promise<StatusOr<std::vector<LogEntry>>> ReadLog(uint64_t after, size_t max_entries,
                                                       size_t max_bytes) override {
    auto paf = kj::newPromiseAndFulfiller<StatusOr<std::vector<LogEntry>>>();
    reads_.push_back(Read{after, max_entries, max_bytes, kj::mv(paf.fulfiller)});
    max_outstanding_ = std::max(max_outstanding_, reads_.size());
    return kj::mv(paf.promise);
  }
  kj::Promise<uint64_t> LogBytesAfter(uint64_t position) override {
    uint64_t n = 0;
    for (const LogEntry& e : log_) {
      if (e.seq > position) n += e.key.size() + 10;
    }
    return n;
  }

  size_t outstanding() const { return reads_.size(); }
  size_t max_outstanding() const { return max_outstanding_; }
  // Where the oldest outstanding read starts. REQUIRES: outstanding() > 0.
  uint64_t next_after() const { return reads_.front().after; }

  // Answers the oldest outstanding read as a Store would.
  void AnswerRead() {
    Read r = std::move(reads_.front());
    reads_.pop_front();
    if (r.after < trimmed_) {
      r.fulfiller->fulfill(Status::FailedPrecondition("trimmed"));
      return;
    }
    std::vector<LogEntry> out;
    size_t bytes = 0;
    for (const LogEntry& e : log_) {
      if (e.seq <= r.after) continue;
      if (out.size() >= r.max_entries || (!out.empty() && bytes >= r.max_bytes)) break;
      bytes += e.key.size() + 10;
      out.push_back(e);
    }
    r.fulfiller->fulfill(std::move(out));
  }

 private:
  struct Read {
    uint64_t after;
    size_t max_entries;
    size_t max_bytes;
    kj::Own<kj::PromiseFulfiller<StatusOr<std::vector<LogEntry>>>> fulfiller;
  };
  std::vector<LogEntry> log_;
  uint64_t trimmed_ = 0;
  std::deque<Read> reads_;
  size_t max_outstanding_ = 0;
};

// Records every push; the test answers them with a position.
class FakeTransport final : public ShipTransport {
 public:
  struct Push {
    uint64_t from;
    uint64_t through;
    std::vector<uint64_t> positions;
    kj::Own<kj::PromiseFulfiller<uint64_t>> answer;
    std::vector<uint16_t> skipped;
  };

  kj::Promise<uint64_t> PushDeltas(uint64_t from, uint64_t through,
                                   const std::vector<const LogEntry*>& entries,
                                   const std::vector<uint16_t>& skipped) override {
    auto paf = kj::newPromiseAndFulfiller<uint64_t>();
    Push p{from, through, {}, kj::mv(paf.fulfiller), skipped};
    for (const LogEntry* e : entries) p.positions.push_back(e->seq);
    pushes.push_back(std::move(p));
    return kj::mv(paf.promise);
  }
  kj::Promise<void> RepairPass() override {
    ++repair_passes;
    if (!hold_repairs) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    repair = kj::mv(paf.fulfiller);
    return kj::mv(paf.promise);
  }
  kj::Promise<uint64_t> MarkRepaired(uint64_t through) override {
    marked.push_back(through);
    return through;
  }

  size_t unanswered() {
    return std::count_if(pushes.begin(), pushes.end(),
                         [](Push& p) { return p.answer->isWaiting(); });
  }

  std::vector<Push> pushes;
  int repair_passes = 0;
  bool hold_repairs = false;  // then a pass ends when the test fulfills `repair`
  kj::Own<kj::PromiseFulfiller<void>> repair;
  std::vector<uint64_t> marked;
};

struct Rig {
  explicit Rig(uint64_t entries, size_t window = 64, size_t batch_bytes = 1 << 20)
      : log(entries), shipper(log, Options(window, batch_bytes)) {}

  static ShipperOptions Options(size_t window, size_t batch_bytes) {
    ShipperOptions o;
    o.region = "r2";
    o.address = "peer:1";
    o.window = window;
    o.batch_bytes = batch_bytes;
    o.max_backlog_bytes = 2000;
    return o;
  }

  // Answers reads until none is outstanding after the loop ran.
  void AnswerAllReads(kj::WaitScope& ws) {
    ws.poll();
    while (log.outstanding() > 0) {
      log.AnswerRead();
      ws.poll();
    }
  }

  FakeLog log;
  FakeTransport transport;
  LogShipper shipper;
};

TEST(LogShipper, ShipsFromTheAckedPosition) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  Rig rig(10);
  rig.shipper.Connected(4);
  auto run = rig.shipper.Run(rig.transport).eagerlyEvaluate(nullptr);
  ws.poll();
  ASSERT_EQ(rig.log.outstanding(), 1u);
  EXPECT_EQ(rig.log.next_after(), 4u);
  rig.AnswerAllReads(ws);
  ASSERT_EQ(rig.transport.pushes.size(), 1u);
  const auto& push = rig.transport.pushes[0];
  EXPECT_EQ(push.from, 4u);
  EXPECT_EQ(push.through, 10u);
  EXPECT_EQ(push.positions, (std::vector<uint64_t>{5, 6, 7, 8, 9, 10}));
  rig.transport.pushes[0].answer->fulfill(10);
  ws.poll();
  EXPECT_EQ(rig.shipper.acked(), 10u);
  EXPECT_EQ(rig.shipper.inflight(), 0u);
  EXPECT_EQ(rig.log.outstanding(), 0u);  // nothing more to read
}

// A target that answers it holds more of the log than there is would have
// every later write counted as acknowledged: the connection fails and the
// acknowledged position stays.
TEST(LogShipper, AnAnswerPastTheLogsLastEntryFailsTheConnection) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  Rig rig(10);
  rig.shipper.Connected(4);
  auto run = rig.shipper.Run(rig.transport).eagerlyEvaluate(nullptr);
  rig.AnswerAllReads(ws);
  ASSERT_EQ(rig.transport.pushes.size(), 1u);
  rig.transport.pushes[0].answer->fulfill(UINT64_MAX - 1);
  std::string failed;
  try {
    run.wait(ws);
  } catch (const kj::Exception& e) {
    failed = e.getDescription().cStr();
  }
  EXPECT_NE(failed.find("holds this node's log through 18446744073709551614, past its last "
                        "entry 10"),
            std::string::npos)
      << failed;
  EXPECT_EQ(rig.shipper.acked(), 4u);
}

// A hello answer past the last entry shows a log that went back, and stops
// the node's writes; one past any log is refused instead, changing nothing.
TEST(LogShipper, AHelloAnswerPastAnyLogIsRefused) {
  Rig rig(10);
  int behind = 0;
  LogShipper shipper(rig.log, [&] {
    ShipperOptions o = Rig::Options(64, 1 << 20);
    o.on_log_behind = [&](uint64_t) { ++behind; };
    return o;
  }());
  shipper.Connected(4);
  try {
    shipper.Connected(UINT64_MAX);
    ADD_FAILURE() << "taken";
  } catch (const kj::Exception& e) {
    EXPECT_NE(std::string(e.getDescription().cStr())
                  .find("holds this node's log through 18446744073709551615, past any log"),
              std::string::npos)
        << e.getDescription().cStr();
  }
  EXPECT_EQ(shipper.acked(), 4u);
  EXPECT_EQ(behind, 0);
  shipper.Connected(12);
  EXPECT_EQ(behind, 1);
}

TEST(LogShipper, LeavesOutEntriesOfSegmentsTheTargetDoesNotOwn) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  Rig rig(10);
  rig.shipper.SetOwns([](size_t) { return false; });
  rig.shipper.Connected(0);
  auto run = rig.shipper.Run(rig.transport).eagerlyEvaluate(nullptr);
  rig.AnswerAllReads(ws);
  ASSERT_EQ(rig.transport.pushes.size(), 1u);
  // The batch still covers the positions, so the target's position moves,
  // and names the segments it left out, each once, in order.
  EXPECT_EQ(rig.transport.pushes[0].through, 10u);
  EXPECT_TRUE(rig.transport.pushes[0].positions.empty());
  std::set<uint16_t> segments;
  for (int i = 0; i < 7; ++i) {
    segments.insert(static_cast<uint16_t>(
        TreeSegmentOf("key" + std::to_string(i) + std::string(90, 'x'))));
  }
  EXPECT_EQ(rig.transport.pushes[0].skipped,
            std::vector<uint16_t>(segments.begin(), segments.end()));
}

TEST(LogShipper, KeepsAtMostTheWindowOfBatchesUnanswered) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  Rig rig(50, /*window=*/3, /*batch_bytes=*/1);  // one entry per batch
  rig.shipper.Connected(0);
  auto run = rig.shipper.Run(rig.transport).eagerlyEvaluate(nullptr);
  rig.AnswerAllReads(ws);
  EXPECT_EQ(rig.transport.pushes.size(), 3u);
  EXPECT_EQ(rig.transport.unanswered(), 3u);
  EXPECT_EQ(rig.log.outstanding(), 0u);  // no read while the window is full
  rig.transport.pushes[0].answer->fulfill(1);
  rig.AnswerAllReads(ws);
  EXPECT_EQ(rig.transport.pushes.size(), 4u);
  EXPECT_EQ(rig.transport.unanswered(), 3u);
  EXPECT_EQ(rig.transport.pushes[3].from, 3u);
  EXPECT_EQ(rig.transport.pushes[3].through, 4u);
}

TEST(LogShipper, KeepsAtMostTwoLogReadsOutstanding) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  Rig rig(200, /*window=*/64, /*batch_bytes=*/1);
  rig.shipper.Connected(0);
  auto run = rig.shipper.Run(rig.transport).eagerlyEvaluate(nullptr);
  for (int turn = 0; turn < 300; ++turn) {
    ws.poll();
    // Answer every push at once, so that only the reads bound the shipper.
    for (auto& p : rig.transport.pushes) {
      if (p.answer->isWaiting()) p.answer->fulfill(uint64_t{p.through});
    }
    rig.shipper.Wake();
    ws.poll();
    if (rig.log.outstanding() == 0) break;
    rig.log.AnswerRead();
  }
  EXPECT_EQ(rig.shipper.acked(), 200u);
  EXPECT_EQ(rig.transport.pushes.size(), 200u);
  EXPECT_GE(rig.log.max_outstanding(), 1u);
  EXPECT_LE(rig.log.max_outstanding(), 2u);
}

TEST(LogShipper, ResendsFromWhatTheTargetHoldsAfterAGap) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  Rig rig(6, /*window=*/4, /*batch_bytes=*/1);
  rig.shipper.Connected(0);
  auto run = rig.shipper.Run(rig.transport).eagerlyEvaluate(nullptr);
  rig.AnswerAllReads(ws);
  ASSERT_EQ(rig.transport.pushes.size(), 4u);  // (0,1] (1,2] (2,3] (3,4]
  rig.transport.pushes[0].answer->fulfill(1);
  ws.poll();
  // A read of (4, ...] is outstanding now; the target lost entries 2..3
  // (a restart) and answers the second batch with 1.
  ASSERT_EQ(rig.log.outstanding(), 1u);
  EXPECT_EQ(rig.log.next_after(), 4u);
  rig.transport.pushes[1].answer->fulfill(1);
  ws.poll();
  EXPECT_EQ(rig.shipper.sent(), 1u);
  // The read that was outstanding is stale: nothing of it is pushed.
  rig.log.AnswerRead();
  ws.poll();
  ASSERT_EQ(rig.log.outstanding(), 1u);
  EXPECT_EQ(rig.log.next_after(), 1u);
  rig.log.AnswerRead();
  ws.poll();
  ASSERT_EQ(rig.transport.pushes.size(), 5u);
  EXPECT_EQ(rig.transport.pushes[4].from, 1u);
  EXPECT_EQ(rig.transport.pushes[4].through, 2u);
}

TEST(LogShipper, ATargetThatNeedsTrimmedEntriesIsRepairedThenShippedFromThePassStart) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  Rig rig(10);
  rig.log.Trim(5);
  rig.shipper.Hint(7);
  rig.shipper.Connected(2);
  EXPECT_TRUE(rig.shipper.repairing());
  EXPECT_EQ(rig.shipper.hints_pending(), 0u);  // left to the repair
  EXPECT_EQ(rig.shipper.TrimFloor(), std::nullopt);  // no pass runs yet
  auto run = rig.shipper.Run(rig.transport).eagerlyEvaluate(nullptr);
  ws.poll();
  EXPECT_EQ(rig.transport.repair_passes, 1);
  EXPECT_EQ(rig.transport.marked, (std::vector<uint64_t>{10}));
  EXPECT_FALSE(rig.shipper.repairing());
  EXPECT_EQ(rig.shipper.acked(), 10u);
  rig.log.Append(11);
  rig.shipper.Wake();
  rig.AnswerAllReads(ws);
  ASSERT_EQ(rig.transport.pushes.size(), 1u);
  EXPECT_EQ(rig.transport.pushes[0].from, 10u);
}

TEST(LogShipper, ARepairPassHoldsTheLogFromItsStartUntilTheBacklogPassesTheLimit) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  Rig rig(10);
  rig.transport.hold_repairs = true;
  rig.log.Trim(5);
  rig.shipper.Connected(2);
  auto run = rig.shipper.Run(rig.transport).eagerlyEvaluate(nullptr);
  ws.poll();
  ASSERT_EQ(rig.transport.repair_passes, 1);
  EXPECT_EQ(rig.shipper.TrimFloor(), std::optional<uint64_t>(10));
  for (uint64_t p = 11; p <= 40; ++p) rig.log.Append(p);  // ~3000 bytes after 10
  rig.shipper.SampleBacklog().wait(ws);
  rig.shipper.CheckBacklog();
  EXPECT_EQ(rig.shipper.TrimFloor(), std::nullopt);  // let go of the log
  // The log is trimmed past the pass's start: the pass is done again from
  // where the log is, and holds it from there; the old sample (taken from
  // the first pass's start) does not count for the new pass.
  rig.log.Trim(20);
  rig.transport.repair->fulfill();
  ws.poll();
  ASSERT_EQ(rig.transport.repair_passes, 2);
  EXPECT_TRUE(rig.transport.marked.empty());
  rig.log.Append(41);
  rig.shipper.CheckBacklog();
  EXPECT_EQ(rig.shipper.TrimFloor(), std::optional<uint64_t>(40));
  rig.transport.repair->fulfill();
  ws.poll();
  EXPECT_EQ(rig.transport.marked, (std::vector<uint64_t>{40}));
  EXPECT_FALSE(rig.shipper.repairing());
  EXPECT_EQ(rig.shipper.acked(), 40u);
}

TEST(LogShipper, ABacklogOverTheLimitSwitchesToRepairOnTheSampleTaken) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  Rig rig(30);  // about 3000 bytes, over the limit of 2000
  rig.shipper.Connected(25);
  rig.shipper.SampleBacklog().wait(ws);
  rig.shipper.CheckBacklog();
  EXPECT_FALSE(rig.shipper.repairing());
  EXPECT_EQ(rig.shipper.TrimFloor(), std::optional<uint64_t>(25));
  EXPECT_GT(rig.shipper.backlog_bytes(), 0u);

  LogShipper away(rig.log, Rig::Options(64, 1 << 20));
  away.Connected(0);
  away.Hint(3);
  // Without a sample nothing is decided.
  away.CheckBacklog();
  EXPECT_FALSE(away.repairing());
  away.SampleBacklog().wait(ws);
  away.CheckBacklog();
  EXPECT_TRUE(away.repairing());
  EXPECT_EQ(away.hints_pending(), 0u);
}

}  // namespace
}  // namespace geokv

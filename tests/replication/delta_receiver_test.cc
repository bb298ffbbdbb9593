// The delta receiver in-process: against a committer the test answers (to
// make a hand-over fail), and against a real store and group committer.

#include "replication/delta_receiver.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <deque>
#include <map>
#include <tuple>
#include <string>
#include <vector>

#include "crdt/codec.h"
#include "crdt/lww_register.h"
#include "tests/storage/store_fixture.h"

namespace geokv {
namespace {

constexpr ReplicaId kSelf = 1;
constexpr ReplicaId kOrigin = 2;

std::string Delta(uint64_t position) {
  return EncodeCrdt(Crdt(LwwRegister(HlcTimestamp{1000 + position, 0}, kOrigin,
                                     "v" + std::to_string(position))));
}

// The batch covering (from, through] with an entry at every position.
DeltaBatch Batch(uint64_t from, uint64_t through) {
  DeltaBatch b;
  b.origin = kOrigin;
  b.from = from;
  b.through = through;
  for (uint64_t p = from + 1; p <= through; ++p) {
    b.positions.push_back(DeltaBatch::Position{p, 0});
    b.deltas.Add("k" + std::to_string(p), Delta(p));
  }
  return b;
}

// A committer the test answers: it applies a write only if the write
// continues the durable position, as GroupCommitter does.
class FakeCommitter {
 public:
  struct Submitted {
    RemoteApply apply;
    kj::Own<kj::PromiseFulfiller<WriteResult>> fulfiller;
  };

  DeltaReceiverOptions Options() {
    DeltaReceiverOptions o;
    o.self = kSelf;
    o.submit = [this](RemoteApply apply) {
      auto paf = kj::newPromiseAndFulfiller<WriteResult>();
      queue.push_back(Submitted{std::move(apply), kj::mv(paf.fulfiller)});
      return kj::mv(paf.promise);
    };
    o.durable = [this](ReplicaId origin) { return durable[origin]; };
    return o;
  }

  // Commits the oldest write, or (`fail`) fails it; `superseded` as the
  // committer reports them.
  void Answer(bool fail = false, std::vector<std::pair<size_t, HlcTimestamp>> superseded = {}) {
    Submitted s = std::move(queue.front());
    queue.pop_front();
    uint64_t& at = durable[s.apply.origin];
    if (!fail && s.apply.first != 0 && s.apply.first > at + 1) {
      s.fulfiller->fulfill(WriteResult{Status::FailedPrecondition("gap"), 0, {}, {}});
      return;
    }
    if (fail) {
      s.fulfiller->fulfill(WriteResult{Status::IOError("disk"), 0, {}, {}});
      return;
    }
    at = std::max(at, s.apply.through);
    WriteResult done;
    done.superseded = std::move(superseded);
    s.fulfiller->fulfill(std::move(done));
  }

  std::deque<Submitted> queue;
  std::map<ReplicaId, uint64_t> durable;
};

// One receiver on an event loop of its own, against a FakeCommitter.
struct Rig {
  // Pushes (from, through], expects it handed over as entries from
  // `first` (0: any), commits it and returns the answer.
  uint64_t Committed(uint64_t from, uint64_t through, uint64_t first = 0) {
    auto answer = receiver.PushDeltas("r2", Batch(from, through));
    EXPECT_EQ(committer.queue.size(), 1u);
    if (first != 0 && !committer.queue.empty()) {
      EXPECT_EQ(committer.queue[0].apply.first, first);
    }
    committer.Answer();
    return answer.wait(ws).applied;
  }

  kj::EventLoop loop;
  kj::WaitScope ws{loop};
  FakeCommitter committer;
  DeltaReceiver receiver{committer.Options()};
};

TEST(DeltaReceiver, SkipsReplaysAndAnswersThemOnceWhatCameBeforeIsDurable) {
  Rig rig;
  auto [committer, receiver, ws] = std::tie(rig.committer, rig.receiver, rig.ws);
  auto first = receiver.PushDeltas("r2", Batch(0, 3));
  ASSERT_EQ(committer.queue.size(), 1u);
  EXPECT_EQ(committer.queue[0].apply.first, 1u);
  EXPECT_EQ(committer.queue[0].apply.through, 3u);
  EXPECT_EQ(committer.queue[0].apply.joins.size(), 3u);
  // The same batch again, before the first committed: nothing is handed
  // over, and the answer waits for the first.
  auto replay = receiver.PushDeltas("r2", Batch(0, 3));
  EXPECT_EQ(committer.queue.size(), 1u);
  EXPECT_FALSE(replay.poll(ws));
  committer.Answer();
  EXPECT_EQ(first.wait(ws).applied, 3u);
  EXPECT_EQ(replay.wait(ws).applied, 3u);
  // A batch that overlaps: only its new entries are joined.
  auto overlap = receiver.PushDeltas("r2", Batch(1, 5));
  ASSERT_EQ(committer.queue.size(), 1u);
  EXPECT_EQ(committer.queue[0].apply.first, 4u);
  ASSERT_EQ(committer.queue[0].apply.joins.size(), 2u);
  EXPECT_EQ(committer.queue[0].apply.joins.key(0), "k4");
  committer.Answer();
  EXPECT_EQ(overlap.wait(ws).applied, 5u);
}

// Entries joined under a newer register are reported with the answer that
// acknowledges them, and again to the same batch sent again; a batch whose
// range does not cover them says nothing of them.
TEST(DeltaReceiver, ReportsEntriesJoinedUnderANewerRegisterAlsoToTheBatchSentAgain) {
  Rig rig;
  auto [committer, receiver, ws] = std::tie(rig.committer, rig.receiver, rig.ws);
  auto first = receiver.PushDeltas("r2", Batch(0, 3));
  committer.Answer(false, {{1, HlcTimestamp{5000, 2}}});  // the join of position 2
  PushAnswer answer = first.wait(ws);
  EXPECT_EQ(answer.applied, 3u);
  ASSERT_EQ(answer.superseded.size(), 1u);
  EXPECT_EQ(answer.superseded[0].position, 2u);
  EXPECT_EQ(answer.superseded[0].held, (HlcTimestamp{5000, 2}));
  PushAnswer replay = receiver.PushDeltas("r2", Batch(1, 3)).wait(ws);
  EXPECT_EQ(replay.applied, 3u);
  ASSERT_EQ(replay.superseded.size(), 1u);
  EXPECT_EQ(replay.superseded[0].position, 2u);
  auto later = receiver.PushDeltas("r2", Batch(3, 4));
  committer.Answer();
  EXPECT_TRUE(later.wait(ws).superseded.empty());
}

TEST(DeltaReceiver, AGapIsAnsweredWithTheDurablePositionAndJoinsNothing) {
  Rig rig;
  auto [committer, receiver, ws] = std::tie(rig.committer, rig.receiver, rig.ws);
  EXPECT_EQ(rig.Committed(0, 2), 2u);
  // Entries 3..4 never arrived: the batch after them is a gap.
  EXPECT_EQ(receiver.PushDeltas("r2", Batch(4, 6)).wait(ws).applied, 2u);
  EXPECT_TRUE(committer.queue.empty());
  EXPECT_EQ(rig.Committed(2, 6, /*first=*/3), 6u);
}

TEST(DeltaReceiver, AfterAFailedHandOverTheOriginResendsFromTheDurablePosition) {
  Rig rig;
  auto [committer, receiver, ws] = std::tie(rig.committer, rig.receiver, rig.ws);
  auto a = receiver.PushDeltas("r2", Batch(0, 3));
  auto b = receiver.PushDeltas("r2", Batch(3, 5));  // pipelined behind a
  ASSERT_EQ(committer.queue.size(), 2u);
  EXPECT_EQ(committer.queue[1].apply.first, 4u);
  committer.Answer(/*fail=*/true);
  committer.Answer();  // b does not continue what is durable: refused
  EXPECT_ANY_THROW(a.wait(ws));
  EXPECT_ANY_THROW(b.wait(ws));
  EXPECT_EQ(receiver.Submitted(kOrigin), 0u);
  // The next batch is a gap now, answered with what is durable.
  EXPECT_EQ(receiver.PushDeltas("r2", Batch(5, 7)).wait(ws).applied, 0u);
  EXPECT_TRUE(committer.queue.empty());
  auto again = receiver.PushDeltas("r2", Batch(0, 7));
  ASSERT_EQ(committer.queue.size(), 1u);
  EXPECT_EQ(committer.queue[0].apply.first, 1u);
  EXPECT_EQ(committer.queue[0].apply.joins.size(), 7u);
  committer.Answer();
  EXPECT_EQ(again.wait(ws).applied, 7u);
}

TEST(DeltaReceiver, RefusesBatchesThatCannotBeRight) {
  Rig rig;
  auto [committer, receiver, ws] = std::tie(rig.committer, rig.receiver, rig.ws);
  DeltaBatch own = Batch(0, 1);
  own.origin = kSelf;
  EXPECT_ANY_THROW(receiver.PushDeltas("r2", std::move(own)).wait(ws));
  EXPECT_ANY_THROW(receiver.PushDeltas("r2", Batch(3, 3)).wait(ws));
  DeltaBatch disordered = Batch(0, 2);
  std::swap(disordered.positions[0], disordered.positions[1]);
  EXPECT_ANY_THROW(receiver.PushDeltas("r2", std::move(disordered)).wait(ws));
  DeltaBatch unmatched = Batch(0, 2);
  unmatched.positions.pop_back();
  EXPECT_ANY_THROW(receiver.PushDeltas("r2", std::move(unmatched)).wait(ws));
  EXPECT_TRUE(committer.queue.empty());
}

TEST(DeltaReceiver, MarkRepairedRecordsThePositionAndLaterBatchesContinueIt) {
  Rig rig;
  auto [committer, receiver, ws] = std::tie(rig.committer, rig.receiver, rig.ws);
  auto marked = receiver.MarkRepaired("r2", kOrigin, 40);
  ASSERT_EQ(committer.queue.size(), 1u);
  EXPECT_EQ(committer.queue[0].apply.through, 40u);
  EXPECT_EQ(committer.queue[0].apply.first, 0u);  // proved by the repair
  committer.Answer();
  EXPECT_EQ(marked.wait(ws), 40u);
  EXPECT_EQ(rig.Committed(40, 41, /*first=*/41), 41u);
}

// A batch's skipped segments and a repair open gaps in the coverage: the
// position passes them, what the node holds there does not.
TEST(DeltaReceiver, MarksTheGapsOfSkippedSegmentsAndOfARepair) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  FakeCommitter committer;
  LogCoverage coverage([&](ReplicaId origin) { return committer.durable[origin]; });
  DeltaReceiverOptions options = committer.Options();
  options.coverage = &coverage;
  DeltaReceiver receiver(std::move(options));
  auto first = receiver.PushDeltas("r2", Batch(0, 3));
  committer.Answer();
  first.wait(ws);
  DeltaBatch skipping = Batch(3, 6);
  skipping.skipped = {5, 9};
  auto second = receiver.PushDeltas("r2", std::move(skipping));
  committer.Answer();
  EXPECT_EQ(second.wait(ws).applied, 6u);
  EXPECT_EQ(coverage.Covered(kOrigin, 5), 3u);
  EXPECT_EQ(coverage.Covered(kOrigin, 9), 3u);
  EXPECT_EQ(coverage.Covered(kOrigin, 6), 6u);
  auto marked = receiver.MarkRepaired("r2", kOrigin, 40);
  committer.Answer();
  EXPECT_EQ(marked.wait(ws), 40u);
  EXPECT_EQ(coverage.Covered(kOrigin, 6), 6u) << "the pass may have left out every segment";
  EXPECT_EQ(coverage.Covered(kOrigin, 5), 3u);
}

using DeltaReceiverOnAStore = testing::StoreTest;

TEST_F(DeltaReceiverOnAStore, JoinsAndSkipsReplaysThere) {
  auto io = kj::setupAsyncIo();
  Store* store = store_.get();
  {
    GroupCommitter committer(*store, 100);
    DeltaReceiverOptions o;
    o.self = store->node_id();
    o.submit = [&](RemoteApply apply) { return committer.SubmitRemote(std::move(apply)); };
    o.durable = [&](ReplicaId origin) {
      auto applied = store->AppliedPositions();
      auto it = applied.find(origin);
      return it == applied.end() ? uint64_t{0} : it->second;
    };
    DeltaReceiver receiver(std::move(o));
    EXPECT_EQ(receiver.PushDeltas("r2", Batch(0, 3)).wait(io.waitScope).applied, 3u);
    auto value = store->Get("k2", CrdtType::kLww);
    ASSERT_TRUE(value.ok()) << value.status().ToString();
    ASSERT_TRUE(value->has_value());
    EXPECT_EQ(std::get<LwwRegister>(**value).value(), std::optional<std::string>("v2"));
    const uint64_t groups = committer.groups_committed();
    EXPECT_EQ(receiver.PushDeltas("r2", Batch(0, 3)).wait(io.waitScope).applied, 3u);
    EXPECT_EQ(committer.groups_committed(), groups);  // a replay writes nothing
    // A gap in the real committer's terms too.
    EXPECT_EQ(receiver.PushDeltas("r2", Batch(5, 6)).wait(io.waitScope).applied, 3u);
    EXPECT_EQ(store->AppliedPositions()[kOrigin], 3u);
    // A delta that does not decode fails its batch on the writer thread:
    // nothing of the batch is joined, and the position stays.
    DeltaBatch garbage;
    garbage.origin = kOrigin;
    garbage.from = 3;
    garbage.through = 5;
    garbage.positions = {{4, 0}, {5, 0}};
    garbage.deltas.Add("k4", Delta(4));
    garbage.deltas.Add("k5", "not a delta");
    EXPECT_ANY_THROW(receiver.PushDeltas("r2", std::move(garbage)).wait(io.waitScope));
    auto k4 = store->Get("k4", CrdtType::kLww);
    ASSERT_TRUE(k4.ok()) << k4.status().ToString();
    EXPECT_FALSE(k4->has_value());
    EXPECT_EQ(store->AppliedPositions()[kOrigin], 3u);
    EXPECT_EQ(receiver.Submitted(kOrigin), 3u);
    EXPECT_EQ(receiver.PushDeltas("r2", Batch(3, 5)).wait(io.waitScope).applied, 5u);
    committer.Drain().wait(io.waitScope);
  }
}

}  // namespace
}  // namespace geokv

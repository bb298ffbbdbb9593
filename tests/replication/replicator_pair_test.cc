// Two replicators in one process, on one event loop: each with a real store,
// reader pool and group committer; one serves the peer API on a loopback
// socket and the other links to it. Shipping, anti-entropy and repair run
// end to end through the units and the Cap'n Proto peer service.

#include "replication/replicator.h"

#include <capnp/message.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "crdt/codec.h"
#include "crdt/hlc.h"
#include "testing/test_dir.h"
#include "tests/replication/replication_fixture.h"
#include "util/packed_stream.h"

namespace geokv {
namespace {

using std::chrono::milliseconds;

using testing::CapturedLog;
using testing::Node;
using testing::Pair;
using testing::RunUntil;
using testing::Tuning;

TEST(ReplicatorPair, ShipsTheLogAndCountsTheAcknowledgement) {
  auto io = kj::setupAsyncIo();
  Pair pair(io);
  pair.a.WriteMany(io.waitScope, "k", 50, "v");
  pair.Link();
  const uint64_t last = pair.a.store->LastSeq();
  ASSERT_EQ(last, 50u);
  size_t acked = pair.a.replicator
                     ->WaitAcked({pair.b.store->node_id()}, last, TreeSegmentOf("k49"), 1,
                                 milliseconds(10000))
                     .wait(io.waitScope);
  EXPECT_EQ(acked, 1u);
  EXPECT_EQ(pair.BHolds(), last);
  EXPECT_EQ(pair.b.Value("k49"), std::optional<std::string>("v"));
  EXPECT_TRUE(pair.a.replicator->LogDelivered());
  // A write after the link is up follows.
  pair.a.Write(io.waitScope, "late", "w");
  EXPECT_TRUE(RunUntil(io, [&] { return pair.b.Value("late") == std::optional<std::string>("w"); }));
  std::vector<PeerStatus> peers = pair.a.replicator->Peers();
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_TRUE(peers[0].connected);
  EXPECT_FALSE(peers[0].repairing);
  pair.Shutdown(io.waitScope);
}

// b heard of a change of placement that a has not: it no longer owns the
// segment of "gone". It still applies a's write there (it will hand it
// over), but its acknowledgement no longer counts toward that write's
// quorum, while it still counts for the segments b owns.
TEST(ReplicatorPair, AWritesQuorumCountsANodeOnlyWhileTheNodeSaysItOwnsTheSegment) {
  auto io = kj::setupAsyncIo();
  Pair pair(io);
  pair.Link();
  std::vector<bool> b_owns(kTreeSegments, true);
  b_owns[TreeSegmentOf("gone")] = false;
  ASSERT_NE(TreeSegmentOf("gone"), TreeSegmentOf("stay"));
  pair.b.replicator->SetPlacement(b_owns, {});
  pair.a.Write(io.waitScope, "stay", "v");
  pair.a.Write(io.waitScope, "gone", "v");
  const uint64_t last = pair.a.store->LastSeq();
  const ReplicaId b = pair.b.store->node_id();
  EXPECT_EQ(pair.a.replicator->WaitAcked({b}, last - 1, TreeSegmentOf("stay"), 1,
                                         milliseconds(10000)).wait(io.waitScope), 1u);
  ASSERT_TRUE(RunUntil(io, [&] { return pair.BHolds() == last; }));
  EXPECT_EQ(pair.b.Value("gone"), std::optional<std::string>("v"));
  EXPECT_EQ(pair.a.replicator->WaitAcked({b}, last, TreeSegmentOf("gone"), 1,
                                         milliseconds(300)).wait(io.waitScope), 0u);
  // b owns it again: the next answer says so, and the write counts.
  pair.b.replicator->SetPlacement({}, {});
  pair.a.Write(io.waitScope, "later", "v");
  EXPECT_EQ(pair.a.replicator->WaitAcked({b}, last, TreeSegmentOf("gone"), 1,
                                         milliseconds(10000)).wait(io.waitScope), 1u);
  pair.Shutdown(io.waitScope);
}

TEST(ReplicatorPair, AntiEntropyBringsKeysOnlyThePeerHoldsBack) {
  auto io = kj::setupAsyncIo();
  Pair pair(io);
  // Written on b alone: no log carries them to a. (A routine pass waits
  // for each differing segment to settle, one after another: few keys.)
  pair.b.WriteMany(io.waitScope, "only-b", 4, "x");
  pair.Link();
  EXPECT_TRUE(RunUntil(io, [&] {
    return pair.a.store->TreeDigests() == pair.b.store->TreeDigests();
  }));
  EXPECT_EQ(pair.a.Value("only-b3"), std::optional<std::string>("x"));
  pair.Shutdown(io.waitScope);
}

TEST(ReplicatorPair, APeerThatNeedsTrimmedEntriesIsRepairedThenShipped) {
  auto io = kj::setupAsyncIo();
  Pair pair(io);
  pair.a.WriteMany(io.waitScope, "t", 30, "v");
  ASSERT_TRUE(pair.a.committer->SubmitTrim(20).wait(io.waitScope).ok());
  pair.Link();
  // The link finds b needs entries 1..20, gone: a complete pass repairs it,
  // then b holds the log through where the pass began.
  EXPECT_TRUE(RunUntil(io, [&] { return pair.BHolds() >= 30; }));
  EXPECT_EQ(pair.b.Value("t3"), std::optional<std::string>("v"));
  EXPECT_EQ(pair.a.store->TreeDigests(), pair.b.store->TreeDigests());
  pair.a.Write(io.waitScope, "after", "w");
  EXPECT_TRUE(RunUntil(io, [&] { return pair.BHolds() >= 31; }));
  EXPECT_EQ(pair.b.Value("after"), std::optional<std::string>("w"));
  pair.Shutdown(io.waitScope);
}

TEST(ReplicatorPair, HandsOverTheSegmentsItNoLongerOwnsAndDropsThem) {
  auto io = kj::setupAsyncIo();
  Pair pair(io);
  pair.a.WriteMany(io.waitScope, "h", 10, "v");
  std::vector<bool> owns(kTreeSegments, true);
  const size_t segment = TreeSegmentOf("h0");
  owns[segment] = false;
  pair.Link(owns);
  // The store forgets the keys on the writer thread a loop turn before
  // hand-over marks the segment dropped.
  EXPECT_TRUE(RunUntil(io, [&] {
    return pair.a.replicator->HoldsOnlyOwned() && pair.a.replicator->Dropped(segment);
  }));
  EXPECT_TRUE(pair.a.replicator->Dropped(segment));
  EXPECT_FALSE(pair.a.replicator->Syncing(segment));  // it does not own it
  EXPECT_EQ(pair.a.Value("h0"), std::nullopt);
  EXPECT_EQ(pair.b.Value("h0"), std::optional<std::string>("v"));
  // Owning it again, a brings it back in step before it coordinates there.
  EXPECT_EQ(pair.a.store->TreeDigests()[segment], 0u);
  pair.a.replicator->SetPlacement(std::vector<bool>(kTreeSegments, true), {pair.B()});
  EXPECT_TRUE(pair.a.replicator->Syncing(segment));
  EXPECT_TRUE(RunUntil(io, [&] { return !pair.a.replicator->Dropped(segment); }));
  EXPECT_EQ(pair.a.Value("h0"), std::optional<std::string>("v"));
  pair.Shutdown(io.waitScope);
}

// A set whose state is several times half of the message limit, in pages of
// at most 32 KiB.
constexpr int kBigSet = 20000;
Tuning SmallMessages() {
  Tuning t;
  t.max_message_bytes = 256 << 10;
  t.batch_bytes = 32 << 10;
  return t;
}

// Writes the set "big" of kBigSet elements on `node` and trims its log, so
// that only anti-entropy or hand-over can carry it.
void BigSetOutOfTheLog(kj::WaitScope& ws, Node& node) {
  node.AddElements(ws, "big", "e", 0, kBigSet);
  ASSERT_TRUE(node.committer->SubmitTrim(node.store->LastSeq()).wait(ws).ok());
}

TEST(ReplicatorPair, AntiEntropyPullsASetTooLargeForOneMessageInPages) {
  auto io = kj::setupAsyncIo();
  Pair pair(io, SmallMessages());
  // Written on b alone (a is as wiped): only anti-entropy brings it.
  pair.b.AddElements(io.waitScope, "big", "e", 0, kBigSet);
  pair.b.RemoveElements(io.waitScope, "big", {Node::Element("e", 7), Node::Element("e", 19999)});
  pair.Link();
  EXPECT_TRUE(RunUntil(io, [&] {
    return pair.a.store->TreeDigests() == pair.b.store->TreeDigests();
  }, 30 * kj::SECONDS));
  EXPECT_EQ(pair.a.SetSize("big"), static_cast<uint64_t>(kBigSet - 2));
  EXPECT_EQ(pair.a.Digest("big"), pair.b.Digest("big"));
  EXPECT_EQ(pair.a.Elements("big"), pair.b.Elements("big"));
  pair.Shutdown(io.waitScope);
}

TEST(ReplicatorPair, AntiEntropyPushesASetTooLargeForOneMessageInPages) {
  auto io = kj::setupAsyncIo();
  Pair pair(io, SmallMessages());
  // b needs trimmed entries: a complete pass pushes the set.
  BigSetOutOfTheLog(io.waitScope, pair.a);
  pair.Link();
  EXPECT_TRUE(RunUntil(io, [&] { return pair.BHolds() >= pair.a.store->LastSeq(); },
                       30 * kj::SECONDS));
  EXPECT_EQ(pair.b.SetSize("big"), static_cast<uint64_t>(kBigSet));
  EXPECT_EQ(pair.a.Digest("big"), pair.b.Digest("big"));
  pair.Shutdown(io.waitScope);
}

TEST(ReplicatorPair, HandsOverASetTooLargeForOneMessage) {
  auto io = kj::setupAsyncIo();
  Pair pair(io, SmallMessages());
  BigSetOutOfTheLog(io.waitScope, pair.a);
  const uint64_t digest = pair.a.Digest("big");
  std::vector<bool> owns(kTreeSegments, true);
  const size_t segment = TreeSegmentOf("big");
  owns[segment] = false;
  pair.Link(owns);
  EXPECT_TRUE(RunUntil(io, [&] {
    return pair.a.replicator->HoldsOnlyOwned() && pair.a.replicator->Dropped(segment);
  }, 30 * kj::SECONDS));
  EXPECT_TRUE(pair.a.replicator->Dropped(segment));
  EXPECT_EQ(pair.a.SetSize("big"), 0u);
  EXPECT_EQ(pair.b.SetSize("big"), static_cast<uint64_t>(kBigSet));
  EXPECT_EQ(pair.b.Digest("big"), digest);
  EXPECT_EQ(pair.a.replicator->LeaveWaitingFor().find("segments"), std::string::npos);
  pair.Shutdown(io.waitScope);
}

// A few seconds for the big set to move by anti-entropy.
Tuning Slow() {
  Tuning t = SmallMessages();
  t.anti_entropy_bytes_per_second = 256 << 10;
  return t;
}

// Links a to b, which holds the big set, and runs until a holds part of it.
void PullPartOfTheBigSet(kj::AsyncIoContext& io, Pair& pair) {
  pair.b.AddElements(io.waitScope, "big", "e", 0, kBigSet);
  pair.Link();
  ASSERT_TRUE(RunUntil(io, [&] {
    uint64_t n = pair.a.SetSize("big");
    return n > 0 && n < static_cast<uint64_t>(kBigSet) / 2;
  }, 30 * kj::SECONDS));
}

TEST(ReplicatorPair, AnAddIntoARangeAlreadySentDuringAPagedTransferIsKept) {
  auto io = kj::setupAsyncIo();
  Pair pair(io, Slow());
  ASSERT_NO_FATAL_FAILURE(PullPartOfTheBigSet(io, pair));
  // Before every "e" element: in the first page, already joined on a. Ending
  // the transfer with a later page's context would read it as removed.
  pair.b.AddElements(io.waitScope, "big", "a", 0, 1);
  EXPECT_TRUE(RunUntil(io, [&] { return pair.a.Digest("big") == pair.b.Digest("big"); },
                       60 * kj::SECONDS));
  EXPECT_EQ(pair.a.SetSize("big"), static_cast<uint64_t>(kBigSet + 1));
  EXPECT_EQ(pair.b.SetSize("big"), static_cast<uint64_t>(kBigSet + 1));
  pair.Shutdown(io.waitScope);
}

TEST(ReplicatorPair, APagedTransferCutOffHalfWayResumesWithoutLossOrResurrection) {
  auto io = kj::setupAsyncIo();
  Pair pair(io, Slow());
  ASSERT_NO_FATAL_FAILURE(PullPartOfTheBigSet(io, pair));
  pair.a.replicator->SetPlacement({}, {});  // the link drops mid-transfer
  const uint64_t partial = pair.a.SetSize("big");
  ASSERT_LT(partial, static_cast<uint64_t>(kBigSet));
  // Meanwhile b removes elements a already holds, and adds into ranges
  // already sent and still to come.
  pair.b.RemoveElements(io.waitScope, "big", {Node::Element("e", 0), Node::Element("e", 15000)});
  pair.b.AddElements(io.waitScope, "big", "a", 0, 3);
  pair.b.AddElements(io.waitScope, "big", "z", 0, 3);
  pair.a.replicator->SetPlacement({}, {pair.B()});
  EXPECT_TRUE(RunUntil(io, [&] { return pair.a.Digest("big") == pair.b.Digest("big"); },
                       60 * kj::SECONDS));
  std::vector<std::string> elements = pair.a.Elements("big");
  EXPECT_EQ(elements, pair.b.Elements("big"));
  EXPECT_EQ(elements.size(), static_cast<size_t>(kBigSet - 2 + 6));
  EXPECT_FALSE(std::binary_search(elements.begin(), elements.end(), Node::Element("e", 0)));
  EXPECT_FALSE(std::binary_search(elements.begin(), elements.end(), Node::Element("e", 15000)));
  EXPECT_TRUE(std::binary_search(elements.begin(), elements.end(), Node::Element("a", 1)));
  pair.Shutdown(io.waitScope);
}


// The peer service, as a peer calls it: a batch carrying a stamp from the
// year 2500, or at the very end of the clock's range, is refused whole with
// a reason, changes neither the key nor the clock, and this node's next
// write still wins.
TEST(ReplicatorPair, APushWithAStampFromTheFarFutureIsRefusedAndChangesNothing) {
  auto io = kj::setupAsyncIo();
  Pair pair(io);
  pair.b.Write(io.waitScope, "k", "here");
  const HlcTimestamp before = pair.b.store->clock()->Last();
  auto session = testing::OpenSession(io.waitScope, pair.b, pair.a);
  const ReplicaId origin = pair.a.store->node_id();
  auto push = [&](HlcTimestamp stamp) -> std::string {
    auto req = session.pushDeltasRequest();
    auto batch = req.initBatch();
    batch.setOrigin(origin);
    batch.setFrom(0);
    batch.setThrough(1);
    auto entry = batch.initEntries(1)[0];
    entry.setSeq(1);
    entry.setKey(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>("k"), 1));
    std::string value = EncodeCrdt(LwwRegister(stamp, origin, std::string("future")));
    entry.setValue(
        capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(value.data()), value.size()));
    entry.setTimestampMs(stamp.wall_ms);
    try {
      req.send().wait(io.waitScope);
    } catch (const kj::Exception& e) {
      return e.getDescription().cStr();
    }
    return "";
  };
  const HlcTimestamp year_2500{16'725'225'600'000, 0};
  std::string refused = push(year_2500);
  EXPECT_NE(refused.find("16725225600000.0"), std::string::npos) << refused;
  EXPECT_NE(refused.find("--max-clock-offset 500 ms"), std::string::npos) << refused;
  EXPECT_EQ(pair.b.committer->stamps_refused(), 1u);
  refused = push(HlcTimestamp{UINT64_MAX, UINT32_MAX});
  EXPECT_NE(refused.find("above the maximum"), std::string::npos) << refused;
  EXPECT_EQ(pair.b.Value("k"), std::optional<std::string>("here"));
  EXPECT_EQ(pair.b.store->clock()->Last(), before);
  EXPECT_EQ(pair.BHolds(), 0u);
  pair.b.Write(io.waitScope, "k", "next");
  EXPECT_EQ(pair.b.Value("k"), std::optional<std::string>("next"));
  EXPECT_LT(before, pair.b.store->clock()->Last());
  pair.Shutdown(io.waitScope);
}

// Lists over kMaxPeerListEntries fail their call before any entry is read:
// a batch of empty deltas records no position, a getStates of many keys
// reads nothing.
TEST(ReplicatorPair, PeerCallsWithListsOverTheLimitAreRefusedAndChangeNothing) {
  auto io = kj::setupAsyncIo();
  Pair pair(io);
  auto session = testing::OpenSession(io.waitScope, pair.b, pair.a);
  auto refusal = [&](auto&& request) -> std::string {
    try {
      request.send().wait(io.waitScope);
    } catch (const kj::Exception& e) {
      return e.getDescription().cStr();
    }
    return "";
  };
  constexpr unsigned kOver = kMaxPeerListEntries + 1;
  auto push = session.pushDeltasRequest();
  auto batch = push.initBatch();
  batch.setOrigin(pair.a.store->node_id());
  batch.setFrom(0);
  batch.setThrough(kOver);
  auto entries = batch.initEntries(kOver);
  for (unsigned i = 0; i < kOver; ++i) entries[i].setSeq(i + 1);
  EXPECT_NE(refusal(push).find("too many entries in one call"), std::string::npos);
  EXPECT_EQ(pair.BHolds(), 0u);
  auto get = session.getStatesRequest();
  get.initKeys(kOver);
  EXPECT_NE(refusal(get).find("keys of getStates"), std::string::npos);
  auto digests = session.keyDigestsRequest();
  digests.initKeys(kOver);
  EXPECT_NE(refusal(digests).find("keys of keyDigests"), std::string::npos);
  auto put = session.putStatesRequest();
  put.initStates(kOver);
  EXPECT_NE(refusal(put).find("keys with states"), std::string::npos);
  pair.Shutdown(io.waitScope);
}

// A hello with an empty name, or a region of 100 KB, is refused.
TEST(ReplicatorPair, AHelloWithAnEmptyNameOrAHugeRegionIsRefused) {
  auto io = kj::setupAsyncIo();
  Pair pair(io);
  auto peer = pair.b.replicator->PeerBootstrap(std::nullopt).castAs<peer::Peer>();
  auto refusal = [&](const std::string& name, const std::string& region) -> std::string {
    auto req = peer.helloRequest();
    FillHello(pair.a.options, pair.a.store->node_id(), 1, req.initHello());
    req.getHello().setName(name);
    req.getHello().setRegion(region);
    try {
      req.send().wait(io.waitScope);
    } catch (const kj::Exception& e) {
      return e.getDescription().cStr();
    }
    return "";
  };
  EXPECT_NE(refusal("", "eu").find("name must be 1 to 256 bytes"), std::string::npos);
  EXPECT_NE(refusal("a", std::string(100 << 10, 'r')).find("region must be 1 to 256 bytes"),
            std::string::npos);
  EXPECT_EQ(refusal("a", pair.a.options.region), "");
  pair.Shutdown(io.waitScope);
}

// a's clock runs 2 s ahead of b's: b refuses a's write (limit 500 ms), and
// a's shipper sends it again until b's clock has caught up.
TEST(ReplicatorPair, AWriteRefusedForAStampAheadIsAppliedOnceTheClockCatchesUp) {
  auto io = kj::setupAsyncIo();
  const uint64_t now = WallClock::System()->NowMillis();
  ManualClock a_wall(now + 2000), b_wall(now);
  HybridClock a_clock(&a_wall), b_clock(&b_wall);
  {
    Pair pair(io, Tuning(), &a_clock, &b_clock);
    pair.a.Write(io.waitScope, "k", "ahead");
    pair.Link();
    EXPECT_TRUE(RunUntil(io, [&] { return pair.b.committer->stamps_refused() >= 2; }))
        << "the shipper sends the batch again";
    EXPECT_EQ(pair.b.Value("k"), std::nullopt);
    EXPECT_EQ(pair.BHolds(), 0u);
    b_wall.Advance(1600);
    EXPECT_TRUE(RunUntil(io, [&] { return pair.BHolds() == 1; }));
    EXPECT_EQ(pair.b.Value("k"), std::optional<std::string>("ahead"));
    pair.Shutdown(io.waitScope);
  }
}


// b's clock is 300 ms ahead and b already holds k (from its own write): a's
// later write of k is stamped below it, so b's acknowledgement says that it
// held a newer register, with that register's stamp; a write b held nothing
// newer for says nothing.
TEST(ReplicatorPair, AnOwnerThatHeldANewerRegisterSaysSoWithItsAcknowledgement) {
  auto io = kj::setupAsyncIo();
  const uint64_t now = WallClock::System()->NowMillis();
  ManualClock a_wall(now), b_wall(now + 300);
  HybridClock a_clock(&a_wall), b_clock(&b_wall);
  Pair pair(io, Tuning(), &a_clock, &b_clock);
  pair.b.Write(io.waitScope, "k", "b's");
  const HlcTimestamp held = b_clock.Last();
  pair.Link();
  a_wall.Advance(10);
  pair.a.Write(io.waitScope, "k", "a's");
  pair.a.Write(io.waitScope, "other", "a's");
  const uint64_t last = pair.a.store->LastSeq();
  const ReplicaId b = pair.b.store->node_id();
  ASSERT_EQ(pair.a.replicator->WaitAcked({b}, last, TreeSegmentOf("other"), 1,
                                         milliseconds(10000)).wait(io.waitScope), 1u);
  std::optional<HlcTimestamp> above = pair.a.replicator->HeldAbove({b}, last - 1);
  ASSERT_TRUE(above.has_value());
  EXPECT_EQ(*above, held);
  EXPECT_FALSE(pair.a.replicator->HeldAbove({b}, last).has_value());
  EXPECT_FALSE(pair.a.replicator->HeldAbove({}, last - 1).has_value());
  EXPECT_EQ(pair.b.Value("k"), std::optional<std::string>("b's"));
  pair.Shutdown(io.waitScope);
}

// A forward the owner refuses for load fails OVERLOADED, as the owner
// threw it; one the owner does not answer in time fails DISCONNECTED (it
// may have run there), never OVERLOADED, so the two cannot be confused.
TEST(ReplicatorPair, AForwardsDeadlineIsNotTheOwnersOverload) {
  auto io = kj::setupAsyncIo();
  Pair pair(io);
  bool hold = false;
  auto held = kj::newPromiseAndFulfiller<void>();
  kj::ForkedPromise<void> never = held.promise.fork();
  pair.b.replicator->SetForwardHandler(
      [&](rpc::Request::Reader, rpc::Consistency, rpc::Reply::Builder) -> kj::Promise<void> {
        if (hold) return never.addBranch();
        kj::throwFatalException(KJ_EXCEPTION(OVERLOADED, "too many writes waiting to commit"));
      });
  pair.Link();
  const ReplicaId b = pair.b.store->node_id();
  ASSERT_TRUE(RunUntil(io, [&] {
    auto peers = pair.a.replicator->Peers();
    return !peers.empty() && peers[0].connected;
  }));
  capnp::MallocMessageBuilder message;
  auto request = message.initRoot<rpc::Request>();
  auto forward = [&]() -> kj::Exception::Type {
    try {
      pair.a.replicator
          ->Forward(b, request.asReader(), rpc::Consistency::DEFAULT, milliseconds(300))
          .wait(io.waitScope);
    } catch (const kj::Exception& e) {
      return e.getType();
    }
    return kj::Exception::Type::UNIMPLEMENTED;  // answered: not expected here
  };
  EXPECT_EQ(forward(), kj::Exception::Type::OVERLOADED);
  hold = true;
  EXPECT_EQ(forward(), kj::Exception::Type::DISCONNECTED);
  held.fulfiller->fulfill();
  pair.Shutdown(io.waitScope);
}

// The clock read back from the data dir is this node's own history: after
// the wall clock stepped back a minute it is still honoured (the next
// write's stamp is above it), and the node warns that it is ahead.
TEST(ReplicatorClock, HonoursTheClockReadBackAndWarnsWhenItIsAhead) {
  auto io = kj::setupAsyncIo();
  testing::TestDir dir;
  constexpr uint64_t kThen = 1'000'000'000;
  ManualClock wall(kThen);
  {
    HybridClock clock(&wall);
    Node n(dir.Sub("n"), "n", *io.provider, Tuning(), &clock);
    n.Write(io.waitScope, "k", "before");
    n.Shutdown(io.waitScope);
  }
  wall.Set(kThen - 60'000);
  CapturedLog log;
  HybridClock clock(&wall);
  {
    Node n(dir.Sub("n"), "n", *io.provider, Tuning(), &clock);
    EXPECT_LE((HlcTimestamp{kThen, 0}), clock.Last());
    n.Write(io.waitScope, "k", "after");
    EXPECT_EQ(n.Value("k"), std::optional<std::string>("after"));
    n.Shutdown(io.waitScope);
  }
  EXPECT_NE(log.str().find("60000 ms ahead of its wall clock"), std::string::npos) << log.str();
}

// A node's region's members as the test sets them, and what it was told of
// other regions (each region's list as on_remote_members last brought it).
struct Exchange {
  std::vector<Member> mine;
  std::map<std::string, std::vector<Member>> learned;

  testing::Configure In(const std::string& region) {
    return [this, region](ReplicatorOptions& o) {
      o.region = region;
      o.local_members = [this] { return mine; };
      o.on_remote_members = [this](const std::string& r, std::vector<Member> members) {
        learned[r] = std::move(members);
      };
    };
  }

  std::vector<ReplicaId> Ids(const std::string& region) {
    std::vector<ReplicaId> out;
    for (const Member& m : learned[region]) out.push_back(m.id);
    return out;
  }
};

Member MemberOf(ReplicaId id, const std::string& region) {
  Member m;
  m.id = id;
  m.name = "m" + std::to_string(id);
  m.region = region;
  m.peer_address = "127.0.0.1:1";
  return m;
}

TEST(ReplicatorPair, MembersTravelBothWaysBetweenRegionsAndAgainWhenTheyChange) {
  auto io = kj::setupAsyncIo();
  Exchange us, eu;
  // 13 claims another region than its sender's: not the sender's to tell.
  us.mine = {MemberOf(11, "us"), MemberOf(12, "us"), MemberOf(13, "ap")};
  eu.mine = {MemberOf(21, "eu")};
  Pair pair(io, {}, nullptr, nullptr, us.In("us"), eu.In("eu"));
  pair.Link();
  // b, which a dials, learns a's region from a's hello; a learns b's from
  // the answer.
  ASSERT_TRUE(RunUntil(io, [&] { return eu.learned.count("us") && us.learned.count("eu"); }));
  EXPECT_EQ(eu.Ids("us"), (std::vector<ReplicaId>{11, 12}));
  EXPECT_EQ(us.Ids("eu"), (std::vector<ReplicaId>{21}));
  EXPECT_EQ(eu.learned.count("ap"), 0u);
  // A change on the dialling side reaches the other with a heartbeat.
  us.mine.push_back(MemberOf(14, "us"));
  EXPECT_TRUE(RunUntil(io, [&] { return eu.Ids("us").size() == 3; }));
  EXPECT_EQ(eu.Ids("us"), (std::vector<ReplicaId>{11, 12, 14}));
  pair.Shutdown(io.waitScope);
}

TEST(ReplicatorPair, ASeedThatNeverAnswersHoldsTheLogOnlyUntilANodeOfItsRegionIsLinked) {
  auto io = kj::setupAsyncIo();
  // Nothing listens at the seed's address (a seed that is gone).
  Pair pair(io, {}, nullptr, nullptr, [](ReplicatorOptions& o) {
    o.region = "us";
    o.seeds = {PeerAddress{"eu", "127.0.0.1:1"}};
  });
  pair.a.WriteMany(io.waitScope, "k", 10, "v");
  pair.a.replicator->Start();
  // Maintenance runs every second: two turns, and the seed holds the log.
  RunUntil(io, [] { return false; }, 2500 * kj::MILLISECONDS);
  EXPECT_EQ(pair.a.store->TrimmedThrough(), 0u);
  // A node of the seed's region is linked and takes the log: trimmed.
  pair.a.replicator->SetPlacement({}, {pair.B()});
  EXPECT_TRUE(RunUntil(io, [&] { return pair.a.store->TrimmedThrough() == 10; }))
      << pair.a.store->TrimmedThrough();
  pair.Shutdown(io.waitScope);
}

// How often a link logged each step of choosing packed or plain.
struct PackingSteps {
  size_t to_plain;            // a packed connection refused: the next plain
  size_t connected_plain;
  size_t reconnecting_packed;  // a plain connection's hello said packed
  size_t connected_packed;

  bool operator==(const PackingSteps& o) const {
    return std::tie(to_plain, connected_plain, reconnecting_packed, connected_packed) ==
           std::tie(o.to_plain, o.connected_plain, o.reconnecting_packed, o.connected_packed);
  }
  friend std::ostream& operator<<(std::ostream& out, const PackingSteps& p) {
    return out << "{to plain " << p.to_plain << ", connected plain " << p.connected_plain
               << ", reconnecting packed " << p.reconnecting_packed << ", connected packed "
               << p.connected_packed << "}";
  }
};

PackingSteps StepsIn(const CapturedLog& log) {
  return {log.Count("the next one is plain"), log.Count("connected (plain)"),
          log.Count("reconnecting packed"), log.Count("connected (packed)")};
}

// b's port serves its first connection through `first` (which may drop
// it), every later one as a node's port does.
void ServeFirstThroughThen(testing::Pair& pair,
                           std::function<void(kj::Own<kj::AsyncIoStream>)> first) {
  pair.serving = pair.listener->accept()
                     .then([&pair, first = std::move(first)](kj::Own<kj::AsyncIoStream> s) {
                       first(kj::mv(s));
                       return testing::ServePeerPort(*pair.listener, *pair.server);
                     })
                     .eagerlyEvaluate(nullptr);
}

// a writes "k" and b gets it.
void Ships(kj::AsyncIoContext& io, testing::Pair& pair) {
  pair.a.Write(io.waitScope, "k", "v");
  EXPECT_TRUE(RunUntil(io, [&] { return pair.b.Value("k") == std::optional<std::string>("v"); }));
}

// Half a second on, a writes "k2" and b gets it.
void ShipsLater(kj::AsyncIoContext& io, testing::Pair& pair) {
  RunUntil(io, [] { return false; }, 500 * kj::MILLISECONDS);
  pair.a.Write(io.waitScope, "k2", "w");
  EXPECT_TRUE(
      RunUntil(io, [&] { return pair.b.Value("k2") == std::optional<std::string>("w"); }));
}

// A node's peer port takes packed connections: a's link to b is packed
// from its first connection.
TEST(ReplicatorPair, ALinkToANodesPortIsPacked) {
  auto io = kj::setupAsyncIo();
  CapturedLog log;
  Pair pair(io);
  pair.Link();
  Ships(io, pair);
  pair.Shutdown(io.waitScope);
  EXPECT_EQ(StepsIn(log), (PackingSteps{0, 0, 0, 1})) << log.str();
}

// b plays an older build: its port reads plain connections only and its
// hello does not say it takes packed ones. a's packed connection gets
// b's refusal back; a dials plain next, ships over it, and stays on it.
TEST(ReplicatorPair, ALinkToAnOlderBuildsPortFallsBackToPlainAndStaysThere) {
  auto io = kj::setupAsyncIo();
  CapturedLog log;
  Pair pair(io, {}, nullptr, nullptr, nullptr,
            [](ReplicatorOptions& o) { o.packed_port = false; });
  pair.serving = pair.server->listen(*pair.listener).eagerlyEvaluate(nullptr);
  pair.Link();
  Ships(io, pair);
  // Later writes go over the same plain connection.
  ShipsLater(io, pair);
  pair.Shutdown(io.waitScope);
  EXPECT_EQ(StepsIn(log), (PackingSteps{1, 1, 0, 0})) << log.str();
}

// b's port refuses a's first, packed connection as an older build's would,
// and takes packed ones after that, and b's hello says it takes them (as
// once b is upgraded): a falls back to plain, learns from the hello that b
// takes packed connections, and reconnects packed.
TEST(ReplicatorPair, ALinkThatFellBackToPlainReconnectsPackedOnceTheHelloSaysItCan) {
  auto io = kj::setupAsyncIo();
  CapturedLog log;
  Pair pair(io);
  ServeFirstThroughThen(pair, [&pair](kj::Own<kj::AsyncIoStream> s) {
    pair.server->accept(kj::mv(s));  // plain only
  });
  pair.Link();
  Ships(io, pair);
  EXPECT_TRUE(RunUntil(io, [&] { return log.Count("connected (packed)") == 1; }));
  pair.Shutdown(io.waitScope);
  // The plain connection's hello said packed: it ends there, before it
  // counts as connected.
  EXPECT_EQ(StepsIn(log), (PackingSteps{1, 0, 1, 1})) << log.str();
}

// a compresses its connections to b (--peer-compression all; between
// regions, the default): b's port takes them, and a's link is compressed
// from its first connection.
TEST(ReplicatorPair, ALinkDialledCompressedIsCompressedFromTheStart) {
  auto io = kj::setupAsyncIo();
  CapturedLog log;
  Pair pair(io, {}, nullptr, nullptr,
            [](ReplicatorOptions& o) { o.compression = PeerCompression::kAll; });
  pair.Link();
  Ships(io, pair);
  pair.Shutdown(io.waitScope);
  EXPECT_EQ(log.Count("connected (compressed)"), 1u) << log.str();
  EXPECT_EQ(StepsIn(log), (PackingSteps{0, 0, 0, 0})) << log.str();
}

// b plays a build that takes packed connections but not compressed ones:
// a's compressed connection is refused, a dials packed next and stays
// there, b's hello not saying it takes compressed ones.
TEST(ReplicatorPair, ACompressedLinkToAnOlderBuildsPortFallsBackToPackedAndStaysThere) {
  auto io = kj::setupAsyncIo();
  CapturedLog log;
  Pair pair(
      io, {}, nullptr, nullptr,
      [](ReplicatorOptions& o) { o.compression = PeerCompression::kAll; },
      [](ReplicatorOptions& o) { o.compressed_port = false; });
  pair.serving = testing::ServePeerPort(*pair.listener, *pair.server,
                                        PackedStream::Side::kUncompressedAcceptor)
                     .eagerlyEvaluate(nullptr);
  pair.Link();
  Ships(io, pair);
  ShipsLater(io, pair);
  pair.Shutdown(io.waitScope);
  EXPECT_EQ(log.Count("the next one is packed"), 1u) << log.str();
  EXPECT_EQ(StepsIn(log), (PackingSteps{0, 0, 0, 1})) << log.str();
  EXPECT_EQ(log.Count("connected (compressed)"), 0u) << log.str();
}

// b's port refuses a's first, compressed connection as a packed-only
// build's would, and b's hello says it takes compressed ones (b upgraded
// meanwhile): a falls back to packed, then reconnects compressed.
TEST(ReplicatorPair, ALinkThatFellBackToPackedReconnectsCompressedOnceTheHelloSaysItCan) {
  auto io = kj::setupAsyncIo();
  CapturedLog log;
  Pair pair(io, {}, nullptr, nullptr,
            [](ReplicatorOptions& o) { o.compression = PeerCompression::kAll; });
  ServeFirstThroughThen(pair, [&pair](kj::Own<kj::AsyncIoStream> s) {
    pair.server->accept(
        kj::heap<PackedStream>(kj::mv(s), PackedStream::Side::kUncompressedAcceptor));
  });
  pair.Link();
  Ships(io, pair);
  EXPECT_TRUE(RunUntil(io, [&] { return log.Count("connected (compressed)") == 1; }));
  pair.Shutdown(io.waitScope);
  EXPECT_EQ(log.Count("the next one is packed"), 1u) << log.str();
  EXPECT_EQ(log.Count("reconnecting compressed"), 1u) << log.str();
  EXPECT_EQ(StepsIn(log), (PackingSteps{0, 0, 0, 0})) << log.str();
}

// b's port closes a's first connection before answering anything (b went
// away, or a proxy in between reset it): that says nothing of b's build, so
// a dials packed again.
TEST(ReplicatorPair, APackedConnectionClosedWithNothingBackIsTriedPackedAgain) {
  auto io = kj::setupAsyncIo();
  CapturedLog log;
  Pair pair(io);
  bool dropped = false;
  ServeFirstThroughThen(pair, [&dropped](kj::Own<kj::AsyncIoStream>) { dropped = true; });
  pair.Link();
  Ships(io, pair);
  pair.Shutdown(io.waitScope);
  EXPECT_TRUE(dropped);
  EXPECT_EQ(StepsIn(log), (PackingSteps{0, 0, 0, 1})) << log.str();
}

}  // namespace
}  // namespace geokv

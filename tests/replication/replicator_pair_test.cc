// Two replicators in one process, on one event loop: each with a real store,
// reader pool and group committer; one serves the peer API on a loopback
// socket and the other links to it. Shipping, anti-entropy and repair run
// end to end through the units and the Cap'n Proto peer service.

#include "replication/replicator.h"

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "testing/test_dir.h"

namespace geokv {
namespace {

using std::chrono::milliseconds;

// One node: store, readers, committer and replicator.
struct Node {
  Node(const std::string& dir, const std::string& name, kj::AsyncIoProvider& io) {
    auto opened = Store::Open(dir, StoreOptions{Durability::kWal});
    KJ_REQUIRE(opened.ok(), opened.status().ToString());
    store = std::move(opened).value();
    reader = std::make_unique<AsyncStore>(*store, 2);
    committer = std::make_unique<GroupCommitter>(*store, 1000);
    ReplicatorOptions o;
    o.name = name;
    o.region = "eu";
    o.heartbeat = milliseconds(100);
    o.anti_entropy_interval = milliseconds(200);
    o.backoff_min = milliseconds(20);
    o.backoff_max = milliseconds(100);
    replicator = std::make_unique<Replicator>(*store, *reader, *committer, io, std::move(o));
  }

  void Write(kj::WaitScope& ws, const std::string& key, const std::string& value) {
    WriteResult r = committer->Submit(key, LwwSet{value}).wait(ws);
    KJ_REQUIRE(r.status.ok(), r.status.ToString());
  }
  // Writes `value` at keys prefix0..prefix(n-1).
  void WriteMany(kj::WaitScope& ws, const std::string& prefix, int n, const std::string& value) {
    for (int i = 0; i < n; ++i) Write(ws, prefix + std::to_string(i), value);
  }

  std::optional<std::string> Value(const std::string& key) {
    auto got = store->Get(key, CrdtType::kLww);
    if (!got.ok() || !got->has_value()) return std::nullopt;
    return std::get<LwwRegister>(**got).value();
  }

  void Shutdown(kj::WaitScope& ws) {
    replicator->Stop();
    committer->Drain().wait(ws);
    replicator.reset();
    committer.reset();
    reader.reset();
  }

  std::unique_ptr<Store> store;
  std::unique_ptr<AsyncStore> reader;
  std::unique_ptr<GroupCommitter> committer;
  std::unique_ptr<Replicator> replicator;
};

// Runs the loop until `done` or 10 s have passed; whether it was done.
bool RunUntil(kj::AsyncIoContext& io, const std::function<bool()>& done) {
  kj::Timer& timer = io.provider->getTimer();
  const kj::TimePoint deadline = timer.now() + 10 * kj::SECONDS;
  while (!done()) {
    if (timer.now() >= deadline) return false;
    timer.afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  return true;
}

// `from` links to `to`, which serves the peer API on a loopback port.
struct Pair {
  explicit Pair(kj::AsyncIoContext& io)
      : a(dir.Sub("a"), "a", *io.provider), b(dir.Sub("b"), "b", *io.provider) {
    auto address = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope);
    listener = address->listen();
    server = kj::heap<capnp::TwoPartyServer>(b.replicator->PeerBootstrap());
    serving = server->listen(*listener).eagerlyEvaluate(nullptr);
  }

  // b as a's target: it owns every segment.
  PeerTarget B() {
    PeerTarget t;
    t.id = b.store->node_id();
    t.name = "b";
    t.region = "eu";
    t.address = "127.0.0.1:" + std::to_string(listener->getPort());
    t.owned.assign(kTreeSegments, true);
    return t;
  }

  // Starts a's link to b; `a_owns` are the segments a owns (empty: all).
  void Link(std::vector<bool> a_owns = {}) {
    a.replicator->SetPlacement(std::move(a_owns), {B()});
    a.replicator->Start();
  }

  uint64_t BHolds() {
    auto applied = b.store->AppliedPositions();
    auto it = applied.find(a.store->node_id());
    return it == applied.end() ? 0 : it->second;
  }

  void Shutdown(kj::WaitScope& ws) {
    a.Shutdown(ws);
    serving = nullptr;
    server = nullptr;
    listener = nullptr;
    b.Shutdown(ws);
  }

  testing::TestDir dir;
  Node a;
  Node b;
  kj::Own<kj::ConnectionReceiver> listener;
  kj::Own<capnp::TwoPartyServer> server;
  kj::Promise<void> serving = nullptr;
};

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
  EXPECT_TRUE(RunUntil(io, [&] { return pair.a.replicator->HoldsOnlyOwned(); }));
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

}  // namespace
}  // namespace geokv

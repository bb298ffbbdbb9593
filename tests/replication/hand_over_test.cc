// Hand-over alone, in-process: the local node's real store, readers and
// committer under a timer the test moves; its owners are real nodes whose
// peer services are reached without a socket, through PeerProxies that fail
// or hold calls where a test says.

#include "replication/hand_over.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "replication/anti_entropy.h"
#include "testing/test_dir.h"
#include "tests/replication/replication_fixture.h"

namespace geokv {
namespace {

using testing::KeysIn;
using testing::Node;

constexpr size_t kSegment = 5;  // the segment a hands over
constexpr kj::Duration kPass = 1 * kj::SECONDS;

kj::Promise<void> Fail(capnp::AnyPointer::Reader) {
  return KJ_EXCEPTION(FAILED, "injected failure");
}

// A gate that holds calls until Release().
struct Hold {
  kj::PromiseFulfillerPair<void> paf = kj::newPromiseAndFulfiller<void>();
  kj::ForkedPromise<void> released = paf.promise.fork();
  testing::PeerProxy::Gate Gate() {
    return [this](capnp::AnyPointer::Reader) { return released.addBranch(); };
  }
  void Release() { paf.fulfiller->fulfill(); }
};

// a, which owns every segment but kSegment, the other owners of its
// region, which own every segment, and its other members (`others`), which
// a's ring gives no segment; a's links to them are their proxies.
class Rig final : public HandOver::Links {
 public:
  explicit Rig(const std::vector<std::string>& owners, size_t batch_bytes = 1 << 20,
               const std::vector<std::string>& others = {})
      : a(dir.Sub("a"), "a", *io.provider, Tuned(batch_bytes)),
        unit(a, *io.provider, NotOwning(kSegment)),
        hand_over(unit.env, *this, trim_held) {
    unit.options.anti_entropy_interval = std::chrono::milliseconds(1000);
    for (const std::string& name : owners) Add(name, &ids);
    for (const std::string& name : others) Add(name, &other_ids);
  }
  ~Rig() noexcept(false) override {
    run = nullptr;
    a.Shutdown(ws);
    for (auto& [id, o] : owners_) o->node.Shutdown(ws);
  }

  // As the replicator starts it.
  void Await(kj::Promise<void> p) { testing::WaitGuarded(io, kj::mv(p)); }
  // `new_node`: a has no members kept in its data dir.
  void Start(bool new_node = false) {
    hand_over.Load(a.store->DroppedSegments(), a.store->VouchedSegments(), new_node);
    run = hand_over.Run().eagerlyEvaluate(nullptr);
  }
  // Moves the timer to the next pass and runs it through.
  void Tick() {
    timer.Advance(kPass);
    Await(timer.WaitBegan(timer.now() + kPass));
  }
  Node& owner(size_t i) { return owners_.at(ids[i])->node; }
  Node& other(size_t i) { return owners_.at(other_ids[i])->node; }
  void ConnectOther(size_t i, bool connected) { owners_.at(other_ids[i])->connected = connected; }
  testing::PeerProxy& proxy(size_t i) { return owners_.at(ids[i])->proxy; }
  void Connect(size_t i, bool connected) { owners_.at(ids[i])->connected = connected; }
  // Whole seconds since the start at which owner i was sent states.
  std::vector<int64_t> PutSeconds(size_t i) {
    std::set<int64_t> seconds;
    for (const auto& call : proxy(i).Calls("putStates")) {
      seconds.insert((call.at - kj::origin<kj::TimePoint>()) / kj::SECONDS);
    }
    return {seconds.begin(), seconds.end()};
  }

  // HandOver::Links, as the replicator's links do it.
  std::vector<ReplicaId> RegionOwners(size_t) const override { return ids; }
  std::vector<ReplicaId> RegionMembers() const override {
    std::vector<ReplicaId> out = ids;
    out.insert(out.end(), other_ids.begin(), other_ids.end());
    return out;
  }
  bool IsConnected(ReplicaId node) const override { return owners_.at(node)->connected; }
  peer::PeerSession::Client Session(ReplicaId node) override {
    if (!IsConnected(node)) {
      kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "node is not connected"));
    }
    return owners_.at(node)->proxy.Client();
  }
  kj::Promise<void> SyncSegment(ReplicaId node, uint32_t segment) override {
    return owners_.at(node)->anti_entropy.RepairSegment(Session(node), segment,
                                                        AntiEntropy::Scope::kComplete);
  }
  kj::Promise<void> Budget(ReplicaId node, size_t bytes) override {
    return owners_.at(node)->anti_entropy.Throttle(bytes);
  }

  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::WaitScope& ws = io.waitScope;
  testing::TestDir dir;
  Node a;
  testing::UnitEnv unit;
  testing::ManualTimer& timer = unit.timer;
  bool trim_held = false;
  HandOver hand_over;
  kj::Promise<void> run = nullptr;

 private:
  struct Owner {
    Owner(Rig& rig, const std::string& name)
        : node(rig.dir.Sub(name), name, *rig.io.provider),
          proxy(testing::OpenSession(rig.ws, node, rig.a), rig.timer),
          anti_entropy(rig.unit.env, "eu", [](size_t) { return true; }) {}
    Node node;
    testing::PeerProxy proxy;
    AntiEntropy anti_entropy;
    bool connected = true;
  };

  static testing::Tuning Tuned(size_t batch_bytes) {
    testing::Tuning t;
    t.batch_bytes = batch_bytes;
    t.anti_entropy_bytes_per_second = uint64_t{1} << 40;
    return t;
  }
  static std::vector<bool> NotOwning(size_t segment) {
    std::vector<bool> owns(kTreeSegments, true);
    owns[segment] = false;
    return owns;
  }

  void Add(const std::string& name, std::vector<ReplicaId>* to) {
    auto o = std::make_unique<Owner>(*this, name);
    to->push_back(o->node.store->node_id());
    owners_.emplace(to->back(), std::move(o));
  }

  std::vector<ReplicaId> ids;
  std::vector<ReplicaId> other_ids;
  std::map<ReplicaId, std::unique_ptr<Owner>> owners_;  // and the other members
};

TEST(HandOver, HandsASegmentToEveryOwnerAndDropsItOnlyOnceAllCommitted) {
  Rig rig({"b", "c"});
  const std::vector<std::string> keys = KeysIn(kSegment, "h", 3);
  for (const std::string& key : keys) rig.a.Write(rig.ws, key, "v");
  rig.a.Write(rig.ws, "owned", "w");
  ASSERT_NE(TreeSegmentOf("owned"), kSegment);
  Hold c_commits;
  rig.proxy(1).SetGate("putStates", c_commits.Gate());
  rig.Start();
  rig.timer.Advance(kPass);
  rig.Await(rig.proxy(0).Answered("putStates", 1));
  rig.Await(rig.proxy(1).Called("putStates", 1));
  rig.ws.poll();
  rig.a.committer->Drain().wait(rig.ws);
  // b committed, c has not: a keeps every key.
  for (const std::string& key : keys) {
    EXPECT_EQ(rig.owner(0).Value(key), std::optional<std::string>("v")) << key;
    EXPECT_EQ(rig.a.Value(key), std::optional<std::string>("v")) << key;
  }
  EXPECT_FALSE(rig.hand_over.Dropped(kSegment));
  EXPECT_EQ(rig.hand_over.Held(), std::vector<size_t>{kSegment});
  c_commits.Release();
  rig.Await(rig.timer.WaitBegan(rig.timer.now() + kPass));
  for (const std::string& key : keys) {
    EXPECT_EQ(rig.owner(1).Value(key), std::optional<std::string>("v")) << key;
    EXPECT_EQ(rig.a.Value(key), std::nullopt) << key;
  }
  EXPECT_EQ(rig.a.Value("owned"), std::optional<std::string>("w"));
  EXPECT_TRUE(rig.hand_over.Dropped(kSegment));
  EXPECT_FALSE(rig.hand_over.Syncing(kSegment));
  EXPECT_TRUE(rig.hand_over.Held().empty());
  EXPECT_EQ(rig.hand_over.LastError(kSegment), "");
}

TEST(HandOver, RetriesAfterABackoffThatDoublesAndStartsAgainAfterProgress) {
  Rig rig({"b"}, /*batch_bytes=*/1);  // a chunk per key
  const std::vector<std::string> keys = KeysIn(kSegment, "h", 3);
  for (const std::string& key : keys) rig.a.Write(rig.ws, key, "v");
  rig.proxy(0).SetGate("putStates", Fail);
  rig.Start();
  for (int s = 1; s <= 15; ++s) rig.Tick();
  // Tries at 1 s, then kRetryMin, 2 x kRetryMin, ... after each failure.
  EXPECT_EQ(rig.PutSeconds(0), (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_NE(rig.hand_over.LastError(kSegment).find("injected failure"), std::string::npos);
  EXPECT_EQ(rig.hand_over.Held(), std::vector<size_t>{kSegment});
  for (const std::string& key : keys) EXPECT_EQ(rig.a.Value(key), std::optional<std::string>("v"));
  // At 16 s the first chunk goes and the second fails: progress, so the
  // next try comes kRetryMin later, and fails with none.
  const size_t before = rig.proxy(0).Count("putStates");
  rig.proxy(0).SetGate("putStates", [&rig, before](capnp::AnyPointer::Reader params) {
    return rig.proxy(0).Count("putStates") == before + 1 ? kj::Promise<void>(kj::READY_NOW)
                                                        : Fail(params);
  });
  rig.Tick();
  EXPECT_EQ(rig.PutSeconds(0).back(), 16);
  size_t moved = 0;
  for (const std::string& key : keys) {
    if (rig.owner(0).Value(key) && !rig.a.Value(key)) ++moved;
  }
  EXPECT_EQ(moved, 1u);
  rig.proxy(0).SetGate("putStates", Fail);
  for (int s = 17; s <= 18; ++s) rig.Tick();
  EXPECT_EQ(rig.PutSeconds(0), (std::vector<int64_t>{1, 2, 4, 8, 16, 17}));
  // Healed: the next try, 2 x kRetryMin after the last, hands the rest over.
  rig.proxy(0).SetGate("putStates", nullptr);
  rig.Tick();
  EXPECT_EQ(rig.PutSeconds(0), (std::vector<int64_t>{1, 2, 4, 8, 16, 17, 19}));
  EXPECT_TRUE(rig.hand_over.Held().empty());
  EXPECT_EQ(rig.hand_over.LastError(kSegment), "");
  for (const std::string& key : keys) {
    EXPECT_EQ(rig.owner(0).Value(key), std::optional<std::string>("v")) << key;
  }
}

TEST(HandOver, KeepsAKeyWrittenDuringItsHandOverAndHandsItOverLater) {
  Rig rig({"b"});
  const std::string key = KeysIn(kSegment, "h", 1)[0];
  rig.a.Write(rig.ws, key, "old");
  Hold b_commits;
  rig.proxy(0).SetGate("putStates", b_commits.Gate());
  rig.Start();
  rig.timer.Advance(kPass);
  rig.Await(rig.proxy(0).Called("putStates", 1));
  rig.a.Write(rig.ws, key, "new");
  b_commits.Release();
  rig.Await(rig.timer.WaitBegan(rig.timer.now() + kPass));
  EXPECT_EQ(rig.owner(0).Value(key), std::optional<std::string>("old"));
  EXPECT_EQ(rig.a.Value(key), std::optional<std::string>("new"));
  EXPECT_EQ(rig.hand_over.Held(), std::vector<size_t>{kSegment});
  EXPECT_EQ(rig.hand_over.LastError(kSegment), "keys written during the hand-over stayed");
  rig.Tick();
  EXPECT_EQ(rig.owner(0).Value(key), std::optional<std::string>("new"));
  EXPECT_EQ(rig.a.Value(key), std::nullopt);
  EXPECT_TRUE(rig.hand_over.Held().empty());
}

TEST(HandOver, ASegmentOwnedAgainIsSyncingUntilBroughtInStepWithAnOwner) {
  Rig rig({"b"});
  const std::vector<std::string> keys = KeysIn(kSegment, "h", 2);
  rig.a.Write(rig.ws, keys[0], "v");
  rig.Start();
  rig.Tick();
  ASSERT_TRUE(rig.hand_over.Dropped(kSegment));
  ASSERT_TRUE(rig.a.store->DroppedSegments()[kSegment]);
  ASSERT_EQ(rig.a.Value(keys[0]), std::nullopt);
  // a owns it again; meanwhile b took a write there.
  rig.unit.own_segments[kSegment] = true;
  rig.owner(0).Write(rig.ws, keys[1], "w");
  EXPECT_TRUE(rig.hand_over.Syncing(kSegment));
  rig.Connect(0, false);
  rig.Tick();
  EXPECT_TRUE(rig.hand_over.Syncing(kSegment));
  rig.Connect(0, true);
  rig.Tick();
  EXPECT_FALSE(rig.hand_over.Syncing(kSegment));
  EXPECT_FALSE(rig.hand_over.Dropped(kSegment));
  EXPECT_FALSE(rig.a.store->DroppedSegments()[kSegment]);
  EXPECT_EQ(rig.a.Value(keys[0]), std::optional<std::string>("v"));
  EXPECT_EQ(rig.a.Value(keys[1]), std::optional<std::string>("w"));
}

// A segment a came to own is not settled while a member that a's ring no
// longer gives it still holds keys of it (its hand-over has not ended) or
// still says it owns it (it has not heard of the change, so it may still
// acknowledge writes there that a does not hold).
TEST(HandOver, ANewOwnerSettlesOnlyOnceEveryOtherMemberDisownsTheSegmentAndHoldsNoneOfIt) {
  Rig rig({"b"}, 1 << 20, {"m"});
  const size_t held = kSegment + 1;   // m still holds a key of it
  const size_t empty = kSegment + 2;  // m holds none
  const std::string key = KeysIn(held, "h", 1)[0];
  rig.other(0).Write(rig.ws, key, "v");
  rig.Start();
  rig.Tick();
  // m says it owns every segment (its view has no placement yet).
  EXPECT_FALSE(rig.hand_over.Settled(held));
  EXPECT_FALSE(rig.hand_over.Settled(empty));
  EXPECT_FALSE(rig.hand_over.Settled(kSegment + 3));
  // m heard of the change: it owns neither segment now.
  std::vector<bool> m_owns(kTreeSegments, true);
  m_owns[held] = m_owns[empty] = false;
  rig.other(0).replicator->SetPlacement(m_owns, {});
  rig.ConnectOther(0, false);
  rig.Tick();
  EXPECT_FALSE(rig.hand_over.Settled(empty)) << "m did not answer";
  rig.ConnectOther(0, true);
  rig.Tick();
  EXPECT_TRUE(rig.hand_over.Settled(empty));
  EXPECT_FALSE(rig.hand_over.Settled(held)) << "m still holds a key of it";
  // A segment m never owned nor held settles as before: b is in step.
  std::vector<bool> m_owns_none(kTreeSegments, false);
  rig.other(0).replicator->SetPlacement(m_owns_none, {});
  rig.Tick();
  EXPECT_TRUE(rig.hand_over.Settled(kSegment + 3));
  EXPECT_FALSE(rig.hand_over.Settled(held));
}

// A coordinator that has not heard that a came to own a segment reads the
// segment's old owners: a's acknowledgements there, and its own copy, must
// not count toward a write's quorum until a is settled there.
TEST(HandOver, ANodeVouchesForASegmentItCameToOwnOnlyOnceSettledThere) {
  Rig rig({"b"});
  rig.Start();
  rig.Tick();
  // A restarted node vouches for what it owns.
  EXPECT_TRUE(rig.hand_over.Vouches(kSegment + 1));
  EXPECT_FALSE(rig.hand_over.Vouches(kSegment));  // not owned
  const std::vector<bool> before = rig.unit.own_segments;
  rig.unit.own_segments[kSegment] = true;
  rig.hand_over.PlacementChanged(before);
  EXPECT_FALSE(rig.hand_over.Vouches(kSegment));
  EXPECT_TRUE(rig.hand_over.Vouches(kSegment + 1));
  rig.Connect(0, false);
  rig.Tick();
  EXPECT_FALSE(rig.hand_over.Vouches(kSegment)) << "not in step with b yet";
  rig.Connect(0, true);
  rig.Tick();
  ASSERT_TRUE(rig.hand_over.Settled(kSegment));
  EXPECT_TRUE(rig.hand_over.Vouches(kSegment));
  // It no longer owns it: it vouches no more.
  rig.unit.own_segments[kSegment] = false;
  rig.hand_over.PlacementChanged(rig.unit.own_segments);
  EXPECT_FALSE(rig.hand_over.Vouches(kSegment));
}

TEST(HandOver, ANewNodeVouchesForNoSegmentOfItsFirstPlacementUntilSettled) {
  Rig rig({"b"});
  rig.Start(/*new_node=*/true);
  rig.hand_over.PlacementChanged({});
  EXPECT_FALSE(rig.hand_over.Vouches(kSegment + 1));
  rig.Tick();
  ASSERT_TRUE(rig.hand_over.Settled(kSegment + 1));
  EXPECT_TRUE(rig.hand_over.Vouches(kSegment + 1));
}

// What a vouches for is kept in its data dir: restarted while arriving at a
// segment, it still does not vouch for it until settled there.
TEST(HandOver, ARestartedNodeKeepsNotVouchingForASegmentItWasArrivingAt) {
  Rig rig({"b"});
  auto written = [&rig] {
    rig.ws.poll();
    rig.a.committer->Drain().wait(rig.ws);
    return rig.a.store->VouchedSegments();
  };
  ASSERT_EQ(rig.a.store->VouchedSegments(), std::nullopt);
  rig.Start();
  rig.hand_over.PlacementChanged({});
  std::optional<std::vector<bool>> vouched = written();
  ASSERT_TRUE(vouched);
  EXPECT_TRUE((*vouched)[kSegment + 1]);
  EXPECT_FALSE((*vouched)[kSegment]) << "not owned";

  const std::vector<bool> before = rig.unit.own_segments;
  rig.unit.own_segments[kSegment] = true;
  rig.hand_over.PlacementChanged(before);
  ASSERT_FALSE(rig.hand_over.Vouches(kSegment));
  vouched = written();
  EXPECT_FALSE((*vouched)[kSegment]) << "arriving";
  EXPECT_TRUE((*vouched)[kSegment + 1]);

  // a restarts before it is settled at kSegment.
  rig.run = nullptr;
  HandOver restarted(rig.unit.env, rig, rig.trim_held);
  restarted.Load(rig.a.store->DroppedSegments(), rig.a.store->VouchedSegments(), false);
  restarted.PlacementChanged({});
  EXPECT_FALSE(restarted.Vouches(kSegment));
  EXPECT_TRUE(restarted.Vouches(kSegment + 1));
  kj::Promise<void> run = restarted.Run().eagerlyEvaluate(nullptr);
  rig.Tick();
  ASSERT_TRUE(restarted.Settled(kSegment));
  EXPECT_TRUE(restarted.Vouches(kSegment));
  EXPECT_TRUE((*written())[kSegment]);
}

}  // namespace
}  // namespace geokv

// Anti-entropy alone, in-process: the local node's real store, readers and
// committer under a timer the test moves; the peer is a second real node
// whose peer service is reached without a socket, through a PeerProxy.

#include "replication/anti_entropy.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "testing/test_dir.h"
#include "tests/replication/replication_fixture.h"

namespace geokv {
namespace {

using testing::KeysIn;
using testing::Node;
using testing::Tuning;

constexpr kj::Duration kMs = kj::MILLISECONDS;

// No budget wait for the few bytes a test moves.
Tuning Unthrottled() {
  Tuning t;
  t.anti_entropy_bytes_per_second = uint64_t{1} << 40;
  return t;
}

// a runs the unit against b. `a_owns` (empty: all) and `b_owns` are the
// segments each owns.
struct Rig {
  explicit Rig(const Tuning& tuning = Unthrottled(), std::vector<bool> a_owns = {},
               std::function<bool(size_t)> b_owns = [](size_t) { return true; })
      : a(dir.Sub("a"), "a", *io.provider, tuning),
        b(dir.Sub("b"), "b", *io.provider, tuning),
        unit(a, *io.provider, std::move(a_owns)),
        proxy(testing::OpenSession(io.waitScope, b, a), unit.timer),
        anti_entropy(unit.env, "eu", std::move(b_owns)) {}
  ~Rig() {
    a.Shutdown(io.waitScope);
    b.Shutdown(io.waitScope);
  }

  kj::Promise<void> Pass(bool complete) {
    using Scope = AntiEntropy::Scope;
    return anti_entropy.Pass(proxy.Client(), complete ? Scope::kComplete : Scope::kRoutine);
  }
  kj::Promise<void> Push() { return anti_entropy.Pass(proxy.Client(), AntiEntropy::Scope::kPush); }
  void Await(kj::Promise<void> p) { testing::WaitGuarded(io, kj::mv(p)); }
  bool InStep() { return a.store->TreeDigests() == b.store->TreeDigests(); }
  // "only-a" = x on a, "only-b" = y on b, and "both" written on each.
  void WriteKeysThatDiffer() {
    a.Write(ws, "only-a", "x");
    b.Write(ws, "only-b", "y");
    a.Write(ws, "both", "from-a");
    b.Write(ws, "both", "from-b");
  }

  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::WaitScope& ws = io.waitScope;
  testing::TestDir dir;
  Node a;
  Node b;
  testing::UnitEnv unit;
  testing::ManualTimer& timer = unit.timer;
  testing::PeerProxy proxy;
  AntiEntropy anti_entropy;
};

TEST(AntiEntropy, ACompletePassRepairsDifferingKeysBothWays) {
  Rig rig;
  rig.WriteKeysThatDiffer();
  ASSERT_NE(rig.a.Digest("both"), rig.b.Digest("both"));
  rig.Await(rig.Pass(true));
  EXPECT_EQ(rig.a.Value("only-b"), std::optional<std::string>("y"));
  EXPECT_EQ(rig.b.Value("only-a"), std::optional<std::string>("x"));
  EXPECT_EQ(rig.a.Digest("both"), rig.b.Digest("both"));
  EXPECT_EQ(rig.a.Value("both"), rig.b.Value("both"));
  EXPECT_TRUE(rig.InStep());
}

// A repair in place of a's log to b: b gets a's state of every key that
// differs, and a takes nothing of b's (b's log or repair brings it).
TEST(AntiEntropy, APushPassSendsThisNodesStatesOnly) {
  Rig rig;
  rig.WriteKeysThatDiffer();
  // Keys in many segments, so that several are repaired at once.
  for (int i = 0; i < 200; ++i) rig.a.Write(rig.ws, "k" + std::to_string(i), "v");
  rig.Await(rig.Push());
  EXPECT_EQ(rig.b.Value("only-a"), std::optional<std::string>("x"));
  EXPECT_EQ(rig.a.Value("only-b"), std::nullopt);
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(rig.b.Value("k" + std::to_string(i)), std::optional<std::string>("v")) << i;
  }
  // b joined a's state of "both"; a still has its own.
  EXPECT_EQ(rig.a.Value("both"), std::optional<std::string>("from-a"));
  EXPECT_EQ(rig.proxy.Calls("getStates").size(), 0u);
}

TEST(AntiEntropy, ARoutinePassRepairsOnlyKeysWhoseDigestsStayedForKSettle) {
  Rig rig;
  const std::string steady = "steady";
  const std::string moving = KeysIn(TreeSegmentOf(steady), "moving", 1)[0];
  rig.b.Write(rig.ws, steady, "s");
  rig.b.Write(rig.ws, moving, "v1");
  auto pass = rig.Pass(false);
  rig.Await(rig.timer.WaitBegan(rig.timer.now() + AntiEntropy::kSettle));
  EXPECT_EQ(rig.proxy.Count("segmentKeys"), 1u);
  rig.b.Write(rig.ws, moving, "v2");  // still being written
  rig.timer.Advance(AntiEntropy::kSettle - 1 * kMs);
  EXPECT_FALSE(pass.poll(rig.ws));
  EXPECT_EQ(rig.proxy.Count("segmentKeys"), 1u);
  rig.timer.Advance(1 * kMs);
  rig.Await(kj::mv(pass));
  EXPECT_EQ(rig.proxy.Count("segmentKeys"), 2u);
  EXPECT_EQ(rig.a.Value(steady), std::optional<std::string>("s"));
  ASSERT_EQ(rig.a.Value(moving), std::nullopt);
  // Left alone since, it is repaired by the next routine pass.
  auto again = rig.Pass(false);
  rig.Await(rig.timer.WaitBegan(rig.timer.now() + AntiEntropy::kSettle));
  rig.timer.Advance(AntiEntropy::kSettle);
  rig.Await(kj::mv(again));
  EXPECT_EQ(rig.a.Value(moving), std::optional<std::string>("v2"));
  EXPECT_TRUE(rig.InStep());
}

TEST(AntiEntropy, TheBudgetWaitsBytesOverRateAndSavesNoIdleTime) {
  Tuning t;
  t.anti_entropy_bytes_per_second = 1000;
  Rig rig(t);
  const kj::TimePoint start = rig.timer.now();
  auto first = rig.anti_entropy.Throttle(500);
  auto second = rig.anti_entropy.Throttle(250);  // after the first
  rig.timer.AdvanceTo(start + 499 * kMs);
  EXPECT_FALSE(first.poll(rig.ws));
  rig.timer.AdvanceTo(start + 500 * kMs);
  EXPECT_TRUE(first.poll(rig.ws));
  EXPECT_FALSE(second.poll(rig.ws));
  rig.timer.AdvanceTo(start + 750 * kMs);
  EXPECT_TRUE(second.poll(rig.ws));
  // A pause does not let the next bytes through at once.
  rig.timer.Advance(10 * kj::SECONDS);
  auto third = rig.anti_entropy.Throttle(100);
  rig.timer.Advance(99 * kMs);
  EXPECT_FALSE(third.poll(rig.ws));
  rig.timer.Advance(1 * kMs);
  EXPECT_TRUE(third.poll(rig.ws));
}

TEST(AntiEntropy, TheBudgetDelaysEachExchangeByTheBytesBeforeIt) {
  Tuning t;
  t.batch_bytes = 4000;  // two of the states below per answer
  t.anti_entropy_bytes_per_second = 10000;
  Rig rig(t);
  const std::vector<std::string> keys = KeysIn(7, "k", 8);
  for (const std::string& key : keys) rig.b.Write(rig.ws, key, std::string(1500, 'v'));
  const kj::TimePoint start = rig.timer.now();
  testing::RunMovingTime(rig.io, rig.timer, rig.Pass(true));
  EXPECT_TRUE(rig.InStep());
  auto pulls = rig.proxy.Calls("getStates");
  ASSERT_GE(pulls.size(), 4u);
  uint64_t before = 0;  // bytes received before each exchange
  for (size_t i = 0; i < pulls.size(); ++i) {
    // The unit rounds each wait down to the microsecond.
    kj::Duration owed = static_cast<int64_t>(before * 1'000'000 / t.anti_entropy_bytes_per_second) *
                        kj::MICROSECONDS - 10 * kj::MICROSECONDS;
    EXPECT_GE(pulls[i].at - start, owed) << "exchange " << i << " after " << before << " bytes";
    before += pulls[i].response_bytes;
  }
  EXPECT_GE(before, keys.size() * 1500);
  EXPECT_GE(rig.timer.now() - start,
            static_cast<int64_t>(before * 1'000'000 / t.anti_entropy_bytes_per_second) *
                    kj::MICROSECONDS - 10 * kj::MICROSECONDS);
}

TEST(AntiEntropy, ComparesOnlySegmentsBothOwn) {
  const std::string a_lacks = KeysIn(1, "x", 1)[0];  // a does not own segment 1
  const std::string b_lacks = KeysIn(2, "x", 1)[0];  // b does not own segment 2
  const std::string both = KeysIn(3, "x", 1)[0];
  std::vector<bool> a_owns(kTreeSegments, true);
  a_owns[1] = false;
  Rig rig(Unthrottled(), a_owns, [](size_t s) { return s != 2; });
  for (const std::string& key : {a_lacks, b_lacks, both}) rig.b.Write(rig.ws, key, "v");
  rig.Await(rig.Pass(true));
  EXPECT_EQ(rig.proxy.Count("segmentKeys"), 1u);
  EXPECT_EQ(rig.a.Value(both), std::optional<std::string>("v"));
  EXPECT_EQ(rig.a.Value(a_lacks), std::nullopt);
  EXPECT_EQ(rig.a.Value(b_lacks), std::nullopt);
}

TEST(AntiEntropy, MovesSetsTooLargeForOneMessageInPagesBothWays) {
  Tuning t = Unthrottled();
  t.max_message_bytes = 64 << 10;
  t.batch_bytes = 8 << 10;
  Rig rig(t);
  constexpr int kElements = 6000;
  rig.a.AddElements(rig.ws, "set-a", "e", 0, kElements);
  rig.b.AddElements(rig.ws, "set-b", "e", 0, kElements);
  rig.b.RemoveElements(rig.ws, "set-b", {Node::Element("e", 5)});
  rig.Await(rig.Pass(true));
  EXPECT_GT(rig.proxy.Count("getSetPage"), 2u);
  EXPECT_GT(rig.proxy.Count("putSetPage"), 2u);
  EXPECT_EQ(rig.a.Elements("set-b"), rig.b.Elements("set-b"));
  EXPECT_EQ(rig.a.SetSize("set-b"), static_cast<uint64_t>(kElements - 1));
  EXPECT_EQ(rig.b.SetSize("set-a"), static_cast<uint64_t>(kElements));
  EXPECT_TRUE(rig.InStep());
}

}  // namespace
}  // namespace geokv

// Gossip over real UDP on 127.0.0.1: joining, failure detection, leaving.
// Protocol periods are shortened so that the whole file runs in seconds.

#include "cluster/gossip.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/cluster/forged_packet.h"

namespace geokv {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

MembershipOptions FastOptions() {
  MembershipOptions o;
  o.period = 200ms;
  o.ping_timeout = 100ms;
  o.suspicion_timeout = 1000ms;
  o.dead_probe_interval = 1000ms;
  return o;
}

// Failure detection takes at most 2(n-1) periods to suspect and then the
// suspicion timeout (membership_test derives it); the rest is slack for a
// loaded machine's timers.
std::chrono::milliseconds DeadBound(int n) {
  const MembershipOptions o = FastOptions();
  return 2 * (n - 1) * o.period + o.suspicion_timeout + 1500ms;
}

Member MakeSelf(int i) {
  Member m;
  m.id = 100 + static_cast<ReplicaId>(i);
  m.name = "node-" + std::to_string(i);
  m.region = "eu";
  m.client_address = "127.0.0.1:" + std::to_string(7400 + i);
  m.peer_address = "127.0.0.1:" + std::to_string(7500 + i);
  m.peer_routes["us"] = "proxy.example:" + std::to_string(9000 + i);
  return m;
}

// Polls `done` every 10 ms until it holds or `limit` passes.
bool Eventually(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto end = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

std::optional<MemberState> StateOf(const Gossip& observer, ReplicaId id) {
  auto m = observer.Find(id);
  if (!m) return std::nullopt;
  return m->state;
}

GossipKey Key(const std::string& id, char fill) { return GossipKey{id, std::string(32, fill)}; }

// `packet` sealed by `sender` under `key`, to no one in particular.
std::string SealedAs(const GossipKey& key, ReplicaId sender, const std::string& packet) {
  GossipAuthOptions o;
  o.keys = {key};
  return GossipAuthenticator(o, sender).Seal(packet, 0);
}

uint64_t Refused(const Gossip& g, GossipRefusal why) {
  return g.refused()[static_cast<size_t>(why)];
}

class GossipTest : public ::testing::Test {
 protected:
  // Starts node i, joining through `seeds`, with gossip keys `keys`.
  Gossip& StartNode(int i, std::vector<std::string> seeds, std::vector<GossipKey> keys = {}) {
    GossipOptions o;
    o.listen = "127.0.0.1:0";
    o.self = MakeSelf(i);
    o.seeds = std::move(seeds);
    o.auth.keys = std::move(keys);
    o.membership = FastOptions();
    o.membership.seed = static_cast<uint64_t>(i) + 1;
    nodes_.push_back(std::make_unique<Gossip>(o));
    Status s = nodes_.back()->Start();
    EXPECT_TRUE(s.ok()) << s.ToString();
    return *nodes_.back();
  }

  // Three nodes: 0 is the seed; 2 names it as localhost.
  void StartThree() {
    Gossip& seed = StartNode(0, {});
    const std::string address = seed.bound_address();
    StartNode(1, {address});
    StartNode(2, {"localhost:" + address.substr(address.rfind(':') + 1)});
    ASSERT_TRUE(Eventually([&] { return AllAlive(); }, 5s));
  }

  bool AllAlive() {
    for (const auto& n : nodes_) {
      std::vector<Member> view = n->Members();
      if (view.size() != nodes_.size()) return false;
      for (const Member& m : view) {
        if (m.state != MemberState::kAlive) return false;
      }
    }
    return true;
  }

  std::vector<std::unique_ptr<Gossip>> nodes_;
};

TEST_F(GossipTest, ThreeNodesJoinThroughOneSeed) {
  Gossip& seed = StartNode(0, {});
  EXPECT_EQ(seed.bound_address().rfind("127.0.0.1:", 0), 0u) << seed.bound_address();
  EXPECT_NE(seed.bound_address(), "127.0.0.1:0");
  EXPECT_EQ(seed.Self().gossip_address, seed.bound_address());
  std::atomic<int> changes{0};
  seed.OnChange([&] {
    // Callbacks may read the view.
    if (!seed.Members().empty()) ++changes;
  });
  const std::string address = seed.bound_address();
  StartNode(1, {address});
  StartNode(2, {"localhost:" + address.substr(address.rfind(':') + 1)});
  ASSERT_TRUE(Eventually([&] { return AllAlive(); }, 5s));
  EXPECT_GE(changes.load(), 2);
  EXPECT_GT(seed.version(), 1u);

  // What node 2 said about itself is what node 1 learned.
  auto seen = nodes_[1]->Find(MakeSelf(2).id);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->gossip_address, nodes_[2]->bound_address());
  EXPECT_EQ(seen->client_address, MakeSelf(2).client_address);
  EXPECT_EQ(seen->peer_routes, MakeSelf(2).peer_routes);
  for (const auto& n : nodes_) {
    EXPECT_GT(n->stats().messages_sent, 0u);
    EXPECT_GT(n->stats().messages_received, 0u);
  }
}

TEST_F(GossipTest, AStoppedNodeIsDeclaredDead) {
  StartThree();
  const ReplicaId victim = nodes_[2]->Self().id;
  nodes_[2]->Stop();
  nodes_[2]->Stop();  // idempotent
  const auto t0 = Clock::now();
  ASSERT_TRUE(Eventually(
      [&] {
        return StateOf(*nodes_[0], victim) == MemberState::kDead &&
               StateOf(*nodes_[1], victim) == MemberState::kDead;
      },
      DeadBound(3)));
  std::cout << "dead everywhere after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count()
            << " ms (bound " << DeadBound(3).count() << " ms)\n";
  EXPECT_GE(nodes_[0]->failure_detections() + nodes_[1]->failure_detections(), 1u);
  // The survivors are fine.
  EXPECT_EQ(StateOf(*nodes_[0], nodes_[1]->Self().id), MemberState::kAlive);
  EXPECT_EQ(StateOf(*nodes_[1], nodes_[0]->Self().id), MemberState::kAlive);
}

TEST_F(GossipTest, LeaveIsSeenAsLeft) {
  StartThree();
  const Member before = nodes_[2]->Self();
  const auto t0 = Clock::now();
  nodes_[2]->Leave(2s);
  // Every member acked, so Leave returned well before its wait.
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_EQ(nodes_[2]->Self().state, MemberState::kLeft);
  nodes_[2]->Stop();
  ASSERT_TRUE(Eventually(
      [&] {
        return StateOf(*nodes_[0], before.id) == MemberState::kLeft &&
               StateOf(*nodes_[1], before.id) == MemberState::kLeft;
      },
      1s));
  EXPECT_EQ(nodes_[0]->Find(before.id)->incarnation, before.incarnation + 1);
  // A left member is not probed, so it is never suspected nor declared dead.
  std::this_thread::sleep_for(FastOptions().suspicion_timeout + 500ms);
  EXPECT_EQ(StateOf(*nodes_[0], before.id), MemberState::kLeft);
  EXPECT_EQ(StateOf(*nodes_[1], before.id), MemberState::kLeft);
  EXPECT_EQ(nodes_[0]->failure_detections() + nodes_[1]->failure_detections(), 0u);
}

TEST_F(GossipTest, ANodeThatDropsEverythingIsDeclaredDeadAndComesBack) {
  StartThree();
  Gossip& deaf = *nodes_[2];
  const ReplicaId id = deaf.Self().id;
  deaf.SetDropProbability(1.0);
  ASSERT_TRUE(Eventually(
      [&] {
        return StateOf(*nodes_[0], id) == MemberState::kDead &&
               StateOf(*nodes_[1], id) == MemberState::kDead;
      },
      DeadBound(3)));
  // It hears no one either, so to it the others are dead.
  ASSERT_TRUE(Eventually(
      [&] {
        return StateOf(deaf, nodes_[0]->Self().id) == MemberState::kDead &&
               StateOf(deaf, nodes_[1]->Self().id) == MemberState::kDead;
      },
      DeadBound(3)));
  // Dead members are still probed now and then: once the network works
  // again, everyone is alive, the node at a higher incarnation.
  deaf.SetDropProbability(0);
  ASSERT_TRUE(Eventually([&] { return AllAlive(); },
                         FastOptions().dead_probe_interval + 2s));
  EXPECT_GE(nodes_[0]->Find(id)->incarnation, 1u);
}

TEST_F(GossipTest, KeyedNodesRefuseWhatIsNotSealedUnderTheirKey) {
  Gossip& a = StartNode(0, {}, {Key("k1", 'x')});
  Gossip& b = StartNode(1, {a.bound_address()}, {Key("k1", 'x')});
  ASSERT_TRUE(Eventually([&] { return AllAlive(); }, 5s));

  Member fake = MakeSelf(9);
  fake.gossip_address = "127.0.0.1:9";
  for (Gossip* g : {&a, &b}) {
    SendDatagram(g->bound_address(), ForgedPacket(fake));
    SendDatagram(g->bound_address(), SealedAs(Key("k1", 'y'), fake.id, ForgedPacket(fake)));
    SendDatagram(g->bound_address(), SealedAs(Key("k2", 'x'), fake.id, ForgedPacket(fake)));
    SendDatagram(g->bound_address(), std::string("GKVA\x01\x05k1"));
  }
  for (Gossip* g : {&a, &b}) {
    ASSERT_TRUE(Eventually(
        [&] {
          return Refused(*g, GossipRefusal::kUnauthenticated) == 1 &&
                 Refused(*g, GossipRefusal::kBadMac) == 1 &&
                 Refused(*g, GossipRefusal::kUnknownKey) == 1 &&
                 Refused(*g, GossipRefusal::kMalformed) == 1;
        },
        2s));
    EXPECT_FALSE(g->Find(fake.id));
    EXPECT_EQ(g->Members().size(), 2u);
  }
  EXPECT_EQ(Refused(a, GossipRefusal::kReplayed) + Refused(b, GossipRefusal::kReplayed), 0u);
}

// The forged datagram above is one a node without keys takes.
TEST_F(GossipTest, ANodeWithoutKeysTakesAForgedMember) {
  Gossip& a = StartNode(0, {});
  Member fake = MakeSelf(9);
  fake.gossip_address = "127.0.0.1:9";
  SendDatagram(a.bound_address(), ForgedPacket(fake));
  ASSERT_TRUE(Eventually([&] { return a.Find(fake.id).has_value(); }, 2s));
}

TEST_F(GossipTest, NodesWhoseFirstKeysDifferDuringARotationStayInOneView) {
  // The seed is a step ahead: it sends under "new" and accepts "old" too;
  // the other holds "old" alone, so the seed must answer it under "old".
  Gossip& seed = StartNode(0, {}, {Key("new", 'n'), Key("old", 'o')});
  Gossip& behind = StartNode(1, {seed.bound_address()}, {Key("old", 'o')});
  ASSERT_TRUE(Eventually([&] { return AllAlive(); }, 5s));
  // Some periods of probes later nobody was suspected.
  std::this_thread::sleep_for(FastOptions().suspicion_timeout * 2);
  EXPECT_TRUE(AllAlive());
  for (const auto& n : nodes_) EXPECT_EQ(n->stats().suspicions, 0u);
  EXPECT_EQ(Refused(behind, GossipRefusal::kUnknownKey), 0u);
}

TEST_F(GossipTest, StartSaysWhatIsWrong) {
  Gossip& first = StartNode(0, {});
  GossipOptions taken;
  taken.listen = first.bound_address();
  taken.self = MakeSelf(1);
  Gossip second(taken);
  Status s = second.Start();
  EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
  EXPECT_NE(s.message().find(first.bound_address()), std::string::npos) << s.message();

  GossipOptions malformed;
  malformed.listen = "nonsense";
  malformed.self = MakeSelf(2);
  s = Gossip(malformed).Start();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("nonsense"), std::string::npos) << s.message();

  GossipOptions wildcard;
  wildcard.listen = "0.0.0.0:0";
  wildcard.self = MakeSelf(3);
  s = Gossip(wildcard).Start();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("wildcard"), std::string::npos) << s.message();

  GossipOptions no_id;
  no_id.listen = "127.0.0.1:0";
  s = Gossip(no_id).Start();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
}

}  // namespace
}  // namespace geokv

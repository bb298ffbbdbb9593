// Quorum reads while owners change, with real processes: an owner that
// restarted (its hints still on their way) and a node that just joined
// (its hand-over still on its way) do not count toward a quorum read
// until they are in step with the other owners, and a restarted node whose
// --seeds name only itself does not serve as its region's only member, so
// a QUORUM read never misses a QUORUM write acknowledged before it; and a
// token read on a node that came to own a key sees the token's write even
// when that node's position in the write's log passed it while the entry
// was left out for it.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <map>
#include <string>

#include "schema/kv_text.h"
#include "testing/cluster.h"
#include "testing/test_dir.h"
#include "tests/replication/process_fixture.h"

namespace geokv::testing {
namespace {

using Code = rpc::Outcome::Code;
using namespace std::chrono_literals;

// A QUORUM get: the value, or nullopt with the code in *code.
std::optional<std::string> QuorumGet(Client& c, const std::string& key, Code* code) {
  auto req = c.kv().getRequest();
  req.setKey(AsData(key));
  req.setConsistency(rpc::Consistency::QUORUM);
  auto reply = req.send().wait(c.ws());
  *code = reply.getOutcome().getCode();
  if (*code != Code::OK) return std::nullopt;
  return String(reply.getValue());
}

// Sets k0..k<keys - 1> to v0.. at QUORUM through `c`; the outcome of the
// first that fails, else ok.
Code QuorumSetKeys(Client& c, int keys) {
  for (int i = 0; i < keys; ++i) {
    auto req = c.kv().setRequest();
    req.setKey(AsData("k" + std::to_string(i)));
    req.setValue(AsData("v" + std::to_string(i)));
    req.setConsistency(rpc::Consistency::QUORUM);
    Code code = req.send().wait(c.ws()).getOutcome().getCode();
    if (code != Code::OK) return code;
  }
  return Code::OK;
}

// The state `c`'s node sees member `name` in ("" when it does not know it).
std::string StateOf(Client& c, const std::string& name) {
  auto reply = c.kv().clusterRequest().send().wait(c.ws());
  for (auto m : reply.getMembers()) {
    if (m.getName() == name) return MemberStateName(m.getState());
  }
  return "";
}

// One region of three nodes, every key on all three, with TLS on every port.
Cluster::Options RegionOfThree() {
  Cluster::Options o;
  o.regions = 1;
  o.nodes_per_region = 3;
  o.tls = true;
  o.flags = {"--anti-entropy-interval", "1s",  "--heartbeat",       "200ms",
             "--replication-factor",    "3",   "--request-timeout", "2s"};
  return o;
}

TEST(SettleTest, QuorumReadsThroughARestartedOwnerAndANewNodeMissNoAcknowledgedWrite) {
  TestDir dir;
  Cluster cluster(dir.path(), RegionOfThree());
  START_CLUSTER(cluster);

  // C (node 2) is down while B (node 1) writes: every write is
  // acknowledged by A and B, and C's copy waits in B's log as a hint.
  cluster.node(2).Kill();
  constexpr int kKeys = 150;
  {
    Client b(cluster, 1);
    ASSERT_EQ(QuorumSetKeys(b, kKeys), Code::OK);
  }
  // B stops with the hints (one node away, which QUORUM tolerates); C comes
  // back and a fourth node D joins (through A) at once.
  cluster.node(1).child().Signal(SIGSTOP);
  std::string why;
  ASSERT_TRUE(cluster.StartNode(2, &why)) << why;
  const int d = cluster.AddNode(0, &why);
  ASSERT_GE(d, 0) << why;

  // Reads coordinated by C and D: each answers the value or fails, never
  // an older state.
  Client c(cluster, 2), dn(cluster, d);
  int missed = 0, answered = 0, failed = 0;
  const auto end = std::chrono::steady_clock::now() + 6s;
  while (std::chrono::steady_clock::now() < end) {
    for (int i = 0; i < kKeys; ++i) {
      const std::string key = "k" + std::to_string(i);
      for (Client* via : {&c, &dn}) {
        Code code = Code::OK;
        auto value = QuorumGet(*via, key, &code);
        if (value) {
          ++answered;
          if (*value != "v" + std::to_string(i)) ++missed;
        } else if (code == Code::NOT_FOUND) {
          ++missed;
        } else {
          ++failed;
        }
      }
    }
  }
  EXPECT_EQ(missed, 0) << "answered " << answered << ", failed " << failed;

  // B back: every node gets in step and every read answers.
  cluster.node(1).child().Signal(SIGCONT);
  ASSERT_TRUE(cluster.WaitSettled(60s, &why)) << why;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = "k" + std::to_string(i);
    for (Client* via : {&c, &dn}) {
      Code code = Code::OK;
      EXPECT_EQ(QuorumGet(*via, key, &code), "v" + std::to_string(i))
          << key << " code " << static_cast<int>(code);
    }
  }
}

// Node 0 names only itself as its gossip seed (the others name it). Back
// from a kill after the others declared it dead, it must not answer QUORUM
// reads as its region's only member before their gossip reaches it: it
// joins through the members it knew.
TEST(SettleTest, ARestartedNodeSeededByItselfAloneServesNoQuorumReadAlone) {
  TestDir dir;
  Cluster cluster(dir.path(), RegionOfThree());
  START_CLUSTER(cluster);
  std::string why;
  ASSERT_TRUE(cluster.WaitSettled(60s, &why)) << why;

  cluster.node(0).Kill();
  constexpr int kKeys = 20;
  {
    Client b(cluster, 1);
    ASSERT_TRUE(PollUntil([&] { return StateOf(b, cluster.Name(0)) == "dead"; }, 30s))
        << cluster.Logs();
    ASSERT_EQ(QuorumSetKeys(b, kKeys), Code::OK);
  }
  ASSERT_TRUE(cluster.StartNode(0, &why)) << why;

  // At once, and for longer than the others take to probe a dead member
  // again: each read answers the value or fails, never misses it.
  Client a(cluster, 0);
  int missed = 0, answered = 0, failed = 0;
  std::string first_miss;
  const auto end = std::chrono::steady_clock::now() + 6s;
  while (std::chrono::steady_clock::now() < end) {
    for (int i = 0; i < kKeys; ++i) {
      const std::string key = "k" + std::to_string(i);
      Code code = Code::OK;
      auto value = QuorumGet(a, key, &code);
      if (value && *value == "v" + std::to_string(i)) {
        ++answered;
      } else if (value || code == Code::NOT_FOUND) {
        if (missed++ == 0) first_miss = key;
      } else {
        ++failed;
      }
    }
  }
  EXPECT_EQ(missed, 0) << "first " << first_miss << "; answered " << answered << ", failed "
                       << failed;
  EXPECT_GT(answered, 0) << "failed " << failed;
}

// Node 1's clock is 1.5 s behind its region's: it refuses writes, and the
// batches and repairs of its peers (their stamps are ahead of its clock by
// more than --max-clock-offset), so its own copies fall behind. QUORUM
// reads it coordinates must still see every QUORUM write acknowledged
// before them (the other owners answer for what it lacks), while a
// member leaves the region.
TEST(SettleTest, QuorumReadsThroughASkewedNodeMissNoAcknowledgedWrite) {
  if (FaketimeLibrary().empty()) GTEST_SKIP() << "libfaketime is missing";
  TestDir dir;
  Cluster::Options o = RegionOfThree();
  o.nodes_per_region = 4;
  o.all_seeds = true;
  Cluster cluster(dir.path(), o);
  cluster.SetNodeWrapper(1, FaketimeWrapper("-1.5"));
  START_CLUSTER(cluster);
  std::string why;

  Client writer(cluster, 0), skewed(cluster, 1);
  constexpr int kKeys = 40;
  int missed = 0, answered = 0, failed = 0, written = 0;
  std::string first_miss;
  std::map<std::string, int> failures;  // by operation and code
  bool left = false;
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; std::chrono::steady_clock::now() < start + 10s; ++round) {
    if (!left && std::chrono::steady_clock::now() > start + 3s) {
      Client leaver(cluster, 2);
      auto reply = leaver.kv().leaveRequest().send().wait(leaver.ws());
      ASSERT_EQ(reply.getOutcome().getCode(), Code::OK) << reply.getOutcome().getMessage().cStr();
      left = true;
    }
    for (int i = 0; i < kKeys; ++i) {
      const std::string key = "k" + std::to_string(i);
      const std::string value = "r" + std::to_string(round);
      auto set = writer.kv().setRequest();
      set.setKey(AsData(key));
      set.setValue(AsData(value));
      set.setConsistency(rpc::Consistency::QUORUM);
      if (set.send().wait(writer.ws()).getOutcome().getCode() != Code::OK) continue;
      ++written;
      Code code = Code::OK;
      auto got = QuorumGet(skewed, key, &code);
      if (got == value) {
        ++answered;
      } else if (got || code == Code::NOT_FOUND) {
        if (missed++ == 0) {
          first_miss = key + " read " + got.value_or("(none)") + " (code " +
                       std::to_string(static_cast<int>(code)) + ") after " + value + " at " +
                       std::to_string((std::chrono::steady_clock::now() - start) / 1ms) + " ms";
        }
      } else {
        ++failed;
        ++failures[std::string("get ") + OutcomeName(code)];
      }
      // An element added to a set: the skewed node refuses batches with
      // LWW stamps ahead of it, sets among them.
      const std::string set_key = "s" + std::to_string(i % 4);
      auto add = writer.kv().sAddRequest();
      add.setKey(AsData(set_key));
      add.initElements(1).set(0, AsData(key + value));
      add.setConsistency(rpc::Consistency::QUORUM);
      if (add.send().wait(writer.ws()).getOutcome().getCode() != Code::OK) continue;
      auto has = skewed.kv().sIsMemberRequest();
      has.setKey(AsData(set_key));
      has.setElement(AsData(key + value));
      has.setConsistency(rpc::Consistency::QUORUM);
      auto reply = has.send().wait(skewed.ws());
      if (reply.getOutcome().getCode() != Code::OK) {
        ++failed;
        ++failures[std::string("sismember ") + OutcomeName(reply.getOutcome().getCode())];
      } else if (reply.getValue()) {
        ++answered;
      } else if (missed++ == 0) {
        first_miss = set_key + " lacked " + key + value;
      }
    }
  }
  std::string why_failed;
  for (const auto& [what, n] : failures) why_failed += " " + what + ": " + std::to_string(n);
  EXPECT_EQ(missed, 0) << "first: " << first_miss << "; answered " << answered << ", failed "
                       << failed << " (" << why_failed << "), written " << written << "\n"
                       << cluster.Logs();
  EXPECT_GT(answered, 0) << "failed " << failed << "\n" << cluster.Logs();
  EXPECT_NE(cluster.node(1).Log().find("ahead of this node's clock"), std::string::npos)
      << "the skewed node refused nothing: the test did not skew it";
}

// The replica id of node `i`.
uint64_t ReplicaIdOf(Cluster& cluster, int i) {
  Client c(cluster, i);
  return c.kv().infoRequest().send().wait(c.ws()).getReplicaId();
}

// Two regions of two nodes, one owner per key in each. r1's owner of k,
// X (node 2), is paused when A (node 0, r0) writes k: A's log reaches the
// other node of r1, Y (node 3), with k's entry left out (Y does not own
// it), and Y's position in A's log passes the write. X is declared dead
// and removed, and Y comes to own k. A read of k through Y presenting the
// write's token must see the write: Y's position says it holds it, but its
// state does not (nothing hands it over, and routine anti-entropy is an
// hour away), so Y brings k's segment in step with the write's origin
// first. Before, Y answered not-found.
TEST(SettleTest, ATokenReadOnANewOwnerSeesAWriteItsPositionCoveredButItWasNotShipped) {
  TestDir dir;
  Cluster::Options o;
  o.regions = 2;
  o.nodes_per_region = 2;
  o.flags = {"--anti-entropy-interval", "60min", "--heartbeat",     "200ms",
             "--replication-factor",    "1",  "--request-timeout", "2s",
             "--token-wait",            "10s"};
  Cluster cluster(dir.path(), o);
  START_CLUSTER(cluster);
  Client a(cluster, 0), y(cluster, 3);
  const uint64_t x_id = ReplicaIdOf(cluster, 2);
  std::string key;
  for (int i = 0; i < 200 && key.empty(); ++i) {
    auto req = y.kv().ownersRequest();
    req.setKey(AsData("k" + std::to_string(i)));
    auto reply = req.send().wait(y.ws());
    for (auto r : reply.getRegions()) {
      if (r.getRegion() == Cluster::Region(1) && r.getOwners().size() == 1 &&
          r.getOwners()[0].getReplicaId() == x_id) {
        key = "k" + std::to_string(i);
      }
    }
  }
  ASSERT_FALSE(key.empty()) << "no key of node 2's among 200";

  const std::string x = cluster.Name(2);
  cluster.node(2).child().Signal(SIGSTOP);
  auto set = a.kv().setRequest();
  set.setKey(AsData(key));
  set.setValue(AsData("v"));
  auto written = set.send().wait(a.ws());
  ASSERT_EQ(written.getOutcome().getCode(), Code::OK) << written.getOutcome().getMessage().cStr();
  const std::string token = String(written.getToken());

  ASSERT_TRUE(PollUntil([&] { return StateOf(y, x) == "dead" && StateOf(a, x) == "dead"; }, 30s))
      << "node 2 is " << StateOf(y, x) << " to node 3, " << StateOf(a, x) << " to node 0";
  // r1's only live node, Y, holds A's log through the write.
  auto wait = a.kv().waitReplicatedRequest();
  wait.initTokens(1).set(0, AsData(token));
  wait.initRegions(1).set(0, Cluster::Region(1));
  wait.setTimeoutMs(10000);
  auto waited = wait.send().wait(a.ws());
  ASSERT_EQ(waited.getOutcome().getCode(), Code::OK) << waited.getOutcome().getMessage().cStr();

  auto remove = y.kv().removeRequest();
  remove.setMember(x);
  ASSERT_EQ(remove.send().wait(y.ws()).getOutcome().getCode(), Code::OK);
  Code code = Code::INTERNAL;
  std::string value, message;
  ASSERT_TRUE(PollUntil(
      [&] {
        auto get = y.kv().getRequest();
        get.setKey(AsData(key));
        get.setConsistency(rpc::Consistency::ONE);
        get.initTokens(1).set(0, AsData(token));
        auto reply = get.send().wait(y.ws());
        code = reply.getOutcome().getCode();
        message = reply.getOutcome().getMessage().cStr();
        if (code == Code::OK) value = String(reply.getValue());
        return code != Code::UNAVAILABLE;  // settling on the segments it came to own
      },
      20s))
      << message;
  EXPECT_EQ(code, Code::OK) << message;
  EXPECT_EQ(value, "v");
  cluster.node(2).child().Signal(SIGCONT);
}

}  // namespace
}  // namespace geokv::testing

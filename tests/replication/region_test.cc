// Regions of several nodes, as real processes on loopback: placement with
// N = 3, quorums, hinted handoff, failure detection by gossip, and
// replication between regions of three nodes each.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "schema/kv_text.h"
#include "testing/cluster.h"
#include "testing/test_dir.h"

namespace geokv {
namespace {

using namespace std::chrono_literals;
using Code = rpc::Outcome::Code;
using testing::Client;
using testing::Cluster;
using testing::PollUntil;
using testing::TestDir;

const std::vector<std::string> kRegionFlags = {
    "--anti-entropy-interval", "1s",  "--heartbeat",   "200ms", "--token-wait",
    "10s",                     "--replication-factor", "3",     "--request-timeout", "2s"};

#define START_CLUSTER(cluster)                 \
  do {                                         \
    std::string why;                           \
    ASSERT_TRUE((cluster).Start(&why)) << why; \
  } while (0)

// With TLS on every port, as a secured deployment runs.
Cluster::Options TwoRegionsOfThree() {
  Cluster::Options o;
  o.regions = 2;
  o.flags = kRegionFlags;
  o.nodes_per_region = 3;
  o.tls = true;
  return o;
}

// A write at `level`; its outcome code.
Code SetAt(Client& c, const std::string& key, const std::string& value, rpc::Consistency level) {
  auto req = c.kv().setRequest();
  req.setKey(AsData(key));
  req.setValue(AsData(value));
  req.setConsistency(level);
  return req.send().wait(c.ws()).getOutcome().getCode();
}

// A read at `level`: the value, or nullopt (and the code in *code).
std::optional<std::string> GetAt(Client& c, const std::string& key, rpc::Consistency level,
                                 Code* code = nullptr) {
  auto req = c.kv().getRequest();
  req.setKey(AsData(key));
  req.setConsistency(level);
  auto reply = req.send().wait(c.ws());
  if (code) *code = reply.getOutcome().getCode();
  if (reply.getOutcome().getCode() != Code::OK) return std::nullopt;
  return String(reply.getValue());
}

// An increment at `level`; its outcome code.
Code IncrAt(Client& c, const std::string& key, int64_t delta, rpc::Consistency level) {
  auto req = c.kv().incrByRequest();
  req.setKey(AsData(key));
  req.setDelta(delta);
  req.setConsistency(level);
  return req.send().wait(c.ws()).getOutcome().getCode();
}

// A counter read at `level`; 0 when it was never changed.
int64_t CounterAt(Client& c, const std::string& key, rpc::Consistency level) {
  auto req = c.kv().counterGetRequest();
  req.setKey(AsData(key));
  req.setConsistency(level);
  auto reply = req.send().wait(c.ws());
  EXPECT_TRUE(reply.getOutcome().getCode() == Code::OK ||
              reply.getOutcome().getCode() == Code::NOT_FOUND)
      << reply.getOutcome().getMessage().cStr();
  return reply.getValue();
}

// The state `c`'s node sees member `name` in ("" when it does not know it).
std::string StateOf(Client& c, const std::string& name) {
  auto reply = c.kv().clusterRequest().send().wait(c.ws());
  for (auto m : reply.getMembers()) {
    if (m.getName() == name) return MemberStateName(m.getState());
  }
  return "";
}

// Run in plaintext and with TLS on every port (Cluster::Options::tls).
class RegionTlsTest : public ::testing::TestWithParam<bool> {};

INSTANTIATE_TEST_SUITE_P(PlainAndTls, RegionTlsTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "Tls" : "Plain";
                         });

TEST_P(RegionTlsTest, QuorumWorksWithOneNodeDownAndItsHintsReachItWhenBack) {
  TestDir dir;
  Cluster::Options o = TwoRegionsOfThree();
  o.tls = GetParam();
  Cluster cluster(dir.path(), o);
  START_CLUSTER(cluster);
  cluster.node(2).Kill();  // r0-2, one of every key's three owners in r0
  ASSERT_TRUE(cluster.node(0).child().Running() && cluster.node(1).child().Running())
      << cluster.Logs();
  Client a(cluster, 0), b(cluster, 1);
  constexpr int kKeys = 60;
  for (int i = 0; i < kKeys; ++i) {
    // Writes through either live node, forwarded or not, reach a quorum.
    Client& via = i % 2 ? a : b;
    ASSERT_EQ(SetAt(via, "k" + std::to_string(i), "v" + std::to_string(i),
                    rpc::Consistency::QUORUM),
              Code::OK)
        << i;
  }
  for (int i = 0; i < kKeys; ++i) {
    EXPECT_EQ(GetAt(b, "k" + std::to_string(i), rpc::Consistency::QUORUM),
              "v" + std::to_string(i));
  }
  // ALL cannot be met while an owner is away (it is still in the ring).
  Code code;
  EXPECT_EQ(GetAt(a, "k0", rpc::Consistency::ALL, &code), std::nullopt);
  EXPECT_NE(code, Code::OK);

  auto hints = [&](Client& c) { return c.kv().infoRequest().send().wait(c.ws()); };
  uint64_t stored = hints(a).getHintsStored() + hints(b).getHintsStored();
  EXPECT_GE(stored, static_cast<uint64_t>(kKeys)) << "every write hinted for the node away";

  std::string why;
  ASSERT_TRUE(cluster.StartNode(2, &why)) << why;
  ASSERT_TRUE(PollUntil([&] { return hints(a).getHintsPending() == 0 &&
                                     hints(b).getHintsPending() == 0; },
                        30s))
      << "hints still pending: " << hints(a).getHintsPending() << " "
      << hints(b).getHintsPending();
  EXPECT_GE(hints(a).getHintsReplayed() + hints(b).getHintsReplayed(), stored);
  // The restarted node serves the hinted writes on its own (ONE, local).
  ASSERT_TRUE(cluster.node(2).child().Running()) << cluster.node(2).child().Log();
  Client c(cluster, 2);
  for (int i = 0; i < kKeys; ++i) {
    EXPECT_EQ(GetAt(c, "k" + std::to_string(i), rpc::Consistency::ONE), "v" + std::to_string(i))
        << i;
  }
}

// `remove` of `member` through `c`'s node; its outcome code.
Code RemoveMember(Client& c, const std::string& member) {
  auto req = c.kv().removeRequest();
  req.setMember(member);
  return req.send().wait(c.ws()).getOutcome().getCode();
}

TEST(RegionTest, GossipDeclaresAKilledNodeDeadAPausedOneNotAndRemoveTakesTheDeadOut) {
  TestDir dir;
  Cluster cluster(dir.path(), TwoRegionsOfThree());
  START_CLUSTER(cluster);
  Client a(cluster, 0);

  // SIGSTOP for 0.5 s: suspected at most. A suspicion confirmed by the
  // other node (its own probe, or its nack of a ping-req) runs out no
  // sooner than a failed probe (a period, 0.5 s) plus the confirmed
  // timeout (0.75 s) after the stop, and the suspect is told of it every
  // ping timeout (0.2 s) meanwhile.
  const std::string paused = cluster.Name(2);
  cluster.node(2).child().Signal(SIGSTOP);
  auto resume = std::chrono::steady_clock::now() + 500ms;
  std::set<std::string> seen;
  while (std::chrono::steady_clock::now() < resume) {
    seen.insert(StateOf(a, paused));
    std::this_thread::sleep_for(50ms);
  }
  cluster.node(2).child().Signal(SIGCONT);
  auto settle = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < settle) {
    seen.insert(StateOf(a, paused));
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(seen.count("dead"), 0u) << "a pause shorter than the suspicion timeout";
  EXPECT_EQ(StateOf(a, paused), "alive");

  // SIGKILL: dead within period + ping rounds + suspicion timeout (about
  // 4 s here); the bound leaves a wide margin for a loaded machine.
  const std::string killed = cluster.Name(1);
  auto start = std::chrono::steady_clock::now();
  cluster.node(1).Kill();
  ASSERT_TRUE(PollUntil([&] { return StateOf(a, killed) == "dead"; }, 20s))
      << "still " << StateOf(a, killed);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, 15s);
  // The other region hears of it from this one.
  Client remote(cluster, 3);
  EXPECT_TRUE(PollUntil([&] { return StateOf(remote, killed) == "dead"; }, 10s));

  // A dead owner blocks ALL until the operator removes it for good; a
  // running node cannot be removed, nor a name the region does not have.
  EXPECT_EQ(SetAt(a, "after", "x", rpc::Consistency::ALL), Code::UNAVAILABLE);
  EXPECT_EQ(RemoveMember(a, paused), Code::INVALID);
  EXPECT_EQ(RemoveMember(a, "no-such-node"), Code::NOT_FOUND);
  EXPECT_EQ(StateOf(a, paused), "alive");
  ASSERT_EQ(RemoveMember(a, killed), Code::OK);
  Client c(cluster, 2);
  EXPECT_TRUE(PollUntil([&] { return StateOf(c, killed) == "left"; }, 10s));
  EXPECT_TRUE(PollUntil([&] { return StateOf(remote, killed) == "left"; }, 10s));
  EXPECT_TRUE(PollUntil(
      [&] { return SetAt(c, "after", "x", rpc::Consistency::ALL) == Code::OK; }, 10s));
  EXPECT_EQ(GetAt(a, "after", rpc::Consistency::ALL), "x");
}

// A paused owner stays connected and answers nothing. A QUORUM read asks
// R - 1 = 1 other owner first; when that is the paused one, the read asks
// the third after --read-hedge (20 ms) instead of waiting out
// --request-timeout (30 s here, and the suspicion far longer, so the paused
// node stays an owner throughout).
TEST(RegionTest, AQuorumReadDoesNotWaitForAPausedOwnerItAskedFirst) {
  TestDir dir;
  Cluster::Options o;
  o.regions = 1;
  o.nodes_per_region = 3;
  o.flags = {"--replication-factor", "3", "--request-timeout", "30s", "--suspicion-timeout",
             "120s", "--confirmed-suspicion-timeout", "120s"};
  Cluster cluster(dir.path(), o);
  START_CLUSTER(cluster);
  Client a(cluster, 0);
  constexpr int kKeys = 20;
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_EQ(SetAt(a, "h" + std::to_string(i), "v" + std::to_string(i), rpc::Consistency::ALL),
              Code::OK);
  }
  cluster.node(2).child().Signal(SIGSTOP);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kKeys; ++i) {
    Code code = Code::OK;
    EXPECT_EQ(GetAt(a, "h" + std::to_string(i), rpc::Consistency::QUORUM, &code),
              "v" + std::to_string(i))
        << "code " << static_cast<int>(code);
  }
  const auto took = std::chrono::steady_clock::now() - start;
  cluster.node(2).child().Signal(SIGCONT);
  // Waiting for the paused owner takes until the link to it is given up
  // (about 5 s here) for the first read that asked it, and the request
  // timeout (30 s) at worst.
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(took).count(), 3000);
}

// The ids of `key`'s owners in region r0, as `c`'s node sees them.
std::vector<uint64_t> OwnersOf(Client& c, const std::string& key) {
  auto req = c.kv().ownersRequest();
  req.setKey(AsData(key));
  auto reply = req.send().wait(c.ws());
  std::vector<uint64_t> out;
  for (auto r : reply.getRegions()) {
    if (r.getRegion() != Cluster::Region(0)) continue;
    for (auto m : r.getOwners()) out.push_back(m.getReplicaId());
  }
  return out;
}

uint64_t KeyCount(Client& c) { return c.kv().infoRequest().send().wait(c.ws()).getKeyCount(); }

TEST(RegionTest, ANodeJoinsUnderLoadTakingAQuarterAndALeavingNodeLosesNothing) {
  TestDir dir;
  Cluster cluster(dir.path(), TwoRegionsOfThree());
  START_CLUSTER(cluster);
  Client a(cluster, 0);
  constexpr int kSample = 1000;
  std::vector<std::vector<uint64_t>> before;
  for (int i = 0; i < kSample; ++i) before.push_back(OwnersOf(a, "k" + std::to_string(i)));

  // Writes through two nodes of r0 until told to stop; the acknowledged
  // keys are kept. Each also increments one of 16 counters: a node that
  // coordinated an increment after handing the counter over would reuse its
  // old total, and increments would be lost.
  constexpr int kCounters = 16;
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<int> acked;
  int64_t increments_acked = 0, increments_maybe = 0;
  auto load = [&](int node, int first) {
    Client c(cluster, node);
    for (int i = first; !stop; i += 2) {
      if (SetAt(c, "k" + std::to_string(i), "v" + std::to_string(i), rpc::Consistency::QUORUM) ==
          Code::OK) {
        std::lock_guard<std::mutex> lock(mu);
        acked.push_back(i);
      }
      Code incr = IncrAt(c, "c" + std::to_string(i % kCounters), 1, rpc::Consistency::QUORUM);
      std::lock_guard<std::mutex> lock(mu);
      if (incr == Code::OK) {
        ++increments_acked;
      } else if (incr == Code::TIMEOUT) {
        ++increments_maybe;  // durable somewhere, or unknown
      }
    }
  };
  std::thread w0(load, 0, 0), w1(load, 1, 1);
  auto acked_count = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return acked.size();
  };
  ASSERT_TRUE(PollUntil([&] { return acked_count() >= 200; }, 30s));
  std::string why;
  const int joined = cluster.AddNode(0, &why);
  ASSERT_GE(joined, 0) << why;
  ASSERT_TRUE(PollUntil([&] { return StateOf(a, cluster.Name(joined)) == "alive"; }, 30s));
  const size_t at_join = acked_count();
  ASSERT_TRUE(PollUntil([&] { return acked_count() >= at_join + 300; }, 60s));
  stop = true;
  w0.join();
  w1.join();
  ASSERT_GE(acked.size(), 500u);

  // Of the (key, owner) placements, close to 1/4 moved to the new node.
  size_t moved = 0, total = 0;
  for (int i = 0; i < kSample; ++i) {
    std::vector<uint64_t> after = OwnersOf(a, "k" + std::to_string(i));
    ASSERT_EQ(after.size(), 3u);
    for (uint64_t o : after) {
      ++total;
      moved += std::find(before[i].begin(), before[i].end(), o) == before[i].end();
    }
  }
  double fraction = static_cast<double>(moved) / total;
  EXPECT_LE(fraction, 2 * 0.25) << "moved " << moved << " of " << total;
  EXPECT_GT(fraction, 0.0);
  std::printf("fraction of placements moved by the join: %.3f\n", fraction);

  auto all_readable = [&](Client& via) {
    for (int i : acked) {
      EXPECT_EQ(GetAt(via, "k" + std::to_string(i), rpc::Consistency::QUORUM),
                "v" + std::to_string(i))
          << i;
      if (::testing::Test::HasFailure()) return;
    }
  };
  Client b(cluster, 1), d(cluster, joined);
  all_readable(b);
  all_readable(d);

  // The hand-over ends with every key on exactly three nodes of r0.
  std::vector<int> r0{0, 1, 2, joined};
  auto held = [&](const std::vector<int>& nodes) {
    uint64_t sum = 0;
    for (int n : nodes) {
      Client c(cluster, n);
      sum += KeyCount(c);
    }
    return sum;
  };
  ASSERT_TRUE(PollUntil([&] { return held(r0) == 3 * acked.size() + 3 * kCounters; }, 60s))
      << held(r0) << " key copies in r0 for " << acked.size() << " + " << kCounters << " keys";
  EXPECT_GT(KeyCount(d), 0u);
  auto counted = [&](Client& via) {
    int64_t sum = 0;
    for (int i = 0; i < kCounters; ++i) {
      sum += CounterAt(via, "c" + std::to_string(i), rpc::Consistency::QUORUM);
    }
    return sum;
  };
  EXPECT_GE(counted(d), increments_acked);
  EXPECT_LE(counted(d), increments_acked + increments_maybe);

  // A node leaves: it hands its keys over and exits; nothing is lost.
  auto reply = b.kv().leaveRequest().send().wait(b.ws());
  ASSERT_EQ(reply.getOutcome().getCode(), Code::OK) << reply.getOutcome().getMessage().cStr();
  auto exited = cluster.node(1).child().Wait(60s);
  ASSERT_TRUE(exited.has_value()) << cluster.node(1).child().Log();
  EXPECT_EQ(*exited, 0);
  ASSERT_TRUE(PollUntil([&] { return StateOf(a, cluster.Name(1)) == "left"; }, 10s));
  all_readable(a);
  all_readable(d);
  ASSERT_TRUE(
      PollUntil([&] { return held({0, 2, joined}) == 3 * acked.size() + 3 * kCounters; }, 60s))
      << held({0, 2, joined}) << " key copies in r0 for " << acked.size() << " + " << kCounters
      << " keys";
  EXPECT_GE(counted(a), increments_acked);
  EXPECT_LE(counted(a), increments_acked + increments_maybe);
}

TEST(RegionTest, RegionsOfThreeConvergeAfterConcurrentWritesAndAPartition) {
  TestDir dir;
  Cluster cluster(dir.path(), TwoRegionsOfThree());
  START_CLUSTER(cluster);
  std::vector<std::unique_ptr<Client>> c;
  for (int i = 0; i < cluster.nodes(); ++i) c.push_back(std::make_unique<Client>(cluster, i));
  // Concurrent writes to the same keys through every node of both regions.
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < cluster.nodes(); ++i) {
      std::string key = "k" + std::to_string(round % 7);
      ASSERT_NE(c[i]->Set(key, "n" + std::to_string(i) + "r" + std::to_string(round)), "");
      ASSERT_NE(c[i]->SAdd("set", "e" + std::to_string(i) + "-" + std::to_string(round)), "");
      ASSERT_NE(c[i]->IncrBy("ctr", 1), "");
    }
  }
  std::string why;
  ASSERT_TRUE(cluster.WaitConverged(30s, &why)) << why;

  cluster.Partition(1);
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < cluster.nodes(); ++i) {
      ASSERT_NE(c[i]->IncrBy("ctr", 1), "");
      ASSERT_NE(c[i]->Set("p" + std::to_string(round), "n" + std::to_string(i)), "");
    }
  }
  // Each side sees only its own writes.
  EXPECT_EQ(c[0]->Counter("ctr"), 120 + 60);
  EXPECT_EQ(c[3]->Counter("ctr"), 120 + 60);
  cluster.Heal(1);
  ASSERT_TRUE(cluster.WaitConverged(60s, &why)) << why;
  for (int i = 0; i < cluster.nodes(); ++i) {
    EXPECT_EQ(c[i]->Counter("ctr"), 240);
    EXPECT_EQ(c[i]->SMembers("set").size(), 120u);
    EXPECT_EQ(c[i]->Get("p19"), c[0]->Get("p19"));
  }
  c.clear();
  ASSERT_TRUE(cluster.StopAndCompareDumps(&why)) << why;
}

}  // namespace
}  // namespace geokv

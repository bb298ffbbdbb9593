// Geo-replication with real processes: one geokv-server per region on
// loopback, every link between regions through a WAN proxy, TLS on every
// port (but for the last test's nodes, which run in plaintext).

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <regex>
#include <set>
#include <thread>

#include "schema/kv_text.h"
#include "testing/cluster.h"
#include "tests/replication/process_fixture.h"
#include "testing/test_dir.h"

namespace geokv::testing {
namespace {

using Code = rpc::Outcome::Code;
using namespace std::chrono_literals;

std::set<std::string> AsSet(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

TEST(ReplicationTest, ConcurrentConflictingWritesOfEveryTypeConverge) {
  TestDir dir;
  Cluster cluster(dir.path(), TlsRegions(3));
  START_CLUSTER(cluster);

  // Every region writes every type on the same keys at once.
  constexpr int kRounds = 60;
  std::atomic<int64_t> increments{0};
  std::vector<std::thread> writers;
  for (int r = 0; r < 3; ++r) {
    writers.emplace_back([&, r] {
      Client c(cluster, r);
      for (int i = 0; i < kRounds; ++i) {
        std::string k = std::to_string(i % 10);
        std::string v = Cluster::Region(r) + "-" + std::to_string(i);
        EXPECT_NE(c.Set("lww" + k, v), "");
        EXPECT_NE(c.MvSet("mv" + k, v), "");
        EXPECT_NE(c.SAdd("set" + k, v), "");
        if (i % 3 == 0) {
          // Removes what another region added earlier, often concurrently.
          std::string other = Cluster::Region((r + 1) % 3) + "-" + std::to_string(i - 3);
          EXPECT_NE(c.SRem("set" + k, other), "");
        }
        EXPECT_NE(c.IncrBy("ctr" + k, r + 1), "");
        increments += r + 1;
        if (i % 7 == 0) {
          EXPECT_NE(c.Del("lww" + k), "");
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_CONVERGED(cluster, 30s);

  // What every region reads is the same, and the counters hold every
  // increment.
  int64_t total = 0;
  for (int k = 0; k < 10; ++k) total += Client(cluster, 0).Counter("ctr" + std::to_string(k));
  EXPECT_EQ(total, increments.load());
  for (int k = 0; k < 10; ++k) {
    std::string key = std::to_string(k);
    Client a(cluster, 0);
    for (int r = 1; r < 3; ++r) {
      Client b(cluster, r);
      EXPECT_EQ(a.Get("lww" + key), b.Get("lww" + key));
      EXPECT_EQ(AsSet(a.MvGet("mv" + key)), AsSet(b.MvGet("mv" + key)));
      EXPECT_EQ(AsSet(a.SMembers("set" + key)), AsSet(b.SMembers("set" + key)));
    }
  }
  EXPECT_SAME_DUMPS(cluster);
}

TEST(ReplicationTest, PartitionedRegionKeepsWritingAndConvergesAfterHealing) {
  TestDir dir;
  Cluster cluster(dir.path(), TlsRegions(3));
  START_CLUSTER(cluster);
  Client a(cluster, 0), c(cluster, 2);
  ASSERT_NE(a.SAdd("s", "x"), "");
  ASSERT_NE(a.Set("lww", "before"), "");
  EXPECT_CONVERGED(cluster, 20s);

  cluster.Partition(2);
  // Both sides take writes while cut off.
  for (int i = 0; i < 50; ++i) {
    ASSERT_NE(a.IncrBy("ctr", 1), "");
    ASSERT_NE(c.IncrBy("ctr", 10), "");
    ASSERT_NE(a.SAdd("s", "a" + std::to_string(i)), "");
    ASSERT_NE(c.SAdd("s", "c" + std::to_string(i)), "");
    ASSERT_NE(a.Set("a-only" + std::to_string(i), "v" + std::to_string(i)), "");
  }
  // Concurrent remove (majority side) and add (cut-off side) of one
  // element: the add wins.
  ASSERT_NE(a.SRem("s", "x"), "");
  ASSERT_NE(c.SAdd("s", "x"), "");
  // LWW: the cut-off side writes last.
  ASSERT_NE(a.Set("lww", "majority"), "");
  std::this_thread::sleep_for(5ms);  // a later wall clock for the next stamp
  ASSERT_NE(c.Set("lww", "cut-off"), "");
  // Nothing crosses the partition.
  EXPECT_EQ(Client(cluster, 1).Counter("ctr"), 50);
  EXPECT_EQ(c.Counter("ctr"), 500);

  cluster.Heal(2);
  EXPECT_CONVERGED(cluster, 30s);
  for (int r = 0; r < 3; ++r) {
    Client n(cluster, r);
    EXPECT_EQ(n.Counter("ctr"), 550) << Cluster::Region(r);
    std::set<std::string> members = AsSet(n.SMembers("s"));
    EXPECT_EQ(members.size(), 101u) << Cluster::Region(r);
    EXPECT_TRUE(members.count("x")) << "add-wins lost in " << Cluster::Region(r);
    EXPECT_EQ(n.Get("lww"), "cut-off") << Cluster::Region(r);
    EXPECT_EQ(n.Get("a-only49"), "v49") << Cluster::Region(r);
  }
  EXPECT_SAME_DUMPS(cluster);
}

TEST(ReplicationTest, APeerCutOffBeyondTheBacklogIsRepairedByAntiEntropy) {
  TestDir dir;
  std::vector<std::string> flags = kFastFlags;
  flags.insert(flags.end(), {"--max-backlog", "16KiB"});
  Cluster cluster(dir.path(), TlsRegions(3, 0ms, flags));
  START_CLUSTER(cluster);
  Client a(cluster, 0);
  cluster.Partition(2);
  std::string value(200, 'v');
  for (int i = 0; i < 500; ++i) ASSERT_NE(a.Set("k" + std::to_string(i), value), "");
  // The log to the cut-off region is given up on (and trimmed), not kept.
  ASSERT_TRUE(cluster.node(0).child().WaitForLog(
      std::regex("peer r2 .*repairing by anti-entropy instead of the log"), 20s))
      << cluster.node(0).child().Log();
  cluster.Heal(2);
  EXPECT_CONVERGED(cluster, 30s);
  EXPECT_EQ(Client(cluster, 2).Get("k499"), value);
  ASSERT_TRUE(cluster.node(0).child().WaitForLog(std::regex("peer r2: repaired"), 20s));
  EXPECT_SAME_DUMPS(cluster);
}

TEST(ReplicationTest, KillNineWhileShippingAndReceivingLosesNothing) {
  TestDir dir;
  Cluster cluster(dir.path(), TlsRegions(3));
  START_CLUSTER(cluster);

  // Region 0 and 1 write unique keys; region 1's node is killed mid-stream
  // (it ships its own writes and receives region 0's) and restarted.
  std::set<std::string> acked;
  std::mutex mu;
  std::atomic<bool> stop{false};
  std::thread writer0([&] {
    Client c(cluster, 0);
    for (int i = 0; !stop; ++i) {
      std::string key = "r0-" + std::to_string(i);
      if (c.Set(key, "v") != "") {
        std::lock_guard<std::mutex> l(mu);
        acked.insert(key);
      }
    }
  });
  {
    Client c(cluster, 1);
    for (int i = 0; i < 300; ++i) {
      std::string key = "r1-" + std::to_string(i);
      ASSERT_NE(c.Set(key, "v"), "");
      std::lock_guard<std::mutex> l(mu);
      acked.insert(key);
    }
  }
  cluster.node(1).Kill();
  std::string why;
  ASSERT_TRUE(cluster.node(1).Start(&why)) << why;
  std::this_thread::sleep_for(300ms);  // region 0 keeps writing meanwhile
  stop = true;
  writer0.join();
  ASSERT_TRUE(cluster.WaitConnected(&why)) << why;
  EXPECT_CONVERGED(cluster, 30s);
  for (int r = 0; r < 3; ++r) {
    Client c(cluster, r);
    size_t missing = 0;
    for (const std::string& key : acked) missing += !c.Get(key).has_value();
    EXPECT_EQ(missing, 0u) << "acknowledged keys missing in " << Cluster::Region(r) << " of "
                           << acked.size();
  }
  EXPECT_SAME_DUMPS(cluster);
}

TEST(ReplicationTest, ANodeRestartedWithAnEmptyDataDirIsRepaired) {
  TestDir dir;
  Cluster cluster(dir.path(), TlsRegions(3));
  START_CLUSTER(cluster);
  {
    Client a(cluster, 0), b(cluster, 1);
    for (int i = 0; i < 200; ++i) {
      ASSERT_NE(a.Set("k" + std::to_string(i), "v" + std::to_string(i)), "");
      ASSERT_NE(b.SAdd("set", std::to_string(i)), "");
    }
    ASSERT_NE(b.IncrBy("ctr", 42), "");
  }
  EXPECT_CONVERGED(cluster, 20s);
  {
    Client c(cluster, 2);
    ASSERT_NE(c.Set("written-in-r2", "mine"), "");
  }
  EXPECT_CONVERGED(cluster, 20s);

  ASSERT_EQ(cluster.node(2).Stop(), 0);
  std::filesystem::remove_all(cluster.DataDir(2));
  std::string why;
  ASSERT_TRUE(cluster.node(2).Start(&why)) << why;
  EXPECT_CONVERGED(cluster, 30s);
  Client c(cluster, 2);
  EXPECT_EQ(c.Get("k199"), "v199");
  EXPECT_EQ(c.SMembers("set").size(), 200u);
  EXPECT_EQ(c.Counter("ctr"), 42);
  // Its own writes from before the wipe come back from the other regions.
  EXPECT_EQ(c.Get("written-in-r2"), "mine");
  EXPECT_SAME_DUMPS(cluster);
}

TEST(ReplicationTest, ATokenReadsItsWriteInAnotherRegionDespiteTheDelay) {
  TestDir dir;
  Cluster cluster(dir.path(), TlsRegions(3, 100ms));
  START_CLUSTER(cluster);
  Client a(cluster, 0), b(cluster, 1);
  for (int i = 0; i < 5; ++i) {
    std::string value = "v" + std::to_string(i);
    std::string token = a.Set("k", value);
    ASSERT_NE(token, "");
    auto start = std::chrono::steady_clock::now();
    Code code;
    EXPECT_EQ(b.Get("k", {token}, &code), value) << static_cast<int>(code);
    // The write cannot have crossed faster than the link's delay.
    EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  }
  // waitReplicated answers once the named regions have the write.
  std::string token = a.Set("w", "x");
  auto req = a.kv().waitReplicatedRequest();
  req.initTokens(1).set(0, AsData(token));
  auto regions = req.initRegions(2);
  regions.set(0, "r1");
  regions.set(1, "r2");
  req.setTimeoutMs(10000);
  auto reply = req.send().wait(a.ws());
  EXPECT_EQ(reply.getOutcome().getCode(), Code::OK) << reply.getOutcome().getMessage().cStr();
  EXPECT_EQ(Client(cluster, 2).Get("w"), "x");

  // A region cut off cannot get it: the wait says which one.
  cluster.Partition(2);
  std::string later = a.Set("w", "y");
  auto cut = a.kv().waitReplicatedRequest();
  cut.initTokens(1).set(0, AsData(later));
  cut.setTimeoutMs(500);
  auto timed_out = cut.send().wait(a.ws());
  EXPECT_EQ(timed_out.getOutcome().getCode(), Code::TIMEOUT);
  ASSERT_EQ(timed_out.getMissing().size(), 1u);
  EXPECT_EQ(std::string(timed_out.getMissing()[0].cStr()), "r2");
  auto bad = a.kv().waitReplicatedRequest();
  bad.initTokens(1).set(0, AsData(later));
  bad.initRegions(1).set(0, "nowhere");
  EXPECT_EQ(bad.send().wait(a.ws()).getOutcome().getCode(), Code::INVALID);
}

TEST(ReplicationTest, ConnectionsCutMidBatchReplayAndConverge) {
  TestDir dir;
  std::vector<std::string> flags = kFastFlags;
  // Small batches, so that cuts land between and inside them.
  flags.insert(flags.end(), {"--replication-batch-bytes", "2KiB"});
  Cluster cluster(dir.path(), TlsRegions(3, 5ms, flags));
  START_CLUSTER(cluster);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> increments{0};
  std::vector<std::thread> writers;
  for (int r = 0; r < 3; ++r) {
    writers.emplace_back([&, r] {
      Client c(cluster, r);
      for (int i = 0; !stop; ++i) {
        if (c.IncrBy("ctr" + std::to_string(i % 20), 1) != "") ++increments;
        c.SAdd("set" + std::to_string(i % 5), Cluster::Region(r) + std::to_string(i));
        c.Set("lww" + std::to_string(i % 50), std::string(300, 'a' + r));
      }
    });
  }
  for (int cut = 0; cut < 8; ++cut) {
    std::this_thread::sleep_for(150ms);
    cluster.CutAll();
  }
  stop = true;
  for (auto& t : writers) t.join();
  std::string why;
  ASSERT_TRUE(cluster.WaitConnected(&why)) << why;
  EXPECT_CONVERGED(cluster, 30s);
  int64_t total = 0;
  Client a(cluster, 1);
  for (int k = 0; k < 20; ++k) total += a.Counter("ctr" + std::to_string(k));
  // Replayed deltas are not applied twice.
  EXPECT_EQ(total, increments.load());
  EXPECT_SAME_DUMPS(cluster);
}

TEST(ReplicationTest, ANodeWhoseClockIsOffRefusesWritesAndSaysWhy) {
  ASSERT_FALSE(FaketimeLibrary().empty())
      << "libfaketime is missing (scripts/install-deps.sh installs it)";
  TestDir dir;
  Cluster::Options options = TlsRegions(3);
  // Region 2's process sees a real clock 3 s ahead.
  options.wrappers[2] = FaketimeWrapper("+3s");
  Cluster cluster(dir.path(), options);
  START_CLUSTER(cluster);
  Client skewed(cluster, 2);
  // The offset is known after the first heartbeats.
  ASSERT_TRUE(PollUntil([&] { return skewed.Set("k", "v").empty(); }, 10s));
  auto req = skewed.kv().setRequest();
  req.setKey(AsData("k"));
  req.setValue(AsData("v"));
  auto reply = req.send().wait(skewed.ws());
  EXPECT_EQ(reply.getOutcome().getCode(), Code::UNAVAILABLE);
  std::string message = reply.getOutcome().getMessage();
  EXPECT_NE(message.find("clock is"), std::string::npos) << message;
  EXPECT_NE(message.find("--max-clock-offset"), std::string::npos) << message;
  // Reads still work there, and the other regions take writes.
  EXPECT_EQ(skewed.Get("absent"), std::nullopt);
  EXPECT_NE(Client(cluster, 0).Set("k", "v"), "");
  EXPECT_NE(Client(cluster, 1).Set("k", "w"), "");
}

TEST(ReplicationTest, NodesWithOtherPlacementSettingsRefuseEachOther) {
  TestDir dir;
  const std::string a_peer = "127.0.0.1:" + std::to_string(FreePort());
  const std::string b_peer = "127.0.0.1:" + std::to_string(FreePort());
  ServerProcess a(GEOKV_SERVER_BIN, dir.Sub("a"), dir.path() + "/a.log",
                  {"--region", "r0", "--node-id", "a", "--peer-listen", a_peer, "--peers",
                   "r1=" + b_peer, "--durability", "wal", "--heartbeat", "200ms"});
  // Every node computes every region's ring: a node with another
  // replication factor would disagree about every key's owners.
  ServerProcess b(GEOKV_SERVER_BIN, dir.Sub("b"), dir.path() + "/b.log",
                  {"--region", "r1", "--node-id", "b", "--peer-listen", b_peer, "--peers",
                   "r0=" + a_peer, "--durability", "wal", "--heartbeat", "200ms",
                   "--replication-factor", "2"});
  std::string why;
  ASSERT_TRUE(a.Start(&why)) << why;
  ASSERT_TRUE(b.Start(&why)) << why;
  const std::regex refused("placement settings differ: .*--replication-factor 3 .* has 2 ");
  const std::regex refused_b("placement settings differ: .*--replication-factor 2 .* has 3 ");
  EXPECT_TRUE(a.child().WaitForLog(refused, 10s)) << a.child().Log();
  EXPECT_TRUE(b.child().WaitForLog(refused_b, 10s)) << b.child().Log();
  Client ca(a.address());
  ASSERT_NE(ca.Set("k", "v"), "");
  EXPECT_FALSE(ca.AllPeersConnected(1));
  EXPECT_EQ(Client(b.address()).Get("k"), std::nullopt);
}

}  // namespace
}  // namespace geokv::testing

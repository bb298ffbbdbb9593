// The collection of deleted registers and emptied sets with real processes
// (contract item 6): a tombstone or an emptied set goes only once every
// node of every region holds it, never while a member that missed the
// delete is away, and a member that comes back after the grace has passed
// brings nothing back.

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "schema/kv_text.h"
#include "testing/cluster.h"
#include "testing/test_dir.h"
#include "tests/replication/process_fixture.h"

namespace geokv::testing {
namespace {

using namespace std::chrono_literals;
using Code = rpc::Outcome::Code;

uint64_t KeyCount(Client& c) { return c.kv().infoRequest().send().wait(c.ws()).getKeyCount(); }

// Waits until every node in `nodes` holds `count` keys.
bool WaitKeyCount(Cluster& cluster, const std::vector<int>& nodes, uint64_t count,
                  std::chrono::milliseconds timeout, std::string* why) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    std::string counts;
    bool all = true;
    for (int n : nodes) {
      Client c(cluster, n);
      const uint64_t held = KeyCount(c);
      counts += " node " + std::to_string(n) + ": " + std::to_string(held);
      all = all && held == count;
    }
    if (all) return true;
    if (std::chrono::steady_clock::now() >= end) {
      *why = "keys held, waiting for " + std::to_string(count) + ":" + counts;
      return false;
    }
    std::this_thread::sleep_for(100ms);
  }
}

// Two regions of two nodes, each owning every key, collecting after 1 s.
Cluster::Options CollectingCluster() {
  Cluster::Options o;
  o.regions = 2;
  o.nodes_per_region = 2;
  o.tls = true;
  o.flags = kFastFlags;
  o.flags.insert(o.flags.end(), {"--replication-factor", "2", "--tombstone-grace", "1s"});
  return o;
}

// Writes `keys` keys through node 0 (write(client, i)) and waits until
// every node holds them; with node 3 away, removes them through node 0
// (remove(client, i)), and checks that, well past the grace, nothing is
// collected (node 3 has not got the removals). Then node 3 comes back on
// its data dir, still holding the old state: it gets the removals, every
// node collects them, and for 4 s of anti-entropy passes (every second)
// between them all nothing comes back (gone(client, n) on each node n).
template <typename Write, typename Remove, typename Gone>
void CollectAfterNode3Returns(Cluster& cluster, int keys, Write write, Remove remove, Gone gone) {
  {
    Client a(cluster, 0);
    for (int i = 0; i < keys; ++i) ASSERT_NE(write(a, i), "") << i;
  }
  EXPECT_CONVERGED(cluster, 30s);
  cluster.node(3).Kill();
  {
    Client a(cluster, 0);
    for (int i = 0; i < keys; ++i) ASSERT_NE(remove(a, i), "") << i;
  }
  std::string why;
  ASSERT_TRUE(WaitKeyCount(cluster, {0, 1, 2}, keys, 30s, &why)) << why;
  const auto end = std::chrono::steady_clock::now() + 6s;
  while (std::chrono::steady_clock::now() < end) {
    for (int n : {0, 1, 2}) {
      Client c(cluster, n);
      ASSERT_EQ(KeyCount(c), uint64_t(keys)) << "node " << n << " collected early";
    }
    std::this_thread::sleep_for(200ms);
  }

  ASSERT_TRUE(cluster.StartNode(3, &why)) << why;
  ASSERT_TRUE(WaitKeyCount(cluster, {0, 1, 2, 3}, 0, 60s, &why)) << why << cluster.Logs();
  const auto quiet = std::chrono::steady_clock::now() + 4s;
  while (std::chrono::steady_clock::now() < quiet) {
    for (int n = 0; n < 4; ++n) {
      Client c(cluster, n);
      ASSERT_EQ(KeyCount(c), 0u) << "node " << n;
      gone(c, n);
    }
    std::this_thread::sleep_for(200ms);
  }
}

TEST(TombstoneProcessTest, DeletesAreCollectedOnlyOnceEveryNodeHoldsThemAndNothingComesBack) {
  TestDir dir;
  Cluster cluster(dir.path(), CollectingCluster());
  START_CLUSTER(cluster);
  constexpr int kKeys = 20;
  auto key = [](int i) { return "k" + std::to_string(i); };
  ASSERT_NO_FATAL_FAILURE(CollectAfterNode3Returns(
      cluster, kKeys, [&](Client& c, int i) { return c.Set(key(i), "old"); },
      [&](Client& c, int i) { return c.Del(key(i)); },
      [&](Client& c, int n) {
        Code code = Code::OK;
        EXPECT_EQ(c.Get(key(n), {}, &code), std::nullopt);
        EXPECT_EQ(code, Code::NOT_FOUND) << "node " << n;
      }));
  // A key written after the collection is an ordinary key again.
  {
    Client b(cluster, 2);
    ASSERT_NE(b.Set(key(0), "new"), "");
  }
  EXPECT_CONVERGED(cluster, 30s);
  Client d(cluster, 3);
  Code code = Code::OK;
  EXPECT_EQ(d.Get(key(0), {}, &code), std::optional<std::string>("new"));
}

TEST(TombstoneProcessTest, EmptiedSetsAreCollectedEverywhereAndAddsAfterwardsAreKept) {
  TestDir dir;
  Cluster cluster(dir.path(), CollectingCluster());
  START_CLUSTER(cluster);
  constexpr int kKeys = 20;
  auto key = [](int i) { return "s" + std::to_string(i); };
  ASSERT_NO_FATAL_FAILURE(CollectAfterNode3Returns(
      cluster, kKeys, [&](Client& c, int i) { return c.SAdd(key(i), "old"); },
      [&](Client& c, int i) { return c.SRem(key(i), "old"); },
      [&](Client& c, int n) { EXPECT_TRUE(c.SMembers(key(n)).empty()) << "node " << n; }));
  // Adds after the collection, through the node that removed and the one
  // that was away, are kept everywhere.
  {
    Client a(cluster, 0);
    Client d(cluster, 3);
    for (int i = 0; i < kKeys; ++i) {
      ASSERT_NE(a.SAdd(key(i), "from-0"), "") << i;
      ASSERT_NE(d.SAdd(key(i), "from-3"), "") << i;
    }
  }
  EXPECT_CONVERGED(cluster, 30s);
  for (int n = 0; n < 4; ++n) {
    Client c(cluster, n);
    for (int i = 0; i < kKeys; ++i) {
      EXPECT_EQ(c.SMembers(key(i)), (std::vector<std::string>{"from-0", "from-3"}))
          << "node " << n << " key " << key(i);
    }
  }
}

TEST(TombstoneProcessTest, DeletedCountersAreCollectedEverywhereAndLaterIncrementsCount) {
  TestDir dir;
  Cluster cluster(dir.path(), CollectingCluster());
  START_CLUSTER(cluster);
  constexpr int kKeys = 20;
  auto key = [](int i) { return "c" + std::to_string(i); };
  ASSERT_NO_FATAL_FAILURE(CollectAfterNode3Returns(
      cluster, kKeys, [&](Client& c, int i) { return c.IncrBy(key(i), 5); },
      [&](Client& c, int i) { return c.Del(key(i)); },
      [&](Client& c, int n) { EXPECT_EQ(c.Counter(key(n)), 0) << "node " << n; }));
  // Increments after the collection, through the node that deleted and the
  // one that was away, count from 0 on every node.
  {
    Client a(cluster, 0);
    Client d(cluster, 3);
    for (int i = 0; i < kKeys; ++i) {
      ASSERT_NE(a.IncrBy(key(i), 1), "") << i;
      ASSERT_NE(d.IncrBy(key(i), 2), "") << i;
    }
  }
  EXPECT_CONVERGED(cluster, 30s);
  for (int n = 0; n < 4; ++n) {
    Client c(cluster, n);
    for (int i = 0; i < kKeys; ++i) EXPECT_EQ(c.Counter(key(i)), 3) << "node " << n << " " << key(i);
  }
}

}  // namespace
}  // namespace geokv::testing

// The collection of deleted registers with real processes (contract item
// 6): a tombstone goes only once every node of every region holds it,
// never while a member that missed the delete is away, and a member that
// comes back after the grace has passed brings nothing back.

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

TEST(TombstoneProcessTest, DeletesAreCollectedOnlyOnceEveryNodeHoldsThemAndNothingComesBack) {
  TestDir dir;
  Cluster::Options o;
  o.regions = 2;
  o.nodes_per_region = 2;
  o.tls = true;
  o.flags = kFastFlags;
  o.flags.insert(o.flags.end(), {"--replication-factor", "2", "--tombstone-grace", "1s"});
  Cluster cluster(dir.path(), o);
  START_CLUSTER(cluster);
  constexpr int kKeys = 20;
  auto key = [](int i) { return "k" + std::to_string(i); };
  {
    Client a(cluster, 0);
    for (int i = 0; i < kKeys; ++i) ASSERT_NE(a.Set(key(i), "old"), "") << i;
  }
  EXPECT_CONVERGED(cluster, 30s);

  // Node 3 (region r1) is away with the old values; node 0 deletes them.
  cluster.node(3).Kill();
  {
    Client a(cluster, 0);
    for (int i = 0; i < kKeys; ++i) ASSERT_NE(a.Del(key(i)), "") << i;
  }
  std::string why;
  ASSERT_TRUE(WaitKeyCount(cluster, {0, 1, 2}, kKeys, 30s, &why)) << why;
  // Well past the grace, the tombstones stay: node 3 has not got them.
  const auto end = std::chrono::steady_clock::now() + 6s;
  while (std::chrono::steady_clock::now() < end) {
    for (int n : {0, 1, 2}) {
      Client c(cluster, n);
      ASSERT_EQ(KeyCount(c), uint64_t{kKeys}) << "node " << n << " collected early";
    }
    std::this_thread::sleep_for(200ms);
  }

  // Node 3 comes back on its data dir, still holding the old values: it
  // gets the deletes, then every node collects them.
  ASSERT_TRUE(cluster.StartNode(3, &why)) << why;
  ASSERT_TRUE(WaitKeyCount(cluster, {0, 1, 2, 3}, 0, 60s, &why)) << why << cluster.Logs();
  // Anti-entropy passes (every second) between all of them bring nothing
  // back.
  const auto quiet = std::chrono::steady_clock::now() + 4s;
  while (std::chrono::steady_clock::now() < quiet) {
    for (int n = 0; n < 4; ++n) {
      Client c(cluster, n);
      ASSERT_EQ(KeyCount(c), 0u) << "node " << n;
      Code code = Code::OK;
      EXPECT_EQ(c.Get(key(n), {}, &code), std::nullopt);
      EXPECT_EQ(code, Code::NOT_FOUND) << "node " << n;
    }
    std::this_thread::sleep_for(200ms);
  }
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

}  // namespace
}  // namespace geokv::testing

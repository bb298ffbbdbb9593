// How regions find each other, as real processes on loopback: a node whose
// --peers seed for another region has left still learns that region's
// members from the nodes that connect to it, and keeps what it learned
// across a restart.

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "schema/kv_text.h"
#include "testing/cluster.h"
#include "testing/test_dir.h"

namespace geokv {
namespace {

using namespace std::chrono_literals;
using testing::Client;
using Outcome = rpc::Outcome;

// Anti-entropy far apart: writes below can reach the other region only
// through log shipping.
const std::vector<std::string> kFlags = {"--anti-entropy-interval", "60min", "--heartbeat", "200ms",
                                         "--replication-factor",    "3",  "--request-timeout",
                                         "2s"};

// The state `c`'s node sees member `name` in ("" when it does not know it).
std::string StateOf(Client& c, const std::string& name) {
  auto reply = c.kv().clusterRequest().send().wait(c.ws());
  for (auto m : reply.getMembers()) {
    if (m.getName() == name) return MemberStateName(m.getState());
  }
  return "";
}

// waitReplicated of `token` for region `region` through `c`'s node: the
// outcome code, and its message in *message.
Outcome::Code WaitReplicated(Client& c, const std::string& token, const std::string& region,
                    std::string* message) {
  auto req = c.kv().waitReplicatedRequest();
  req.initTokens(1).set(0, AsData(token));
  req.initRegions(1).set(0, region);
  req.setTimeoutMs(10000);
  auto reply = req.send().wait(c.ws());
  *message = reply.getOutcome().getMessage().cStr();
  return reply.getOutcome().getCode();
}

// r0 has one node, A (node 0); r1 starts with b1 (node 1), A's only --peers
// seed for r1. While A is down, b2 and b3 join r1 and b1 leaves: A comes
// back knowing of r1 only b1.
TEST(MemberExchangeTest, ANodeWhoseSeedLeftLearnsTheRegionFromItsOtherNodesAndKeepsIt) {
  testing::TestDir dir;
  testing::Cluster::Options o;
  o.regions = 2;
  o.nodes_per_region = 1;
  o.gossip = true;
  o.flags = kFlags;
  testing::Cluster cluster(dir.path(), o);
  std::string why;
  ASSERT_TRUE(cluster.Start(&why)) << why;

  auto stopped = cluster.node(0).Stop();
  ASSERT_TRUE(stopped.has_value() && *stopped == 0) << cluster.node(0).Log();
  const int b2 = cluster.AddNode(1, &why);
  ASSERT_GE(b2, 0) << why;
  const int b3 = cluster.AddNode(1, &why);
  ASSERT_GE(b3, 0) << why;
  {
    Client b1(cluster.address(1));
    ASSERT_TRUE(testing::PollUntil([&] { return StateOf(b1, cluster.Name(b3)) == "alive"; }, 30s))
        << cluster.Logs();
    auto reply = b1.kv().leaveRequest().send().wait(b1.ws());
    ASSERT_EQ(reply.getOutcome().getCode(), Outcome::Code::OK)
        << reply.getOutcome().getMessage().cStr();
  }
  auto left = cluster.node(1).child().Wait(60s);
  ASSERT_TRUE(left.has_value()) << cluster.node(1).Log();
  {
    Client b(cluster.address(b2));
    ASSERT_TRUE(testing::PollUntil([&] { return StateOf(b, cluster.Name(1)) == "left"; }, 30s));
  }

  // A is back, with --peers naming only b1. b2 and b3 connect to it (their
  // seed for r0 is A): that is how it learns r1.
  ASSERT_TRUE(cluster.StartNode(0, &why)) << why;
  {
    Client a(cluster.address(0));
    ASSERT_TRUE(testing::PollUntil(
        [&] {
          return StateOf(a, cluster.Name(b2)) == "alive" &&
                 StateOf(a, cluster.Name(b3)) == "alive" && StateOf(a, cluster.Name(1)) == "left";
        },
        30s))
        << "A sees " << cluster.Name(b2) << " as '" << StateOf(a, cluster.Name(b2)) << "', "
        << cluster.Name(b3) << " as '" << StateOf(a, cluster.Name(b3)) << "', "
        << cluster.Name(1) << " as '" << StateOf(a, cluster.Name(1)) << "'" << cluster.Logs();
    std::string token = a.Set("first", "1");
    ASSERT_NE(token, "");
    std::string message;
    EXPECT_EQ(WaitReplicated(a, token, testing::Cluster::Region(1), &message), Outcome::Code::OK)
        << message;
    for (int b : {b2, b3}) {
      Client c(cluster.address(b));
      EXPECT_EQ(c.Get("first"), "1") << cluster.Name(b);
    }
  }

  // A restarts while r1 cannot reach it: only the members it learned and
  // kept lead it to r1 (its seed is gone, and nobody dials it).
  stopped = cluster.node(0).Stop();
  ASSERT_TRUE(stopped.has_value() && *stopped == 0) << cluster.node(0).Log();
  cluster.proxy(1, 0).Partition();
  ASSERT_TRUE(cluster.StartNode(0, &why)) << why;
  Client a(cluster.address(0));
  EXPECT_EQ(StateOf(a, cluster.Name(b2)), "alive");
  EXPECT_EQ(StateOf(a, cluster.Name(1)), "left");
  std::string token = a.Set("second", "2");
  ASSERT_NE(token, "");
  std::string message;
  EXPECT_EQ(WaitReplicated(a, token, testing::Cluster::Region(1), &message), Outcome::Code::OK)
      << message << cluster.Logs();
  for (int b : {b2, b3}) {
    Client c(cluster.address(b));
    EXPECT_EQ(c.Get("second"), "2") << cluster.Name(b);
  }
  cluster.proxy(1, 0).Heal();
}

}  // namespace
}  // namespace geokv

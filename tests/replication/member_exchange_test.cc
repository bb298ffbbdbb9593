// How regions find each other, as real processes on loopback: a node whose
// --peers seed for another region has left still learns that region's
// members from the nodes that connect to it, and keeps what it learned
// across a restart.

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
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
// seed for r1. While A is down, b2 and b3 join r1, and then b1 goes: A
// comes back knowing of r1 at most b1.
class MemberExchangeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::Cluster::Options o;
    o.regions = 2;
    o.nodes_per_region = 1;
    o.gossip = true;
    o.tls = true;
    o.flags = kFlags;
    cluster_ = std::make_unique<testing::Cluster>(dir_.path(), o);
    std::string why;
    ASSERT_TRUE(cluster_->Start(&why)) << why;
    auto stopped = cluster_->node(0).Stop();
    ASSERT_TRUE(stopped.has_value() && *stopped == 0) << cluster_->node(0).Log();
    b2_ = cluster_->AddNode(1, &why);
    ASSERT_GE(b2_, 0) << why;
    b3_ = cluster_->AddNode(1, &why);
    ASSERT_GE(b3_, 0) << why;
    Client b1(*cluster_, 1);
    ASSERT_TRUE(testing::PollUntil([&] { return StateOf(b1, Name(b3_)) == "alive"; }, 30s))
        << cluster_->Logs();
  }

  std::string Name(int node) const { return cluster_->Name(node); }

  // Waits until b2 sees b1 as left.
  void WaitB1Left() {
    Client b(*cluster_, b2_);
    ASSERT_TRUE(testing::PollUntil([&] { return StateOf(b, Name(1)) == "left"; }, 30s))
        << StateOf(b, Name(1)) << cluster_->Logs();
  }

  // Starts A again, with --peers naming only b1, and waits until it knows
  // r1 as it is. b2 and b3 connect to it (their seed for r0 is A): that is
  // how it learns r1.
  void StartAUntilItKnowsR1() {
    std::string why;
    ASSERT_TRUE(cluster_->StartNode(0, &why)) << why;
    Client a(*cluster_, 0);
    auto seen = [&] {
      return "A sees " + Name(b2_) + " as '" + StateOf(a, Name(b2_)) + "', " + Name(b3_) +
             " as '" + StateOf(a, Name(b3_)) + "', " + Name(1) + " as '" + StateOf(a, Name(1)) +
             "'";
    };
    ASSERT_TRUE(testing::PollUntil(
        [&] {
          return StateOf(a, Name(b2_)) == "alive" && StateOf(a, Name(b3_)) == "alive" &&
                 StateOf(a, Name(1)) == "left";
        },
        30s))
        << seen() << cluster_->Logs();
  }

  // Writes `key` on A; waitReplicated for r1 must answer OK (the log
  // reached b2 and b3), and both must hold the value.
  void ExpectWriteReachesR1(const std::string& key, const std::string& value) {
    Client a(*cluster_, 0);
    std::string token = a.Set(key, value);
    ASSERT_NE(token, "");
    std::string message;
    EXPECT_EQ(WaitReplicated(a, token, testing::Cluster::Region(1), &message),
              Outcome::Code::OK)
        << message << cluster_->Logs();
    // Quorum reads count r1's nodes once they are in step with each other.
    std::string why;
    ASSERT_TRUE(cluster_->WaitSettled(30s, &why)) << why;
    for (int b : {b2_, b3_}) {
      Client c(*cluster_, b);
      EXPECT_EQ(c.Get(key), value) << Name(b);
    }
  }

  testing::TestDir dir_;
  std::unique_ptr<testing::Cluster> cluster_;
  int b2_ = -1;
  int b3_ = -1;
};

TEST_F(MemberExchangeTest, ANodeWhoseSeedLeftLearnsTheRegionFromItsOtherNodesAndKeepsIt) {
  {
    Client b1(*cluster_, 1);
    auto reply = b1.kv().leaveRequest().send().wait(b1.ws());
    ASSERT_EQ(reply.getOutcome().getCode(), Outcome::Code::OK)
        << reply.getOutcome().getMessage().cStr();
  }
  ASSERT_TRUE(cluster_->node(1).child().Wait(60s).has_value()) << cluster_->node(1).Log();
  ASSERT_NO_FATAL_FAILURE(WaitB1Left());
  ASSERT_NO_FATAL_FAILURE(StartAUntilItKnowsR1());
  ASSERT_NO_FATAL_FAILURE(ExpectWriteReachesR1("first", "1"));

  // A restarts while r1 cannot reach it: only the members it learned and
  // kept lead it to r1 (its seed is gone, and nobody dials it).
  auto stopped = cluster_->node(0).Stop();
  ASSERT_TRUE(stopped.has_value() && *stopped == 0) << cluster_->node(0).Log();
  cluster_->proxy(1, 0).Partition();
  std::string why;
  ASSERT_TRUE(cluster_->StartNode(0, &why)) << why;
  Client a(*cluster_, 0);
  EXPECT_EQ(StateOf(a, Name(b2_)), "alive");
  EXPECT_EQ(StateOf(a, Name(1)), "left");
  ASSERT_NO_FATAL_FAILURE(ExpectWriteReachesR1("second", "2"));
  cluster_->proxy(1, 0).Heal();
}

TEST_F(MemberExchangeTest, ANodeWhoseSeedWasRemovedLearnsTheRegionFromItsOtherNodes) {
  cluster_->node(1).Kill();
  Client b(*cluster_, b2_);
  ASSERT_TRUE(testing::PollUntil([&] { return StateOf(b, Name(1)) == "dead"; }, 30s))
      << StateOf(b, Name(1));
  auto req = b.kv().removeRequest();
  req.setMember(Name(1));
  ASSERT_EQ(req.send().wait(b.ws()).getOutcome().getCode(), Outcome::Code::OK);
  ASSERT_NO_FATAL_FAILURE(WaitB1Left());
  ASSERT_NO_FATAL_FAILURE(StartAUntilItKnowsR1());
  ASSERT_NO_FATAL_FAILURE(ExpectWriteReachesR1("first", "1"));
}

}  // namespace
}  // namespace geokv

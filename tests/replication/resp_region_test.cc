// Three regions driven through their Redis ports over TLS, behind WAN
// proxies: writes in one region read in another with GEOKV.AFTER, and
// concurrent INCR, SADD and SREM on both sides of a partition converge,
// add-wins and summed, once it heals; a DEL of a counter removes only the
// increments it saw.

#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "testing/cluster.h"
#include "testing/test_dir.h"
#include "tests/resp/tls_resp_client.h"

namespace geokv {
namespace {

using namespace std::chrono_literals;
using testing::Cluster;
using testing::RespReply;
using testing::TestDir;
using testing::TlsRespClient;

class RespRegionTest : public ::testing::Test {
 protected:
  void StartCluster() {
    Cluster::Options o;
    o.regions = 3;
    o.tls = true;
    o.flags = {"--resp-listen", "127.0.0.1:0", "--heartbeat",  "200ms",
               "--anti-entropy-interval", "1s", "--token-wait", "10s"};
    cluster_ = std::make_unique<Cluster>(dir_.path(), o);
    std::string why;
    ASSERT_TRUE(cluster_->Start(&why)) << why;
    for (int i = 0; i < cluster_->nodes(); ++i) {
      auto port = cluster_->node(i).child().WaitForLog(
          std::regex("redis protocol listening on .* port ([0-9]+)"), 10s);
      ASSERT_TRUE(port.has_value()) << cluster_->Logs();
      clients_.push_back(std::make_unique<TlsRespClient>(
          std::stoi(*port), cluster_->client_tls(cluster_->RegionOf(i))));
      ASSERT_TRUE(clients_.back()->connected()) << cluster_->Logs();
    }
  }

  RespReply Call(int region, const std::vector<std::string>& args) {
    return clients_[region]->Call(args);
  }

  TestDir dir_;
  std::unique_ptr<Cluster> cluster_;
  std::vector<std::unique_ptr<TlsRespClient>> clients_;
};

TEST_F(RespRegionTest, ReadsAnotherRegionsWritesAfterItsToken) {
  StartCluster();
  EXPECT_EQ(Call(0, {"SET", "k", "v"}).text, "OK");
  EXPECT_EQ(Call(0, {"SADD", "s", "a", "b"}).integer, 2);
  EXPECT_EQ(Call(0, {"INCRBY", "c", "5"}).integer, 5);
  // The log ships in order: the last write's token covers the others.
  const std::string token = Call(0, {"GEOKV.TOKEN"}).text;
  ASSERT_FALSE(token.empty());
  for (int r = 1; r < 3; ++r) {
    EXPECT_EQ(Call(r, {"GEOKV.AFTER", token}).text, "OK");
    EXPECT_EQ(Call(r, {"GET", "k"}).text, "v") << r;
    EXPECT_EQ(Call(r, {"SMEMBERS", "s"}).Texts(), (std::set<std::string>{"a", "b"})) << r;
    EXPECT_EQ(Call(r, {"GET", "c"}).text, "5") << r;
  }
  RespReply waited = Call(0, {"GEOKV.WAITREPLICATED", "5000", "r1", "r2"});
  EXPECT_EQ(waited.text, "OK") << waited.text;

  // A partition: both sides keep taking writes.
  cluster_->Partition(0);
  EXPECT_EQ(Call(0, {"INCRBY", "c", "3"}).integer, 8);
  EXPECT_EQ(Call(0, {"SREM", "s", "a"}).integer, 1);
  EXPECT_EQ(Call(0, {"SADD", "s", "b"}).integer, 0);  // a new add of b, concurrent with r1's remove
  EXPECT_EQ(Call(1, {"INCRBY", "c", "10"}).integer, 15);
  EXPECT_EQ(Call(1, {"SREM", "s", "b"}).integer, 1);
  EXPECT_EQ(Call(1, {"SADD", "s", "y"}).integer, 1);
  EXPECT_EQ(Call(2, {"INCR", "c"}).type, ':');
  RespReply cut = Call(0, {"GEOKV.WAITREPLICATED", "300", "r1"});
  EXPECT_EQ(cut.text.rfind("TIMEOUT not replicated to r1", 0), 0u) << cut.text;
  cluster_->Heal(0);
  std::string why;
  ASSERT_TRUE(cluster_->WaitConverged(30s, &why)) << why;
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(Call(r, {"GET", "c"}).text, "19") << r;
    EXPECT_EQ(Call(r, {"SMEMBERS", "s"}).Texts(), (std::set<std::string>{"b", "y"})) << r;
    EXPECT_EQ(Call(r, {"GET", "k"}).text, "v") << r;
  }
}

TEST_F(RespRegionTest, DelConcurrentWithAnIncrConvergesToTheIncr) {
  StartCluster();
  EXPECT_EQ(Call(0, {"INCRBY", "c", "5"}).integer, 5);
  RespReply waited = Call(0, {"GEOKV.WAITREPLICATED", "5000"});
  ASSERT_EQ(waited.text, "OK") << waited.text;

  // Region 1 deletes the counter it has seen (5) while region 0, cut off,
  // adds 3 that region 1 never saw.
  cluster_->Partition(0);
  EXPECT_EQ(Call(1, {"DEL", "c"}).integer, 1);
  EXPECT_EQ(Call(1, {"EXISTS", "c"}).integer, 0);
  EXPECT_TRUE(Call(1, {"GET", "c"}).null);
  EXPECT_EQ(Call(1, {"TYPE", "c"}).text, "none");
  EXPECT_EQ(Call(0, {"INCRBY", "c", "3"}).integer, 8);
  cluster_->Heal(0);
  std::string why;
  ASSERT_TRUE(cluster_->WaitConverged(30s, &why)) << why;
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(Call(r, {"GET", "c"}).text, "3") << r;
    EXPECT_EQ(Call(r, {"EXISTS", "c"}).integer, 1) << r;
  }

  // Two deletes of the same increments, concurrent, remove them once; an
  // increment after one of them survives the other.
  cluster_->Partition(0);
  EXPECT_EQ(Call(0, {"DEL", "c"}).integer, 1);
  EXPECT_EQ(Call(1, {"DEL", "c"}).integer, 1);
  EXPECT_EQ(Call(1, {"INCRBY", "c", "4"}).integer, 4);
  cluster_->Heal(0);
  ASSERT_TRUE(cluster_->WaitConverged(30s, &why)) << why;
  for (int r = 0; r < 3; ++r) EXPECT_EQ(Call(r, {"GET", "c"}).text, "4") << r;

  // A delete that saw everything leaves no counter anywhere: the key is
  // free for a string, and a later INCR counts from 0.
  EXPECT_EQ(Call(2, {"DEL", "c"}).integer, 1);
  ASSERT_TRUE(cluster_->WaitConverged(30s, &why)) << why;
  for (int r = 0; r < 3; ++r) EXPECT_EQ(Call(r, {"EXISTS", "c"}).integer, 0) << r;
  EXPECT_EQ(Call(0, {"SET", "c", "text"}).text, "OK");
  EXPECT_EQ(Call(0, {"DEL", "c"}).integer, 1);
  EXPECT_EQ(Call(1, {"GEOKV.AFTER", Call(0, {"GEOKV.TOKEN"}).text}).text, "OK");
  EXPECT_EQ(Call(1, {"EXISTS", "c"}).integer, 0);  // waits for the string's delete
  EXPECT_EQ(Call(1, {"INCR", "c"}).integer, 1);
}

}  // namespace
}  // namespace geokv

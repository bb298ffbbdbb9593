// A session's writes keep their order through clock skew, as real
// processes on loopback: one region of three nodes (N = 3), one node's
// clock ahead of the others under libfaketime.

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
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

struct Written {
  Code code = Code::INTERNAL;
  std::string message;
  std::string token;
};

// A QUORUM set presenting `tokens`.
Written SetAfter(Client& c, const std::string& key, const std::string& value,
                 const std::vector<std::string>& tokens) {
  auto req = c.kv().setRequest();
  req.setKey(AsData(key));
  req.setValue(AsData(value));
  req.setConsistency(rpc::Consistency::QUORUM);
  auto list = req.initTokens(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) list.set(i, AsData(tokens[i]));
  auto reply = req.send().wait(c.ws());
  return {reply.getOutcome().getCode(), reply.getOutcome().getMessage(),
          String(reply.getToken())};
}

// A read of `key` at `level`; nullopt when absent or refused.
std::optional<std::string> GetAt(Client& c, const std::string& key, rpc::Consistency level) {
  auto req = c.kv().getRequest();
  req.setKey(AsData(key));
  req.setConsistency(level);
  auto reply = req.send().wait(c.ws());
  if (reply.getOutcome().getCode() != Code::OK) return std::nullopt;
  return String(reply.getValue());
}

// Node 0's clock runs 3 s ahead, inside a --max-clock-offset of 5 s (the
// same rule as 0.4 s inside the default 500 ms; the wider skew outlasts the
// restart below). A client writes k = v1 at QUORUM through node 0 while
// node 2 is down, then, through node 2 just restarted (its hint on the
// way), writes k = v2 at QUORUM, presenting v1's token or not: v2 ends
// above v1 (stamped above the token's write, or made again above the v1
// that the owner acknowledging it already held), so QUORUM reads and every
// replica end with v2.
void ALaterWriteThroughALaggingNodeWins(bool present_token) {
  ASSERT_FALSE(testing::FaketimeLibrary().empty())
      << "libfaketime is missing (scripts/install-deps.sh installs it)";
  testing::TestDir dir;
  testing::Cluster::Options options;
  options.regions = 1;
  options.nodes_per_region = 3;
  options.tls = true;
  // Anti-entropy stays out of the way: v1 reaches node 2 only by its hint.
  options.flags = {"--replication-factor", "3", "--heartbeat", "200ms", "--token-wait", "10s",
                   "--request-timeout", "2s", "--anti-entropy-interval", "60s",
                   "--max-clock-offset", "5s"};
  testing::Cluster cluster(dir.path(), options);
  cluster.SetNodeWrapper(0, testing::FaketimeWrapper("+3s"));
  std::string why;
  ASSERT_TRUE(cluster.Start(&why)) << why;

  // Not having v1 yet when v2 is written is what this test is about; on a
  // busy machine node 0's hint can reach node 2 first, and then the
  // scenario runs again on another key.
  std::string key, v1_token;
  std::optional<Client> restarted_client;
  for (int attempt = 0;; ++attempt) {
    ASSERT_LT(attempt, 4) << "v1 reached node 2 before the second write in every attempt";
    key = "k" + std::to_string(attempt);
    restarted_client.reset();
    cluster.node(2).Kill();
    // Node 0's link to node 2 backs off meanwhile, so the hint waits.
    std::this_thread::sleep_for(2s);
    {
      Client fast(cluster, 0);
      Written v1 = SetAfter(fast, key, "v1", {});
      ASSERT_EQ(v1.code, Code::OK) << v1.message;
      v1_token = v1.token;
    }
    ASSERT_TRUE(cluster.StartNode(2, &why)) << why;
    restarted_client.emplace(cluster, 2);
    ASSERT_TRUE(testing::PollUntil([&] { return restarted_client->AllPeersConnected(2); }, 10s))
        << cluster.Logs();
    if (GetAt(*restarted_client, key, rpc::Consistency::ONE) == std::nullopt) break;
  }
  Client& restarted = *restarted_client;
  Written v2;
  ASSERT_TRUE(testing::PollUntil(
      [&] {
        v2 = SetAfter(restarted, key, "v2",
                      present_token ? std::vector<std::string>{v1_token}
                                    : std::vector<std::string>{});
        return v2.code != Code::UNAVAILABLE;  // until node 2 sees the others up
      },
      10s))
      << v2.message;
  ASSERT_EQ(v2.code, Code::OK) << v2.message;

  Client a(cluster, 0), b(cluster, 1);
  EXPECT_EQ(GetAt(a, key, rpc::Consistency::QUORUM), "v2");
  EXPECT_EQ(GetAt(b, key, rpc::Consistency::QUORUM), "v2");
  // Once node 0's hint of v1 is delivered, every replica keeps v2.
  EXPECT_TRUE(testing::PollUntil(
      [&] { return a.kv().infoRequest().send().wait(a.ws()).getHintsPending() == 0; }, 30s))
      << "node 0 still holds hints";
  for (Client* c : {&a, &b, &restarted}) {
    EXPECT_TRUE(testing::PollUntil([&] { return c->Get(key, {v2.token}) == "v2"; }, 20s));
    EXPECT_EQ(GetAt(*c, key, rpc::Consistency::ONE), "v2");
  }
}

TEST(SessionOrderTest, AWriteThroughALaggingNodeAfterTheSessionsEarlierOneWins) {
  ALaterWriteThroughALaggingNodeWins(true);
}

TEST(SessionOrderTest, ATokenlessWriteThroughALaggingNodeAfterAnAcknowledgedOneWins) {
  ALaterWriteThroughALaggingNodeWins(false);
}

}  // namespace
}  // namespace geokv

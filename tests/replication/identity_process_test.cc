// A node whose log went back, with real processes: a data dir restored
// from an older copy continues under a new replica id, so its new writes
// reach the other regions, nothing acknowledged is lost and no token reads
// as visible without its write.

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "schema/kv_text.h"
#include "storage/keys.h"
#include "testing/cluster.h"
#include "testing/test_dir.h"
#include "tests/replication/process_fixture.h"

namespace geokv::testing {
namespace {

using Code = rpc::Outcome::Code;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

uint64_t ReplicaIdOf(Client& c) { return c.kv().infoRequest().send().wait(c.ws()).getReplicaId(); }

// Writes key prefix + i = value for i < n through `c`; their tokens.
std::vector<std::string> WriteKeys(Client& c, const std::string& prefix, int n) {
  std::vector<std::string> tokens;
  for (int i = 0; i < n; ++i) {
    std::string token = c.Set(prefix + std::to_string(i), "v-" + prefix + std::to_string(i));
    EXPECT_NE(token, "") << prefix << i;
    tokens.push_back(token);
  }
  return tokens;
}

// Every key prefix + i reads its value on `c` once its token is visible
// there: a token that reads as visible without its write fails here.
void ExpectReadWithTokens(Client& c, const std::string& prefix,
                          const std::vector<std::string>& tokens) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string key = prefix + std::to_string(i);
    Code code = Code::OK;
    EXPECT_EQ(c.Get(key, {tokens[i]}, &code), "v-" + key)
        << "code " << static_cast<int>(code) << " for " << key;
  }
}

// Replaces `dir` by `backup`; with `keep_marker`, the dir's marker file
// stays (as a filesystem snapshot rolled back in place would leave it).
void Restore(const std::string& backup, const std::string& dir, bool keep_marker) {
  const std::string marker = storage_keys::kDirMarkerFile;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (keep_marker && entry.path().filename() == marker) continue;
    fs::remove_all(entry.path());
  }
  for (const auto& entry : fs::directory_iterator(backup)) {
    if (keep_marker && entry.path().filename() == marker) continue;
    fs::copy(entry.path(), fs::path(dir) / entry.path().filename(),
             fs::copy_options::recursive);
  }
}

// Two regions of one node. Node 0 writes `n` keys "before", is stopped and
// copied, writes `n` keys "after-copy" (region 1 reads each with its token),
// then is stopped and its data dir replaced by the copy (`keep_marker`: as
// Restore says) and started again.
struct Restored {
  TestDir dir;
  Cluster cluster{dir.path(), TlsRegions(2)};
  uint64_t id = 0;  // node 0's replica id before the copy
  std::vector<std::string> before_tokens;

  void Run(int n, bool keep_marker) {
    START_CLUSTER(cluster);
    {
      Client a(cluster, 0), b(cluster, 1);
      id = ReplicaIdOf(a);
      before_tokens = WriteKeys(a, "before", n);
      ExpectReadWithTokens(b, "before", before_tokens);
    }
    ASSERT_EQ(cluster.node(0).Stop(), 0);
    const std::string backup = dir.Sub("backup");
    fs::copy(cluster.DataDir(0), backup, fs::copy_options::recursive);
    Restart();
    {
      Client a(cluster, 0), b(cluster, 1);
      ExpectReadWithTokens(b, "after-copy", WriteKeys(a, "after-copy", n));
    }
    ASSERT_EQ(cluster.node(0).Stop(), 0);
    Restore(backup, cluster.DataDir(0), keep_marker);
    Restart();
  }

  void Restart() {
    std::string why;
    ASSERT_TRUE(cluster.StartNode(0, &why)) << why;
    ASSERT_TRUE(cluster.WaitConnected(&why)) << why;
  }

  // Node 0 holds every "after-copy" key again, back from region 1.
  void ExpectCopyRepaired(Client& a, int n) {
    std::string why;
    EXPECT_TRUE(cluster.WaitConverged(30s, &why)) << why;
    for (int i = 0; i < n; ++i) {
      const std::string key = "after-copy" + std::to_string(i);
      EXPECT_EQ(a.Get(key), "v-" + key);
    }
  }
};

TEST(IdentityProcessTest, ARestoredCopyContinuesUnderANewIdLosingNothing) {
  Restored r;
  ASSERT_NO_FATAL_FAILURE(r.Run(30, /*keep_marker=*/false));
  Client a(r.cluster, 0), b(r.cluster, 1);
  EXPECT_NE(ReplicaIdOf(a), r.id);
  // Written on the restored copy: they reach region 1 and their tokens mean
  // what they say there (under the old id they reused positions region 1
  // held, which it skipped as replays while the tokens read as visible).
  ExpectReadWithTokens(b, "restored", WriteKeys(a, "restored", 30));
  // The writes the copy missed come back to it from region 1.
  r.ExpectCopyRepaired(a, 30);
  ExpectReadWithTokens(b, "before", r.before_tokens);
}

TEST(IdentityProcessTest, ACopyRestoredInPlaceIsCaughtAtHelloAndRestartsUnderANewId) {
  Restored r;
  ASSERT_NO_FATAL_FAILURE(r.Run(10, /*keep_marker=*/true));
  {
    // Region 1 holds more of its log than it has: writes are refused.
    Client a(r.cluster, 0);
    EXPECT_EQ(ReplicaIdOf(a), r.id);
    bool refused = PollUntil(
        [&] {
          auto req = a.kv().setRequest();
          req.setKey(AsData("probe"));
          req.setValue(AsData("x"));
          return req.send().wait(a.ws()).getOutcome().getCode() == Code::UNAVAILABLE;
        },
        10s);
    EXPECT_TRUE(refused) << r.cluster.Logs();
    auto info = a.kv().infoRequest().send().wait(a.ws());
    EXPECT_NE(std::string(info.getWritesRefused().cStr()).find("log went back"),
              std::string::npos)
        << info.getWritesRefused().cStr();
  }
  // Restarted, it continues under a new id and its writes reach region 1.
  ASSERT_EQ(r.cluster.node(0).Stop(), 0);
  ASSERT_NO_FATAL_FAILURE(r.Restart());
  Client a(r.cluster, 0), b(r.cluster, 1);
  EXPECT_NE(ReplicaIdOf(a), r.id);
  ExpectReadWithTokens(b, "restarted", WriteKeys(a, "restarted", 10));
  r.ExpectCopyRepaired(a, 10);
}

}  // namespace
}  // namespace geokv::testing

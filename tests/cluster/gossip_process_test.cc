// Authenticated gossip between real geokv-server processes on loopback:
// datagrams forged by an outsider or recorded and sent again change no
// member and are counted; nodes a step apart in a key rotation stay in one
// view.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/asio/ip/udp.hpp>

#include <chrono>
#include <csignal>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cluster/gossip_auth.h"
#include "schema/kv_text.h"
#include "testing/cluster.h"
#include "testing/http_get.h"
#include "testing/server_process.h"
#include "testing/test_dir.h"
#include "tests/cluster/forged_packet.h"

namespace geokv {
namespace {

using namespace std::chrono_literals;
using testing::Client;
using testing::FreePort;
using testing::PollUntil;
using testing::ServerProcess;
using testing::TestDir;

const std::string kOld(64, 'a');  // hex secrets of 32 bytes
const std::string kNew(64, 'b');

// A member of region eu that no node started.
Member Intruder() {
  Member intruder;
  intruder.id = 0x1badc0de;
  intruder.name = "intruder";
  intruder.region = "eu";
  intruder.gossip_address = "127.0.0.1:9";
  return intruder;
}

// One key, `secret` in bytes.
GossipAuthOptions Keys(const std::string& id, const std::string& secret) {
  GossipAuthOptions o;
  o.keys = {GossipKey{id, secret}};
  return o;
}

// A node of region eu with fast gossip, its gossip and metrics ports fixed
// across restarts.
struct Node {
  std::unique_ptr<ServerProcess> process;
  std::string gossip;   // 127.0.0.1:PORT
  std::string metrics;  // 127.0.0.1:PORT
};

class GossipProcessTest : public ::testing::Test {
 protected:
  // A key file of (id, hex secret) lines, mode 600.
  std::string KeyFile(const std::string& name,
                      const std::vector<std::pair<std::string, std::string>>& keys) {
    const std::string path = dir_.Sub(name);
    std::ofstream out(path);
    for (const auto& [id, hex] : keys) out << id << " hex:" << hex << "\n";
    out.close();
    EXPECT_EQ(chmod(path.c_str(), 0600), 0);
    return path;
  }

  // Starts node `name` joining through `seeds`, sealing under `key_file`
  // (none if empty), with `extra` flags.
  Node& Start(const std::string& name, const std::vector<std::string>& seeds,
              const std::string& key_file, const std::vector<std::string>& extra = {}) {
    Node n;
    n.gossip = "127.0.0.1:" + std::to_string(FreePort());
    n.metrics = "127.0.0.1:" + std::to_string(FreePort());
    std::vector<std::string> flags = {"--region",          "eu",
                                      "--node-id",         name,
                                      "--gossip-listen",   n.gossip,
                                      "--metrics-listen",  n.metrics,
                                      "--gossip-period",   "100ms",
                                      "--suspicion-timeout", "1s",
                                      "--replication-factor", "1"};
    std::string seed_list;
    for (const std::string& s : seeds) seed_list += (seed_list.empty() ? "" : ",") + s;
    if (!seed_list.empty()) flags.insert(flags.end(), {"--seeds", seed_list});
    if (!key_file.empty()) flags.insert(flags.end(), {"--gossip-key-file", key_file});
    flags.insert(flags.end(), extra.begin(), extra.end());
    n.process = std::make_unique<ServerProcess>(GEOKV_SERVER_BIN, dir_.Sub(name),
                                                dir_.Sub(name + ".log"), flags);
    std::string why;
    EXPECT_TRUE(n.process->Start(&why)) << why;
    nodes_[name] = std::move(n);
    return nodes_[name];
  }

  // Node `of`'s view: member name -> state.
  std::map<std::string, std::string> View(const std::string& of) {
    Client c(nodes_[of].process->address());
    auto reply = c.kv().clusterRequest().send().wait(c.ws());
    std::map<std::string, std::string> out;
    for (auto m : reply.getMembers()) out[m.getName()] = MemberStateName(m.getState());
    return out;
  }

  bool SeesAlive(const std::string& of, const std::vector<std::string>& names) {
    auto view = View(of);
    for (const std::string& n : names) {
      if (view.count(n) == 0 || view[n] != "alive") return false;
    }
    return true;
  }

  // geokv_gossip_datagrams_refused_total{reason} on node `of`; -1 when the
  // series is missing.
  double Refused(const std::string& of, const std::string& reason) {
    const std::string body = testing::HttpGet(nodes_[of].metrics, "/metrics");
    const std::regex series("geokv_gossip_datagrams_refused_total\\{[^}]*reason=\"" + reason +
                            "\"[^}]*\\} ([0-9.e+]+)");
    std::smatch m;
    return std::regex_search(body, m, series) ? std::stod(m[1].str()) : -1;
  }

  std::string Logs() {
    std::string out;
    for (auto& [name, n] : nodes_) out += "--- " + name + "\n" + n.process->Log();
    return out;
  }

  TestDir dir_;
  std::map<std::string, Node> nodes_;
};

TEST_F(GossipProcessTest, AForgedDatagramAddsNoMemberAndIsCounted) {
  const std::string keys = KeyFile("keys", {{"k1", kOld}});
  Start("eu-a", {}, keys);
  Start("eu-b", {nodes_["eu-a"].gossip}, keys);
  ASSERT_TRUE(PollUntil([&] { return SeesAlive("eu-a", {"eu-b"}) && SeesAlive("eu-b", {"eu-a"}); },
                        10s))
      << Logs();

  const Member intruder = Intruder();
  GossipAuthenticator forger(Keys("k1", std::string(32, 'x')), intruder.id);
  for (const char* name : {"eu-a", "eu-b"}) {
    SendDatagram(nodes_[name].gossip, ForgedPacket(intruder));
    SendDatagram(nodes_[name].gossip, forger.Seal(ForgedPacket(intruder), 0));
  }
  for (const char* name : {"eu-a", "eu-b"}) {
    ASSERT_TRUE(PollUntil(
        [&] { return Refused(name, "unauthenticated") == 1 && Refused(name, "bad_mac") == 1; },
        10s))
        << name << " counts unauthenticated " << Refused(name, "unauthenticated") << ", bad_mac "
        << Refused(name, "bad_mac") << "\n"
        << Logs();
    EXPECT_EQ(View(name).count("intruder"), 0u) << name;
    EXPECT_EQ(View(name).size(), 2u) << name;
  }
  EXPECT_NE(nodes_["eu-a"].process->Log().find("refused a datagram from"), std::string::npos);

  // The same datagram makes a node without a key take the intruder.
  Start("eu-z", {}, "");
  SendDatagram(nodes_["eu-z"].gossip, ForgedPacket(intruder));
  EXPECT_TRUE(PollUntil([&] { return View("eu-z").count("intruder") == 1; }, 10s)) << Logs();
  EXPECT_EQ(Refused("eu-z", "unauthenticated"), 0);
}

TEST_F(GossipProcessTest, ARecordedDatagramSentAgainChangesNothing) {
  const std::string keys = KeyFile("keys", {{"k1", kOld}});
  Start("eu-a", {}, keys);
  // eu-b joins through a relay of the test's, which records its join and
  // passes it on to eu-a.
  boost::asio::io_context io;
  boost::asio::ip::udp::socket relay(
      io, boost::asio::ip::udp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  relay.non_blocking(true);
  const std::string relay_address = "127.0.0.1:" + std::to_string(relay.local_endpoint().port());
  Start("eu-b", {relay_address}, keys);
  std::string recorded;
  ASSERT_TRUE(PollUntil(
      [&] {
        char buffer[65536];
        boost::asio::ip::udp::endpoint from;
        boost::system::error_code ec;
        size_t n = relay.receive_from(boost::asio::buffer(buffer), from, 0, ec);
        if (ec) return false;
        recorded.assign(buffer, n);
        return true;
      },
      10s))
      << Logs();
  const auto recorded_at = std::chrono::steady_clock::now();
  ASSERT_EQ(recorded.rfind("GKVA", 0), 0u);
  SendDatagram(nodes_["eu-a"].gossip, recorded);
  ASSERT_TRUE(PollUntil([&] { return SeesAlive("eu-a", {"eu-b"}) && SeesAlive("eu-b", {"eu-a"}); },
                        10s))
      << Logs();

  // Sent again to the node that took it: refused.
  SendDatagram(nodes_["eu-a"].gossip, recorded);
  ASSERT_TRUE(PollUntil([&] { return Refused("eu-a", "replayed") == 1; }, 10s)) << Logs();
  EXPECT_EQ(View("eu-a").size(), 2u);

  // eu-b is gone and eu-a restarted, knowing nothing of it: the join, sent
  // again, would bring eu-b back as alive. It was stamped before eu-a's
  // start (less 2 s of slack), so it is refused.
  nodes_["eu-b"].process->Kill();
  std::this_thread::sleep_until(recorded_at + 3s);  // the slack must have passed
  ASSERT_TRUE(nodes_["eu-a"].process->Stop().has_value());
  std::string why;
  ASSERT_TRUE(nodes_["eu-a"].process->Start(&why)) << why;
  ASSERT_TRUE(PollUntil([&] { return Refused("eu-a", "replayed") == 0; }, 10s)) << Logs();
  ASSERT_EQ(View("eu-a").count("eu-b"), 0u) << "eu-a remembers eu-b across a restart";
  SendDatagram(nodes_["eu-a"].gossip, recorded);
  ASSERT_TRUE(PollUntil([&] { return Refused("eu-a", "replayed") == 1; }, 10s)) << Logs();
  EXPECT_EQ(View("eu-a").count("eu-b"), 0u);
}

TEST_F(GossipProcessTest, NodesAStepApartInAKeyRotationStayInOneView) {
  // eu-a already sends under the new key; eu-b holds only the old one.
  Start("eu-a", {}, KeyFile("a-keys", {{"2026-12", kNew}, {"2026-06", kOld}}));
  Start("eu-b", {nodes_["eu-a"].gossip}, KeyFile("b-keys", {{"2026-06", kOld}}));
  ASSERT_TRUE(PollUntil([&] { return SeesAlive("eu-a", {"eu-b"}) && SeesAlive("eu-b", {"eu-a"}); },
                        10s))
      << Logs();
  // Both stay alive to each other over many probes (30 periods, 3
  // suspicion timeouts).
  const auto until = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(SeesAlive("eu-a", {"eu-b"}) && SeesAlive("eu-b", {"eu-a"})) << Logs();
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(Refused("eu-b", "unknown_key"), 0);
  EXPECT_EQ(Refused("eu-a", "unknown_key"), 0);
}

// A key rotation by SIGHUP: the new file is in force without a restart,
// and a file that fails to load leaves the old keys in force.
TEST_F(GossipProcessTest, SighupPutsANewKeyFileInForce) {
  const std::string a_keys = KeyFile("a-keys", {{"2026-06", kOld}});
  Start("eu-a", {}, a_keys);
  Start("eu-b", {nodes_["eu-a"].gossip}, KeyFile("b-keys", {{"2026-12", kNew}}));
  // No key in common: eu-a refuses eu-b's join.
  ASSERT_TRUE(PollUntil([&] { return Refused("eu-a", "unknown_key") > 0; }, 10s)) << Logs();
  EXPECT_EQ(View("eu-a").count("eu-b"), 0u);

  KeyFile("a-keys", {{"2026-12", kNew}});
  nodes_["eu-a"].process->child().Signal(SIGHUP);
  ASSERT_TRUE(PollUntil([&] { return SeesAlive("eu-a", {"eu-b"}) && SeesAlive("eu-b", {"eu-a"}); },
                        10s))
      << Logs();
  EXPECT_NE(nodes_["eu-a"].process->Log().find("reload: gossip_keys reloaded: 1 key(s) from " +
                                               a_keys + ", sealing under '2026-12'"),
            std::string::npos)
      << Logs();
  // The old key is no longer accepted.
  const Member intruder = Intruder();
  GossipAuthenticator forger(Keys("2026-06", std::string(32, '\xaa')), intruder.id);
  const double unknown = Refused("eu-a", "unknown_key");
  SendDatagram(nodes_["eu-a"].gossip, forger.Seal(ForgedPacket(intruder), 0));
  ASSERT_TRUE(PollUntil([&] { return Refused("eu-a", "unknown_key") > unknown; }, 10s)) << Logs();
  EXPECT_EQ(View("eu-a").count("intruder"), 0u);

  // A file others may read is refused; the keys loaded before stay.
  ASSERT_EQ(chmod(a_keys.c_str(), 0644), 0);
  nodes_["eu-a"].process->child().Signal(SIGHUP);
  ASSERT_TRUE(PollUntil(
      [&] {
        return nodes_["eu-a"].process->Log().find("reload: gossip_keys not reloaded") !=
               std::string::npos;
      },
      10s))
      << Logs();
  const std::string log = nodes_["eu-a"].process->Log();
  const size_t at = log.find("reload: gossip_keys not reloaded");
  const std::string line = log.substr(at, log.find('\n', at) - at);
  EXPECT_NE(line.find(a_keys + " has mode 0644: group or others may read it"), std::string::npos)
      << line;
  const auto until = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(SeesAlive("eu-a", {"eu-b"}) && SeesAlive("eu-b", {"eu-a"})) << Logs();
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(nodes_["eu-a"].process->Running());
}

// The three steps of a rotation (docs/operations.md#rotating-the-key), each
// a new key file on every node and a SIGHUP, while a client writes: every
// node sees every other alive throughout, and no datagram is refused.
TEST_F(GossipProcessTest, AKeyRotationBySighupUnderLoadDeclaresNoOneDead) {
  const std::vector<std::string> names = {"eu-a", "eu-b", "eu-c"};
  for (const std::string& name : names) {
    const std::vector<std::string> seeds =
        name == "eu-a" ? std::vector<std::string>{} : std::vector<std::string>{nodes_["eu-a"].gossip};
    // A peer port, so that eu-a forwards the writes of keys the others own.
    Start(name, seeds, KeyFile(name + "-keys", {{"2026-06", kOld}}),
          {"--peer-listen", "127.0.0.1:" + std::to_string(FreePort())});
  }
  auto all_alive = [&] {
    for (const std::string& of : names) {
      std::vector<std::string> others;
      for (const std::string& n : names) {
        if (n != of) others.push_back(n);
      }
      if (!SeesAlive(of, others)) return false;
    }
    return true;
  };
  ASSERT_TRUE(PollUntil(all_alive, 10s)) << Logs();
  Client writer(nodes_["eu-a"].process->address());
  int written = 0;
  const std::vector<std::vector<std::pair<std::string, std::string>>> steps = {
      {{"2026-06", kOld}, {"2026-12", kNew}},
      {{"2026-12", kNew}, {"2026-06", kOld}},
      {{"2026-12", kNew}}};
  for (const auto& keys : steps) {
    for (const std::string& name : names) {
      KeyFile(name + "-keys", keys);
      nodes_[name].process->child().Signal(SIGHUP);
    }
    // Three suspicion timeouts of writes and probes under the new files.
    const auto until = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < until) {
      ASSERT_NE(writer.Set("k" + std::to_string(written), "v"), "") << Logs();
      ++written;
      ASSERT_TRUE(all_alive()) << "after the step sealing under '" << keys.front().first
                               << "'\n" << Logs();
    }
  }
  for (const std::string& name : names) {
    EXPECT_EQ(Refused(name, "unknown_key"), 0) << name;
    EXPECT_EQ(Refused(name, "bad_mac"), 0) << name;
    EXPECT_NE(nodes_[name].process->Log().find("sealing under '2026-12'"), std::string::npos)
        << Logs();
  }
  EXPECT_GT(written, 0);
}

}  // namespace
}  // namespace geokv

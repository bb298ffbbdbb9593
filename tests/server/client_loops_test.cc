// geokv-server with more than one event loop for client connections
// (--client-loops, server/client_loops.h), as a real process: connections
// spread over the loops are all served, a write through one connection is
// read through every other, SIGTERM with writes in flight on every
// connection loses no acknowledged write and exits 0, and the flag's
// limits are usage errors.

#include <capnp/ez-rpc.h>
#include <gtest/gtest.h>

#include <dirent.h>

#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "schema/kv.capnp.h"
#include "schema/kv_text.h"
#include "testing/process.h"
#include "testing/server_process.h"
#include "testing/test_dir.h"
#include "tests/server/write_load.h"

namespace geokv {
namespace {

using testing::ExpectPresent;
using testing::ExpectShutsDownCleanly;
using testing::RunCommand;
using testing::ServerProcess;
using testing::TestDir;
using testing::WriteLoad;
using Code = rpc::Outcome::Code;

constexpr int kConnections = 12;

// The names of the threads of process `pid`.
std::set<std::string> ThreadNames(pid_t pid) {
  std::set<std::string> names;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return names;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream comm(tasks + "/" + entry->d_name + "/comm");
    std::string name;
    std::getline(comm, name);
    names.insert(name);
  }
  closedir(dir);
  return names;
}

class ClientLoopsTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerProcess> NewServer(std::vector<std::string> flags) {
    return std::make_unique<ServerProcess>(GEOKV_SERVER_BIN, dir_.Sub("data"),
                                           dir_.Sub("server.log"), std::move(flags));
  }
  TestDir dir_;
};

TEST_F(ClientLoopsTest, EveryConnectionIsServedAndSeesTheOthersWrites) {
  auto server = NewServer({"--durability", "wal", "--client-loops", "3"});
  std::string why;
  ASSERT_TRUE(server->Start(&why)) << why;
  const std::set<std::string> threads = ThreadNames(server->child().pid());
  EXPECT_EQ(threads.count("geokv-client-1"), 1u);
  EXPECT_EQ(threads.count("geokv-client-2"), 1u);
  EXPECT_EQ(threads.count("geokv-client-3"), 0u);

  // Connections made one after another from new ports land on the three
  // listening sockets by the kernel's hash: with twelve, all on one loop
  // is a chance of 3^-11.
  std::vector<std::unique_ptr<capnp::EzRpcClient>> clients;
  for (int i = 0; i < kConnections; ++i) {
    clients.push_back(std::make_unique<capnp::EzRpcClient>(server->address()));
  }
  kj::WaitScope& ws = clients.front()->getWaitScope();
  for (int i = 0; i < kConnections; ++i) {
    auto set = clients[i]->getMain<rpc::GeoKv>().setRequest();
    set.setKey(AsData("k" + std::to_string(i)));
    set.setValue(AsData("from " + std::to_string(i)));
    ASSERT_EQ(set.send().wait(ws).getOutcome().getCode(), Code::OK) << i;
  }
  for (int reader = 0; reader < kConnections; ++reader) {
    auto kv = clients[reader]->getMain<rpc::GeoKv>();
    for (int i = 0; i < kConnections; ++i) {
      auto get = kv.getRequest();
      get.setKey(AsData("k" + std::to_string(i)));
      auto reply = get.send().wait(ws);
      ASSERT_EQ(reply.getOutcome().getCode(), Code::OK) << reader << " reads k" << i;
      EXPECT_EQ(String(reply.getValue()), "from " + std::to_string(i));
    }
  }
  // A refused request is refused as on the node's own loop.
  auto big = clients.back()->getMain<rpc::GeoKv>().setRequest();
  big.setKey(AsData(std::string(5000, 'k')));
  big.setValue(AsData("v"));
  EXPECT_EQ(big.send().wait(ws).getOutcome().getCode(), Code::TOO_LARGE);
}

TEST_F(ClientLoopsTest, SigtermWithWritesInFlightOnEveryLoopLosesNoAcknowledgedWrite) {
  auto server = NewServer({"--durability", "wal", "--client-loops", "2"});
  std::string why;
  ASSERT_TRUE(server->Start(&why)) << why;
  std::vector<std::string> acked;
  {
    std::vector<std::unique_ptr<capnp::EzRpcClient>> clients;
    std::vector<std::unique_ptr<WriteLoad>> loads;
    for (int i = 0; i < 8; ++i) {
      clients.push_back(std::make_unique<capnp::EzRpcClient>(server->address()));
      loads.push_back(std::make_unique<WriteLoad>(clients.back()->getMain<rpc::GeoKv>(),
                                                  "c" + std::to_string(i) + "-"));
    }
    kj::WaitScope& ws = clients.front()->getWaitScope();
    kj::Vector<kj::Promise<void>> started;
    for (auto& load : loads) started.add(load->Run(16, 100));
    kj::joinPromises(started.releaseAsArray()).wait(ws);
    server->child().Signal(SIGTERM);
    for (auto& load : loads) {
      load->Done().wait(ws);
      acked.insert(acked.end(), load->acked_keys().begin(), load->acked_keys().end());
      KJ_IF_MAYBE(e, load->last_error()) {
        EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << e->getDescription().cStr();
      }
    }
  }
  ExpectShutsDownCleanly(server->child());
  if (::testing::Test::HasFatalFailure()) return;
  ASSERT_TRUE(server->Start(&why)) << why;
  ExpectPresent(server->address(), acked, "c0-counter", 0, 0);
}

TEST_F(ClientLoopsTest, LimitsOfTheFlagAreUsageErrors) {
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), GEOKV_SERVER_BIN);
    args.push_back("--data-dir");
    args.push_back(dir_.Sub("d"));
    return RunCommand(args, dir_.path());
  };
  EXPECT_EQ(run({"--client-loops", "0"}).exit_code, 2);
  EXPECT_EQ(run({"--client-loops", "65"}).exit_code, 2);
  std::ofstream(dir_.Sub("users")) << "";
  auto users = run({"--client-loops", "2", "--users", dir_.Sub("users")});
  EXPECT_EQ(users.exit_code, 2);
  EXPECT_NE(users.err.find("--client-loops"), std::string::npos) << users.err;
  auto tls = run({"--client-loops", "2", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"});
  EXPECT_EQ(tls.exit_code, 2);
  EXPECT_NE(tls.err.find("--client-loops"), std::string::npos) << tls.err;
}

}  // namespace
}  // namespace geokv

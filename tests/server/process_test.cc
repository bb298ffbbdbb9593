// geokv-server and geokv-cli as real processes on loopback: the CLI drives
// every command; kill -9 during writes loses no acknowledged write; SIGTERM
// shuts down cleanly; garbage, oversized input, vanishing clients and
// connections beyond the limit never stop the server.

#include <arpa/inet.h>
#include <capnp/ez-rpc.h>
#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "schema/kv.capnp.h"
#include "schema/kv_text.h"
#include "testing/process.h"
#include "testing/server_process.h"
#include "testing/test_dir.h"
#include "tests/server/write_load.h"
#include "util/stream_wrapper.h"

namespace geokv {
namespace {

using testing::CommandResult;
using testing::ExpectPresent;
using testing::ExpectShutsDownCleanly;
using testing::RunCommand;
using testing::ServerProcess;
using testing::TestDir;
using testing::WriteLoad;
using Code = rpc::Outcome::Code;

class ServerProcessTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServerProcess> NewServer(std::vector<std::string> flags = {}) {
    return std::make_unique<ServerProcess>(GEOKV_SERVER_BIN, dir_.Sub("data"),
                                           dir_.Sub("server.log"), std::move(flags));
  }

  CommandResult Cli(const ServerProcess& server, std::vector<std::string> args) {
    std::vector<std::string> argv{GEOKV_CLI_BIN, "--connect", server.address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, dir_.path());
  }

  TestDir dir_;
};

#define START(server)                        \
  do {                                       \
    std::string why;                         \
    ASSERT_TRUE((server)->Start(&why)) << why; \
  } while (0)

TEST_F(ServerProcessTest, CliRunsEveryCommand) {
  auto server = NewServer();
  START(server);
  auto ok = [&](std::vector<std::string> args, const std::string& out) {
    CommandResult r = Cli(*server, args);
    EXPECT_EQ(r.exit_code, 0) << args[0] << ": " << r.err;
    EXPECT_EQ(r.out, out) << args[0];
    return r;
  };
  CommandResult set = Cli(*server, {"set", "k", "hello"});
  EXPECT_EQ(set.exit_code, 0) << set.err;
  EXPECT_EQ(set.out.rfind("OK token=01", 0), 0u) << set.out;
  ok({"get", "k"}, "hello\n");
  ok({"--json", "get", "k"}, "{\"outcome\":\"OK\",\"value\":\"hello\"}\n");
  ok({"type", "k"}, "lww\n");
  EXPECT_EQ(Cli(*server, {"del", "k"}).exit_code, 0);
  CommandResult missing = Cli(*server, {"get", "k"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.out, "(nil)\n");
  EXPECT_EQ(Cli(*server, {"--json", "get", "k"}).out,
            "{\"outcome\":\"NOT_FOUND\",\"message\":\"key not found\"}\n");

  EXPECT_EQ(Cli(*server, {"sadd", "s", "b", "a", "c"}).exit_code, 0);
  EXPECT_EQ(Cli(*server, {"srem", "s", "c"}).exit_code, 0);
  ok({"smembers", "s"}, "a\nb\n");
  ok({"--json", "smembers", "s", "--limit", "1"},
     "{\"outcome\":\"OK\",\"members\":[\"a\"],\"more\":true}\n");
  ok({"scard", "s"}, "2\n");
  ok({"sismember", "s", "a"}, "1\n");
  ok({"sismember", "s", "c"}, "0\n");

  EXPECT_EQ(Cli(*server, {"incrby", "c", "10"}).exit_code, 0);
  EXPECT_EQ(Cli(*server, {"incrby", "c", "--", "-3"}).exit_code, 0);
  ok({"counter", "c"}, "7\n");

  EXPECT_EQ(Cli(*server, {"mvset", "m", "x"}).exit_code, 0);
  EXPECT_EQ(Cli(*server, {"mvset", "m", "y"}).exit_code, 0);
  CommandResult mv = Cli(*server, {"mvget", "m"});
  ASSERT_EQ(mv.exit_code, 0);
  std::smatch context;
  std::string mv_out = mv.out;
  ASSERT_TRUE(std::regex_search(mv_out, context, std::regex("context=([0-9a-f]+)"))) << mv.out;
  EXPECT_EQ(mv.out.rfind("1) x\n2) y\n", 0), 0u) << mv.out;
  EXPECT_EQ(Cli(*server, {"mvset", "m", "z", "--context", context[1].str()}).exit_code, 0);
  EXPECT_EQ(Cli(*server, {"mvget", "m"}).out.rfind("1) z\ncontext=", 0), 0u);

  // Errors from the server: exit 3, the outcome on stderr.
  CommandResult wrong = Cli(*server, {"sadd", "c", "x"});
  EXPECT_EQ(wrong.exit_code, 3);
  EXPECT_EQ(wrong.err, "(error) WRONG_TYPE: key 'c' holds a value of type counter, not orset\n");
  EXPECT_EQ(Cli(*server, {"set", std::string(5000, 'k'), "v"}).exit_code, 3);
  EXPECT_EQ(Cli(*server, {"mvset", "m", "v", "--context", "zz"}).exit_code, 2);

  // Usage errors: exit 2.
  EXPECT_EQ(Cli(*server, {"set", "k"}).exit_code, 2);
  EXPECT_EQ(Cli(*server, {"nosuchcommand"}).exit_code, 2);
  EXPECT_EQ(RunCommand({GEOKV_CLI_BIN, "--help"}, dir_.path()).exit_code, 0);

  // Reads with a token from a write.
  std::smatch token;
  std::string set_out = Cli(*server, {"set", "t", "1"}).out;
  ASSERT_TRUE(std::regex_search(set_out, token, std::regex("token=([0-9a-f]+)")));
  ok({"get", "t", "--token", token[1].str()}, "1\n");
  EXPECT_EQ(Cli(*server, {"get", "t", "--token", "01ff"}).exit_code, 3);

  CommandResult info = Cli(*server, {"--json", "info"});
  EXPECT_EQ(info.exit_code, 0);
  EXPECT_NE(info.out.find("\"region\":\"local\""), std::string::npos) << info.out;
  // A node without peers has no clock samples: no offset, rather than 0.
  EXPECT_NE(info.out.find("\"clock_offset_ms\":null"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("\"clock_samples\":0"), std::string::npos) << info.out;
  CommandResult text = Cli(*server, {"info"});
  EXPECT_NE(text.out.find("clock_offset_ms: no samples"), std::string::npos) << text.out;

  // Nothing listens: exit 4.
  int port = server->port();
  ASSERT_TRUE(server->Stop().has_value());
  CommandResult down = RunCommand(
      {GEOKV_CLI_BIN, "--connect", "127.0.0.1:" + std::to_string(port), "get", "k"},
      dir_.path());
  EXPECT_EQ(down.exit_code, 4) << down.err;
}

class KillNineTest : public ServerProcessTest,
                     public ::testing::WithParamInterface<const char*> {};

TEST_P(KillNineTest, LosesNoAcknowledgedWrite) {
  auto server = NewServer({"--durability", GetParam()});
  std::vector<std::string> acked;
  int64_t increments_acked = 0, increments_sent = 0;
  for (int cycle = 0; cycle < 3; ++cycle) {
    START(server);
    std::string prefix = "c" + std::to_string(cycle) + "-";
    {
      capnp::EzRpcClient client(server->address());
      auto& ws = client.getWaitScope();
      WriteLoad load(client.getMain<rpc::GeoKv>(), prefix);
      bool reached = load.Run(32, 300)
                         .then([] { return true; })
                         .exclusiveJoin(client.getIoProvider().getTimer().afterDelay(
                             60 * kj::SECONDS).then([] { return false; }))
                         .wait(ws);
      ASSERT_TRUE(reached) << "300 writes were not acknowledged within 60 s";
      server->Kill();
      load.Stop();
      load.Done().wait(ws);
      acked.insert(acked.end(), load.acked_keys().begin(), load.acked_keys().end());
      // Each cycle's counter is its own key; check the whole history below.
      increments_acked = load.increments_acked();
      increments_sent = load.increments_sent();
    }
    START(server);
    ExpectPresent(server->address(), acked, prefix + "counter", increments_acked,
                  increments_sent);
    if (HasFatalFailure()) return;
    server->Kill();
  }
}

INSTANTIATE_TEST_SUITE_P(Durability, KillNineTest, ::testing::Values("fsync", "wal"));

TEST_F(ServerProcessTest, SigtermFinishesCallsInFlightAndExitsZero) {
  auto server = NewServer({"--durability", "wal"});
  START(server);
  std::vector<std::string> acked;
  {
    capnp::EzRpcClient client(server->address());
    auto& ws = client.getWaitScope();
    WriteLoad load(client.getMain<rpc::GeoKv>(), "t-");
    load.Run(32, 200).wait(ws);
    server->child().Signal(SIGTERM);
    load.Done().wait(ws);  // the server refuses or answers every call, then closes
    acked = load.acked_keys();
    KJ_IF_MAYBE(e, load.last_error()) {
      EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << e->getDescription().cStr();
    }
  }
  ExpectShutsDownCleanly(server->child());
  if (::testing::Test::HasFatalFailure()) return;
  START(server);
  ExpectPresent(server->address(), acked, "t-counter", 0, 0);
}

// Connects a plain socket to the server, writes `bytes`, and waits for the
// server to close it. True when it does within 10 s.
bool ServerClosesAfter(int port, const std::string& bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return false;
  }
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  (void)!send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  char buf[4096];
  bool closed = false;
  while (true) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) {
      closed = true;
      break;
    }
    if (n < 0) break;  // timed out
  }
  close(fd);
  return closed;
}

// One LWW set and get through `kv`; true when both answer as expected.
bool Works(rpc::GeoKv::Client& kv, kj::WaitScope& ws, const std::string& key) {
  auto set = kv.setRequest();
  set.setKey(AsData(key));
  set.setValue(AsData("fine"));
  if (set.send().wait(ws).getOutcome().getCode() != Code::OK) return false;
  auto get = kv.getRequest();
  get.setKey(AsData(key));
  return String(get.send().wait(ws).getValue()) == "fine";
}

// Whether a new connection to `address` is served (Works).
bool NewConnectionWorks(const std::string& address, kj::WaitScope& ws) {
  capnp::EzRpcClient next(address);
  auto kv = next.getMain<rpc::GeoKv>();
  try {
    return Works(kv, ws, "next");
  } catch (const kj::Exception&) {
    return false;
  }
}

TEST_F(ServerProcessTest, GarbageAndOversizedInputDoNotStopTheServer) {
  auto server = NewServer({"--max-message-bytes", "1MiB", "--max-value-bytes", "512KiB"});
  START(server);
  capnp::EzRpcClient steady(server->address());
  auto& ws = steady.getWaitScope();
  auto kv = steady.getMain<rpc::GeoKv>();
  ASSERT_TRUE(Works(kv, ws, "before"));

  std::mt19937 rng(7);
  std::string garbage(64 << 10, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  EXPECT_TRUE(ServerClosesAfter(server->port(), garbage));
  // Valid framing (one segment of four words) around words that are no
  // RPC message.
  std::string framed("\0\0\0\0\x04\0\0\0", 8);
  framed += std::string(32, '\xff');
  EXPECT_TRUE(ServerClosesAfter(server->port(), framed));
  // A frame announcing more than max-message-bytes.
  std::string huge("\0\0\0\0\0\0\0\x10", 8);
  EXPECT_TRUE(ServerClosesAfter(server->port(), huge));
  ASSERT_TRUE(Works(kv, ws, "after-garbage"));

  {
    // Over max-value-bytes but within the message limit: TOO_LARGE.
    auto set = kv.setRequest();
    set.setKey(AsData("big"));
    set.setValue(AsData(std::string(600 << 10, 'v')));
    auto reply = set.send().wait(ws);
    EXPECT_EQ(reply.getOutcome().getCode(), Code::TOO_LARGE);
  }
  {
    // Over max-message-bytes: that connection fails, the others go on.
    capnp::EzRpcClient rude(server->address());
    auto rude_kv = rude.getMain<rpc::GeoKv>();
    auto set = rude_kv.setRequest();
    set.setKey(AsData("huge"));
    set.setValue(AsData(std::string(2 << 20, 'v')));
    EXPECT_ANY_THROW(set.send().wait(ws));
  }
  ASSERT_TRUE(Works(kv, ws, "after-oversized"));
  auto get = kv.getRequest();
  get.setKey(AsData("huge"));
  EXPECT_EQ(get.send().wait(ws).getOutcome().getCode(), Code::NOT_FOUND);
  EXPECT_TRUE(server->child().Running());
}

TEST_F(ServerProcessTest, LargeRequestsWithinTheMessageLimitAreServed) {
  // Every byte of a request is read once: a set add near the message limit
  // is answered, not failed for exceeding the traversal limit.
  auto server = NewServer({"--max-message-bytes", "64KiB", "--max-key-bytes", "64",
                           "--max-value-bytes", "1KiB"});
  START(server);
  capnp::EzRpcClient client(server->address());
  auto& ws = client.getWaitScope();
  auto kv = client.getMain<rpc::GeoKv>();
  auto add = kv.sAddRequest();
  add.setKey(AsData("s"));
  auto elements = add.initElements(600);  // ~43 KiB of elements and pointers
  for (int i = 0; i < 600; ++i) {
    std::string e = std::to_string(i) + std::string(60, 'e');
    elements.set(i, AsData(e.substr(0, 64)));
  }
  EXPECT_EQ(add.send().wait(ws).getOutcome().getCode(), Code::OK);
  auto card = kv.sCardRequest();
  card.setKey(AsData("s"));
  EXPECT_EQ(card.send().wait(ws).getCount(), 600u);
}

TEST_F(ServerProcessTest, CliGivesUpOnASilentNode) {
  // A socket that accepts and never answers.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  auto start = std::chrono::steady_clock::now();
  CommandResult r = RunCommand({GEOKV_CLI_BIN, "--connect",
                                "127.0.0.1:" + std::to_string(ntohs(addr.sin_port)),
                                "--timeout", "1", "get", "k"},
                               dir_.path());
  close(fd);
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_NE(r.err.find("no answer from"), std::string::npos) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

// Resident memory of process `pid`, in bytes.
size_t ResidentBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// A client stream that stops reading when told to, as a client that sends
// calls but never reads the answers.
class StallingStream final : public StreamWrapper {
 public:
  using StreamWrapper::StreamWrapper;
  void Stall() { stalled_ = true; }
  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    if (stalled_) return kj::NEVER_DONE;
    return inner_->tryRead(buffer, min_bytes, max_bytes);
  }

 private:
  bool stalled_ = false;
};

// The server holds at most --max-calls-per-connection replies being built
// and --max-message-bytes of replies queued for a client that does not read
// them: 300 gets of a 1 MiB value must not make it grow by 300 MiB.
TEST_F(ServerProcessTest, ClientNotReadingItsRepliesDoesNotGrowTheServer) {
  // Resident memory is the measure: AddressSanitizer's quarantine keeps
  // freed blocks resident (up to 256 MiB), so keep it small for the server.
  const char* asan = getenv("ASAN_OPTIONS");
  const std::string saved = asan == nullptr ? "" : asan;
  setenv("ASAN_OPTIONS", (saved + (saved.empty() ? "" : ":") + "quarantine_size_mb=4").c_str(), 1);
  auto server = NewServer({"--max-message-bytes", "4MiB", "--max-value-bytes", "1MiB",
                           "--durability", "wal"});
  START(server);
  if (asan == nullptr) {
    unsetenv("ASAN_OPTIONS");
  } else {
    setenv("ASAN_OPTIONS", saved.c_str(), 1);
  }
  capnp::EzRpcClient steady(server->address());
  auto& ws = steady.getWaitScope();
  auto kv = steady.getMain<rpc::GeoKv>();
  {
    auto set = kv.setRequest();
    set.setKey(AsData("big"));
    set.setValue(AsData(std::string(1 << 20, 'v')));
    ASSERT_EQ(set.send().wait(ws).getOutcome().getCode(), Code::OK);
  }
  size_t baseline = ResidentBytes(server->child().pid());

  auto address = steady.getIoProvider().getNetwork()
                     .parseAddress("127.0.0.1", server->port()).wait(ws);
  auto stream = kj::heap<StallingStream>(address->connect().wait(ws));
  capnp::TwoPartyClient rude(*stream);
  auto rude_kv = rude.bootstrap().castAs<rpc::GeoKv>();
  ASSERT_TRUE(Works(rude_kv, ws, "rude"));
  stream->Stall();
  // 300 gets of the 1 MiB value: 300 MiB of replies nobody reads.
  kj::Vector<kj::Promise<void>> calls;
  for (int i = 0; i < 300; ++i) {
    auto get = rude_kv.getRequest();
    get.setKey(AsData("big"));
    calls.add(get.send().ignoreResult());
  }
  // Give the server three seconds to read them all, if it would.
  bool grew = testing::PollUntil(
      [&] {
        ws.poll();
        return ResidentBytes(server->child().pid()) > baseline + (100 << 20);
      },
      std::chrono::seconds(3));
  EXPECT_FALSE(grew) << "server grew from " << baseline << " to "
                     << ResidentBytes(server->child().pid()) << " bytes";
  EXPECT_TRUE(Works(kv, ws, "steady"));
}

TEST_F(ServerProcessTest, ClientVanishingMidCallDoesNotStopTheServer) {
  auto server = NewServer({"--durability", "wal"});
  START(server);
  capnp::EzRpcClient steady(server->address());
  auto& ws = steady.getWaitScope();
  auto kv = steady.getMain<rpc::GeoKv>();
  ASSERT_TRUE(Works(kv, ws, "before"));
  for (int round = 0; round < 5; ++round) {
    capnp::EzRpcClient vanishing(server->address());
    auto v = vanishing.getMain<rpc::GeoKv>();
    ASSERT_TRUE(Works(v, ws, "vanishing"));
    kj::Vector<kj::Promise<void>> calls;
    for (int i = 0; i < 200; ++i) {
      auto set = v.setRequest();
      set.setKey(AsData("v" + std::to_string(i)));
      set.setValue(AsData(std::string(1000, 'x')));
      calls.add(set.send().ignoreResult());
    }
    // Dropping the calls and the client closes the connection mid-call.
  }
  ASSERT_TRUE(Works(kv, ws, "after"));
  EXPECT_TRUE(server->child().Running());
}

TEST_F(ServerProcessTest, ConnectionsBeyondTheLimitAreClosed) {
  auto server = NewServer({"--max-connections", "2"});
  START(server);
  auto first = std::make_unique<capnp::EzRpcClient>(server->address());
  auto& ws = first->getWaitScope();
  auto kv1 = first->getMain<rpc::GeoKv>();
  ASSERT_TRUE(Works(kv1, ws, "one"));
  {
    capnp::EzRpcClient second(server->address());
    auto kv2 = second.getMain<rpc::GeoKv>();
    ASSERT_TRUE(Works(kv2, ws, "two"));
    capnp::EzRpcClient third(server->address());
    auto kv3 = third.getMain<rpc::GeoKv>();
    EXPECT_ANY_THROW(Works(kv3, ws, "three"));
    EXPECT_TRUE(Works(kv1, ws, "one-again"));
  }
  // With the second gone, a new connection is served (once the server has
  // seen the close).
  EXPECT_TRUE(testing::PollUntil([&] { return NewConnectionWorks(server->address(), ws); },
                                 std::chrono::seconds(10)));
}

// One address may hold --max-connections-per-address connections; another
// address (127.0.0.2, also this machine) is still served.
TEST_F(ServerProcessTest, ConnectionsBeyondTheLimitPerAddressAreClosed) {
  auto server = NewServer({"--max-connections-per-address", "2"});
  START(server);
  auto first = std::make_unique<capnp::EzRpcClient>(server->address());
  auto& ws = first->getWaitScope();
  auto kv1 = first->getMain<rpc::GeoKv>();
  ASSERT_TRUE(Works(kv1, ws, "one"));
  capnp::EzRpcClient second(server->address());
  auto kv2 = second.getMain<rpc::GeoKv>();
  ASSERT_TRUE(Works(kv2, ws, "two"));
  {
    capnp::EzRpcClient third(server->address());
    auto kv3 = third.getMain<rpc::GeoKv>();
    EXPECT_ANY_THROW(Works(kv3, ws, "three"));
  }
  // A socket bound to 127.0.0.2 comes from another address.
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(0x7f000002);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)), 0) << errno;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(server->port()));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0) << errno;
  capnp::EzRpcClient other(fd);
  auto kv4 = other.getMain<rpc::GeoKv>();
  EXPECT_TRUE(Works(kv4, ws, "from-another-address"));
  EXPECT_TRUE(Works(kv1, ws, "one-again"));
  EXPECT_NE(server->Log().find("connections open from 127.0.0.1 (max-connections-per-address)"),
            std::string::npos)
      << server->Log();
}

// A connection that sends nothing, or sends a request a byte at a time, is
// closed and frees its slot; one that keeps sending requests stays.
TEST_F(ServerProcessTest, IdleAndSlowConnectionsAreClosedAndFreeTheirSlots) {
  auto server = NewServer({"--max-connections", "2", "--idle-timeout", "1s",
                           "--read-timeout", "1s"});
  START(server);
  EXPECT_TRUE(ServerClosesAfter(server->port(), ""));
  EXPECT_TRUE(ServerClosesAfter(server->port(), std::string("\0\0\0\0", 4)));
  {
    // A frame of one 4-word segment, sent a byte every 200 ms: it would
    // take 8 s; the connection is closed long before.
    std::string frame("\0\0\0\0\x04\0\0\0", 8);
    frame += std::string(32, '\0');
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(server->port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const auto start = std::chrono::steady_clock::now();
    size_t sent = 0;
    while (sent < frame.size() && send(fd, frame.data() + sent, 1, MSG_NOSIGNAL) == 1) {
      ++sent;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    close(fd);
    EXPECT_LT(sent, frame.size());
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  }
  // Two silent connections fill the limit until they are closed.
  capnp::EzRpcClient busy(server->address());
  auto& ws = busy.getWaitScope();
  auto kv = busy.getMain<rpc::GeoKv>();
  {
    capnp::EzRpcClient silent(server->address());
    ASSERT_TRUE(Works(kv, ws, "busy"));
    // The silent client's connection goes after a second; meanwhile the
    // busy one, which sends a request every 200 ms, stays.
    bool freed = testing::PollUntil(
        [&] {
          EXPECT_TRUE(Works(kv, ws, "busy"));
          return NewConnectionWorks(server->address(), ws);
        },
        std::chrono::seconds(10));
    EXPECT_TRUE(freed);
  }
  EXPECT_TRUE(Works(kv, ws, "still"));
  // A call that waits longer than the idle timeout keeps its connection:
  // a wait for a write 1,000 positions past this node's last one.
  auto set = kv.setRequest();
  set.setKey(AsData("t"));
  set.setValue(AsData("v"));
  // The token's form (docs/formats.md): version, origin, then the
  // position, 8 bytes big-endian.
  std::string token = String(set.send().wait(ws).getToken()).substr(0, 17);
  uint64_t position = 0;
  for (int i = 9; i < 17; ++i) position = position << 8 | static_cast<uint8_t>(token[i]);
  position += 1000;
  for (int i = 16; i >= 9; --i, position >>= 8) token[i] = static_cast<char>(position & 0xff);
  auto wait = kv.waitReplicatedRequest();
  wait.initTokens(1).set(0, AsData(token));
  wait.setTimeoutMs(2500);
  EXPECT_EQ(wait.send().wait(ws).getOutcome().getCode(), Code::TIMEOUT);
  EXPECT_TRUE(Works(kv, ws, "after-wait"));
}

TEST_F(ServerProcessTest, ConfigFileAndFlagsWithFlagsWinning) {
  std::string config = dir_.Sub("geokv.toml");
  std::ofstream(config) << "# a node in eu\nregion = \"eu\"\nnode-id = \"from-file\"\n"
                           "max-key-bytes = \"16\"\n";
  auto server = NewServer({"--config", config, "--node-id", "from-flag"});
  START(server);
  CommandResult info = Cli(*server, {"--json", "info"});
  EXPECT_NE(info.out.find("\"region\":\"eu\""), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("\"name\":\"from-flag\""), std::string::npos) << info.out;
  EXPECT_EQ(Cli(*server, {"set", std::string(17, 'k'), "v"}).exit_code, 3);
  EXPECT_EQ(Cli(*server, {"set", std::string(16, 'k'), "v"}).exit_code, 0);

  // The data dir is locked by the running server: a second one cannot start.
  CommandResult second =
      RunCommand({GEOKV_SERVER_BIN, "--data-dir", dir_.Sub("data"), "--listen", "127.0.0.1:0"},
                 dir_.path());
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("cannot open the store"), std::string::npos) << second.err;
}

TEST_F(ServerProcessTest, BadCommandLinesAreUsageErrors) {
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), GEOKV_SERVER_BIN);
    return RunCommand(args, dir_.path());
  };
  CommandResult help = run({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* option : {"--config", "--node-id", "--region", "--listen", "--data-dir",
                             "--durability", "--max-key-bytes", "--max-value-bytes",
                             "--max-connections", "--max-message-bytes", "--log-level",
                             "--insecure"}) {
    EXPECT_NE(help.out.find(option), std::string::npos) << option;
  }
  EXPECT_EQ(run({"--durability", "sometimes"}).exit_code, 2);
  EXPECT_EQ(run({"--max-key-bytes", "lots"}).exit_code, 2);
  EXPECT_EQ(run({"--no-such-flag"}).exit_code, 2);
  EXPECT_EQ(run({"--max-value-bytes", "64MiB", "--max-message-bytes", "1MiB"}).exit_code, 2);
  std::string config = dir_.Sub("bad.toml");
  std::ofstream(config) << "no-such-option = 1\n";
  CommandResult bad_config = run({"--config", config});
  EXPECT_EQ(bad_config.exit_code, 2);
  EXPECT_EQ(run({"--config", dir_.Sub("missing.toml")}).exit_code, 2);
  CommandResult bad_listen = run({"--listen", "not-an-address:x", "--data-dir", dir_.Sub("d")});
  EXPECT_EQ(bad_listen.exit_code, 1);
  EXPECT_NE(bad_listen.err.find("cannot listen"), std::string::npos) << bad_listen.err;
}

// A port or gossip off loopback without TLS or a key stops the node,
// naming the flag, unless --insecure says otherwise.
TEST_F(ServerProcessTest, PlaintextOffLoopbackNeedsInsecure) {
  auto run = [&](const std::string& name, std::vector<std::string> args) {
    args.insert(args.begin(), {GEOKV_SERVER_BIN, "--data-dir", dir_.Sub(name)});
    return RunCommand(args, dir_.path());
  };
  CommandResult client = run("a", {"--listen", "0.0.0.0:0"});
  EXPECT_EQ(client.exit_code, 1);
  EXPECT_NE(client.err.find("--listen 0.0.0.0:0 is reachable off this machine without TLS: give "
                            "--tls-cert, --tls-key and --tls-ca, or --insecure"),
            std::string::npos)
      << client.err;
  CommandResult peer = run("b", {"--listen", "127.0.0.1:0", "--peer-listen", "0.0.0.0:0"});
  EXPECT_EQ(peer.exit_code, 1);
  EXPECT_NE(peer.err.find("--peer-listen 0.0.0.0:0 is reachable off this machine without TLS"),
            std::string::npos)
      << peer.err;
  CommandResult resp = run("c", {"--listen", "127.0.0.1:0", "--resp-listen", "0.0.0.0:0"});
  EXPECT_EQ(resp.exit_code, 1);
  EXPECT_NE(resp.err.find("--resp-listen 0.0.0.0:0 is reachable off this machine without TLS"),
            std::string::npos)
      << resp.err;
  CommandResult gossip = run("d", {"--listen", "127.0.0.1:0", "--gossip-listen", "0.0.0.0:0"});
  EXPECT_EQ(gossip.exit_code, 1);
  EXPECT_NE(gossip.err.find("--gossip-listen 0.0.0.0:0 is reachable off this machine without a "
                            "gossip key: give --gossip-key-file, or --insecure"),
            std::string::npos)
      << gossip.err;

  // (Gossip then refuses the wildcard address for reasons of its own.)
  CommandResult insecure_gossip =
      run("f", {"--listen", "127.0.0.1:0", "--gossip-listen", "0.0.0.0:0", "--insecure"});
  EXPECT_EQ(insecure_gossip.err.find("without a gossip key"), std::string::npos)
      << insecure_gossip.err;
  ServerProcess insecure(GEOKV_SERVER_BIN, dir_.Sub("e"), dir_.Sub("e.log"),
                         {"--peer-listen", "0.0.0.0:0", "--resp-listen", "0.0.0.0:0",
                          "--insecure"});
  std::string why;
  ASSERT_TRUE(insecure.Start(&why)) << why;
  EXPECT_NE(insecure.Log().find("--peer-listen 0.0.0.0:0 is reachable off this machine without "
                                "TLS (--insecure)"),
            std::string::npos)
      << insecure.Log();
}

}  // namespace
}  // namespace geokv

// geokv-server's Redis port as a real process, driven by redis-cli (Debian's
// redis-tools) and by raw sockets: scripted commands, --scan, --pipe mass
// insertion, INFO replication, protocol errors and the limits of a port
// strangers can reach.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "testing/process.h"
#include "tests/resp/resp_client.h"
#include "testing/server_process.h"
#include "testing/test_dir.h"

namespace geokv {
namespace {

using testing::CommandResult;
using testing::RespClient;
using testing::RunCommand;
using testing::ServerProcess;
using testing::TestDir;

constexpr char kRedisCli[] = "/usr/bin/redis-cli";

bool HaveRedisCli() { return access(kRedisCli, X_OK) == 0; }

class RespProcessTest : public ::testing::Test {
 protected:
  void StartServer(std::vector<std::string> flags = {}) {
    flags.insert(flags.end(), {"--resp-listen", "127.0.0.1:0", "--durability", "wal"});
    server_ = std::make_unique<ServerProcess>(GEOKV_SERVER_BIN, dir_.Sub("data"),
                                              dir_.Sub("server.log"), flags);
    std::string why;
    ASSERT_TRUE(server_->Start(&why)) << why;
    auto port = server_->child().WaitForLog(
        std::regex("redis protocol listening on .* port ([0-9]+)"), std::chrono::seconds(10));
    ASSERT_TRUE(port.has_value()) << server_->Log();
    port_ = std::stoi(*port);
  }

  CommandResult Cli(std::vector<std::string> args) {
    std::vector<std::string> argv{kRedisCli, "-p", std::to_string(port_)};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, dir_.path());
  }
  // redis-cli's answer to one command, without its final newlines.
  std::string Ask(std::vector<std::string> args) {
    CommandResult r = Cli(std::move(args));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    while (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
    return r.out;
  }
  long RssKiB() {
    std::ifstream status("/proc/" + std::to_string(server_->child().pid()) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
  }

  TestDir dir_;
  std::unique_ptr<ServerProcess> server_;
  int port_ = 0;
};

#define REQUIRE_REDIS_CLI()                                                       \
  do {                                                                            \
    if (!HaveRedisCli()) GTEST_SKIP() << "redis-cli not installed (redis-tools)"; \
  } while (0)

TEST_F(RespProcessTest, RedisCliRunsTheCommands) {
  REQUIRE_REDIS_CLI();
  StartServer();
  EXPECT_EQ(Ask({"PING"}), "PONG");
  EXPECT_EQ(Ask({"SET", "greeting", "hello world"}), "OK");
  EXPECT_EQ(Ask({"GET", "greeting"}), "hello world");
  EXPECT_EQ(Ask({"STRLEN", "greeting"}), "11");
  EXPECT_EQ(Ask({"SET", "greeting", "hi", "GET"}), "hello world");
  EXPECT_EQ(Ask({"INCR", "hits"}), "1");
  EXPECT_EQ(Ask({"INCRBY", "hits", "41"}), "42");
  EXPECT_EQ(Ask({"DECRBY", "hits", "2"}), "40");
  EXPECT_EQ(Ask({"GET", "hits"}), "40");
  EXPECT_EQ(Ask({"TYPE", "hits"}), "string");
  EXPECT_EQ(Ask({"INCR", "greeting"}),
            "WRONGTYPE Operation against a key holding the wrong kind of value");
  EXPECT_EQ(Ask({"SET", "hits", "x"}),
            "WRONGTYPE Operation against a key holding the wrong kind of value");
  EXPECT_EQ(Ask({"SADD", "s", "a", "b", "a"}), "2");
  EXPECT_EQ(Ask({"SADD", "s", "b", "c"}), "1");
  EXPECT_EQ(Ask({"SREM", "s", "a", "z"}), "1");
  EXPECT_EQ(Ask({"SMEMBERS", "s"}), "b\nc");
  EXPECT_EQ(Ask({"SCARD", "s"}), "2");
  EXPECT_EQ(Ask({"SISMEMBER", "s", "c"}), "1");
  EXPECT_EQ(Ask({"SMISMEMBER", "s", "a", "b"}), "0\n1");
  EXPECT_EQ(Ask({"TYPE", "s"}), "set");
  EXPECT_EQ(Ask({"GET", "s"}), "WRONGTYPE Operation against a key holding the wrong kind of value");
  EXPECT_EQ(Ask({"MSET", "m1", "x", "m2", "y"}), "OK");
  EXPECT_EQ(Ask({"MGET", "m1", "nope", "m2", "s", "m1"}), "x\n\ny\n\nx");
  EXPECT_EQ(Ask({"EXISTS", "m1", "m2", "nope", "s"}), "3");
  EXPECT_EQ(Ask({"DEL", "m1", "s", "nope"}), "2");
  EXPECT_EQ(Ask({"EXISTS", "m1", "s"}), "0");
  EXPECT_EQ(Ask({"UNLINK", "m2"}), "1");
  EXPECT_EQ(Ask({"GET", "m2"}), "");
  EXPECT_EQ(Ask({"INCRBY", "n", "7"}), "7");
  EXPECT_EQ(Ask({"DEL", "n"}), "1");
  EXPECT_EQ(Ask({"EXISTS", "n"}), "0");
  EXPECT_EQ(Ask({"GET", "n"}), "");
  EXPECT_EQ(Ask({"TYPE", "n"}), "none");
  EXPECT_EQ(Ask({"SET", "n", "a string now"}), "OK");
  // Refused, and nothing changed.
  EXPECT_EQ(Ask({"SET", "greeting", "x", "NX"}).rfind("ERR SET nx is not supported", 0), 0u);
  EXPECT_EQ(Ask({"SET", "greeting", "x", "EX", "10"}).rfind("ERR SET ex is not supported", 0), 0u);
  EXPECT_EQ(Ask({"GET", "greeting"}), "hi");
  EXPECT_EQ(Ask({"NOSUCH", "a", "b"}),
            "ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' ");
  EXPECT_EQ(Ask({"GET"}), "ERR wrong number of arguments for 'get' command");
  EXPECT_EQ(Ask({"INCRBY", "hits", "x"}), "ERR value is not an integer or out of range");
  EXPECT_EQ(Ask({"SELECT", "0"}), "OK");
  EXPECT_EQ(Ask({"SELECT", "1"}).rfind("ERR DB index is out of range", 0), 0u);
  EXPECT_EQ(Ask({"AUTH", "pw"}).rfind("ERR AUTH called without any users configured", 0), 0u);
  EXPECT_EQ(Ask({"ECHO", "e"}), "e");
  EXPECT_EQ(Ask({"COMMAND", "COUNT"}), "39");
  EXPECT_EQ(Ask({"DBSIZE"}).empty(), false);
  std::string big(5000, 'k');
  EXPECT_EQ(Ask({"SET", big, "v"}).rfind("TOOLARGE key of 5000 bytes exceeds max-key-bytes", 0),
            0u);
  // Several commands in one connection keep the connection's state.
  CommandResult session = RunCommand(
      {"/bin/sh", "-c",
       "printf 'CLIENT SETNAME me\\nCLIENT GETNAME\\nGEOKV.CONSISTENCY one\\nGEOKV.CONSISTENCY\\n"
       "SET t 1\\nGEOKV.TOKEN\\nQUIT\\nPING\\n' | redis-cli -p " +
           std::to_string(port_)},
      dir_.path());
  std::istringstream lines(session.out);
  std::vector<std::string> got;
  for (std::string line; std::getline(lines, line);) got.push_back(line);
  ASSERT_EQ(got.size(), 6u) << session.out;  // nothing runs after QUIT
  EXPECT_EQ(got[1], "me");
  EXPECT_EQ(got[3], "one");
  const std::string token = got[5];
  EXPECT_EQ(token.find_first_not_of("0123456789abcdef"), std::string::npos) << token;
  // Another connection reads after that write.
  CommandResult after = RunCommand(
      {"/bin/sh", "-c",
       "printf 'GEOKV.AFTER " + token + "\nGET t\nGEOKV.AFTER zz\n' | " + kRedisCli + " -p " +
           std::to_string(port_)},
      dir_.path());
  EXPECT_EQ(after.out.substr(0, 5), "OK\n1\n") << after.out;
  EXPECT_NE(after.out.find("ERR invalid token 'zz'"), std::string::npos) << after.out;
}

TEST_F(RespProcessTest, ScanAndPipeMassInsertion) {
  REQUIRE_REDIS_CLI();
  StartServer();
  constexpr int kKeys = 100000;
  {
    std::ofstream commands(dir_.Sub("commands.txt"));
    for (int i = 0; i < kKeys; ++i) {
      const std::string key = "key:" + std::to_string(i);
      const std::string value = "value-" + std::to_string(i);
      commands << "*3\r\n$3\r\nSET\r\n$" << key.size() << "\r\n" << key << "\r\n$" << value.size()
               << "\r\n" << value << "\r\n";
    }
  }
  CommandResult pipe = RunCommand(
      {"/bin/sh", "-c",
       "redis-cli -p " + std::to_string(port_) + " --pipe < " + dir_.Sub("commands.txt")},
      dir_.path(), std::chrono::seconds(120));
  EXPECT_EQ(pipe.exit_code, 0) << pipe.out << pipe.err;
  EXPECT_NE(pipe.out.find("errors: 0, replies: 100000"), std::string::npos) << pipe.out;
  EXPECT_EQ(Ask({"DBSIZE"}), std::to_string(kKeys));
  EXPECT_EQ(Ask({"GET", "key:0"}), "value-0");
  EXPECT_EQ(Ask({"GET", "key:99999"}), "value-99999");

  // --scan with a pattern walks every key once.
  EXPECT_EQ(Ask({"SADD", "other:set", "a"}), "1");
  CommandResult scan = Cli({"--scan", "--pattern", "key:1234*"});
  std::istringstream lines(scan.out);
  std::set<std::string> keys;
  for (std::string line; std::getline(lines, line);) keys.insert(line);
  EXPECT_EQ(keys.size(), 11u) << scan.out;  // key:1234 and key:12340..12349
  EXPECT_EQ(keys.count("key:12345"), 1u);
  EXPECT_EQ(Ask({"--scan", "--pattern", "other:*"}), "other:set");
  EXPECT_EQ(Ask({"SCAN", "0", "TYPE", "set", "COUNT", "1000000"}), "0\nother:set");
}

TEST_F(RespProcessTest, InfoReplicationAndRespThree) {
  REQUIRE_REDIS_CLI();
  StartServer();
  const std::string info = Ask({"INFO", "replication"});
  EXPECT_NE(info.find("role:master"), std::string::npos) << info;
  EXPECT_NE(info.find("geokv_peers:0"), std::string::npos) << info;
  EXPECT_NE(info.find("geokv_clock_samples:0"), std::string::npos) << info;
  // The wait's bound is waitReplicated's, and the refusal names it.
  const std::string wait = Ask({"GEOKV.WAITREPLICATED", "3600001"});
  EXPECT_NE(wait.find("over the limit of 3600000 ms"), std::string::npos) << wait;
  EXPECT_EQ(info.find("# Keyspace"), std::string::npos) << info;
  EXPECT_NE(Ask({"INFO"}).find("db0:keys=0"), std::string::npos);

  RespClient c(port_);
  ASSERT_TRUE(c.connected());
  c.Send("HELLO 3\r\n");
  const std::string hello = c.ReadUntil("$7\r\nmodules\r\n*0\r\n");
  EXPECT_EQ(hello.rfind("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n", 0), 0u) << hello;
  c.Send("GET nope\r\nSADD s a\r\nSMEMBERS s\r\nHELLO 2\r\nGET nope\r\n");
  EXPECT_EQ(c.ReadUntil("a\r\n"), "_\r\n:1\r\n~1\r\n$1\r\na\r\n");
  EXPECT_EQ(c.ReadUntil("*0\r\n").rfind("*14\r\n", 0), 0u);
  EXPECT_EQ(c.Read(5), "$-1\r\n");
}

TEST_F(RespProcessTest, ProtocolErrorsCloseOnlyTheirConnection) {
  StartServer({"--resp-max-args", "16", "--max-value-bytes", "1KiB"});
  RespClient good(port_);
  ASSERT_TRUE(good.connected());
  struct Case {
    std::string bytes, reply;
  };
  const Case cases[] = {
      {"*17\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
      {"*2\r\n$3\r\nSET\r\n$5000\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
      {"*1\r\n!", "-ERR Protocol error: expected '$', got '!'\r\n"},
      {"GET \"k\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"},
      {std::string(70000, 'x'), "-ERR Protocol error: too big inline request\r\n"},
  };
  for (const Case& k : cases) {
    RespClient bad(port_);
    ASSERT_TRUE(bad.connected());
    bad.Send("PING\r\n" + k.bytes);
    EXPECT_EQ(bad.ReadToEnd(), "+PONG\r\n" + k.reply);
  }
  good.Send("PING\r\n");
  EXPECT_EQ(good.Read(7), "+PONG\r\n");
  // A value over the limit within a bulk the parser takes is refused alone.
  RespClient c(port_);
  c.Send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n" + std::string(1025, 'v') + "\r\nPING\r\n");
  const std::string reply = c.Read(60);
  EXPECT_EQ(reply.rfind("-TOOLARGE value of 1025 bytes exceeds max-value-bytes 1024", 0), 0u)
      << reply;
}

// A Redis connection silent between commands, or stuck within one, is
// closed; one that keeps sending commands is not.
TEST_F(RespProcessTest, IdleAndSlowConnectionsAreClosed) {
  StartServer({"--idle-timeout", "1s", "--read-timeout", "1s"});
  const auto start = std::chrono::steady_clock::now();
  RespClient idle(port_), stuck(port_), busy(port_);
  ASSERT_TRUE(idle.connected() && stuck.connected() && busy.connected());
  stuck.Send("PING\r\n*1\r\n$4\r\nPI");
  for (int i = 0; i < 10; ++i) {
    busy.Send("PING\r\n");
    EXPECT_EQ(busy.Read(7), "+PONG\r\n") << i;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  // Both were closed in the 3 s the busy one was served, with nothing more
  // to read than the first PING's answer.
  EXPECT_EQ(idle.ReadToEnd(), "");
  EXPECT_EQ(stuck.ReadToEnd(), "+PONG\r\n");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// The Redis port and the client API share --max-connections: a slot taken
// on one is missing on the other, and comes back when its connection ends.
TEST_F(RespProcessTest, TheRedisAndClientPortsShareTheConnectionLimit) {
  StartServer({"--max-connections", "2"});
  auto client_api = std::make_unique<RespClient>(server_->port());  // a bare TCP connection
  ASSERT_TRUE(client_api->connected());
  RespClient first(port_);
  first.Send("PING\r\n");
  EXPECT_EQ(first.Read(7), "+PONG\r\n");
  {
    RespClient refused(port_);
    refused.Send("PING\r\n");
    EXPECT_EQ(refused.ReadToEnd(), "");  // closed at once
  }
  client_api.reset();
  bool served = testing::PollUntil(
      [&] {
        RespClient again(port_);
        again.Send("PING\r\n");
        return again.Read(7) == "+PONG\r\n";
      },
      std::chrono::seconds(10));
  EXPECT_TRUE(served) << "the client API connection's slot did not come back";
}

TEST_F(RespProcessTest, AClientThatNeverReadsCannotGrowTheServer) {
  StartServer();
  RespClient writer(port_);
  const std::string value(100 << 10, 'v');
  writer.Send("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$" + std::to_string(value.size()) + "\r\n" + value +
              "\r\n");
  EXPECT_EQ(writer.Read(5), "+OK\r\n");
  const long before = RssKiB();
  // 3000 GETs would be 300 MB of replies; the client reads none of them.
  RespClient flood(port_);
  fcntl(flood.fd(), F_SETFL, O_NONBLOCK);
  std::string gets;
  for (int i = 0; i < 3000; ++i) gets += "GET big\r\n";
  size_t sent = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (sent < gets.size() && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = send(flood.fd(), gets.data() + sent, gets.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else {
      usleep(10000);
    }
  }
  usleep(500000);
  // Others are served meanwhile, and the server holds a bounded amount.
  RespClient other(port_);
  other.Send("PING\r\n");
  EXPECT_EQ(other.Read(7), "+PONG\r\n");
  const long after = RssKiB();
  EXPECT_LT(after - before, 150 * 1024) << "RSS grew from " << before << " to " << after << " KiB";
}

}  // namespace
}  // namespace geokv

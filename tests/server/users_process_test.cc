// Users and roles with a real geokv-server: clients of the client API
// (geokv-cli) and of the Redis port (raw sockets, redis-cli) must log in,
// or present a client certificate naming a user, and may then do what
// their role allows.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "testing/certificates.h"
#include "testing/process.h"
#include "testing/server_process.h"
#include "testing/test_dir.h"
#include "tests/resp/resp_client.h"
#include "util/secret_hash.h"

namespace geokv {
namespace {

using testing::CommandResult;
using testing::RespClient;
using testing::RespReply;
using testing::RunCommand;
using testing::ServerProcess;
using testing::TestDir;

class UsersProcessTest : public ::testing::Test {
 protected:
  // Writes the users file: NAME ROLE SECRET (an empty secret: none).
  void WriteUsers(const std::vector<std::vector<std::string>>& users) {
    std::ofstream out(UsersFile());
    for (const auto& u : users) {
      std::string hash = "-";
      if (!u[2].empty()) {
        auto made = HashSecret(u[2], kMinSecretIterations);
        ASSERT_TRUE(made.ok());
        hash = *made;
      }
      out << u[0] << " " << u[1] << " " << hash << "\n";
    }
    out.close();
    chmod(UsersFile().c_str(), 0600);
  }
  std::string UsersFile() const { return dir_.Sub("users"); }

  void StartServer(std::vector<std::string> flags = {}) {
    flags.insert(flags.end(), {"--resp-listen", "127.0.0.1:0", "--durability", "wal", "--users",
                               UsersFile(), "--node-id", "n1", "--region", "eu"});
    server_ = std::make_unique<ServerProcess>(GEOKV_SERVER_BIN, dir_.Sub("data"),
                                              dir_.Sub("server.log"), flags);
    std::string why;
    ASSERT_TRUE(server_->Start(&why)) << why;
    auto port = server_->child().WaitForLog(
        std::regex("redis protocol listening on .* port ([0-9]+)"), std::chrono::seconds(10));
    ASSERT_TRUE(port.has_value()) << server_->Log();
    resp_port_ = std::stoi(*port);
  }

  // geokv-cli ARGS against the server, as `user` (none when empty) with
  // `secret`, and with `extra` options first.
  CommandResult Cli(const std::string& user, const std::string& secret,
                    std::vector<std::string> args, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{GEOKV_CLI_BIN, "--connect", server_->address()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (!user.empty()) {
      const std::string secret_file = dir_.Sub("secret-" + user);
      std::ofstream(secret_file) << secret << "\n";
      argv.insert(argv.end(), {"--user", user, "--secret-file", secret_file});
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, dir_.path());
  }

  TestDir dir_;
  std::unique_ptr<ServerProcess> server_;
  int resp_port_ = 0;
};

TEST_F(UsersProcessTest, ClientsLogInAndDoWhatTheirRoleAllows) {
  WriteUsers({{"root", "admin", "rootpw"}, {"ana", "write", "anapw"}, {"rex", "read", "rexpw"}});
  StartServer();

  CommandResult r = Cli("", "", {"set", "k", "v"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE(r.err.find("log in first"), std::string::npos) << r.err;
  r = Cli("ana", "wrong", {"set", "k", "v"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE(r.err.find("UNAUTHENTICATED"), std::string::npos) << r.err;

  r = Cli("ana", "anapw", {"set", "k", "v"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = Cli("rex", "rexpw", {"get", "k"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "v\n");
  r = Cli("rex", "rexpw", {"set", "k", "w"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("PERMISSION_DENIED"), std::string::npos) << r.err;
  r = Cli("ana", "anapw", {"leave"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("PERMISSION_DENIED"), std::string::npos) << r.err;
  EXPECT_EQ(Cli("root", "rootpw", {"get", "k"}).out, "v\n");

  // The Redis port: nothing before AUTH; AUTH and HELLO AUTH log in, and
  // a command pipelined right after AUTH runs as the new user.
  RespClient resp(resp_port_);
  ASSERT_TRUE(resp.connected());
  EXPECT_EQ(resp.Call({"GET", "k"}).text, "NOAUTH Authentication required.");
  EXPECT_EQ(resp.Call({"AUTH", "rex", "wrong"}).text,
            "WRONGPASS invalid username-password pair or user is disabled.");
  resp.Send("*3\r\n$4\r\nAUTH\r\n$3\r\nrex\r\n$5\r\nrexpw\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nw\r\n");
  EXPECT_EQ(resp.ReadReply().text, "OK");
  EXPECT_EQ(resp.ReadReply().text, "v");
  RespReply denied = resp.ReadReply();
  EXPECT_TRUE(denied.error());
  EXPECT_EQ(denied.text.rfind("NOPERM", 0), 0u) << denied.text;
  EXPECT_TRUE(resp.Call({"CLIENT", "LIST"}).error()) << "CLIENT LIST is for admins";
  EXPECT_EQ(resp.Call({"RESET"}).text, "RESET");
  EXPECT_EQ(resp.Call({"GET", "k"}).text, "NOAUTH Authentication required.");
  RespReply hello = resp.Call({"HELLO", "3", "AUTH", "ana", "anapw"});
  EXPECT_FALSE(hello.error()) << hello.text;
  EXPECT_EQ(resp.Call({"SET", "k", "from-redis"}).text, "OK");
  EXPECT_EQ(Cli("rex", "rexpw", {"get", "k"}).out, "from-redis\n");

  const std::string log = server_->Log();
  EXPECT_NE(log.find("3 users from"), std::string::npos) << log;
  EXPECT_NE(log.find("login refused for user 'ana'"), std::string::npos) << log;
}

TEST_F(UsersProcessTest, AClientCertificateNamingAUserLogsItIn) {
  std::string why;
  const std::string d = dir_.path();
  ASSERT_TRUE(testing::MakeCa(d, "ca", &why)) << why;
  ASSERT_TRUE(testing::MakeCa(d, "clients", &why)) << why;
  ASSERT_TRUE(testing::MakeCertificate(d, "ca", "n1", "n1.eu", {"eu"}, &why)) << why;
  ASSERT_TRUE(testing::MakeCertificate(d, "clients", "reports", "reports", {}, &why)) << why;
  ASSERT_TRUE(testing::MakeCertificate(d, "clients", "stranger", "stranger", {}, &why)) << why;
  WriteUsers({{"ana", "write", "anapw"}, {"reports", "read", ""}});
  StartServer({"--tls-cert", d + "/n1.pem", "--tls-key", d + "/n1.key", "--tls-ca",
               d + "/ca.pem", "--client-ca", d + "/clients.pem"});
  auto as = [&](const std::string& cert) {
    return std::vector<std::string>{"--tls-ca", d + "/ca.pem", "--tls-name", "eu", "--tls-cert",
                                    d + "/" + cert + ".pem", "--tls-key", d + "/" + cert + ".key"};
  };
  CommandResult r = Cli("ana", "anapw", {"set", "k", "v"}, as("stranger"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // `reports` is served as its user without a login; its role holds.
  r = Cli("", "", {"get", "k"}, as("reports"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "v\n");
  r = Cli("", "", {"set", "k", "w"}, as("reports"));
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("PERMISSION_DENIED"), std::string::npos) << r.err;
  // A certificate naming no user must log in; `reports` has no secret.
  r = Cli("", "", {"get", "k"}, as("stranger"));
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("log in first"), std::string::npos) << r.err;
  r = Cli("reports", "anything", {"get", "k"}, as("stranger"));
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("UNAUTHENTICATED"), std::string::npos) << r.err;
}

// SIGHUP reads the users file again: a new user logs in, a removed one no
// longer does, and a file that does not parse leaves the users in force.
TEST_F(UsersProcessTest, SighupReloadsTheUsersFile) {
  WriteUsers({{"ana", "write", "anapw"}});
  StartServer();
  ASSERT_EQ(Cli("ana", "anapw", {"set", "k", "v"}).exit_code, 0);
  EXPECT_EQ(Cli("bo", "bopw", {"get", "k"}).exit_code, 3);

  WriteUsers({{"bo", "read", "bopw"}});
  server_->child().Signal(SIGHUP);
  ASSERT_TRUE(server_->child()
                  .WaitForLog(std::regex("reload: users reloaded: 1 users from "),
                              std::chrono::seconds(10))
                  .has_value())
      << server_->Log();
  CommandResult r = Cli("bo", "bopw", {"get", "k"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "v\n");
  EXPECT_EQ(Cli("ana", "anapw", {"set", "k", "w"}).exit_code, 3);

  { std::ofstream(UsersFile()) << "not a users line\n"; }
  server_->child().Signal(SIGHUP);
  ASSERT_TRUE(server_->child()
                  .WaitForLog(std::regex("reload: users not reloaded, the old one stays in force"),
                              std::chrono::seconds(10))
                  .has_value())
      << server_->Log();
  EXPECT_EQ(Cli("bo", "bopw", {"get", "k"}).exit_code, 0);
}

}  // namespace
}  // namespace geokv

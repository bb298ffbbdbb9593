// TLS with real processes: clusters whose nodes authenticate each other
// with certificates of the cluster's CA, clients that must speak TLS, and
// peers that can speak only for the node their certificate names.

#include <gtest/gtest.h>
#include <kj/compat/tls.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "replication/peer_wire.h"
#include "testing/certificates.h"
#include "testing/cluster.h"
#include "testing/test_dir.h"
#include "tests/replication/process_fixture.h"
#include "util/file.h"
#include "util/tls.h"

namespace geokv::testing {
namespace {

using namespace std::chrono_literals;

Cluster::Options OneTlsNode(std::vector<std::string> flags = {}) {
  Cluster::Options o;
  o.regions = 1;
  o.tls = true;
  o.flags = std::move(flags);
  return o;
}

// A TLS context of the test's own, from files under `dir` (NAME.pem and
// NAME.key when `name` is not empty).
kj::Own<kj::TlsContext> Context(const std::string& dir, const std::string& ca,
                                const std::string& name) {
  TlsContextOptions o;
  o.files.ca = dir + "/" + ca + ".pem";
  if (!name.empty()) {
    o.files.cert = dir + "/" + name + ".pem";
    o.files.key = dir + "/" + name + ".key";
  }
  auto made = MakeTlsContext(o);
  EXPECT_TRUE(made.ok()) << made.status().ToString();
  return std::move(made).value();
}

// Dials a node's peer port on `c`'s event loop, through TLS under `tls`
// (nullptr: plain TCP) expecting a node of `callee_region`, says hello as
// `name` of `region` and heartbeats on the session it got. "" when all
// that was accepted, else why not.
std::string HelloAndCall(Client& c, const std::string& peer_address, kj::TlsContext* tls,
                         const std::string& callee_region, const std::string& name,
                         const std::string& region) {
  std::string why;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    kj::WaitScope& ws = c.ws();
    auto stream = c.io().getNetwork().parseAddress(peer_address).wait(ws)->connect().wait(ws);
    if (tls != nullptr) stream = tls->wrapClient(kj::mv(stream), callee_region.c_str()).wait(ws);
    PeerConnection conn(kj::mv(stream), 1 << 20);
    auto hello = conn.Bootstrap().helloRequest();
    ReplicatorOptions me;
    me.name = name;
    me.region = region;
    const ReplicaId id = std::random_device{}() | 1;
    FillHello(me, id, 0, hello.initHello());
    auto session = hello.send().wait(ws).getSession();
    session.heartbeatRequest().send().wait(ws);
  })) {
    why = e->getDescription().cStr();
  }
  return why;
}

TEST(Tls, TwoRegionsReplicateAndServeClients) {
  TestDir dir;
  Cluster::Options o;
  o.regions = 2;
  o.nodes_per_region = 2;
  o.tls = true;
  o.flags = kFastFlags;
  o.flags.insert(o.flags.end(), {"--replication-factor", "2"});
  Cluster cluster(dir.path(), o);
  START_CLUSTER(cluster);
  Client writer(cluster.address(0), cluster.client_tls(cluster.RegionOf(0)));
  const std::string token = writer.Set("greeting", "hello over tls");
  ASSERT_NE(token, "");
  for (int i = 1; i < cluster.nodes(); ++i) {
    Client reader(cluster.address(i), cluster.client_tls(cluster.RegionOf(i)));
    EXPECT_EQ(reader.Get("greeting", {token}), "hello over tls") << cluster.Name(i);
  }
  EXPECT_CONVERGED(cluster, 30s);
  EXPECT_EQ(cluster.node(0).Log().find("refusing"), std::string::npos) << cluster.Logs();
}

TEST(Tls, PlainOrUntrustingClientIsRefusedAndTheNodeCarriesOn) {
  TestDir dir;
  Cluster cluster(dir.path(), OneTlsNode());
  START_CLUSTER(cluster);
  {
    Client plain(cluster.address(0));
    EXPECT_ANY_THROW(plain.Set("k", "plain")) << "a plaintext client was served";
  }
  std::string why;
  ASSERT_TRUE(MakeCa(dir.path(), "other-ca", &why)) << why;
  ClientTlsOptions other = cluster.client_tls();
  other.ca = dir.path() + "/other-ca.pem";
  EXPECT_ANY_THROW(Client(cluster.address(0), other)) << "a server of another CA was trusted";
  Client good(cluster.address(0), cluster.client_tls());
  EXPECT_EQ(good.Get("k"), std::nullopt);
  EXPECT_NE(good.Set("k", "tls"), "");
  EXPECT_EQ(good.Get("k"), "tls");
}

TEST(Tls, PeerWithoutCertificateOfTheClusterCaIsRefused) {
  TestDir dir;
  Cluster cluster(dir.path(), OneTlsNode());
  START_CLUSTER(cluster);
  const std::string certs = cluster.tls_dir();
  std::string why;
  ASSERT_TRUE(MakeCa(certs, "other-ca", &why)) << why;
  ASSERT_TRUE(MakeCertificate(certs, "other-ca", "stranger", "node-r1.r1", {"r1"}, &why)) << why;
  ASSERT_TRUE(MakeCertificate(certs, "ca", "member", "node-r1.r1", {"r1"}, &why)) << why;
  // The stranger trusts the cluster's CA too (to verify the node).
  std::ofstream(certs + "/both.pem") << ReadFile(certs + "/ca.pem") << ReadFile(certs + "/other-ca.pem");
  Client c(cluster.address(0), cluster.client_tls());
  ASSERT_NE(c.Set("before", "v"), "");
  const uint64_t before = c.StateDigest();
  auto stranger = Context(certs, "both", "stranger");
  auto anonymous = Context(certs, "ca", "");
  const std::string peer = cluster.peer_address(0);
  EXPECT_NE(HelloAndCall(c, peer, stranger.get(), "r0", "node-r1", "r1"), "");
  EXPECT_NE(HelloAndCall(c, peer, anonymous.get(), "r0", "node-r1", "r1"), "");
  EXPECT_NE(HelloAndCall(c, peer, nullptr, "r0", "node-r1", "r1"), "");
  // The same hello with a certificate of the cluster's CA is taken: the
  // refusals above are the certificates'.
  auto member = Context(certs, "ca", "member");
  EXPECT_EQ(HelloAndCall(c, peer, member.get(), "r0", "node-r1", "r1"), "");
  EXPECT_EQ(c.StateDigest(), before);
  EXPECT_NE(c.Set("after", "v"), "");
}

TEST(Tls, NodeCannotSayHelloAsAnotherNode) {
  TestDir dir;
  Cluster cluster(dir.path(), OneTlsNode());
  START_CLUSTER(cluster);
  const std::string certs = cluster.tls_dir();
  std::string why;
  ASSERT_TRUE(MakeCertificate(certs, "ca", "eu-7", "eu-7.r1", {"r1"}, &why)) << why;
  auto tls = Context(certs, "ca", "eu-7");
  Client c(cluster.address(0), cluster.client_tls());
  const std::string peer = cluster.peer_address(0);
  const std::string other_name = HelloAndCall(c, peer, tls.get(), "r0", "eu-8", "r1");
  EXPECT_NE(other_name.find("another node than the caller's certificate"), std::string::npos)
      << other_name;
  const std::string other_region = HelloAndCall(c, peer, tls.get(), "r0", "eu-7", "r0");
  EXPECT_NE(other_region.find("another node than the caller's certificate"), std::string::npos)
      << other_region;
  EXPECT_EQ(HelloAndCall(c, peer, tls.get(), "r0", "eu-7", "r1"), "");
  EXPECT_TRUE(PollUntil(
      [&] { return cluster.node(0).Log().find("refusing a hello as eu-8 of region r1") !=
                   std::string::npos; },
      5s))
      << cluster.Logs();
}

// A raw TCP connection to 127.0.0.1:port.
int ConnectRaw(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Whether the other end closed `fd` (a read sees its end).
bool Closed(int fd) {
  char byte;
  ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

TEST(Tls, HandshakeThatNeverStartsIsClosedAndFreesItsSlot) {
  TestDir dir;
  Cluster cluster(dir.path(),
                  OneTlsNode({"--max-connections", "1", "--tls-handshake-timeout", "500ms"}));
  START_CLUSTER(cluster);
  int silent = ConnectRaw(cluster.node(0).port());
  ASSERT_GE(silent, 0);
  // While it holds the only slot, a client is turned away. (The slot of a
  // client the cluster used may still be taken at first: the silent
  // connection is then turned away itself, and made again.)
  EXPECT_TRUE(PollUntil(
      [&] {
        if (Closed(silent)) {
          close(silent);
          silent = ConnectRaw(cluster.node(0).port());
          return false;
        }
        bool refused = false;
        KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
          Client c(cluster.address(0), cluster.client_tls());
          c.StateDigest();
        })) {
          refused = true;
        }
        return refused && !Closed(silent);
      },
      5s));
  EXPECT_TRUE(PollUntil([&] { return Closed(silent); }, 10s))
      << "a connection that never shook hands is still open" << cluster.Logs();
  EXPECT_TRUE(PollUntil(
      [&] {
        const std::string log = cluster.node(0).Log();
        return log.find("closing a RPC connection: ") != std::string::npos &&
               log.find("timed out") != std::string::npos;
      },
      5s))
      << cluster.Logs();
  close(silent);
  Client c(cluster.address(0), cluster.client_tls());
  EXPECT_NE(c.Set("k", "v"), "");
}

}  // namespace
}  // namespace geokv::testing

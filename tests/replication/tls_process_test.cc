// TLS with real processes: clusters whose nodes authenticate each other
// with certificates of the cluster's CA, clients that must speak TLS, and
// peers that can speak only for the node their certificate names.

#include <gtest/gtest.h>
#include <kj/compat/tls.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "replication/causal_token.h"
#include "replication/peer_wire.h"
#include "testing/certificates.h"
#include "testing/cluster.h"
#include "testing/http_get.h"
#include "testing/test_dir.h"
#include "tests/replication/process_fixture.h"
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

// Regions r0 and r1 of one node each, over TLS.
Cluster::Options TwoTlsRegions() {
  Cluster::Options o;
  o.regions = 2;
  o.tls = true;
  o.flags = kFastFlags;
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
// `name` of `region` under a new random replica id and runs `call` on the
// session it got. "" when all that was accepted, else why not.
std::string WithSession(Client& c, const std::string& peer_address, kj::TlsContext* tls,
                        const std::string& callee_region, const std::string& name,
                        const std::string& region,
                        const std::function<void(peer::PeerSession::Client&)>& call) {
  std::string why;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    kj::WaitScope& ws = c.ws();
    auto stream = c.io().getNetwork().parseAddress(peer_address).wait(ws)->connect().wait(ws);
    if (tls != nullptr) stream = tls->wrapClient(kj::mv(stream), callee_region.c_str()).wait(ws);
    PeerConnection conn(kj::mv(stream), 1 << 20, c.io().getTimer(), PeerFraming::kPacked);
    auto hello = conn.Bootstrap().helloRequest();
    ReplicatorOptions me;
    me.name = name;
    me.region = region;
    const ReplicaId id = std::random_device{}() | 1;
    FillHello(me, id, 0, hello.initHello());
    auto session = hello.send().wait(ws).getSession();
    call(session);
  })) {
    why = e->getDescription().cStr();
  }
  return why;
}

// WithSession, heartbeating on the session.
std::string HelloAndCall(Client& c, const std::string& peer_address, kj::TlsContext* tls,
                         const std::string& callee_region, const std::string& name,
                         const std::string& region) {
  return WithSession(c, peer_address, tls, callee_region, name, region,
                     [&](peer::PeerSession::Client& session) {
                       session.heartbeatRequest().send().wait(c.ws());
                     });
}

// Whether a client with `tls` gets a write through to the node at `address`.
bool Served(const std::string& address, const ClientTlsOptions& tls) {
  bool served = false;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    Client c(address, tls);
    served = c.Set("served", "v") != "";
  })) {
    served = false;
  }
  return served;
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

// A node refuses to start on TLS files it cannot use, naming what is wrong.
TEST(Tls, NodeRefusesUnusableFilesAtStart) {
  TestDir dir;
  std::string why;
  ASSERT_TRUE(MakeCa(dir.path(), "ca", &why)) << why;
  ASSERT_TRUE(MakeCertificate(dir.path(), "ca", "a", "a.eu", {"eu"}, &why)) << why;
  ASSERT_TRUE(MakeCertificate(dir.path(), "ca", "b", "b.eu", {"eu"}, &why)) << why;
  const std::string d = dir.path() + "/";
  struct Case {
    std::vector<std::string> files;  // cert, key, ca
    std::string node;
    std::string error;
  };
  const std::vector<Case> cases = {
      {{d + "a.pem", d + "b.key", d + "ca.pem"}, "a", "is not the key of the certificate"},
      {{d + "a.pem", d + "a.key", d + "ca.pem"}, "b", "names CN=a.eu, this node is CN=b.eu"},
      {{d + "a.pem", d + "a.key", d + "missing.pem"}, "a", "cannot read " + d + "missing.pem"},
      {{d + "a.pem", d + "a.key", d + "a.key"}, "a", "holds no PEM certificate"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    ServerProcess server(GEOKV_SERVER_BIN, d + "data" + std::to_string(i),
                         d + "node" + std::to_string(i) + ".log",
                         {"--region", "eu", "--node-id", c.node, "--tls-cert", c.files[0],
                          "--tls-key", c.files[1], "--tls-ca", c.files[2]});
    EXPECT_FALSE(server.Start(&why)) << "started with " << c.error;
    EXPECT_NE(server.Log().find(c.error), std::string::npos) << server.Log();
  }
  // The same files, matched, start.
  ServerProcess good(GEOKV_SERVER_BIN, d + "good", d + "good.log",
                     {"--region", "eu", "--node-id", "a", "--tls-cert", d + "a.pem", "--tls-key",
                      d + "a.key", "--tls-ca", d + "ca.pem"});
  EXPECT_TRUE(good.Start(&why)) << why;
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

TEST(Tls, ClientCaRequiresClientCertificates) {
  TestDir dir;
  Cluster cluster(dir.path(), OneTlsNode({"--client-ca", dir.path() + "/tls/clients.pem"}));
  std::string why;
  ASSERT_TRUE(std::filesystem::create_directories(cluster.tls_dir()));
  ASSERT_TRUE(MakeCa(cluster.tls_dir(), "clients", &why)) << why;
  ASSERT_TRUE(MakeCertificate(cluster.tls_dir(), "clients", "client", "app", {}, &why)) << why;
  ASSERT_TRUE(MakeCa(cluster.tls_dir(), "other-ca", &why)) << why;
  ASSERT_TRUE(MakeCertificate(cluster.tls_dir(), "other-ca", "stranger", "app", {}, &why)) << why;
  cluster.SetClientCertificate(cluster.tls_dir() + "/client.pem",
                               cluster.tls_dir() + "/client.key");
  START_CLUSTER(cluster);
  const ClientTlsOptions with_cert = cluster.client_tls();
  ClientTlsOptions without = with_cert;
  without.cert.clear();
  without.key.clear();
  EXPECT_FALSE(Served(cluster.address(0), without))
      << "a client without a certificate was served";
  ClientTlsOptions stranger = with_cert;
  stranger.cert = cluster.tls_dir() + "/stranger.pem";
  stranger.key = cluster.tls_dir() + "/stranger.key";
  EXPECT_FALSE(Served(cluster.address(0), stranger))
      << "a client certificate of another CA was taken";
  Client c(cluster.address(0), with_cert);
  EXPECT_NE(c.Set("k", "v"), "");
}

// A client certificate of the client CA that has expired is refused by the
// node's handshake; the node carries on.
TEST(Tls, ExpiredClientCertificateIsRefused) {
  if (FaketimeLibrary().empty()) GTEST_SKIP() << "libfaketime is missing";
  TestDir dir;
  Cluster cluster(dir.path(), OneTlsNode({"--client-ca", dir.path() + "/tls/clients.pem"}));
  const std::string certs = cluster.tls_dir();
  std::string why;
  ASSERT_TRUE(std::filesystem::create_directories(certs));
  ASSERT_TRUE(MakeCa(certs, "clients", &why)) << why;
  ASSERT_TRUE(MakeCertificate(certs, "clients", "client", "app", {}, &why)) << why;
  // Signed two years ago, valid for a day.
  std::vector<std::string> expired = FaketimeWrapper("-730d");
  expired.insert(expired.end(),
                 {"openssl", "req", "-x509", "-days", "1", "-subj", "/CN=app", "-addext",
                  "basicConstraints=critical,CA:FALSE", "-CA", certs + "/clients.pem", "-CAkey",
                  certs + "/clients.key", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", certs + "/expired.key", "-out",
                  certs + "/expired.pem"});
  CommandResult made = RunCommand(expired, certs);
  ASSERT_EQ(made.exit_code, 0) << made.err;
  cluster.SetClientCertificate(certs + "/client.pem", certs + "/client.key");
  START_CLUSTER(cluster);
  ClientTlsOptions old = cluster.client_tls();
  old.cert = certs + "/expired.pem";
  old.key = certs + "/expired.key";
  EXPECT_FALSE(Served(cluster.address(0), old)) << "an expired client certificate was taken";
  EXPECT_TRUE(PollUntil(
      [&] { return cluster.node(0).Log().find("certificate verify failed") != std::string::npos; },
      5s))
      << cluster.Logs();
  Client c(cluster.address(0), cluster.client_tls());
  EXPECT_NE(c.Set("k", "v"), "");
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
  Client c(cluster.address(0), cluster.client_tls());
  ASSERT_NE(c.Set("before", "v"), "");
  const uint64_t before = c.StateDigest();
  auto stranger = Context(certs, "ca", "stranger");
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
      [&] { return cluster.node(0).Log().find("refused a hello as eu-8 of region r1") !=
                   std::string::npos; },
      5s))
      << cluster.Logs();
}

// A certificate of node 1 (a copy, or the node's own) lets its holder say
// hello only under the replica id node 0 knows node 1 by: under a new one
// it is refused, logged, and the real node 1 replicates on.
TEST(Tls, CertifiedNodeCannotSayHelloUnderAnotherReplicaId) {
  TestDir dir;
  Cluster cluster(dir.path(), TwoTlsRegions());
  START_CLUSTER(cluster);
  const std::string certs = cluster.tls_dir();
  const std::string name = cluster.Name(1);
  std::string why;
  ASSERT_TRUE(MakeCertificate(certs, "ca", "copy", name + ".r1", {"r1"}, &why)) << why;
  auto tls = Context(certs, "ca", "copy");
  Client c(cluster.address(0), cluster.client_tls());
  const std::string refused =
      HelloAndCall(c, cluster.peer_address(0), tls.get(), "r0", name, "r1");
  EXPECT_NE(refused.find("but this node knows it as"), std::string::npos) << refused;
  EXPECT_TRUE(PollUntil(
      [&] { return cluster.node(0).Log().find("(replica_id): a hello as " + name) !=
                   std::string::npos; },
      5s))
      << cluster.Logs();
  Client writer(cluster.address(1), cluster.client_tls(cluster.RegionOf(1)));
  const std::string token = writer.Set("after", "v");
  ASSERT_NE(token, "");
  EXPECT_EQ(c.Get("after", {token}), "v");
}

// A certified node that r0 takes (a name it never saw) pushes an empty
// batch under r1's node's replica id that says it covers that log through
// 10,000, as long a range as a batch may cover: r0 refuses it, and r1's
// later writes are still joined there, not skipped as replays.
TEST(Tls, CertifiedNodeCannotPushAnotherNodesLog) {
  TestDir dir;
  Cluster cluster(dir.path(), TwoTlsRegions());
  START_CLUSTER(cluster);
  const std::string certs = cluster.tls_dir();
  std::string why;
  ASSERT_TRUE(MakeCertificate(certs, "ca", "eu-7", "eu-7.r1", {"r1"}, &why)) << why;
  auto tls = Context(certs, "ca", "eu-7");
  Client reader(cluster.address(0), cluster.client_tls());
  Client writer(cluster.address(1), cluster.client_tls(cluster.RegionOf(1)));
  const std::string first = writer.Set("k", "first");
  ASSERT_NE(first, "");
  auto token = DecodeToken(first);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  const std::string refused = WithSession(
      reader, cluster.peer_address(0), tls.get(), "r0", "eu-7", "r1",
      [&](peer::PeerSession::Client& session) {
        auto push = session.pushDeltasRequest();
        auto batch = push.initBatch();
        batch.setOrigin(token->origin);
        batch.setFrom(0);
        batch.setThrough(10'000);
        push.send().wait(reader.ws());
      });
  EXPECT_NE(refused.find("a node ships only its own log"), std::string::npos) << refused;
  const std::string second = writer.Set("k", "second");
  ASSERT_NE(second, "");
  EXPECT_EQ(reader.Get("k", {second}), "second");
  EXPECT_TRUE(PollUntil(
      [&] { return cluster.node(0).Log().find("(origin): a batch of the log of") !=
                   std::string::npos; },
      5s))
      << cluster.Logs();
}

// Copies `from` over `to`, as an operator rotating files does.
void Install(const std::string& from, const std::string& to) {
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
}

// geokv_reloads_total{part="tls",result} of node 0; -1 when missing.
double Reloads(Cluster& cluster, const std::string& result) {
  const std::string body = HttpGet(cluster.metrics_address(0), "/metrics");
  const std::regex series("geokv_reloads_total\\{[^}]*part=\"tls\"[^}]*result=\"" + result +
                          "\"[^}]*\\} ([0-9.e+]+)");
  std::smatch m;
  return std::regex_search(body, m, series) ? std::stod(m[1].str()) : -1;
}

// Sends SIGHUP to node 0 and waits until its log holds `count` lines
// containing `what`.
bool ReloadAndWaitFor(Cluster& cluster, const std::string& what, size_t count) {
  cluster.node(0).child().Signal(SIGHUP);
  return PollUntil(
      [&] {
        const std::string log = cluster.node(0).Log();
        size_t seen = 0;
        for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) {
          ++seen;
        }
        return seen >= count;
      },
      10s);
}

// A node moved by SIGHUP to a certificate of another CA serves new
// handshakes, on the client and the peer port, under the new files only;
// connections opened before carry on; a broken file leaves the new ones in
// force.
TEST(Tls, SighupRotatesCertificatesAndKeepsLiveConnections) {
  TestDir dir;
  Cluster::Options o = OneTlsNode();
  o.metrics = true;
  Cluster cluster(dir.path(), o);
  START_CLUSTER(cluster);
  const std::string certs = cluster.tls_dir();
  const std::string node = certs + "/" + cluster.Name(0);
  std::string why;
  // ca1.pem keeps the first CA; ca.pem, which the node reads, will hold ca2.
  Install(certs + "/ca.pem", certs + "/ca1.pem");
  ASSERT_TRUE(MakeCertificate(certs, "ca", "member1", "node-r1.r1", {"r1"}, &why)) << why;
  ASSERT_TRUE(MakeCa(certs, "ca2", &why)) << why;
  ASSERT_TRUE(MakeCertificate(certs, "ca2", "b", cluster.Name(0) + ".r0", {"r0"}, &why)) << why;
  ASSERT_TRUE(MakeCertificate(certs, "ca2", "member2", "node-r1.r1", {"r1"}, &why)) << why;
  ClientTlsOptions trusts_ca1 = cluster.client_tls();
  trusts_ca1.ca = certs + "/ca1.pem";
  ClientTlsOptions trusts_ca2 = cluster.client_tls();
  trusts_ca2.ca = certs + "/ca2.pem";

  Client before(cluster.address(0), trusts_ca1);
  ASSERT_NE(before.Set("before", "v"), "");
  EXPECT_FALSE(Served(cluster.address(0), trusts_ca2)) << "a node of CA1 was trusted under CA2";

  Install(certs + "/b.pem", node + ".pem");
  Install(certs + "/b.key", node + ".key");
  Install(certs + "/ca2.pem", certs + "/ca.pem");
  ASSERT_TRUE(ReloadAndWaitFor(cluster, "reload: tls reloaded", 1)) << cluster.Logs();
  EXPECT_TRUE(Served(cluster.address(0), trusts_ca2)) << cluster.Logs();
  EXPECT_FALSE(Served(cluster.address(0), trusts_ca1)) << "the old certificate is still served";
  EXPECT_NE(before.Set("after", "v"), "") << "a connection opened before the reload was dropped";
  EXPECT_EQ(before.Get("after"), "v");
  // The peer port takes the new CA's certificates, and no longer the old's.
  Client c(cluster.address(0), trusts_ca2);
  auto member1 = Context(certs, "ca1", "member1");
  auto member2 = Context(certs, "ca2", "member2");
  const std::string peer = cluster.peer_address(0);
  EXPECT_EQ(HelloAndCall(c, peer, member2.get(), "r0", "node-r1", "r1"), "");
  EXPECT_NE(HelloAndCall(c, peer, member1.get(), "r0", "node-r1", "r1"), "");

  // A broken certificate file: the node says which and keeps serving B.
  { std::ofstream(node + ".pem") << "not a certificate\n"; }
  ASSERT_TRUE(ReloadAndWaitFor(cluster, "reload: tls not reloaded", 1)) << cluster.Logs();
  const std::string log = cluster.node(0).Log();
  EXPECT_NE(log.find(node + ".pem holds no PEM certificate"), std::string::npos) << log;
  EXPECT_TRUE(cluster.node(0).Running());
  EXPECT_TRUE(Served(cluster.address(0), trusts_ca2)) << cluster.Logs();
  EXPECT_FALSE(Served(cluster.address(0), trusts_ca1));
  EXPECT_EQ(HelloAndCall(c, peer, member2.get(), "r0", "node-r1", "r1"), "");
  EXPECT_NE(before.Set("still", "v"), "");
  EXPECT_EQ(Reloads(cluster, "ok"), 1);
  EXPECT_EQ(Reloads(cluster, "failed"), 1);
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
  // Two slots: the cluster's own clients need one while it starts.
  Cluster cluster(dir.path(),
                  OneTlsNode({"--max-connections", "2", "--tls-handshake-timeout", "500ms"}));
  START_CLUSTER(cluster);
  const int port = cluster.node(0).port();
  std::vector<int> silent{ConnectRaw(port), ConnectRaw(port)};
  auto all_closed = [&] {
    return std::all_of(silent.begin(), silent.end(), [](int fd) { return Closed(fd); });
  };
  // While they hold every slot, a client is turned away. (The slot of a
  // client the cluster used may still be taken at first: a silent
  // connection is then turned away itself, and made again.)
  EXPECT_TRUE(PollUntil(
      [&] {
        bool remade = false;
        for (int& fd : silent) {
          if (!Closed(fd)) continue;
          close(fd);
          fd = ConnectRaw(port);
          remade = true;
        }
        return !remade && !Served(cluster.address(0), cluster.client_tls()) &&
               std::none_of(silent.begin(), silent.end(), [](int fd) { return Closed(fd); });
      },
      5s));
  EXPECT_TRUE(PollUntil(all_closed, 10s))
      << "a connection that never shook hands is still open" << cluster.Logs();
  EXPECT_TRUE(PollUntil(
      [&] {
        const std::string log = cluster.node(0).Log();
        return log.find("closing a RPC connection: ") != std::string::npos &&
               log.find("timed out") != std::string::npos;
      },
      5s))
      << cluster.Logs();
  for (int fd : silent) close(fd);
  // The slots are free again (the refused clients' own ends may take a
  // moment to reach the node).
  EXPECT_TRUE(PollUntil([&] { return Served(cluster.address(0), cluster.client_tls()); }, 5s))
      << cluster.Logs();
}

}  // namespace
}  // namespace geokv::testing

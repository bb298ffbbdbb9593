// The dialling side of a TLS peer link: a node ships only to the node whose
// certificate names the target it dials. Two replicators in one process,
// the callee's peer service behind a TLS port of the test's own.

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <functional>
#include <memory>
#include <string>

#include "replication/replicator.h"
#include "testing/certificates.h"
#include "testing/test_dir.h"
#include "tests/replication/replication_fixture.h"
#include "util/tls.h"

namespace geokv {
namespace {

using testing::Node;
using testing::RunUntil;

// A TLS context from `dir`/ca.pem and, when `name` is given, `dir`/NAME.pem
// and NAME.key.
kj::Own<kj::TlsContext> Context(const std::string& dir, const std::string& name) {
  TlsContextOptions o;
  o.files.ca = dir + "/ca.pem";
  if (!name.empty()) {
    o.files.cert = dir + "/" + name + ".pem";
    o.files.key = dir + "/" + name + ".key";
  }
  auto made = MakeTlsContext(o);
  KJ_REQUIRE(made.ok(), made.status().ToString());
  return std::move(made).value();
}

// a dials the node `callee` of region eu over TLS, whose port presents
// its certificate `dir`/CALLEE.pem, taking it for the target named
// `target` (with the callee's replica id). How far the callee holds a's log
// after a wrote one key and the loop ran for up to `limit`; what was logged
// meanwhile in *log.
uint64_t ShipThroughTls(const std::string& dir, const std::string& callee,
                        const std::string& target_name, kj::Duration limit, std::string* log) {
  auto io = kj::setupAsyncIo();
  TlsContextHolder dialling(Context(dir, "a"));
  auto serving = Context(dir, callee);
  testing::TestDir data;
  Node a(data.Sub("a"), "a", *io.provider, {}, nullptr,
         [&](ReplicatorOptions& o) { o.tls = &dialling; });
  Node b(data.Sub(callee), callee, *io.provider);
  auto address = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope);
  auto plain = address->listen();
  const unsigned port = plain->getPort();
  auto listener = serving->wrapPort(kj::mv(plain));
  capnp::TwoPartyServer server(b.replicator->PeerBootstrap(std::nullopt));
  auto serve = testing::ServePeerPort(*listener, server).eagerlyEvaluate(nullptr);

  auto logged = std::make_unique<testing::CapturedLog>();
  a.replicator->SetPlacement({}, {testing::TargetAt(b, target_name, port)});
  a.replicator->Start();
  a.Write(io.waitScope, "k", "v");
  const ReplicaId origin = a.store->node_id();
  auto held = [&] {
    auto applied = b.store->AppliedPositions();
    auto it = applied.find(origin);
    return it == applied.end() ? uint64_t{0} : it->second;
  };
  RunUntil(io, [&] { return held() > 0; }, limit);
  *log = logged->str();
  logged = nullptr;
  const uint64_t out = held();
  a.Shutdown(io.waitScope);
  serve = nullptr;
  b.Shutdown(io.waitScope);
  return out;
}

// a takes the node at an address for b, but c answers there, with its own
// certificate and hello (a stale or false member list): a refuses the
// connection before it says hello, and ships nothing. Taken for c, the same
// node is shipped to.
TEST(PeerLinkTls, TheDiallerRefusesACertificateNamingAnotherNode) {
  testing::TestDir dir;
  std::string why;
  ASSERT_TRUE(testing::MakeCa(dir.path(), "ca", &why)) << why;
  for (const char* name : {"a", "c"}) {
    ASSERT_TRUE(testing::MakeCertificate(dir.path(), "ca", name, std::string(name) + ".eu",
                                         {"eu"}, &why))
        << why;
  }
  std::string log;
  EXPECT_EQ(ShipThroughTls(dir.path(), "c", "b", 2 * kj::SECONDS, &log), 0u);
  EXPECT_NE(log.find("the peer's certificate names another node"), std::string::npos) << log;
  EXPECT_NE(log.find("c.eu"), std::string::npos) << log;
  EXPECT_EQ(ShipThroughTls(dir.path(), "c", "c", 10 * kj::SECONDS, &log), 1u) << log;
}

}  // namespace
}  // namespace geokv

// What an authenticated peer may claim about log positions and identities
// (replication/peer_claims.h): two replicators in one process, the caller's
// calls made by hand on a session of the other's peer service.

#include "replication/peer_claims.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <cstdint>
#include <string>
#include <vector>

#include "replication/replicator.h"
#include "replication/peer_wire.h"
#include "testing/test_dir.h"
#include "tests/replication/replication_fixture.h"
#include "util/tls.h"

namespace geokv {
namespace {

using testing::Pair;

// The description a call fails with, or "" when it succeeds.
template <typename Request>
std::string Refusal(kj::WaitScope& ws, Request&& request) {
  try {
    request.send().wait(ws);
  } catch (const kj::Exception& e) {
    return e.getDescription().cStr();
  }
  return "";
}

// a's session with b, which counts its refusals in `metrics`.
struct Claims {
  explicit Claims(kj::AsyncIoContext& io)
      : ws(io.waitScope),
        metrics("eu"),
        pair(io, {}, nullptr, nullptr, nullptr,
             [this](ReplicatorOptions& o) { o.metrics = &metrics; }),
        a(pair.a.store->node_id()),
        session(testing::OpenSession(io.waitScope, pair.b, pair.a)) {}
  ~Claims() { pair.Shutdown(ws); }

  // Pushes an empty batch that says it covers `origin`'s log after `from`
  // through `through`, leaving out entries of `skipped`; the refusal, or "".
  std::string Push(ReplicaId origin, uint64_t from, uint64_t through,
                   const std::vector<uint32_t>& skipped = {}) {
    auto req = session.pushDeltasRequest();
    auto batch = req.initBatch();
    batch.setOrigin(origin);
    batch.setFrom(from);
    batch.setThrough(through);
    auto segments = batch.initSkipped(skipped.size());
    for (size_t i = 0; i < skipped.size(); ++i) segments.set(i, static_cast<uint16_t>(skipped[i]));
    return Refusal(ws, req);
  }
  std::string MarkRepaired(uint64_t through) {
    auto req = session.markRepairedRequest();
    req.setThrough(through);
    return Refusal(ws, req);
  }

  double Refused(PeerClaim claim) {
    return metrics.PeerClaimRefused(std::string(PeerClaimName(claim))).Value();
  }
  uint64_t BHolds(ReplicaId origin) {
    auto applied = pair.b.store->AppliedPositions();
    auto it = applied.find(origin);
    return it == applied.end() ? 0 : it->second;
  }

  kj::WaitScope& ws;
  Metrics metrics;
  Pair pair;
  const ReplicaId a;
  peer::PeerSession::Client session;
};

// a may not push the log of another node, here one b knows nothing of, nor
// of b itself: nothing is recorded, so no token of that origin reads as
// visible on b and its own deltas are not taken for replays.
TEST(PeerClaims, ABatchOfAnotherOriginsLogIsRefusedAndRecordsNothing) {
  auto io = kj::setupAsyncIo();
  Claims c(io);
  constexpr ReplicaId kOther = 0x0123456789abcdef;
  std::string refused = c.Push(kOther, 0, 100);
  EXPECT_NE(refused.find("a node ships only its own log"), std::string::npos) << refused;
  EXPECT_NE(refused.find("0123456789abcdef"), std::string::npos) << refused;
  EXPECT_EQ(c.BHolds(kOther), 0u);
  EXPECT_EQ(c.Refused(PeerClaim::kOrigin), 1);
  EXPECT_FALSE(c.pair.b.replicator->Visible({CausalToken(kOther, 1)}));
  // Its own log is taken.
  EXPECT_EQ(c.Push(c.a, 0, 3), "");
  EXPECT_EQ(c.BHolds(c.a), 3u);
  EXPECT_EQ(c.Refused(PeerClaim::kOrigin), 1);
}

// A batch covers at most as many positions as one shipper read, all of them
// left out for keys b does not own: that is taken, one more or a range to
// the end of the 64-bit space is not, and records nothing.
TEST(PeerClaims, ABatchCoveringMorePositionsThanOneReadIsRefused) {
  auto io = kj::setupAsyncIo();
  Claims c(io);
  std::string refused = c.Push(c.a, 0, UINT64_MAX);
  EXPECT_NE(refused.find("covers positions 1 to 18446744073709551615"), std::string::npos)
      << refused;
  refused = c.Push(c.a, 0, kMaxBatchPositions + 1);
  EXPECT_NE(refused.find("a batch covers at most 10000"), std::string::npos) << refused;
  EXPECT_EQ(c.BHolds(c.a), 0u);
  EXPECT_EQ(c.Refused(PeerClaim::kBatchRange), 2);

  EXPECT_EQ(c.Push(c.a, 0, kMaxBatchPositions), "");
  EXPECT_EQ(c.BHolds(c.a), kMaxBatchPositions);
  // A range starting past what b holds is a gap, answered without a refusal,
  // unless it runs past any log.
  refused = c.Push(c.a, UINT64_MAX - 2, UINT64_MAX - 1);
  EXPECT_NE(refused.find("past any log"), std::string::npos) << refused;
  EXPECT_EQ(c.Push(c.a, kMaxBatchPositions + 5, kMaxBatchPositions + 6), "");
  EXPECT_EQ(c.BHolds(c.a), kMaxBatchPositions);
  EXPECT_EQ(c.Refused(PeerClaim::kBatchRange), 3);
}

// The segments a batch left out are tree segments, at most one entry each:
// a batch naming one past them, or more entries than there are segments,
// is refused and records nothing. One that names real segments moves b's
// position, and a token read of a key of a skipped segment is not visible
// there while one of another segment is.
TEST(PeerClaims, ABatchLeavingOutSegmentsThatCannotBeIsRefused) {
  auto io = kj::setupAsyncIo();
  Claims c(io);
  std::string refused = c.Push(c.a, 0, 2, {3, 65535});
  EXPECT_NE(refused.find("no such tree segment"), std::string::npos) << refused;
  refused = c.Push(c.a, 0, 2, std::vector<uint32_t>(kTreeSegments + 1, 3));
  EXPECT_NE(refused.find("more skipped segments than there are"), std::string::npos) << refused;
  EXPECT_EQ(c.BHolds(c.a), 0u);
  EXPECT_EQ(c.Push(c.a, 0, 2, {3}), "");
  EXPECT_EQ(c.BHolds(c.a), 2u);
  EXPECT_TRUE(c.pair.b.replicator->Visible({CausalToken(c.a, 2)}, 4));
  EXPECT_FALSE(c.pair.b.replicator->Visible({CausalToken(c.a, 2)}, 3));
}

// markRepaired may jump (a node under a new replica id continues its log
// after the old one's), but not past any log.
TEST(PeerClaims, ARepairedPositionPastAnyLogIsRefused) {
  auto io = kj::setupAsyncIo();
  Claims c(io);
  std::string refused = c.MarkRepaired(UINT64_MAX - 1);
  EXPECT_NE(refused.find("said to run through position 18446744073709551614, past any log"),
            std::string::npos)
      << refused;
  EXPECT_NE(c.MarkRepaired(kMaxLogPosition).find("past any log"), std::string::npos);
  EXPECT_EQ(c.BHolds(c.a), 0u);
  EXPECT_FALSE(c.pair.b.replicator->Visible({CausalToken(c.a, 1)}));
  EXPECT_EQ(c.Refused(PeerClaim::kRepairedPosition), 2);
  EXPECT_EQ(c.MarkRepaired(5'000'000), "");
  EXPECT_EQ(c.BHolds(c.a), 5'000'000u);
}

// A node of region eu named `name` that b links to, going by `id`.
PeerTarget Known(ReplicaId id, const std::string& name) {
  PeerTarget t;
  t.id = id;
  t.name = name;
  t.region = "eu";
  t.address = "127.0.0.1:1";  // never dialled: b is not started
  return t;
}

// With TLS, b knows a and c by their replica ids: a, certified as a, may not
// go by c's id, nor by a new one while its old one is not retired. It may
// once its hello lists the old id as left (it took a new id at open), or
// once b no longer knows it (it was removed).
TEST(PeerClaims, ACertifiedHelloGoesByTheReplicaIdKnownForItsNode) {
  auto io = kj::setupAsyncIo();
  Claims c(io);
  constexpr ReplicaId kC = 0xc0c0c0c0c0c0c0c0;
  constexpr ReplicaId kNew = 0x0e0e0e0e0e0e0e0e;
  c.pair.b.replicator->SetPlacement({}, {Known(c.a, "a"), Known(kC, "c")});
  auto hello = [&](ReplicaId id, ReplicaId retired) {
    auto peer = c.pair.b.replicator->PeerBootstrap(NodeCommonName(NodeIdentity{"a", "eu"}))
                    .castAs<peer::Peer>();
    auto req = peer.helloRequest();
    FillHello(c.pair.a.options, id, 1, req.initHello());
    if (retired != 0) {
      auto gone = req.initMembers(1)[0];
      gone.setReplicaId(retired);
      gone.setName("retired");
      gone.setRegion("eu");
      gone.setState(peer::MemberState::LEFT);
    }
    return Refusal(c.ws, req);
  };
  std::string refused = hello(kC, 0);
  EXPECT_NE(refused.find("claims replica id c0c0c0c0c0c0c0c0, which is c of region eu"),
            std::string::npos)
      << refused;
  refused = hello(kNew, 0);
  EXPECT_NE(refused.find("but this node knows it as " + fmt::format("{:016x}", c.a) +
                         ", not retired"),
            std::string::npos)
      << refused;
  EXPECT_NE(hello(kNew, kC).find("not retired"), std::string::npos);
  EXPECT_EQ(c.Refused(PeerClaim::kReplicaId), 3);
  EXPECT_EQ(hello(c.a, 0), "");
  EXPECT_EQ(hello(kNew, c.a), "");
  c.pair.b.replicator->SetPlacement({}, {Known(kC, "c")});
  EXPECT_EQ(hello(kNew, 0), "");
  EXPECT_NE(hello(kC, 0).find("which is c of region eu"), std::string::npos);
  EXPECT_EQ(c.Refused(PeerClaim::kReplicaId), 4);
}

}  // namespace
}  // namespace geokv

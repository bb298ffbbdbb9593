// Bounds on what a peer may claim (DESIGN.md section 4, Security: even an
// authenticated peer's claims are bounded), and how a claim beyond them is
// refused.
//
// A position a peer claims is one in its own log: a session ships only the
// log of the node that said hello (deltas are never relayed), and
// markRepaired names the caller's log. A node's log positions are
// consecutive (Store::ReadLog), and a shipper reads at most
// LogShipper::kMaxBatchEntries of them per batch, so a batch's range
// (from, through] spans at most kMaxBatchPositions positions, whatever it
// leaves out for keys the receiver does not own. No log reaches
// kMaxLogPosition: a node logging a million entries a second would take
// over 2,000 years. So neither a claim of the end of the 64-bit range nor a
// jump far past what the receiver holds is ever a real one.
//
// With TLS, a node's hello must name the node its certificate names
// (peer_service.h); it must also go by the replica id this node knows that
// node by (CheckHelloIdentity), so that no certified node ships under
// another's id.
//
// The other way, a peer's answer that it holds this node's log through a
// position past the log's last entry (and past what it held at hello, where
// that shows a log that went back) is refused too (LogShipper): it would
// count writes never shipped to it as acknowledged. So is a hello answer
// past any log, which would stop the node's writes as a log gone back.
//
// A refused claim changes nothing: the call fails with the reason, which
// the receiver also logs (at most once per 10 s, counting the ones left
// out) and counts in geokv_peer_claims_refused_total by claim.

#ifndef GEOKV_REPLICATION_PEER_CLAIMS_H_
#define GEOKV_REPLICATION_PEER_CLAIMS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "domain/member.h"
#include "monitoring/metrics.h"
#include "replication/peer_wire.h"
#include "util/log_limiter.h"
#include "util/status.h"

namespace geokv {

// The most log positions one pushed batch may cover.
inline constexpr uint64_t kMaxBatchPositions = kMaxPeerListEntries;
// Past the last position any log reaches.
inline constexpr uint64_t kMaxLogPosition = (uint64_t{1} << 56) - 1;

// What a refused claim was about; PeerClaimName is its metric label.
enum class PeerClaim {
  kOrigin,                // a batch of another origin's log than the caller's
  kBatchRange,            // a batch covering too many positions, or too far
  kRepairedPosition,      // markRepaired beyond any log
  kReplicaId,             // a hello's replica id that is not its node's
  kAcknowledgedPosition,  // an answer holding more of this node's log than it has
};
inline constexpr size_t kPeerClaims = 5;
std::string_view PeerClaimName(PeerClaim claim);

// InvalidArgument unless the batch of `origin`'s log covering (from,
// through] spans at most kMaxBatchPositions positions and ends below
// kMaxLogPosition. REQUIRES: from < through.
Status CheckBatchRange(ReplicaId origin, uint64_t from, uint64_t through);

// InvalidArgument unless `through`, a position of `origin`'s log that a
// repair is said to have brought, is below kMaxLogPosition.
Status CheckRepairedPosition(ReplicaId origin, uint64_t through);

// A node this node knows (a member it links to): its replica id, name and
// region.
struct KnownNode {
  ReplicaId id = 0;
  std::string name;
  std::string region;
};

// InvalidArgument when a hello as `name` of `region` with replica id `id`
// contradicts `known`: the id is another known node's, or this node knows
// `name` of `region` under another id that is not among `retired` (the ids
// the caller's hello lists as left: a node that took a new id at open says
// its old one retired). A name this node has never seen may take any id
// that is not another's; so may a known name once its member is removed
// (it is then no longer known).
Status CheckHelloIdentity(const std::vector<KnownNode>& known, ReplicaId id,
                          std::string_view name, std::string_view region,
                          const std::vector<ReplicaId>& retired);

// InvalidArgument when a peer answers that it holds this node's log
// through `held`, past both `last`, the log's last position, and
// `held_at_hello`, what it answered at hello.
Status CheckAcknowledgedPosition(uint64_t held, uint64_t last, uint64_t held_at_hello);

// InvalidArgument when a peer answers hello that it holds this node's log
// through `held` at or past kMaxLogPosition. Past the log's last entry but
// below it, the answer shows a log that went back (LogShipper).
Status CheckHeldAtHello(uint64_t held);

// Logs and counts refused claims. Thread safety: loop thread only.
class ClaimRefusals {
 public:
  // Makes every claim's series in `metrics` (not owned; nullptr: none).
  explicit ClaimRefusals(Metrics* metrics);

  ClaimRefusals(const ClaimRefusals&) = delete;
  ClaimRefusals& operator=(const ClaimRefusals&) = delete;

  // Logs that a node of `region` made the claim `why` describes, counts
  // it, and fails the call: throws a FAILED kj::Exception whose
  // description is `why`'s message, which the peer's link reports.
  [[noreturn]] void Refuse(PeerClaim claim, std::string_view region, const Status& why);

 private:
  Metrics* const metrics_;
  LogLimiter log_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_PEER_CLAIMS_H_

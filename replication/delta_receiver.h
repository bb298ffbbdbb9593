// The delta receiver: joins the log entries other nodes push to this node
// (pushDeltas) and the positions their repairs prove (markRepaired), and
// answers each with this node's durable position in the origin's log
// (DESIGN.md: a "position" is a sequence in one node's log).
//
// Per origin it keeps the position last handed to the committer
// ("submitted"). Of a batch covering (from, through]:
//   - entries at or below submitted are replays and are skipped; a batch
//     made only of replays is answered once what was handed over before it
//     is durable;
//   - a batch with from > submitted leaves a gap: nothing of it is joined,
//     and it is answered at once with the durable position, from which the
//     origin resends;
//   - a batch covering more positions than one shipper read, or running
//     past any log (replication/peer_claims.h), is refused: nothing of it
//     is joined or recorded;
//   - otherwise its new entries are handed over as one write that the
//     committer applies only if it continues what is applied (a failed
//     earlier hand-over leaves a gap). A hand-over that fails lowers
//     submitted back to the durable position, so the next batch is a gap.
//     Its skipped segments are marked in the coverage (log_coverage.h)
//     first.
//
// Thread safety: loop thread only.

#ifndef GEOKV_REPLICATION_DELTA_RECEIVER_H_
#define GEOKV_REPLICATION_DELTA_RECEIVER_H_

#include <kj/async.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "crdt/hlc.h"
#include "monitoring/metrics.h"
#include "replication/encoded_joins.h"
#include "replication/peer_claims.h"
#include "replication/group_commit.h"
#include "replication/log_coverage.h"
#include "storage/store.h"

namespace geokv {

// A batch of an origin's log: it covers the positions after `from` through
// `through`, of which those in `positions` (in order) are the entries for
// this node's segments; `deltas` holds each one's key and encoded delta
// (crdt/codec.h), decoded by the writer thread; `skipped` names the
// segments of the entries left out.
struct DeltaBatch {
  struct Position {
    uint64_t position = 0;
    uint64_t made_ms = 0;  // when the origin made the entry (0: unknown)
  };
  ReplicaId origin = 0;
  uint64_t from = 0;
  uint64_t through = 0;
  std::vector<Position> positions;
  EncodedJoins deltas;  // one per position
  std::vector<uint16_t> skipped;
};

// An entry of an origin's log that this node joined under a newer LWW
// register it already held for the entry's key.
struct Superseded {
  uint64_t position = 0;
  HlcTimestamp held;  // the held register's stamp
};

// What a batch is answered with.
struct PushAnswer {
  uint64_t applied = 0;  // the durable position in the origin's log
  // The superseded entries of the batch's range that this node remembers
  // (the last kSupersededKept of each origin), in order.
  std::vector<Superseded> superseded;
};

struct DeltaReceiverOptions {
  ReplicaId self = 0;
  // Hands a write to the writer thread (GroupCommitter::SubmitRemote).
  std::function<kj::Promise<WriteResult>(RemoteApply)> submit;
  // This node's durable position in an origin's log (from the store's
  // in-memory AppliedPositions).
  std::function<uint64_t(ReplicaId origin)> durable;
  // Where the gaps a batch's skipped segments and a repair leave are
  // marked (nullptr: nowhere).
  LogCoverage* coverage = nullptr;
  // For the replication lag metric; both may be nullptr (no metric).
  WallClock* clock = nullptr;
  Metrics* metrics = nullptr;
};

class DeltaReceiver {
 public:
  explicit DeltaReceiver(DeltaReceiverOptions options)
      : options_(std::move(options)), refusals_(options_.metrics) {}

  DeltaReceiver(const DeltaReceiver&) = delete;
  DeltaReceiver& operator=(const DeltaReceiver&) = delete;

  // Superseded entries remembered per origin.
  static constexpr size_t kSupersededKept = 1024;

  // Joins `batch` (see above) from a node of `region`; resolves with the
  // durable position in the origin's log and the superseded entries of the
  // batch's range (also when it is a replay). Rejects (KJ_REQUIRE) a batch of
  // this node's or no origin, one covering no positions or entries out of
  // order, and (ClaimRefusals) one whose range is out of bounds
  // (CheckBatchRange); rejects when the hand-over fails (a delta that does
  // not decode fails it, and nothing of the batch is joined).
  kj::Promise<PushAnswer> PushDeltas(const std::string& region, DeltaBatch batch);

  // Records that this node holds `origin`'s log through `through` (a repair
  // pass by `origin`, of `region`, that began there is done); resolves with
  // the durable position. Rejects a position out of bounds
  // (CheckRepairedPosition, through ClaimRefusals), recording nothing, and
  // rejects when the write fails.
  kj::Promise<uint64_t> MarkRepaired(const std::string& region, ReplicaId origin,
                                     uint64_t through);

  // The position last handed over for `origin`, at least the durable one.
  uint64_t Submitted(ReplicaId origin);

  // Where every refused peer claim is logged and counted, the peer
  // service's included.
  ClaimRefusals& refusals() { return refusals_; }

 private:
  uint64_t& SubmittedRef(ReplicaId origin);
  // Once `before` is done: the answer to a batch of `origin` covering
  // from+1..through.
  kj::Promise<PushAnswer> Answer(kj::Promise<void> before, ReplicaId origin, uint64_t from,
                                 uint64_t through);
  void NoteSuperseded(ReplicaId origin, uint64_t position, HlcTimestamp held);

  DeltaReceiverOptions options_;
  ClaimRefusals refusals_;
  // Per origin: the last position handed to the committer, and the promise
  // of that hand-over's commit (replays wait for it).
  std::map<ReplicaId, uint64_t> submitted_;
  std::map<ReplicaId, kj::ForkedPromise<void>> last_submit_;
  std::map<ReplicaId, std::map<uint64_t, HlcTimestamp>> superseded_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_DELTA_RECEIVER_H_

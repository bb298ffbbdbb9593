// Anti-entropy against one peer: compares the hash trees of the segments
// both nodes own and exchanges the full states of the keys that differ,
// both ways, under a byte-rate budget (`anti_entropy_bytes_per_second`);
// an OR-set too large for one message moves in pages (set_paging.h), both
// ways, its pages counting toward the budget.
// A complete pass repairs every differing key; a routine one only keys
// whose digests stay the same on both sides for kSettle (a key still being
// written differs only until its deltas arrive); a push pass sends this
// node's states of every differing key and takes none (a repair in place
// of this node's log: the peer's writes come back by its own log or
// repair). A complete or push pass works on kSegmentsInFlight segments at
// once, a routine one on one at a time.
//
// Every read of the store (segment keys, states) runs on the reader pool;
// the loop only compares and moves bytes. The serving side (what a peer's
// getStates is answered with) is ReadServedStates.
//
// Thread safety: loop thread only.

#ifndef GEOKV_REPLICATION_ANTI_ENTROPY_H_
#define GEOKV_REPLICATION_ANTI_ENTROPY_H_

#include <kj/async.h>

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "replication/peer_wire.h"
#include "replication/replication_env.h"
#include "replication/set_paging.h"
#include "schema/replication.capnp.h"

namespace geokv {

class AntiEntropy {
 public:
  // How long a differing key must keep its digests before a routine pass
  // repairs it.
  static constexpr kj::Duration kSettle = 500 * kj::MILLISECONDS;
  // Keys per repair exchange, whatever their size.
  static constexpr size_t kChunkKeys = 64;
  // Segments a complete or push pass repairs at once (their exchanges share
  // the budget).
  static constexpr size_t kSegmentsInFlight = 4;

  // Which keys a pass repairs, and which way (see above).
  enum class Scope { kRoutine, kComplete, kPush };

  // `env` must outlive this; `peer_owns` says whether the peer owns a
  // segment; `region` names the peer in logs.
  AntiEntropy(ReplicationEnv& env, std::string region, std::function<bool(size_t)> peer_owns)
      : env_(env), region_(std::move(region)), peer_owns_(std::move(peer_owns)) {}

  AntiEntropy(const AntiEntropy&) = delete;
  AntiEntropy& operator=(const AntiEntropy&) = delete;

  // Compares the trees and repairs every segment that differs and both own.
  // The promise refers to this object: drop it before this goes.
  kj::Promise<void> Pass(peer::PeerSession::Client session, Scope scope);
  // Repairs one segment (with kComplete: brings it in step with the peer).
  kj::Promise<void> RepairSegment(peer::PeerSession::Client session, uint32_t segment,
                                  Scope scope);
  // Waits as long as `bytes` take at the rate; the budget is this object's
  // (one per peer), across passes and connections.
  kj::Promise<void> Throttle(size_t bytes);

 private:
  // Key -> (local digest, remote digest) for the keys of a segment that
  // differ (0: absent on that side).
  using Differences = std::map<std::string, std::pair<uint64_t, uint64_t>>;
  // The peer's coverage of a segment, as its answer gave it.
  using Coverage = LogCoverage::Positions;

  // The keys that differ; `coverage`, if not null, gets the peer's.
  kj::Promise<Differences> Differ(peer::PeerSession::Client session, uint32_t segment,
                                  Coverage* coverage = nullptr);
  // This node is in step with the peer in `segment` as its segmentKeys
  // answer (with `coverage`) listed it: its gaps there clear that far.
  void InStep(uint32_t segment, const Coverage& coverage);
  // The segments a pass has left to repair; each of its workers takes the
  // next.
  struct SegmentQueue {
    std::vector<uint32_t> segments;
    size_t next = 0;
  };
  kj::Promise<void> RepairQueued(peer::PeerSession::Client session, SegmentQueue& queue,
                                 Scope scope);
  // Sends the states of keys[from..], and unless `push_only` takes the
  // peer's, in chunks of at most kChunkKeys keys and about batch_bytes of
  // states each way. A key `absent` holds as absent on one side gets no
  // emptied register or set from the other (see RepairSegment).
  kj::Promise<void> RepairKeys(peer::PeerSession::Client session, std::vector<std::string> keys,
                               size_t from, bool push_only, Differences absent = {});
  // Asks the peer for the states of keys[from..to) and joins them here;
  // resolves with how many keys it served.
  kj::Promise<uint32_t> Pull(peer::PeerSession::Client session,
                             const std::vector<std::string>& keys, size_t from, size_t to,
                             std::set<std::string> absent_here);
  PageThrottle Throttler() {
    return [this](size_t bytes) { return Throttle(bytes); };
  }
  bool BothOwn(size_t segment) const { return env_.OwnsSegment(segment) && peer_owns_(segment); }

  ReplicationEnv& env_;
  const std::string region_;
  std::function<bool(size_t)> peer_owns_;
  kj::TimePoint budget_free_at_ = kj::origin<kj::TimePoint>();
};

// The states of keys[from..] this node sends in one exchange: keys in order
// while fewer than `max_keys` and under `batch_bytes` (the first always);
// `to` is where it stopped. Keys whose OR-set travels in pages
// (EncodedKeyStates::paged_set) are in `paged` too.
struct StatesChunk {
  EncodedStatesList found;
  std::vector<std::string> paged;
  size_t bytes = 0;
  size_t to = 0;
};
// Reads on the reader pool.
// Keys in `absent_there` get no emptied register or set (EncodeKeyStates).
kj::Promise<StatesChunk> ReadStatesChunk(AsyncStore& reader, const std::vector<std::string>& keys,
                                         size_t from, size_t max_keys, size_t batch_bytes,
                                         size_t max_message_bytes,
                                         std::set<std::string> absent_there = {});

// What a peer's getStates of `keys` is answered with: the keys served, in
// order, while their states fit in `batch_bytes` (the first always), and
// the states of those that have any, and the served keys whose OR-set
// travels in pages. Reads on the reader pool, as a foreground read when
// `for_read` (a client read waits for it), else as a background one.
struct ServedStates {
  EncodedStatesList found;
  std::vector<std::string> paged;
  uint32_t served = 0;
};
kj::Promise<ServedStates> ReadServedStates(AsyncStore& reader, std::vector<std::string> keys,
                                           size_t batch_bytes, size_t max_message_bytes,
                                           bool for_read);

}  // namespace geokv

#endif  // GEOKV_REPLICATION_ANTI_ENTROPY_H_

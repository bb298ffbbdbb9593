// Hand-over: every second, this node hands the segments it holds but no
// longer owns to their owners in its region, and brings the segments it
// owns again after a hand-over back in step with another owner.
//
// A segment is handed over in chunks (at most kChunkKeys keys and about
// batch_bytes of states): every owner commits a chunk's states before this
// node drops its keys, each only if it was not written meanwhile (its
// digest is still the one sent), and marks the segment dropped. A dropped
// segment this node owns again is "syncing": it must not coordinate writes
// there until one complete anti-entropy pass against an owner (or, with no
// other owner, at once) clears the mark. An OR-set too large for one
// message goes in pages (set_paging.h) to every owner before its key is
// dropped. A segment that is not handed over whole (a failure, or keys
// written meanwhile) is tried again after a backoff, kRetryMin doubling to
// kRetryMax, back to kRetryMin whenever a try made progress.
//
// A segment this node owns is "unsettled" from the node's start, and from
// the moment it came to own it, until it has been brought in step with
// every other owner of its region (their tree digests equal, or one
// complete anti-entropy pass with each that differs) and every other member
// of its region has said that it does not own the segment and holds none
// of its keys: before that it may miss writes its region acknowledged
// (hints still on their way to a node that was down, a hand-over still on
// its way from a node that is leaving or lost the segment to a join, a
// write acknowledged by such a node before it heard of the change), so
// quorum reads do not count it (Settled). A member that no longer owns a
// segment no longer vouches for it in its acknowledgements
// (PeerLink::Vouches), so once it said so no later write counts it. Nor
// does a node vouch for a segment it came to own ("arriving") before it is
// settled there: a coordinator that has not heard of the change reads the
// old owners, which must then hold every write counted. The segments it
// vouches for are kept in the data dir (Store::VouchedSegments, written
// through the committer after every change), so that a restarted node
// takes every segment of its first placement it did not vouch for when it
// stopped (one it was arriving at, or did not own) as arriving; a node that
// starts with no members kept in its data dir (a new node) takes them all.
// A data dir from before the record vouches for its whole first placement.
//
// Store reads (segment keys, states) run on the reader pool; writes go
// through the committer.
//
// Thread safety: loop thread only.

#ifndef GEOKV_REPLICATION_HAND_OVER_H_
#define GEOKV_REPLICATION_HAND_OVER_H_

#include <kj/async.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "replication/replication_env.h"
#include "schema/replication.capnp.h"

namespace geokv {

class HandOver {
 public:
  static constexpr size_t kChunkKeys = 64;
  static constexpr kj::Duration kRetryMin = 1 * kj::SECONDS;
  static constexpr kj::Duration kRetryMax = 60 * kj::SECONDS;

  // What hand-over needs of the links.
  class Links {
   public:
    virtual ~Links() noexcept(false) = default;
    // The other owners of `segment` in this node's region.
    virtual std::vector<ReplicaId> RegionOwners(size_t segment) const = 0;
    // Every other member of this node's region that has not left.
    virtual std::vector<ReplicaId> RegionMembers() const = 0;
    virtual bool IsConnected(ReplicaId node) const = 0;
    // The calls below throw DISCONNECTED unless `node` has a session now.
    virtual peer::PeerSession::Client Session(ReplicaId node) = 0;
    // Brings `segment` in step with `node`, both ways, every differing key.
    virtual kj::Promise<void> SyncSegment(ReplicaId node, uint32_t segment) = 0;
    // Waits as long as `bytes` take at the anti-entropy rate to `node`.
    virtual kj::Promise<void> Budget(ReplicaId node, size_t bytes) = 0;
  };

  // `env`, `links` and `trim_held` (whether trimming is held: gossip may not
  // know every owner yet) must outlive this.
  HandOver(ReplicationEnv& env, Links& links, const bool& trim_held)
      : env_(env), links_(links), trim_held_(trim_held) {}

  // Takes the store's dropped marks and vouched segments, and whether this
  // node is new (no members kept in its data dir), at start.
  void Load(std::vector<bool> dropped, std::optional<std::vector<bool>> vouched, bool new_node) {
    dropped_ = std::move(dropped);
    if (vouched) written_vouched_ = *vouched;
    vouched_at_start_ = std::move(vouched);
    new_node_ = new_node;
  }

  bool Dropped(size_t segment) const { return segment < dropped_.size() && dropped_[segment]; }
  bool Syncing(size_t segment) const { return Dropped(segment) && env_.OwnsSegment(segment); }
  // Whether this node owns `segment` and has been in step with its other
  // owners since it started or came to own it (see above). With no
  // placement yet, every segment is owned and settled.
  bool Settled(size_t segment) const {
    if (env_.own_segments.empty()) return true;
    return segment < unsettled_.size() && env_.own_segments[segment] && !unsettled_[segment] &&
           !Dropped(segment);
  }
  size_t UnsettledCount() const;
  // Whether this node vouches for `segment` in its acknowledgements (see
  // above): it owns it, and did not come to own it since it was last
  // settled there. With no placement yet, every segment.
  bool Vouches(size_t segment) const {
    return env_.OwnsSegment(segment) && !(segment < arriving_.size() && arriving_[segment]);
  }
  // Writes of the region may be missing here (this node refused a peer's
  // batch or repair): every segment it owns is unsettled until brought in
  // step with the other owners again.
  void UnsettleAll();
  // The placement changed: segments this node owns now and did not own in
  // `before` (empty: none) are unsettled.
  void PlacementChanged(const std::vector<bool>& before);

  // Passes every second, forever; a pass that fails is logged.
  kj::Promise<void> Run();

  // The segments this node holds keys of but does not own (what a leave
  // waits for), in order.
  std::vector<size_t> Held() const;
  // Why `segment`'s last hand-over did not finish; empty when none failed.
  std::string LastError(size_t segment) const {
    auto it = retries_.find(segment);
    return it == retries_.end() ? std::string() : it->second.error;
  }

 private:
  kj::Promise<void> Pass();
  // What another member answered to treeDigests.
  struct Remote {
    std::vector<uint64_t> digests;
    std::vector<bool> owned;  // empty: not said
    LogCoverage::Positions coverage;  // the least over the segments it owns
  };
  // The pass, with the tree digests of other members of the region when a
  // segment is unsettled (a member that did not answer is missing).
  kj::Promise<void> PassWith(const std::map<ReplicaId, Remote>& remote);
  // Whether every one of `members` (the region's) that does not own
  // `segment` said so and holds none of its keys.
  static bool HeldOnlyByOwners(size_t segment, const std::vector<ReplicaId>& owners,
                               const std::vector<ReplicaId>& members,
                               const std::map<ReplicaId, Remote>& remote);
  // Brings `segment` in step with `owners` (those whose tree digest for it
  // differs from this node's), one after the other, then settles it unless
  // it was unsettled again meanwhile (`generation`).
  kj::Promise<void> Settle(size_t segment, std::vector<ReplicaId> owners, uint64_t generation);
  kj::Promise<void> HandOff(size_t segment, std::vector<ReplicaId> owners);
  kj::Promise<void> HandOffKeys(size_t segment, std::vector<ReplicaId> owners,
                                std::vector<KeyDigest> keys, size_t from);
  // Notes how a hand-over of `segment` (whose digest was `before`) ended:
  // with `error`, or empty when it ran through.
  void Retried(size_t segment, uint64_t before, const std::string& error);
  // `segment` is settled, and no longer arriving.
  void MarkSettled(size_t segment) {
    unsettled_[segment] = false;
    if (arriving_[segment]) {
      arriving_[segment] = false;
      KeepVouched();
    }
  }
  // Whether this node would take `segment` of its first placement as
  // arriving (see above).
  bool ArrivingAtStart(size_t segment) const {
    if (new_node_) return true;
    if (!vouched_at_start_) return false;
    return !(segment < vouched_at_start_->size() && (*vouched_at_start_)[segment]);
  }
  // Writes the segments this node vouches for to the store when they differ
  // from those written last; one write at a time, the next after it.
  void KeepVouched();
  kj::Promise<void> WriteVouched();
  // Lets this node coordinate writes in `segment` again (durably).
  kj::Promise<void> ClearDropped(size_t segment);

  ReplicationEnv& env_;
  Links& links_;
  const bool& trim_held_;
  std::vector<bool> dropped_;  // as the store's DroppedSegments, kept here
  std::vector<bool> unsettled_ = std::vector<bool>(kTreeSegments, true);
  std::vector<bool> arriving_ = std::vector<bool>(kTreeSegments, false);
  bool new_node_ = false;
  std::optional<std::vector<bool>> vouched_at_start_;  // the store's, at Load
  std::vector<bool> written_vouched_;                 // as last written (or loaded)
  bool writing_vouched_ = false;
  kj::Promise<void> vouched_write_ = nullptr;
  std::vector<uint64_t> generation_ = std::vector<uint64_t>(kTreeSegments, 0);
  struct Retry {
    kj::TimePoint next = kj::origin<kj::TimePoint>();
    kj::Duration delay = 0 * kj::SECONDS;
    std::string error;
  };
  std::map<size_t, Retry> retries_;  // segments whose last hand-over did not finish
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_HAND_OVER_H_

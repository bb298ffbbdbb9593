// Quorum acknowledgements: a coordinator waits until enough owners of a
// write hold this node's log through the write's position durably.
//
// Thread safety: loop thread only.

#ifndef GEOKV_REPLICATION_QUORUM_ACKS_H_
#define GEOKV_REPLICATION_QUORUM_ACKS_H_

#include <kj/async.h>
#include <kj/timer.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "replication/deadline_waiters.h"
#include "storage/store.h"

namespace geokv {

class QuorumAcks {
 public:
  // Whether `node` holds this node's log through `position`, counting for
  // a write of tree segment `segment`: only while it owns the segment by
  // this node's view (shipping leaves out the entries of segments a node
  // does not own, so its position covers the write only then) and by its
  // own, as it last said (a node that heard of a join or a leave first no
  // longer vouches for a segment it hands over, and a new owner settles
  // only after it heard that: PeerLink::Vouches, HandOver).
  using Holds = std::function<bool(ReplicaId node, uint64_t position, size_t segment)>;

  // `timer` must outlive this.
  QuorumAcks(kj::Timer& timer, Holds holds) : holds_(std::move(holds)), waiters_(timer) {}

  // Resolves with how many of `nodes` hold `position` (see Holds): once
  // `needed` of them do, or after `timeout` with fewer, or at once after
  // Stop().
  kj::Promise<size_t> WaitAcked(std::vector<ReplicaId> nodes, uint64_t position, size_t segment,
                                size_t needed, std::chrono::milliseconds timeout);

  // Some node's position advanced (or the nodes changed): wakes the waits
  // that have their count.
  void AckAdvanced();

  // Ends every wait (their promises are cancelled) and refuses to wait.
  void Stop();

 private:
  size_t Count(const std::vector<ReplicaId>& nodes, uint64_t position, size_t segment) const;

  Holds holds_;
  DeadlineWaiters<size_t> waiters_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_QUORUM_ACKS_H_

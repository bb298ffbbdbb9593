// Placement plans: where an operation on one key runs and whom it waits
// for, decided from the cluster view and what the replicator says of the
// key's segment and of the links, and nothing else. A pure function: the
// same inputs give the same plan, so it is tested without a cluster.

#ifndef GEOKV_SERVER_PLAN_H_
#define GEOKV_SERVER_PLAN_H_

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

#include "crdt/crdt.h"
#include "server/cluster_view.h"
#include "server/request.h"
#include "util/status.h"

namespace geokv {

// What the replicator knows that a plan depends on (Replicator::Syncing,
// Dropped and IsConnected). Read on the loop thread.
class ReplicaFacts {
 public:
  virtual ~ReplicaFacts() = default;
  // This node owns `segment` again after handing it over, and is not yet
  // back in step with another owner.
  virtual bool Syncing(size_t segment) const = 0;
  // This node handed `segment` over and has not brought it back in step.
  virtual bool Dropped(size_t segment) const = 0;
  // This node owns `segment` and has been in step with its other owners
  // since it started or came to own it (HandOver::Settled).
  virtual bool Settled(size_t segment) const = 0;
  // This node counts its own copy for a write in `segment`: it owns it and
  // did not come to own it since it was last settled there
  // (HandOver::Vouches).
  virtual bool Vouches(size_t segment) const = 0;
  // The link to `node` has a session now.
  virtual bool IsConnected(ReplicaId node) const = 0;
};

// Where an operation on one key runs.
struct Plan {
  Status status;                        // not OK: refuse the operation with it
  std::optional<ReplicaId> forward_to;  // run it on that owner
  std::vector<ReplicaId> others;        // running here: the other owners up
  std::vector<ReplicaId> away;          // and those that are not (hinted)
  // Of `others`, how many must answer; for a read, answers from settled
  // owners only (Replicator::KeyDigest), and this node's own state counts
  // toward the level only when it is a settled owner.
  size_t needed = 0;
  size_t segment = 0;                   // the key's tree segment
};

// What is planned.
struct PlanRequest {
  std::string_view key;
  // Resolved: kDefault counts as kQuorum.
  Consistency level = Consistency::kQuorum;
  // Another node sent the request here to run, whatever this node's ring
  // says: it is never forwarded again.
  bool forwarded = false;
  bool write = false;
  // A read that waits for causal tokens: even at ONE it must not be served
  // from a state that may miss what the tokens name.
  bool tokens = false;
};

// Of `owners` owners, how many a level needs (itself among them).
size_t Needed(Consistency level, size_t owners);

// The plan of `request` on this node (view.self_id()).
Plan MakePlan(const ClusterView& view, const PlanRequest& request, const ReplicaFacts& facts);

// What a quorum read hears from the other owners it asks: each one's digest
// of the key, against this node's (`local`). The read may answer this
// node's state once `needed` settled owners agree with it, or once the
// states of enough of those that differ were joined here. Every settled
// answer is compared, late ones too: an owner that answered but was not
// compared says nothing about this node's state.
class DigestTally {
 public:
  DigestTally(size_t needed, uint64_t local) : needed_(needed), local_(local) {}

  // An owner's answer; one not settled on the key's segment does not count.
  void Answer(ReplicaId from, uint64_t digest, bool settled);

  // Enough settled owners answered to decide.
  bool Enough() const { return answered_ >= needed_; }
  // `needed` of them hold what this node holds: it may answer as it is.
  bool Agreed() const { return agreed_ >= needed_; }
  // Once the states of `fetched` of the differing owners were joined here:
  // whether `needed` owners are reflected in this node's state.
  bool HeldAfterJoining(size_t fetched) const { return agreed_ + fetched >= needed_; }

  // The owners whose digest differed, in the order they answered.
  const std::vector<ReplicaId>& differing() const { return differing_; }
  // Whether `owner` answered that it holds nothing of the key.
  bool Absent(ReplicaId owner) const {
    return std::find(absent_.begin(), absent_.end(), owner) != absent_.end();
  }
  size_t needed() const { return needed_; }
  size_t answered() const { return answered_; }
  size_t unsettled() const { return unsettled_; }

 private:
  size_t needed_;
  uint64_t local_;
  size_t answered_ = 0, agreed_ = 0, unsettled_ = 0;
  std::vector<ReplicaId> differing_;
  std::vector<ReplicaId> absent_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_PLAN_H_

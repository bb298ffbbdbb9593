#include "server/plan.h"

#include <algorithm>
#include <string>

#include "storage/store.h"

namespace geokv {

size_t Needed(Consistency level, size_t owners) {
  switch (level) {
    case Consistency::kOne: return 1;
    case Consistency::kAll: return owners;
    case Consistency::kQuorum:
    case Consistency::kDefault: break;
  }
  return owners / 2 + 1;
}

Plan MakePlan(const ClusterView& view, const PlanRequest& request, const ReplicaFacts& facts) {
  Plan plan;
  const Consistency level = request.level;
  if (level != Consistency::kOne && !view.joined()) {
    plan.status = Status::Unavailable(
        std::string(ConsistencyName(level)) + " needs the key's owners in region " +
        view.region() +
        ", and this node has not yet heard from its region's gossip seeds; ONE is served");
    return plan;
  }
  const ReplicaId self = view.self_id();
  std::vector<ReplicaId> owners = view.Owners(request.key);
  const bool mine = std::find(owners.begin(), owners.end(), self) != owners.end();
  // A node that handed a segment over no longer holds its keys' causal
  // contexts or counter totals: a write there would reuse dots and totals
  // the owners already have. Until it gets the segment back it leaves writes
  // there to the others, and refuses them when a node with an older view
  // forwards them here.
  plan.segment = TreeSegmentOf(request.key);
  const bool syncing = request.write && (mine ? facts.Syncing(plan.segment)
                                              : facts.Dropped(plan.segment));
  if (syncing && request.forwarded) {
    plan.status = Status::Unavailable(
        mine ? "this node is still receiving the key's segment back"
             : "this node handed the key's segment over to its owners");
    return plan;
  }
  // A read counts this node's state only if it is a settled owner: a node
  // that restarted may still wait for hints, a new owner for the hand-over.
  const bool strict_read = !request.write && (level != Consistency::kOne || request.tokens);
  const bool unsettled =
      strict_read && (!mine || (owners.size() > 1 && !facts.Settled(plan.segment)));
  if ((!mine || syncing || unsettled) && !request.forwarded) {
    for (ReplicaId o : owners) {
      if (o != self && view.Up(o) && facts.IsConnected(o)) {
        plan.forward_to = o;
        return plan;
      }
    }
    plan.status = Status::Unavailable("none of the " + std::to_string(owners.size()) +
                                      " owners of the key in region " + view.region() +
                                      " is reachable from this node");
    return plan;
  }
  if (!mine) owners.push_back(self);
  // A node that is not an owner (a forwarded read) does not count itself.
  const size_t needed = Needed(level, owners.size() - (unsettled && !mine ? 1 : 0));
  for (ReplicaId o : owners) {
    if (o == self) continue;
    (view.Up(o) ? plan.others : plan.away).push_back(o);
  }
  if (1 + plan.others.size() < needed) {
    plan.status = Status::Unavailable(
        std::string(ConsistencyName(level)) + " needs " + std::to_string(needed) +
        " of the key's " + std::to_string(owners.size()) + " owners in region " +
        view.region() + "; " + std::to_string(1 + plan.others.size()) + " are up");
    return plan;
  }
  // A QUORUM or ALL write counts this node's own copy only where it vouches
  // for the segment as its acknowledgements do: a coordinator that has not
  // heard that this node came to own it reads the old owners.
  const bool self_uncounted = request.write && level != Consistency::kOne && mine &&
                              owners.size() > 1 && !facts.Vouches(plan.segment);
  if (unsettled || self_uncounted) {
    if (plan.others.size() < needed) {
      plan.status = Status::Unavailable(
          std::string(ConsistencyName(level)) + " needs " + std::to_string(needed) +
          " owners of the key in region " + view.region() +
          " that hold its segment; this node is still catching up on it and " +
          std::to_string(plan.others.size()) + " other owners are up");
      return plan;
    }
    plan.needed = needed;
    return plan;
  }
  plan.needed = needed - 1;
  return plan;
}

void DigestTally::Answer(ReplicaId from, uint64_t digest, bool settled) {
  if (!settled) {
    ++unsettled_;
    return;
  }
  ++answered_;
  if (digest == local_) {
    ++agreed_;
  } else {
    differing_.push_back(from);
    if (digest == 0) absent_.push_back(from);
  }
}

}  // namespace geokv

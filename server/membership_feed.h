// Gossip's membership into the node's cluster view: gossip tells of a
// change on its own thread; the feed carries that to the event loop, where
// the follower replaces the view's region members, says when the node has
// joined its region, and re-places replication when placement changed.

#ifndef GEOKV_SERVER_MEMBERSHIP_FEED_H_
#define GEOKV_SERVER_MEMBERSHIP_FEED_H_

#include <kj/async.h>

#include <functional>
#include <mutex>

#include "cluster/gossip.h"
#include "server/cluster_view.h"

namespace geokv {

// Carries "members changed" from any thread to the event loop.
// Thread safety: Changed() on any thread; Next() on the loop's.
class GossipFeed {
 public:
  void Changed();
  // Resolves at the next change (at once if one came since the last call).
  // REQUIRES: the previous promise resolved or was dropped.
  kj::Promise<void> Next();

 private:
  std::mutex mu_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> waiting_;
  bool pending_ = false;
};

// Lives on the event loop's thread.
class MembershipFollower {
 public:
  // `joined(how)`: another live member was heard of while the view had not
  // joined. `placed()`: the view's placement changed. `gossip` and `view`
  // must outlive the follower; gossip must be stopped (no more callbacks)
  // before the follower is destroyed.
  MembershipFollower(Gossip& gossip, ClusterView& view, std::function<void(const char*)> joined,
                     std::function<void()> placed);

  // Reads gossip's members now and on every change from now on.
  void Start();
  // Stops following. REQUIRES: gossip stopped.
  void Stop() { following_ = nullptr; }

 private:
  kj::Promise<void> Follow();

  Gossip& gossip_;
  ClusterView& view_;
  std::function<void(const char*)> joined_;
  std::function<void()> placed_;
  GossipFeed feed_;
  kj::Promise<void> following_ = nullptr;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_MEMBERSHIP_FEED_H_

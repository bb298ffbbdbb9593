// Leaving the cluster: announced through gossip, then the node waits until
// every key it holds is with its owners and every live node holds its log,
// and shuts down as on SIGTERM. While it waits it logs what for every
// kReportEvery; past its deadline it gives up and the node stops with an
// error naming what it still waited for.

#ifndef GEOKV_SERVER_LEAVE_H_
#define GEOKV_SERVER_LEAVE_H_

#include <kj/async.h>
#include <kj/timer.h>

#include "cluster/gossip.h"
#include "replication/group_commit.h"
#include "replication/replicator.h"

namespace geokv {

// Lives on the event loop's thread.
class Leaver {
 public:
  static constexpr kj::Duration kReportEvery = 5 * kj::SECONDS;

  // `gossip` may be null (a node without gossip cannot leave). Every
  // reference must outlive the leaver. `deadline`: how long leaving may
  // take (--leave-timeout).
  Leaver(Gossip* gossip, Replicator& replicator, kj::Timer& timer, kj::Duration deadline);

  // What the `leave` call does: starts leaving (once; again is OK), or says
  // why the node cannot.
  Status Leave();
  bool leaving() const { return leaving_; }

  // Resolves once leaving is done: every key held is in a segment this node
  // owns (none) and its log is delivered; or, with failed() set, once the
  // deadline passed. Never resolves unless Leave() ran.
  // REQUIRES: called once.
  kj::Promise<void> Left();

  // OK, or Timeout naming what leaving still waited for when its
  // deadline passed.
  const Status& failed() const { return failed_; }

  // Stops checking for the end of leaving.
  void Stop() { watch_ = nullptr; }

  // After the node stopped serving: resolves once the writes taken between
  // the hand-over check and then are committed and shipped to every node,
  // or at `deadline`.
  kj::Promise<void> Delivered(GroupCommitter& committer, kj::TimePoint deadline);

 private:
  kj::Promise<void> Watch();

  Gossip* gossip_;
  Replicator& replicator_;
  kj::Timer& timer_;
  const kj::Duration deadline_;
  kj::TimePoint give_up_at_ = kj::origin<kj::TimePoint>();
  kj::TimePoint report_at_ = kj::origin<kj::TimePoint>();
  Status failed_;
  bool leaving_ = false;
  kj::Own<kj::PromiseFulfiller<void>> left_;
  kj::Promise<void> watch_ = nullptr;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_LEAVE_H_

// The collection of LWW tombstones by causal stability (DESIGN.md section
// 1, item 6): a deleted register's tombstone goes once every node that
// could hold an older value of its key holds the tombstone, never earlier.
//
// Stability of one origin's log. The origin ships its log to every other
// node of every region (leaving out, per target, the entries of keys the
// target does not own), and each shipper knows the target's durable
// position in it (acked). The position every target holds is the least of
// them; a node of another region known only through a seed, or a target
// whose position is not known yet, holds nothing. The log's stamps grow
// with its positions, and the store's checkpoint (Store::LastCheckpoint)
// pairs a position with a stamp that every entry at or below it is at or
// below and every later one above. The origin keeps the checkpoints of its
// recent turns (with no write in flight, the checkpoint's stamp is the
// clock then: every later entry is stamped above it); the latest whose
// position every target holds gives its *stable stamp*: every write it coordinated stamped at or below it is
// applied on every node that owned the write's key (or handed over to the
// node that owns it now). A tombstone carries its writer's id and stamp;
// a node may collect it once the stable stamps of this node and of every
// member it links to have all passed it: then no write stamped below it
// is on its way from anyone, and every node holds the tombstone. (The
// writer's stable stamp alone says only that the writer's own writes
// arrived; an older write of another member still on its way to some node
// would come back there once the tombstone is gone.) A member whose stable
// stamp is not known yet holds collection back.
//
// Each node sends its stable stamp with its heartbeats; each keeps the
// latest of every peer it links to, and its own. A tombstone must also be
// older than `grace` by this node's wall clock: a node that lost a key's
// ownership keeps its copy until the new owners confirm the hand-over, and
// such a copy must not outlive the tombstones that beat it.
//
// The targets are the members this node knows. So that a node that has
// just started, and does not know every member yet, does not take its log
// for held by all, its own stable stamp moves only after it has run for
// `grace` and only while it is settled for every segment it owns
// (HandOver::Settled: in step with every other owner).
//
// Multi-value registers and OR-sets left without siblings or elements, and
// counters deleted with no increment since, go the same way (the store's
// emptied index), stamped not by a write but by this node's clock when a
// write left them empty. Their states cover writes of every member, some
// stamped by clocks up to --max-clock-offset ahead of this node's (the
// farthest a stamp is accepted), so they go once the bound has passed
// their stamp by that offset (EmptiedBound). A node that forgot such a
// state numbers its next dots in the key above the ones it made there, and
// starts its counter totals above its old ones (the store's floors): a node
// still holding the old state takes them for new.
//
// What stops collection: a node that is down (or partitioned away) but
// still a member holds every origin's stable stamp back until it returns
// or is removed; `geokv_tombstone_stability_lag_seconds` shows it.
//
// Thread safety: everything runs on the KJ event loop's thread.

#ifndef GEOKV_REPLICATION_TOMBSTONE_COLLECTOR_H_
#define GEOKV_REPLICATION_TOMBSTONE_COLLECTOR_H_

#include <kj/async.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <vector>

#include "crdt/hlc.h"
#include "replication/replication_env.h"
#include "storage/store.h"

namespace geokv {

struct TombstoneCollectorOptions {
  // How old by this node's wall clock a stable tombstone must be.
  std::chrono::milliseconds grace{std::chrono::minutes(10)};
  // Tombstones visited per collection (one group of writes).
  size_t batch = 1000;
};

class TombstoneCollector {
 public:
  // Checkpoints kept while the targets trail the log; beyond this every
  // other one goes (the stamp stays safe, only later).
  static constexpr size_t kMaxCheckpoints = 4096;

  TombstoneCollector(ReplicationEnv& env, TombstoneCollectorOptions options);

  // Called every maintenance turn with the position of this node's log
  // that every target holds (0 while the replicator cannot tell): keeps
  // the store's checkpoint and, once this node has run for `grace`, moves
  // its stable stamp.
  void Advance(uint64_t held_by_all);
  // This node's stable stamp; zero while nothing is stable.
  HlcTimestamp stable() const { return stable_; }

  // `origin`'s stable stamp, from its heartbeat. Kept when above the one
  // known; refused (false, and nothing changes) when invalid or further
  // ahead of this node's wall clock than --max-clock-offset.
  bool PeerStable(ReplicaId origin, HlcTimestamp stamp);
  // Collects one batch of what is stable and older than the grace, unless
  // a collection runs. `members` are the ids of every member this node
  // links to, in every region; the stable stamps of others are forgotten.
  // Never fails: errors are logged.
  kj::Promise<void> Collect(const std::vector<ReplicaId>& members);

  // The stamp at or below which tombstones may go: the least of `own` and
  // of every member's stable stamp, zero when one is not known.
  static HlcTimestamp Bound(HlcTimestamp own, const std::map<ReplicaId, HlcTimestamp>& peers,
                            const std::vector<ReplicaId>& members);
  // The stamp at or below which emptied registers and sets may go, from
  // Bound's: `max_clock_offset_ms` earlier; zero when that is before 0.
  static HlcTimestamp EmptiedBound(HlcTimestamp bound, uint64_t max_clock_offset_ms);

 private:
  ReplicationEnv& env_;
  const TombstoneCollectorOptions options_;
  const kj::TimePoint started_;
  std::deque<LogCheckpoint> checkpoints_;
  HlcTimestamp stable_;
  std::map<ReplicaId, HlcTimestamp> peers_;
  bool collecting_ = false;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_TOMBSTONE_COLLECTOR_H_

// What the replication units of one node share: the store, its readers
// and committer, the event loop's I/O and timer, the options and the
// metrics.

#ifndef GEOKV_REPLICATION_REPLICATION_ENV_H_
#define GEOKV_REPLICATION_REPLICATION_ENV_H_

#include <kj/async-io.h>

#include <cstdint>
#include <string>
#include <vector>

#include "crdt/hlc.h"
#include "monitoring/metrics.h"
#include "replication/group_commit.h"
#include "replication/log_coverage.h"
#include "replication/peer_types.h"
#include "storage/async_store.h"
#include "storage/store.h"

namespace geokv {

// Every reference outlives the units that hold the env. On the loop thread
// only the store's in-memory accessors are called; reads go through
// `reader`, writes through `committer`.
struct ReplicationEnv {
  Store& store;
  AsyncStore& reader;
  GroupCommitter& committer;
  kj::AsyncIoProvider& io;
  // What the units wait on and read monotonic time from: the loop's
  // (io.getTimer()) in a node, one the test advances in unit tests.
  kj::Timer& timer;
  const ReplicatorOptions& options;  // wall_clock and metrics set
  Metrics& metrics;
  // The segments this node owns (empty: all), as SetPlacement last said.
  const std::vector<bool>& own_segments;
  // This node's stable stamp (TombstoneCollector), sent with heartbeats;
  // kept current by the replicator.
  HlcTimestamp stable_stamp{};
  // Where this node holds less of a log than its positions say (nullptr in
  // unit tests that do not look).
  LogCoverage* coverage = nullptr;

  uint64_t NowMillis() const { return options.wall_clock->NowMillis(); }
  // This node and every node whose log it holds a position in.
  std::vector<ReplicaId> Origins() const {
    std::vector<ReplicaId> out{store.node_id()};
    for (const auto& [origin, position] : store.AppliedPositions()) out.push_back(origin);
    return out;
  }
  bool OwnsSegment(size_t segment) const {
    return own_segments.empty() || own_segments[segment];
  }
  // The segments this node owns, as peer answers carry them.
  std::string OwnedSegmentSet() const {
    return EncodeSegmentSet(own_segments.empty() ? std::vector<bool>(kTreeSegments, true)
                                                 : own_segments);
  }
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_REPLICATION_ENV_H_

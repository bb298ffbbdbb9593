// Log coverage: through which position of each origin's log this node
// holds every entry of a segment.
//
// A node's position in an origin's log covers entries it never joined: a
// shipper leaves out the entries of segments it takes the target not to
// own (by its own view of the target's region, which may lag), and a
// repair pass covers only the segments both sides own. When such a node
// comes to own the segment, its position says more than its state holds,
// and a token read there could answer without the write the token names
// while the write is still on its way to the old owners. So, per origin
// and segment, this keeps a "gap": entries at or below `marked` may be
// missing, except those at or below `cleared`. A gap is marked
//   - by a batch that left out an entry of the segment (DeltaBatch's
//     skipped segments), through the batch's end;
//   - by a repair pass (markRepaired), in every segment, through its
//     position;
//   - when this node drops keys of the segment it handed over, through its
//     positions then, its own log's included;
//   - at start, in every segment, through the positions kept (gaps are not
//     kept in the data dir); this node's own log only in segments it had
//     dropped;
// and cleared when this node has been brought in step, in that segment,
// with a node that covered the origin's log further there (Cleared: after
// a complete anti-entropy pass of the segment, or one that found nothing
// differing, with a peer whose segmentKeys answer said how far it covers).
// A node covers its own log through its last entry, except in segments it
// dropped since.
//
// Thread safety: loop thread only.

#ifndef GEOKV_REPLICATION_LOG_COVERAGE_H_
#define GEOKV_REPLICATION_LOG_COVERAGE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "storage/store.h"

namespace geokv {

class LogCoverage {
 public:
  // How far this node holds `origin`'s log: its own through its last
  // committed entry, another's through the durable position.
  using HeldThrough = std::function<uint64_t(ReplicaId origin)>;

  // Positions by origin, as a peer reports them.
  using Positions = std::vector<std::pair<ReplicaId, uint64_t>>;

  explicit LogCoverage(HeldThrough held) : held_(std::move(held)) {}

  uint64_t Held(ReplicaId origin) const { return held_(origin); }
  // Through where this node holds every entry of `origin`'s log in
  // `segment`: Held(origin), or less inside a gap.
  uint64_t Covered(ReplicaId origin, size_t segment) const;
  // This node's coverage of each of `origins` in `segment`, as a
  // segmentKeys answer carries it; origins covered through 0 are left out.
  Positions Report(const std::vector<ReplicaId>& origins, size_t segment) const;
  // ... the least over the segments set in `segments`, as a treeDigests
  // answer carries it.
  Positions Least(const std::vector<ReplicaId>& origins, const std::vector<bool>& segments) const;

  // At start: gaps are not kept, so every position kept (`applied`) may
  // cover entries left out, in every segment; this node (`self`, whose log
  // ends at `last`) holds its own entries but in the segments it had
  // dropped (`dropped`, by segment).
  void Load(const std::map<ReplicaId, uint64_t>& applied, ReplicaId self, uint64_t last,
            const std::vector<bool>& dropped);
  // Entries of `segments` after `from` through `through` may be missing
  // (see above); those through `from` are held as far as they were.
  void Mark(ReplicaId origin, uint64_t from, uint64_t through,
            const std::vector<uint16_t>& segments);
  // ... in every segment.
  void MarkAll(ReplicaId origin, uint64_t from, uint64_t through);
  // The keys of `segment` were dropped: of every origin in `origins`
  // (this node's own log too), every entry there through what this node
  // holds of it now may be missing.
  void Dropped(size_t segment, const std::vector<ReplicaId>& origins);
  // This node was brought in step in `segment` with a node that covered
  // `origin`'s log there through `through` (at most Held(origin) counts).
  void Cleared(ReplicaId origin, size_t segment, uint64_t through);
  // ... with a node that covered each origin there as `peer` says.
  void InStep(size_t segment, const Positions& peer) {
    for (const auto& [origin, through] : peer) Cleared(origin, segment, through);
  }

  // Whether some origin has a gap in `segment` (for tests and metrics).
  bool HasGap(size_t segment) const;

 private:
  struct Gaps {
    std::vector<uint64_t> marked = std::vector<uint64_t>(kTreeSegments, 0);
    std::vector<uint64_t> cleared = std::vector<uint64_t>(kTreeSegments, 0);
  };
  static void MarkOne(Gaps& g, size_t segment, uint64_t from, uint64_t through);

  HeldThrough held_;
  std::map<ReplicaId, Gaps> gaps_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_LOG_COVERAGE_H_

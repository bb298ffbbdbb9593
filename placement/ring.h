// Placement within a region: which nodes own a key.
//
// Each region has a consistent-hash ring. Every node puts `vnodes` tokens on
// it, derived from its id alone: token i is Hash64 of the 8 bytes of the id,
// big-endian, with seed i. Keys are placed by segment (util/hash.h), so all
// keys of an anti-entropy tree segment have the same owners: the owners of a
// segment are the first n distinct nodes met walking clockwise (increasing
// position, wrapping past the top) from the segment's first hash value,
// segment << (64 - kSegmentBits), starting at the first token at or after
// it. Every node that computes the ring from the same set of ids gets the
// same owners, whatever the order in which it learned of them.
//
// Adding a node only moves placements to it, and removing one only moves
// its placements away; in both cases the other owners keep their order.

#ifndef GEOKV_PLACEMENT_RING_H_
#define GEOKV_PLACEMENT_RING_H_

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "domain/replica_id.h"
#include "util/hash.h"

namespace geokv {

// The ring of one region's nodes. Immutable: membership changes build a new
// ring. Thread-safe.
class Ring {
 public:
  // Chosen with geokv-ring-bench over 1000 random id sets of 3 to 6 nodes:
  // with replication factor 2 or 3, no node's placements are more than 19%
  // from its fair share (64 tokens: 37%; 128: 24%); with factor 1, 26%,
  // about what placing 1024 segments at random gives (24%), so more tokens
  // would not help.
  static constexpr size_t kDefaultVnodes = 256;

  // Owners are precomputed for every segment up to this many (or the number
  // of nodes, when fewer); more are found by walking the ring.
  static constexpr size_t kPrecomputedOwners = 8;

  // A node's place on the ring.
  struct Token {
    uint64_t position;
    ReplicaId node;
  };

  // The ring of `nodes` (duplicates ignored), each with `vnodes` tokens.
  // REQUIRES: vnodes > 0 unless `nodes` is empty.
  explicit Ring(std::vector<ReplicaId> nodes, size_t vnodes = kDefaultVnodes);

  // The distinct nodes, sorted.
  const std::vector<ReplicaId>& nodes() const { return nodes_; }
  size_t vnodes() const { return vnodes_; }
  // Every token, sorted by position (then node, should two positions tie).
  const std::vector<Token>& tokens() const { return tokens_; }

  // The first min(n, nodes().size()) distinct nodes clockwise from
  // `segment`, in preference order; empty for an empty ring.
  // REQUIRES: segment < kSegments (else empty).
  std::vector<ReplicaId> SegmentOwners(size_t segment, size_t n) const;

  // The owners of `key`: those of its segment, SegmentOf(key).
  std::vector<ReplicaId> Owners(std::string_view key, size_t n) const;

  // Whether `node` is among SegmentOwners(segment, n), without building it.
  bool Owns(ReplicaId node, size_t segment, size_t n) const;

  // The segments `node` owns with replication factor n: kSegments entries,
  // all false for a node not in the ring.
  std::vector<bool> OwnedSegments(ReplicaId node, size_t n) const;

  // The fraction of the hash space for which `node` is the first owner,
  // counted by segment as keys are placed: its primary segments / kSegments.
  // 0 for a node not in the ring.
  double PrimaryShare(ReplicaId node) const;

 private:
  // Calls visit(owner) for the distinct owners of `segment` in preference
  // order until it returns false or min(n, nodes) were visited.
  template <typename Visit>
  void ForEachOwner(size_t segment, size_t n, Visit&& visit) const;

  std::vector<ReplicaId> nodes_;
  size_t vnodes_;
  std::vector<Token> tokens_;
  // The first min(kPrecomputedOwners, nodes) owners of segment s, at
  // [s * precomputed_, (s + 1) * precomputed_).
  size_t precomputed_ = 0;
  std::vector<ReplicaId> owners_;
  // Index in tokens_ of the first token at or after each segment's start.
  std::vector<uint32_t> first_token_;
};

// Each node's share of the (segment, owner) placements with replication
// factor n, relative to its fair share (1: fair), in nodes() order.
std::vector<double> RelativeLoads(const Ring& ring, size_t n);

// Of all (segment, owner) placements with replication factor n, the
// fraction that moved between `before` and `after`: the placements of
// `after` that `before` did not have, over all placements of `after` (0 when
// `after` is empty).
//
// The ideal, if every node held its fair share min(n, N) / N of the segments
// (N nodes), is what the new nodes and the survivors that must grow need:
// the sum over nodes a of `after` of max(0, f_after - f_before(a)), over
// min(n, N_after), where f is the fair share and f_before(a) is 0 for a node
// new in `after`. IdealMovedFraction computes it. For one node joining k,
// that is 1 / (k + 1) for every n; for one of k leaving, 1 / k when n < k,
// and 0 when n >= k, as then every node already held everything.
double MovedFraction(const Ring& before, const Ring& after, size_t n);

// The ideal of MovedFraction for these node sets (see above).
double IdealMovedFraction(const Ring& before, const Ring& after, size_t n);

}  // namespace geokv

#endif  // GEOKV_PLACEMENT_RING_H_

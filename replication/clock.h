// Clocks of peers: the estimator of one peer's offset from probes, and the
// judge that decides from every peer's offset whether this node's clock is
// off (then client writes are refused).

#ifndef GEOKV_REPLICATION_CLOCK_H_
#define GEOKV_REPLICATION_CLOCK_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "storage/store.h"

namespace geokv {

// Decides from the peers' clock offsets whether this node's clock is off.
// This node is off by the median of {0} and the peers' offsets (negated):
// with three or more nodes, the one whose clock is wrong is the one off the
// median; with two, each is off by half their difference.
class ClockJudge {
 public:
  explicit ClockJudge(std::chrono::milliseconds max_offset) : max_offset_(max_offset) {}

  // This node's clock minus the median clock; 0 without peer samples.
  static int64_t OwnOffset(const std::vector<int64_t>& peer_offsets);

  // OK, or Unavailable saying how far off the clock is.
  Status Judge(const std::vector<int64_t>& peer_offsets) const;

 private:
  std::chrono::milliseconds max_offset_;
};

// One peer's clock offset (its clock minus this node's), from probes: a
// probe sends this node's wall clock and gets the peer's back. A sample is
// remote - (sent + round trip / 2); of the last kSamples samples, the one
// with the shortest round trip counts (the least queueing).
//
// A plain value; not thread-safe.
class ClockEstimator {
 public:
  static constexpr size_t kSamples = 8;

  // Adds the sample of a probe sent at this node's wall clock `sent_wall_ms`
  // that came back after `rtt_ms` (measured on a monotonic clock) with the
  // peer's wall clock `remote_ms`. A negative round trip or an absurd remote
  // clock is ignored.
  void Record(int64_t remote_ms, int64_t sent_wall_ms, int64_t rtt_ms);

  // The estimate, or nullopt before the first sample (or after Reset).
  std::optional<int64_t> offset_ms() const { return offset_ms_; }

  // Forgets every sample (a new connection may take another path).
  void Reset() {
    samples_.clear();
    offset_ms_.reset();
  }

 private:
  std::vector<std::pair<int64_t, int64_t>> samples_;  // (round trip, offset) ms
  std::optional<int64_t> offset_ms_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_CLOCK_H_

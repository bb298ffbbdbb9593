#include "replication/clock.h"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace geokv {

int64_t ClockJudge::OwnOffset(const std::vector<int64_t>& peer_offsets) {
  // Clocks relative to this node's: 0 for itself, each peer's offset.
  std::vector<int64_t> clocks = peer_offsets;
  clocks.push_back(0);
  std::sort(clocks.begin(), clocks.end());
  size_t n = clocks.size();
  int64_t median = n % 2 == 1 ? clocks[n / 2] : (clocks[n / 2 - 1] + clocks[n / 2]) / 2;
  return -median;
}

Status ClockJudge::Judge(const std::vector<int64_t>& peer_offsets) const {
  int64_t off = OwnOffset(peer_offsets);
  if (std::abs(off) <= max_offset_.count()) return Status::OK();
  return Status::Unavailable("this node's clock is " + std::to_string(off) +
                             " ms off its peers' (limit --max-clock-offset " +
                             std::to_string(max_offset_.count()) +
                             " ms); writes are refused until it is back in range");
}

void ClockEstimator::Record(int64_t remote_ms, int64_t sent_wall_ms, int64_t rtt_ms) {
  constexpr int64_t kBound = int64_t{1} << 50;  // far beyond any real clock
  if (rtt_ms < 0 || remote_ms < -kBound || remote_ms > kBound) return;
  samples_.push_back({rtt_ms, remote_ms - (sent_wall_ms + rtt_ms / 2)});
  if (samples_.size() > kSamples) samples_.erase(samples_.begin());
  offset_ms_ = std::min_element(samples_.begin(), samples_.end())->second;
}

}  // namespace geokv

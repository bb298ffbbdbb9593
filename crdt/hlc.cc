#include "crdt/hlc.h"

#include <algorithm>
#include <chrono>

namespace geokv {
namespace {

class SystemClock : public WallClock {
 public:
  uint64_t NowMillis() override {
    auto now = std::chrono::system_clock::now().time_since_epoch();
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(now).count());
  }
};

}  // namespace

WallClock* WallClock::System() {
  static SystemClock* clock = new SystemClock();
  return clock;
}

uint64_t ManualClock::NowMillis() {
  std::lock_guard<std::mutex> l(mu_);
  return now_ms_;
}

void ManualClock::Set(uint64_t ms) {
  std::lock_guard<std::mutex> l(mu_);
  now_ms_ = ms;
}

void ManualClock::Advance(int64_t delta_ms) {
  std::lock_guard<std::mutex> l(mu_);
  now_ms_ = static_cast<uint64_t>(static_cast<int64_t>(now_ms_) + delta_ms);
}

std::string DescribeStamp(const HlcTimestamp& ts) {
  return std::to_string(ts.wall_ms) + "." + std::to_string(ts.logical);
}

HlcTimestamp HybridClock::Now() {
  uint64_t pt = std::min(wall_->NowMillis(), kMaxHlcWallMs);
  std::lock_guard<std::mutex> l(mu_);
  if (pt > last_.wall_ms) {
    last_ = HlcTimestamp{pt, 0};
  } else if (last_.logical == UINT32_MAX) {
    // Carry into the wall part rather than wrap: the clock must not go back.
    last_ = HlcTimestamp{last_.wall_ms + 1, 0};
  } else {
    ++last_.logical;
  }
  return last_;
}

Status HybridClock::Update(const HlcTimestamp& received) {
  if (!received.IsValid()) {
    return Status::InvalidArgument("timestamp " + DescribeStamp(received) +
                                   " has a wall part above the maximum " +
                                   std::to_string(kMaxHlcWallMs) + " ms");
  }
  // Now() issues timestamps greater than last_, so raising last_ suffices.
  std::lock_guard<std::mutex> l(mu_);
  if (received > last_) last_ = received;
  return Status::OK();
}

HlcTimestamp HybridClock::Last() {
  std::lock_guard<std::mutex> l(mu_);
  return last_;
}

}  // namespace geokv

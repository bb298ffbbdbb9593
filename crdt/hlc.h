// Hybrid logical clocks (Kulkarni et al., 2014).
//
// A timestamp is (wall milliseconds, logical counter), ordered
// lexicographically. A HybridClock never goes backwards: when the wall clock
// steps back or stands still, the logical counter advances instead, and every
// timestamp received from another node pushes the clock past it, so a
// timestamp issued after receiving t is greater than t.
//
// A valid timestamp's wall part is at most kMaxHlcWallMs, far below 2^64:
// stamps above it are refused wherever they are decoded or received, so no
// received stamp can bring the clock near the end of its range, and the
// clock never wraps.

#ifndef GEOKV_CRDT_HLC_H_
#define GEOKV_CRDT_HLC_H_

#include <cstdint>
#include <mutex>
#include <string>
#include <tuple>

#include "util/status.h"

namespace geokv {

// The greatest wall part of a valid timestamp: 2^47 - 1 ms after the Unix
// epoch, in the year 6429. A wall clock reading above it counts as it.
constexpr uint64_t kMaxHlcWallMs = (uint64_t{1} << 47) - 1;

struct HlcTimestamp {
  uint64_t wall_ms = 0;
  uint32_t logical = 0;

  bool IsZero() const { return wall_ms == 0 && logical == 0; }
  // Whether the wall part is at most kMaxHlcWallMs.
  bool IsValid() const { return wall_ms <= kMaxHlcWallMs; }
  friend bool operator<(const HlcTimestamp& a, const HlcTimestamp& b) {
    return std::tie(a.wall_ms, a.logical) < std::tie(b.wall_ms, b.logical);
  }
  friend bool operator==(const HlcTimestamp& a, const HlcTimestamp& b) {
    return a.wall_ms == b.wall_ms && a.logical == b.logical;
  }
  friend bool operator!=(const HlcTimestamp& a, const HlcTimestamp& b) { return !(a == b); }
  friend bool operator>(const HlcTimestamp& a, const HlcTimestamp& b) { return b < a; }
  friend bool operator<=(const HlcTimestamp& a, const HlcTimestamp& b) { return !(b < a); }
};

// "wall.logical", e.g. "1700000000000.3", for messages.
std::string DescribeStamp(const HlcTimestamp& ts);

// The source of physical time. Implementations must be thread-safe.
class WallClock {
 public:
  virtual ~WallClock() = default;
  // Milliseconds since the Unix epoch. May step backwards.
  virtual uint64_t NowMillis() = 0;

  // The process-wide system clock (CLOCK_REALTIME). Never deleted.
  static WallClock* System();
};

// A wall clock that moves only when told to; for tests. Thread-safe.
class ManualClock : public WallClock {
 public:
  explicit ManualClock(uint64_t start_ms = 1) : now_ms_(start_ms) {}
  uint64_t NowMillis() override;
  void Set(uint64_t ms);
  void Advance(int64_t delta_ms);  // may be negative: the clock steps back

 private:
  std::mutex mu_;
  uint64_t now_ms_;
};

// Thread-safe.
class HybridClock {
 public:
  // `wall` is not owned and must outlive the HybridClock.
  explicit HybridClock(WallClock* wall) : wall_(wall) {}

  // A timestamp greater than every one this clock issued or accepted
  // before. Its wall part exceeds kMaxHlcWallMs only after 2^32 stamps
  // issued within the last valid millisecond, and it never wraps.
  HlcTimestamp Now();

  // Advances the clock past `received`, a timestamp seen from another node or
  // read back from disk. InvalidArgument, and the clock unchanged, when
  // `received` is not valid (IsValid). Bounds on how far ahead of the wall
  // clock a received stamp may be are the receiver's to enforce.
  [[nodiscard]] Status Update(const HlcTimestamp& received);

  // The greatest timestamp issued or received so far, without advancing.
  HlcTimestamp Last();

  WallClock* wall() const { return wall_; }

 private:
  WallClock* const wall_;
  std::mutex mu_;
  HlcTimestamp last_;
};

}  // namespace geokv

#endif  // GEOKV_CRDT_HLC_H_

// LogLimiter: lets a repeated message through at most once per interval and
// counts the ones it held back, so that a flood of refusals costs one log
// line per interval and the line still says how many there were.

#ifndef GEOKV_UTIL_LOG_LIMITER_H_
#define GEOKV_UTIL_LOG_LIMITER_H_

#include <chrono>
#include <cstdint>

namespace geokv {

// Thread safety: none; one thread at a time.
class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  // Default: one message every 10 s.
  explicit LogLimiter(Clock::duration interval = std::chrono::seconds(10))
      : interval_(interval) {}

  // Whether a message due at `now` is to be logged. If so, *held_back is
  // how many were not since the last one logged; if not, this one is
  // counted among them.
  bool Allow(Clock::time_point now, uint64_t* held_back) {
    if (logged_once_ && now - last_ < interval_) {
      ++held_back_;
      return false;
    }
    *held_back = held_back_;
    held_back_ = 0;
    last_ = now;
    logged_once_ = true;
    return true;
  }

 private:
  const Clock::duration interval_;
  bool logged_once_ = false;
  Clock::time_point last_{};
  uint64_t held_back_ = 0;
};

}  // namespace geokv

#endif  // GEOKV_UTIL_LOG_LIMITER_H_

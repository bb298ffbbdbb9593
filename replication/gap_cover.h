// Gap covering: a token read kept out by a gap in this node's coverage
// (log_coverage.h) asks for its segment to be brought in step with the
// nodes that may hold the missing entries. At most one round per segment
// runs at a time, and the next no sooner than kRetry after it ended; every
// sync that ends, and kRetry after a round, wakes the waits so that those
// still kept out ask again.
//
// Thread safety: loop thread only.

#ifndef GEOKV_REPLICATION_GAP_COVER_H_
#define GEOKV_REPLICATION_GAP_COVER_H_

#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "monitoring/metrics.h"
#include "storage/store.h"

namespace geokv {

class GapCover final : private kj::TaskSet::ErrorHandler {
 public:
  static constexpr kj::Duration kRetry = 200 * kj::MILLISECONDS;

  struct Hooks {
    // The connected nodes a round of (origin, segment) syncs with.
    std::function<std::vector<ReplicaId>(ReplicaId origin, size_t segment)> peers;
    // Brings `segment` in step with `node`, both ways.
    std::function<kj::Promise<void>(ReplicaId node, uint32_t segment)> sync;
    // Wakes the waits (TokenVisibility::Committed).
    std::function<void()> wake;
  };

  // `timer` and `metrics` must outlive this; its rounds end with it.
  GapCover(kj::Timer& timer, Metrics& metrics, Hooks hooks)
      : timer_(timer), metrics_(metrics), hooks_(std::move(hooks)), tasks_(*this) {}

  // Starts a round for the gap of `origin` in `segment`, unless one runs
  // there or ended less than kRetry ago.
  void Cover(ReplicaId origin, size_t segment);

 private:
  void taskFailed(kj::Exception&& e) override;

  struct Round {
    bool running = false;
    kj::TimePoint next = kj::origin<kj::TimePoint>();
  };
  kj::Timer& timer_;
  Metrics& metrics_;
  Hooks hooks_;
  std::map<size_t, Round> rounds_;
  kj::TaskSet tasks_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_GAP_COVER_H_

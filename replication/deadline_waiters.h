// Waits on a condition of the loop's state, each with a deadline: every
// wait is checked when it starts and again at each Notify(), and ends with
// its value once ready, or with what its expiry says at its deadline.
//
// Thread safety: loop thread only.

#ifndef GEOKV_REPLICATION_DEADLINE_WAITERS_H_
#define GEOKV_REPLICATION_DEADLINE_WAITERS_H_

#include <kj/async.h>
#include <kj/timer.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace geokv {

template <typename T>
class DeadlineWaiters {
 public:
  // `timer` must outlive this.
  explicit DeadlineWaiters(kj::Timer& timer) : timer_(timer) {}

  // Resolves with `ready()`'s value once it has one (now or at a Notify()),
  // else with `expired()` after `timeout`. REQUIRES: !Stopped().
  kj::Promise<T> Wait(std::function<std::optional<T>()> ready, std::function<T()> expired,
                      kj::Duration timeout) {
    if (std::optional<T> now = ready()) return kj::mv(*now);
    auto paf = kj::newPromiseAndFulfiller<T>();
    auto waiter = std::make_shared<Waiter>(Waiter{std::move(ready), kj::mv(paf.fulfiller)});
    waiters_.push_back(waiter);
    auto at_deadline = timer_.afterDelay(timeout).then(
        [this, waiter, expired = std::move(expired)] {
          waiters_.erase(std::remove(waiters_.begin(), waiters_.end(), waiter), waiters_.end());
          return expired();
        });
    return canceler_.wrap(paf.promise.exclusiveJoin(kj::mv(at_deadline)));
  }

  // The state changed: ends the waits now ready.
  void Notify() {
    if (waiters_.empty()) return;
    std::vector<std::shared_ptr<Waiter>> still;
    for (auto& w : waiters_) {
      if (!w->fulfiller->isWaiting()) continue;
      if (std::optional<T> value = w->ready()) {
        w->fulfiller->fulfill(kj::mv(*value));
      } else {
        still.push_back(w);
      }
    }
    waiters_ = std::move(still);
  }

  // Ends every wait: with `value` when given, else by cancelling it (its
  // promise rejects, DISCONNECTED).
  void Stop(std::optional<T> value) {
    stopped_ = true;
    if (value) {
      // Not cancelled as well: that would reject what was just fulfilled.
      for (auto& w : waiters_) w->fulfiller->fulfill(T(*value));
    } else {
      canceler_.cancel("node is shutting down");
    }
    waiters_.clear();
  }
  bool Stopped() const { return stopped_; }

 private:
  struct Waiter {
    std::function<std::optional<T>()> ready;
    kj::Own<kj::PromiseFulfiller<T>> fulfiller;
  };

  kj::Timer& timer_;
  bool stopped_ = false;
  std::vector<std::shared_ptr<Waiter>> waiters_;
  kj::Canceler canceler_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_DEADLINE_WAITERS_H_

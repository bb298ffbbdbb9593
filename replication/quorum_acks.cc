#include "replication/quorum_acks.h"

#include <algorithm>

#include "replication/peer_wire.h"

namespace geokv {

size_t QuorumAcks::Count(const Waiter& w) const {
  size_t n = 0;
  for (ReplicaId id : w.nodes) {
    if (holds_(id, w.position, w.segment)) ++n;
  }
  return n;
}

kj::Promise<size_t> QuorumAcks::WaitAcked(std::vector<ReplicaId> nodes, uint64_t position,
                                          size_t segment, size_t needed,
                                          std::chrono::milliseconds timeout) {
  auto waiter = std::make_shared<Waiter>(Waiter{std::move(nodes), position, segment, needed, {}});
  size_t now = Count(*waiter);
  if (now >= needed || stopped_) return now;
  auto paf = kj::newPromiseAndFulfiller<size_t>();
  waiter->fulfiller = kj::mv(paf.fulfiller);
  waiters_.push_back(waiter);
  auto expired = timer_.afterDelay(ToKj(timeout)).then([this, waiter] {
    waiters_.erase(std::remove(waiters_.begin(), waiters_.end(), waiter), waiters_.end());
    return Count(*waiter);
  });
  return canceler_.wrap(paf.promise.exclusiveJoin(kj::mv(expired)));
}

void QuorumAcks::AckAdvanced() {
  if (waiters_.empty()) return;
  std::vector<std::shared_ptr<Waiter>> still;
  for (auto& w : waiters_) {
    if (!w->fulfiller->isWaiting()) continue;
    size_t n = Count(*w);
    if (n >= w->needed) {
      w->fulfiller->fulfill(kj::mv(n));
    } else {
      still.push_back(w);
    }
  }
  waiters_ = std::move(still);
}

void QuorumAcks::Stop() {
  stopped_ = true;
  canceler_.cancel("node is shutting down");
  waiters_.clear();
}

}  // namespace geokv

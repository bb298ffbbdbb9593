#include "server/leave.h"

#include <spdlog/spdlog.h>

#include <string>

namespace geokv {

Leaver::Leaver(Gossip* gossip, Replicator& replicator, kj::Timer& timer, kj::Duration deadline)
    : gossip_(gossip), replicator_(replicator), timer_(timer), deadline_(deadline) {}

Status Leaver::Leave() {
  if (gossip_ == nullptr) {
    return Status::Unavailable("this node runs no gossip (--gossip-listen): it is its region's "
                               "only member, and its keys have no other owner to go to");
  }
  if (leaving_) return Status::OK();
  leaving_ = true;
  give_up_at_ = timer_.now() + deadline_;
  report_at_ = timer_.now() + kReportEvery;
  spdlog::info("leaving the cluster: announcing it, then handing every key over (within {} s)",
               deadline_ / kj::SECONDS);
  gossip_->Leave(std::chrono::milliseconds(0));
  watch_ = Watch().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("leaving failed: {}", e.getDescription().cStr());
  });
  return Status::OK();
}

kj::Promise<void> Leaver::Left() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  left_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

kj::Promise<void> Leaver::Watch() {
  return timer_.afterDelay(200 * kj::MILLISECONDS).then([this]() -> kj::Promise<void> {
    if (replicator_.HoldsOnlyOwned() && replicator_.LogDelivered()) {
      if (left_) left_->fulfill();
      return kj::READY_NOW;
    }
    const kj::TimePoint now = timer_.now();
    if (now >= give_up_at_) {
      failed_ = Status::Timeout(
          "leaving did not finish within --leave-timeout (" +
          std::to_string(deadline_ / kj::SECONDS) + " s); still waiting for: " +
          replicator_.LeaveWaitingFor());
      spdlog::error("{}", failed_.ToString());
      if (left_) left_->fulfill();
      return kj::READY_NOW;
    }
    if (now >= report_at_) {
      report_at_ = now + kReportEvery;
      spdlog::info("leaving: waiting for {}", replicator_.LeaveWaitingFor());
    }
    return Watch();
  });
}

kj::Promise<void> Leaver::Delivered(GroupCommitter& committer, kj::TimePoint deadline) {
  if ((committer.pending() == 0 && replicator_.LogDelivered()) || timer_.now() >= deadline) {
    return kj::READY_NOW;
  }
  return timer_.afterDelay(50 * kj::MILLISECONDS).then([this, &committer, deadline] {
    return Delivered(committer, deadline);
  });
}

}  // namespace geokv

#include "server/membership_feed.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace geokv {

void GossipFeed::Changed() {
  std::lock_guard<std::mutex> lock(mu_);
  if (waiting_) {
    waiting_->fulfill();
    waiting_ = nullptr;
  } else {
    pending_ = true;
  }
}

kj::Promise<void> GossipFeed::Next() {
  std::lock_guard<std::mutex> lock(mu_);
  if (pending_) {
    pending_ = false;
    return kj::READY_NOW;
  }
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  waiting_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

MembershipFollower::MembershipFollower(Gossip& gossip, ClusterView& view,
                                       std::function<void(const char*)> joined,
                                       std::function<void()> placed)
    : gossip_(gossip), view_(view), joined_(std::move(joined)), placed_(std::move(placed)) {}

void MembershipFollower::Start() {
  gossip_.OnChange([this] { feed_.Changed(); });
  following_ = Follow().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("following membership stopped: {}", e.getDescription().cStr());
  });
}

kj::Promise<void> MembershipFollower::Follow() {
  std::vector<Member> members = gossip_.Members();
  const ReplicaId self = view_.self_id();
  if (!view_.joined() && std::any_of(members.begin(), members.end(), [&](const Member& m) {
        return m.id != self && m.state == MemberState::kAlive;
      })) {
    joined_("heard from another member");
  }
  if (view_.SetLocal(std::move(members))) placed_();
  return feed_.Next().then([this] { return Follow(); });
}

}  // namespace geokv

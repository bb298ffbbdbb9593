#include "replication/token_visibility.h"

#include <algorithm>

#include "replication/peer_wire.h"

namespace geokv {
namespace {

std::string Describe(const CausalToken& t) {
  return "write " + std::to_string(t.seq) + " of node " + Hex(t.origin);
}

}  // namespace

bool TokenVisibility::Visible(const std::vector<CausalToken>& tokens,
                              std::optional<size_t> segment) const {
  return std::all_of(tokens.begin(), tokens.end(), [this, segment](const CausalToken& t) {
    return t.seq <= Through(t.origin, segment);
  });
}

void TokenVisibility::CoverGaps(const std::vector<CausalToken>& tokens, size_t segment) const {
  if (!cover_) return;
  for (const CausalToken& t : tokens) {
    if (t.seq <= coverage_.Held(t.origin) && t.seq > coverage_.Covered(t.origin, segment)) {
      cover_(t.origin, segment);
    }
  }
}

kj::Promise<Status> TokenVisibility::WaitVisible(std::vector<CausalToken> tokens,
                                                 std::optional<size_t> segment,
                                                 std::chrono::milliseconds timeout) {
  if (Visible(tokens, segment)) return Status::OK();
  if (waiters_.Stopped()) return Status::Unavailable("node is shutting down");
  auto shared = std::make_shared<std::vector<CausalToken>>(std::move(tokens));
  return waiters_.Wait(
      [this, shared, segment]() -> std::optional<Status> {
        if (Visible(*shared, segment)) return Status::OK();
        if (segment) CoverGaps(*shared, *segment);  // now, and at every Notify
        return std::nullopt;
      },
      [this, shared, segment, timeout] {
        for (const CausalToken& t : *shared) {
          const uint64_t held = coverage_.Held(t.origin);
          const uint64_t through = Through(t.origin, segment);
          if (t.seq <= through) continue;
          std::string why = "waited " + std::to_string(timeout.count()) + " ms for the " +
                            Describe(t) + "; this node holds that node's log through " +
                            std::to_string(held);
          if (t.seq <= held) {
            why += ", but may miss its entries of segment " + std::to_string(*segment) +
                   " after " + std::to_string(through) +
                   " (left out while this node did not own the segment, and no node it could "
                   "reach has brought them yet)";
          }
          return Status::Timeout(why);
        }
        return Status::OK();
      },
      ToKj(timeout));
}

void TokenVisibility::Committed() { waiters_.Notify(); }

void TokenVisibility::Stop() {
  if (waiters_.Stopped()) return;
  waiters_.Stop(Status::Unavailable("node is shutting down"));
}

kj::Promise<bool> WaitRemoteVisible(kj::Timer& timer,
                                    std::function<kj::Maybe<peer::PeerSession::Client>()> session,
                                    std::vector<CausalToken> tokens, kj::TimePoint deadline) {
  if (timer.now() >= deadline) return false;
  auto retry = [&timer, session, tokens, deadline]() mutable {
    return timer.afterDelay(50 * kj::MILLISECONDS)
        .then([&timer, session = std::move(session), tokens = std::move(tokens), deadline]() mutable {
          return WaitRemoteVisible(timer, std::move(session), std::move(tokens), deadline);
        });
  };
  KJ_IF_MAYBE(s, session()) {
    auto req = s->waitVisibleRequest();
    auto list = req.initTokens(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) list.set(i, AsData(EncodeToken(tokens[i])));
    auto left = (deadline - timer.now()) / kj::MILLISECONDS;
    req.setTimeoutMs(static_cast<uint32_t>(std::min<int64_t>(left, UINT32_MAX)));
    return timer.timeoutAfter(deadline - timer.now() + 1 * kj::SECONDS, req.send())
        .then([](auto&& resp) -> kj::Promise<bool> { return resp.getVisible(); },
              [retry](kj::Exception&&) mutable { return retry(); });
  }
  return retry();
}

std::vector<std::string> MissingRegions(const std::vector<std::string>& regions,
                                        const kj::Array<bool>& done) {
  std::vector<std::string> missing;
  for (size_t i = 0; i < done.size(); ++i) {
    if (!done[i]) missing.push_back(regions[i]);
  }
  return missing;
}

}  // namespace geokv

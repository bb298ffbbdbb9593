#include "server/acceptor.h"

#include <spdlog/spdlog.h>

#include <utility>

namespace geokv {

Acceptor::Acceptor(kj::Own<kj::ConnectionReceiver> receiver, kj::Timer& timer, Serve serve,
                   std::string what, std::shared_ptr<ConnectionSlots> slots, Wrap wrap)
    : receiver_(kj::mv(receiver)),
      timer_(timer),
      serve_(std::move(serve)),
      what_(std::move(what)),
      slots_(std::move(slots)),
      port_(receiver_->getPort()),
      wrap_(std::move(wrap)),
      wrapping_(*this) {
  accepting_ = Loop().eagerlyEvaluate([this](kj::Exception&& e) {
    spdlog::error("accepting {} connections failed: {}", what_, e.getDescription().cStr());
  });
}

void Acceptor::Stop() {
  accepting_ = nullptr;
  receiver_ = nullptr;
}

kj::Promise<void> Acceptor::Loop() {
  return receiver_->acceptAuthenticated().then(
      [this](kj::AuthenticatedStream accepted) {
        std::optional<ConnectionSlots::Slot> slot = ConnectionSlots::Take(slots_);
        if (slot && wrap_) {
          wrapping_.add(wrap_(kj::mv(accepted))
                            .then([this, slot = std::move(*slot)](
                                      kj::AuthenticatedStream wrapped) mutable {
                              serve_(kj::mv(wrapped), std::move(slot));
                            }));
        } else if (slot) {
          serve_(kj::mv(accepted), std::move(*slot));
        } else {
          // Dropping the stream closes it.
          uint64_t held_back = 0;
          if (refusals_logged_.Allow(LogLimiter::Clock::now(), &held_back)) {
            spdlog::warn("refusing a {} connection: {} connections open (max-connections); {} "
                         "more refused since the last such line",
                         what_, slots_->open(), held_back);
          }
        }
        return Loop();
      },
      [this](kj::Exception&& e) {
        // Open connections will close and free descriptors.
        spdlog::error("accepting a {} connection failed (retrying in 100 ms): {}", what_,
                      e.getDescription().cStr());
        return timer_.afterDelay(100 * kj::MILLISECONDS).then([this] { return Loop(); });
      });
}

void Acceptor::taskFailed(kj::Exception&& e) {
  // A stranger's failed handshake is routine; the slot went with it.
  uint64_t held_back = 0;
  if (failures_logged_.Allow(LogLimiter::Clock::now(), &held_back)) {
    spdlog::info("closing a {} connection: {}; {} more closed since the last such line", what_,
                 e.getDescription().cStr(), held_back);
  }
}

}  // namespace geokv

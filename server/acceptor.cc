#include "server/acceptor.h"

#include <spdlog/spdlog.h>

#include <utility>

namespace geokv {

Acceptor::Acceptor(kj::Own<kj::ConnectionReceiver> receiver, kj::Timer& timer, Serve serve,
                   std::string what, std::shared_ptr<ConnectionSlots> slots)
    : receiver_(kj::mv(receiver)),
      timer_(timer),
      serve_(std::move(serve)),
      what_(std::move(what)),
      slots_(std::move(slots)),
      port_(receiver_->getPort()) {
  accepting_ = Loop().eagerlyEvaluate([this](kj::Exception&& e) {
    spdlog::error("accepting {} connections failed: {}", what_, e.getDescription().cStr());
  });
}

void Acceptor::Stop() {
  accepting_ = nullptr;
  receiver_ = nullptr;
}

kj::Promise<void> Acceptor::Loop() {
  return receiver_->accept().then(
      [this](kj::Own<kj::AsyncIoStream> stream) {
        std::optional<ConnectionSlots::Slot> slot = ConnectionSlots::Take(slots_);
        if (slot) {
          serve_(kj::mv(stream), std::move(*slot));
        } else {
          // Dropping the stream closes it.
          spdlog::warn("refusing a {} connection: {} connections open (max-connections)", what_,
                       slots_->open());
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

}  // namespace geokv

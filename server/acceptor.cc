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

std::optional<ConnectionSlots::Slot> ConnectionSlots::Take(
    const std::shared_ptr<ConnectionSlots>& slots, const std::string& address, std::string* full) {
  if (slots->open_ >= slots->max_) {
    *full = std::to_string(slots->open_) + " connections open (max-connections)";
    return std::nullopt;
  }
  size_t& from_address = slots->by_address_[address];
  if (slots->max_per_address_ != 0 && from_address >= slots->max_per_address_) {
    *full = std::to_string(from_address) + " connections open from " + address +
            " (max-connections-per-address)";
    return std::nullopt;
  }
  ++from_address;
  ++slots->open_;
  return Slot(slots, address);
}

std::string ClientHost(kj::PeerIdentity& identity) {
  std::string address = "?";
  KJ_IF_MAYBE(network, kj::dynamicDowncastIfAvailable<kj::NetworkPeerIdentity>(identity)) {
    address = network->getAddress().toString().cStr();
  }
  const size_t colon = address.rfind(':');
  if (colon != std::string::npos && colon > 0) address.resize(colon);
  return address;
}

kj::Promise<void> Acceptor::Loop() {
  return receiver_->acceptAuthenticated().then(
      [this](kj::AuthenticatedStream accepted) {
        std::string full;
        std::optional<ConnectionSlots::Slot> slot =
            ConnectionSlots::Take(slots_, ClientHost(*accepted.peerIdentity), &full);
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
            spdlog::warn("refusing a {} connection: {}; {} more refused since the last such "
                         "line",
                         what_, full, held_back);
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

// Accepts the connections of a listening socket on the event loop and hands
// each to a callback with a slot of its port's connection limit; a
// connection beyond the limit is closed at once, and an accept that fails
// (out of file descriptors, most likely) is logged and retried after
// 100 ms. A connection may be wrapped (a TLS handshake) before it is
// served; it holds its slot while that runs. Shared by the client API, peer
// API and Redis ports.

#ifndef GEOKV_SERVER_ACCEPTOR_H_
#define GEOKV_SERVER_ACCEPTOR_H_

#include <kj/async-io.h>

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "util/log_limiter.h"

namespace geokv {

// The connections open on the ports that share one limit (the client API
// and the Redis port share --max-connections), in all and per client
// address (host, without the port). Loop thread only.
class ConnectionSlots {
 public:
  // `max_per_address` 0: no limit per address.
  explicit ConnectionSlots(size_t max, size_t max_per_address = 0)
      : max_(max), max_per_address_(max_per_address) {}
  size_t open() const { return open_; }

  // One connection's slot, freed when it goes.
  class Slot {
   public:
    Slot(Slot&& other) noexcept
        : slots_(std::exchange(other.slots_, nullptr)), address_(std::move(other.address_)) {}
    Slot& operator=(Slot&&) = delete;
    ~Slot() {
      if (slots_ == nullptr) return;
      --slots_->open_;
      auto it = slots_->by_address_.find(address_);
      if (it != slots_->by_address_.end() && --it->second == 0) slots_->by_address_.erase(it);
    }

   private:
    friend class ConnectionSlots;
    Slot(std::shared_ptr<ConnectionSlots> slots, std::string address)
        : slots_(std::move(slots)), address_(std::move(address)) {}
    std::shared_ptr<ConnectionSlots> slots_;
    std::string address_;
  };

  // A slot for a connection from `address`, or nullopt (and which limit, in
  // *full) when `max` are open, or `max_per_address` from that address.
  static std::optional<Slot> Take(const std::shared_ptr<ConnectionSlots>& slots,
                                  const std::string& address, std::string* full);

 private:
  const size_t max_;
  const size_t max_per_address_;
  size_t open_ = 0;
  std::map<std::string, size_t> by_address_;
};

// The host of the network address a connection came from ("?" when the
// stream has none), for the limit per address.
std::string ClientHost(kj::PeerIdentity& identity);

// Lives on the event loop's thread.
class Acceptor : private kj::TaskSet::ErrorHandler {
 public:
  // The stream is served with who is at the other end (a TLS certificate
  // when `wrap` checked one, else the network address).
  using Serve = std::function<void(kj::AuthenticatedStream, ConnectionSlots::Slot)>;
  // Turns an accepted connection into the one served, e.g. a TLS handshake
  // (whose timeout it applies); a connection whose wrap fails is closed and
  // its slot freed.
  using Wrap = std::function<kj::Promise<kj::AuthenticatedStream>(kj::AuthenticatedStream)>;

  // Starts accepting. `timer` must outlive the acceptor; `what` names the
  // port in logs; `slots` is the port's connection limit; `wrap` nullptr
  // serves connections as accepted.
  Acceptor(kj::Own<kj::ConnectionReceiver> receiver, kj::Timer& timer, Serve serve,
           std::string what, std::shared_ptr<ConnectionSlots> slots, Wrap wrap = nullptr);

  // The port the socket is bound to (useful after binding port 0).
  unsigned port() const { return port_; }
  // Closes the listening socket.
  void Stop();

 private:
  kj::Promise<void> Loop();
  void taskFailed(kj::Exception&& e) override;

  kj::Own<kj::ConnectionReceiver> receiver_;
  kj::Timer& timer_;
  const Serve serve_;
  const std::string what_;
  const std::shared_ptr<ConnectionSlots> slots_;
  const unsigned port_;
  const Wrap wrap_;
  kj::TaskSet wrapping_;
  kj::Maybe<kj::Promise<void>> accepting_;
  // At most a line every 10 s each: strangers can open connections at will.
  LogLimiter refusals_logged_;
  LogLimiter failures_logged_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_ACCEPTOR_H_

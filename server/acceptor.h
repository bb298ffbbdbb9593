// Accepts the connections of a listening socket on the event loop and hands
// each to a callback; an accept that fails (out of file descriptors, most
// likely) is logged and retried after 100 ms. Shared by the client API, peer
// API and Redis ports.

#ifndef GEOKV_SERVER_ACCEPTOR_H_
#define GEOKV_SERVER_ACCEPTOR_H_

#include <kj/async-io.h>

#include <functional>
#include <string>

namespace geokv {

// Lives on the event loop's thread.
class Acceptor {
 public:
  using Serve = std::function<void(kj::Own<kj::AsyncIoStream>)>;

  // Starts accepting. `timer` must outlive the acceptor; `what` names the
  // port in logs.
  Acceptor(kj::Own<kj::ConnectionReceiver> receiver, kj::Timer& timer, Serve serve,
           std::string what);

  // The port the socket is bound to (useful after binding port 0).
  unsigned port() const { return port_; }
  // Closes the listening socket.
  void Stop();

 private:
  kj::Promise<void> Loop();

  kj::Own<kj::ConnectionReceiver> receiver_;
  kj::Timer& timer_;
  const Serve serve_;
  const std::string what_;
  const unsigned port_;
  kj::Maybe<kj::Promise<void>> accepting_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_ACCEPTOR_H_

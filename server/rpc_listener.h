// Serves a Cap'n Proto bootstrap capability (one per connection, or one for
// all) to every connection a listening socket accepts, within limits:
// connections beyond max_connections are closed at once, messages beyond
// max_message_bytes end their connection, and a connection stops being read
// while its unanswered calls exceed max_message_bytes, while its replies
// waiting to be sent do, or until its session is ready for more calls
// (backpressure both ways). A connection that sends no message for
// idle_timeout, or takes longer than read_timeout (and a second per 64 KiB)
// to send one, is closed, freeing its slot. A connection that sends
// garbage or disconnects mid-call ends alone; the listener goes on, and an
// accept that fails (out of file descriptors) is retried.

#ifndef GEOKV_SERVER_RPC_LISTENER_H_
#define GEOKV_SERVER_RPC_LISTENER_H_

#include <capnp/capability.h>
#include <kj/async-io.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <string>

#include "server/acceptor.h"

namespace geokv {

struct RpcListenerOptions {
  size_t max_connections = 1024;
  // The limit shared with another port; default (nullptr): its own of
  // max_connections.
  std::shared_ptr<ConnectionSlots> slots;
  size_t max_message_bytes = 64 << 20;
  // How long a connection may send nothing between messages, and how long
  // one message may take (server/read_deadlines.h); zero: no limit.
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
  std::chrono::milliseconds read_timeout{std::chrono::seconds(30)};
  // What each connection is wrapped in (TLS); default (nullptr): none.
  Acceptor::Wrap wrap;
  // Take packed connections besides plain ones (util/packed_stream.h;
  // inside TLS): the peer port's; and compressed ones too.
  bool packed = false;
  bool compressed = false;
};

// What one connection is served.
struct RpcSession {
  capnp::Capability::Client bootstrap;
  // Before each read: nullptr when the connection may be read now, else a
  // promise that resolves once it may (its calls under way, whose replies
  // are not queued yet, leave room for more). Default (empty): always now.
  std::function<kj::Maybe<kj::Promise<void>>()> wait;
  // Whether calls of the connection are under way: it is not idle then,
  // whatever it sends. Default (empty): never.
  std::function<bool()> busy;
};
// Makes the session of each connection accepted, knowing who is at the
// other end (util/tls.h's CertifiedName reads a TLS certificate's name).
using RpcSessionFactory = std::function<RpcSession(kj::PeerIdentity& peer)>;

// Lives on the event loop's thread.
class RpcListener : private kj::TaskSet::ErrorHandler {
 public:
  // `timer` (for retrying failed accepts) must outlive the listener.
  RpcListener(kj::Own<kj::ConnectionReceiver> receiver, RpcSessionFactory sessions,
              kj::Timer& timer, RpcListenerOptions options);
  // Every connection bootstraps the same capability.
  RpcListener(kj::Own<kj::ConnectionReceiver> receiver, capnp::Capability::Client bootstrap,
              kj::Timer& timer, RpcListenerOptions options);
  ~RpcListener();

  // The port the socket is bound to (useful after binding port 0).
  unsigned port() const { return acceptor_.port(); }

  // Closes the listening socket; open connections are served on.
  void StopAccepting();

  // Whether every reply given so far has been written to its socket.
  bool RepliesSent();

 private:
  struct Connection;

  void Serve(kj::AuthenticatedStream accepted, ConnectionSlots::Slot slot);
  void taskFailed(kj::Exception&& exception) override;

  RpcSessionFactory sessions_;
  kj::Timer& timer_;
  const RpcListenerOptions options_;
  std::list<kj::Own<Connection>> connections_;
  kj::TaskSet tasks_;
  Acceptor acceptor_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_RPC_LISTENER_H_

// More event loops for the client API (--client-loops N): N - 1 threads,
// each with its own event loop and its own listening socket on the client
// address (SO_REUSEPORT: the kernel spreads new connections over the node's
// loop and these), serve client connections: they read and write the
// sockets, run Cap'n Proto's RPC machinery, and hand each call to the
// node's loop as two flat messages (the parameters there, the results
// back, through kj::Executor), where the connection's KvService runs it as
// it runs a call of its own connections. What moves off the node's loop is
// the socket I/O and the RPC layer's work per message; the coordinator,
// the replicator and the store stay single-threaded where they were.
//
// What such a loop serves is the node's own client API, minus what needs
// the node's loop per connection: no TLS and no users (the node refuses
// --client-loops above 1 with either, docs/configuration.md). Limits apply
// per loop: each takes up to --max-connections connections of its own.
//
// Construction, StopAccepting, Stop and destruction happen on the node's
// loop, and destruction only after Stop's promise resolved: a loop tearing
// down its calls waits for the node's loop to take their cancellations,
// which it does while it waits for that promise.

#ifndef GEOKV_SERVER_CLIENT_LOOPS_H_
#define GEOKV_SERVER_CLIENT_LOOPS_H_

#include <capnp/capability.h>
#include <kj/async-io.h>
#include <kj/io.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/rpc_listener.h"
#include "util/status.h"

namespace geokv {

// Listening sockets on one HOST:PORT that share it (SO_REUSEPORT), each
// with TCP_NODELAY for what it accepts; PORT 0: the first picks a port and
// the others take the same. Returns the file descriptors, or an error.
StatusOr<std::vector<kj::AutoCloseFd>> ListenSharing(const std::string& address, size_t count);

// One of ListenSharing's sockets as the receiver of the loop of `io`.
kj::Own<kj::ConnectionReceiver> WrapListening(kj::LowLevelAsyncIoProvider& io,
                                              kj::AutoCloseFd fd);

// The node's side: the services of the connections the other loops serve,
// by connection id. Lives on the node's loop, in ClientLoops.
class ClientCalls {
 public:
  // `open` makes the service of a new connection.
  explicit ClientCalls(std::function<capnp::Capability::Client()> open);
  ~ClientCalls();

  // Runs a call of connection `id` (opened at its first call) on its
  // service: `params` is the call's parameters as a flat message; resolves
  // with the results as one.
  kj::Promise<kj::Array<capnp::word>> Call(uint64_t id, uint64_t interface_id, uint16_t method_id,
                                           kj::Array<capnp::word> params);
  // Thread-safe: connection `id` closed; its service goes at the next call.
  void Closed(uint64_t id);

  // Thread-safe: a new connection id.
  uint64_t NewId() { return next_id_.fetch_add(1, std::memory_order_relaxed); }
  // The node's loop, for the other loops' calls.
  const kj::Executor& executor() const { return executor_; }

 private:
  std::function<capnp::Capability::Client()> open_;
  const kj::Executor& executor_;
  std::atomic<uint64_t> next_id_{1};
  std::map<uint64_t, capnp::Capability::Client> services_;
  std::mutex closed_mu_;
  std::vector<uint64_t> closed_;
};

class ClientLoops {
 public:
  // Starts a thread per listening socket of `fds`, serving each connection
  // it accepts under `options` (without TLS: wrap unset; each loop counts
  // its own connections, whatever `slots` says) through a service `open`
  // makes on the node's loop, with at most `calls_per_connection` calls of
  // a connection under way.
  ClientLoops(std::vector<kj::AutoCloseFd> fds, std::function<capnp::Capability::Client()> open,
              RpcListenerOptions options, size_t calls_per_connection);
  ~ClientLoops();

  ClientLoops(const ClientLoops&) = delete;
  ClientLoops& operator=(const ClientLoops&) = delete;

  // Every loop closes its listening socket; open connections are served on.
  void StopAccepting();
  // Resolves once every loop sent the replies it had (or after 2 s), closed
  // its connections and ended its thread; `timer` (the node's loop's)
  // paces the wait for the threads.
  kj::Promise<void> Stop(kj::Timer& timer);

  size_t size() const { return loops_.size(); }

 private:
  struct Loop;
  kj::Promise<void> Finished(kj::Timer& timer);
  ClientCalls calls_;  // outlives the loops
  std::vector<std::unique_ptr<Loop>> loops_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_CLIENT_LOOPS_H_

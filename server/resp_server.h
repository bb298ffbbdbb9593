// The Redis protocol port (--resp-listen): accepts connections, parses
// their bytes (server/resp_protocol.h) and runs the commands of each read
// as one RespSession::Execute (server/resp_session.h), so the writes of one
// read share a group commit; the replies of one read are written together.
//
// Limits: connections beyond max_connections (shared with the client API
// through `slots`) are closed at once; a connection is not read
// while the replies of its last read are unsent, and one read's commands
// run at most max_commands at a time, so a client that pipelines without
// reading its replies holds at most one read's commands and replies. A
// protocol error is answered and its connection closed; the server and
// every other connection go on.

#ifndef GEOKV_SERVER_RESP_SERVER_H_
#define GEOKV_SERVER_RESP_SERVER_H_

#include <kj/async-io.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <string>

#include "server/acceptor.h"
#include "server/resp_protocol.h"
#include "server/resp_session.h"

namespace geokv {

struct RespServerOptions {
  RespLimits limits;
  // Default: 1024, as the client API's --max-connections.
  size_t max_connections = 1024;
  // The limit shared with another port; default (nullptr): its own of
  // max_connections.
  std::shared_ptr<ConnectionSlots> slots;
  // What each connection is wrapped in (TLS); default (nullptr): none.
  Acceptor::Wrap wrap;
  // Commands of one connection run at once (one Execute). Default: 1024.
  size_t max_commands = 1024;
  // How long a connection may send nothing between commands, and how long
  // the rest of a command may take once its first byte came (plus a second
  // per ReadDeadlines::kMinBytesPerSecond of it); zero: no limit. Past
  // either, the connection is closed.
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
  std::chrono::milliseconds read_timeout{std::chrono::seconds(30)};
};

// Lives on the event loop's thread.
class RespServer : private kj::TaskSet::ErrorHandler {
 public:
  // `node`'s references must outlive the server.
  // `timer` (for retrying failed accepts) must outlive the server.
  RespServer(kj::Own<kj::ConnectionReceiver> receiver, RespNode node, kj::Timer& timer,
             RespServerOptions options);
  ~RespServer();

  unsigned port() const { return acceptor_.port(); }
  // Closes the listening socket; open connections are served on.
  void StopAccepting();

 private:
  struct Connection;

  void Serve(kj::AuthenticatedStream accepted, ConnectionSlots::Slot slot);
  // Runs what the connection's parser holds, then reads more.
  kj::Promise<void> Process(Connection& c);
  kj::Promise<void> Read(Connection& c);
  std::string ClientList() const;
  void taskFailed(kj::Exception&& exception) override;

  RespNode node_;
  const RespServerOptions options_;
  kj::Timer& timer_;
  uint64_t next_id_ = 1;
  std::list<kj::Own<Connection>> connections_;
  kj::TaskSet tasks_;
  Acceptor acceptor_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_RESP_SERVER_H_

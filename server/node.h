// One geokv node: opens the store, serves the client API and shuts down
// cleanly on SIGTERM or SIGINT.

#ifndef GEOKV_SERVER_NODE_H_
#define GEOKV_SERVER_NODE_H_

#include "server/options.h"

namespace geokv {

// Runs the node until SIGTERM or SIGINT; returns the process exit code (0
// after a clean shutdown, 1 when the node cannot start). On a signal: stops
// accepting connections and calls, lets the calls in flight finish (up to
// shutdown_timeout_seconds), makes every acknowledged write durable, closes
// the store.
int RunNode(const ServerOptions& options);

}  // namespace geokv

#endif  // GEOKV_SERVER_NODE_H_

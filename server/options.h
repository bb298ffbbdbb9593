// The configuration of geokv-server: a TOML file (--config) and flags, flags
// winning. Every option has the same name in both, e.g. `max-key-bytes =
// "4KiB"` in the file and `--max-key-bytes 4KiB` on the command line.

#ifndef GEOKV_SERVER_OPTIONS_H_
#define GEOKV_SERVER_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

#include "storage/store.h"

namespace geokv {

struct ServerOptions {
  // The node's name in logs and membership. Default: derived from the
  // replica id ("node-" and its first 8 hex digits). The replica id that
  // names the node's writes is random and kept in the data dir, never
  // configured: two nodes with one id would corrupt each other's data.
  std::string node_id;
  // Default: "local".
  std::string region = "local";
  // HOST:PORT of the client API. Default: 127.0.0.1:7400.
  std::string listen = "127.0.0.1:7400";
  // Default: ./geokv-data.
  std::string data_dir = "geokv-data";
  // Default: fsync.
  Durability durability = Durability::kFsync;

  // Limits; a request over one gets TOO_LARGE and changes nothing.
  size_t max_key_bytes = 4 << 10;    // keys and OR-set elements
  size_t max_value_bytes = 8 << 20;  // LWW and MV values
  size_t max_connections = 1024;     // client connections beyond are closed
  size_t max_message_bytes = 64 << 20;  // one RPC message (a call, a batch)
  // Writes waiting for their group; beyond, calls fail with OVERLOADED.
  size_t max_pending_writes = 100000;
  // After SIGTERM, how long calls in flight may take to finish.
  double shutdown_timeout_seconds = 30;

  // trace, debug, info, warn, error, off. Default: info.
  std::string log_level = "info";
};

// Either options to run with, or the exit code of a run that is over
// (0 after --help, 2 after a usage error, already printed).
using ParsedServerOptions = std::variant<ServerOptions, int>;

ParsedServerOptions ParseServerOptions(int argc, char** argv);

}  // namespace geokv

#endif  // GEOKV_SERVER_OPTIONS_H_

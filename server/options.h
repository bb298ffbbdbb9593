// The configuration of geokv-server: a TOML file (--config) and flags, flags
// winning. Every option has the same name in both, e.g. `max-key-bytes =
// "4KiB"` in the file and `--max-key-bytes 4KiB` on the command line.

#ifndef GEOKV_SERVER_OPTIONS_H_
#define GEOKV_SERVER_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "replication/replicator.h"
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
  // Continue under a new replica id (StoreOptions::new_identity): for a data
  // dir restored in a way the store cannot tell. Default: false.
  bool new_identity = false;

  // Limits; a request over one gets TOO_LARGE and changes nothing.
  size_t max_key_bytes = 4 << 10;    // keys and OR-set elements
  size_t max_value_bytes = 8 << 20;  // LWW and MV values
  size_t max_connections = 1024;     // client connections beyond are closed
  // Connections from one client address (host) on the client ports, and
  // from one peer address on the peer port; beyond, closed. 0: no limit.
  size_t max_connections_per_address = 256;
  size_t max_message_bytes = 64 << 20;  // one RPC message (a call, a batch)
  size_t max_batch_requests = 10000;    // requests of one batch call
  // A connection (client, Redis or peer port) silent between messages for
  // idle_timeout, or taking longer than read_timeout to send one, is
  // closed; 0: never.
  uint64_t idle_timeout_ms = 600000;
  uint64_t read_timeout_ms = 30000;
  // Calls under way on one client connection; beyond, the connection is not
  // read until one ends.
  size_t max_calls_per_connection = 32;
  // Event loops serving client API connections (server/client_loops.h): 1,
  // the node's own; more adds threads. Neither TLS nor users above 1.
  size_t client_loops = 1;
  // Threads that read the store for the event loop (storage/async_store.h).
  size_t reader_threads = 2;
  // Writes waiting for their group; beyond, calls fail with OVERLOADED.
  size_t max_pending_writes = 100000;
  // After SIGTERM, how long calls in flight may take to finish.
  double shutdown_timeout_seconds = 30;
  // How long `leave` may take to hand every key over and deliver the log;
  // past it the node stops with an error.
  double leave_timeout_seconds = 3600;

  // Replication (docs/replication.md).
  // HOST:PORT of the peer API; empty: none served (peers cannot ship here).
  std::string peer_listen;
  // The peer address the nodes of this region use; empty: peer_listen.
  std::string peer_advertise;
  // Peer addresses for the nodes of particular other regions, from
  // --peer-routes REGION=HOST:PORT,... (a WAN proxy, a NAT).
  std::vector<PeerAddress> peer_routes;
  // Seeds of the other regions, from --peers REGION=HOST:PORT,...: nodes
  // there to learn those regions' members from.
  std::vector<PeerAddress> peers;

  // Membership and placement (docs/cluster.md).
  // HOST:PORT (UDP) of gossip; empty: no gossip, the node is its region's
  // only member.
  std::string gossip_listen;
  // Gossip addresses of this region's nodes to join through.
  std::vector<std::string> seeds;
  // The file of the keys gossip datagrams are sealed under
  // (cluster/gossip_key.h), read at start and on SIGHUP; empty: gossip is not
  // authenticated (docs/operations.md).
  std::string gossip_key_file;
  // With gossip_key_file: also accept unauthenticated datagrams, while a
  // region is switched to keys one node at a time.
  bool gossip_accept_unauthenticated = false;
  // Owners of each key in each region (N). The same on every node.
  size_t replication_factor = 3;
  // Ring tokens per node. The same on every node.
  size_t vnodes = 256;
  // The level of requests that leave it to the server: one, quorum, all.
  std::string consistency = "quorum";
  // How long a coordinator waits for the key's other owners.
  uint64_t request_timeout_ms = 5000;
  // How long a quorum read waits for the owners it asked before it asks the
  // others too; 0: it asks every other owner at once.
  uint64_t read_hedge_ms = 20;
  uint64_t gossip_period_ms = 500;
  uint64_t suspicion_timeout_ms = 2500;
  uint64_t confirmed_suspicion_timeout_ms = 750;
  // Fraction of gossip packets dropped on purpose (for tests).
  double gossip_drop = 0;
  // Unacknowledged log bytes beyond which a peer is repaired by
  // anti-entropy instead of the log.
  size_t max_backlog_bytes = size_t{256} << 20;
  uint64_t max_clock_offset_ms = 500;
  uint64_t token_wait_ms = 5000;
  uint64_t anti_entropy_interval_ms = 10000;
  uint64_t tombstone_grace_ms = 600000;
  size_t anti_entropy_bytes_per_second = size_t{8} << 20;
  size_t replication_batch_bytes = size_t{1} << 20;
  size_t replication_window = 64;
  uint64_t heartbeat_ms = 1000;
  // Which peer connections this node dials compressed (docs/configuration.md).
  PeerCompression peer_compression = PeerCompression::kCrossRegion;

  // The Redis protocol (docs/resp.md).
  // HOST:PORT of the Redis port; empty: none served.
  std::string resp_listen;
  // Arguments of one Redis command (a multibulk count); beyond, the
  // connection is closed with a protocol error.
  size_t resp_max_args = size_t{1} << 20;
  // The longest inline command line or protocol header line.
  size_t resp_max_inline_bytes = 64 << 10;

  // TLS (docs/operations.md#certificates). With tls_cert, tls_key and
  // tls_ca (PEM files: the node's certificate chain, its key, the cluster's
  // CA), the peer port takes only connections whose certificate the CA
  // signed (mutual TLS), this node dials its peers with its certificate and
  // checks theirs, and the client API and Redis ports serve TLS. Empty:
  // plain TCP everywhere. Read at start and on SIGHUP, with client_ca.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;
  // With TLS: the CA whose certificate a client must present on the client
  // API and Redis ports. Empty: clients present none.
  std::string client_ca;
  // A users file (docs/formats.md#users-file): clients of the client API
  // and Redis ports must log in as one of its users (or present a client
  // certificate naming one) and may do what its role allows. Empty: no
  // users; every connection may do everything.
  std::string users_file;
  // How long a TLS handshake may take; a connection still shaking hands
  // then is closed (it holds a connection slot meanwhile).
  uint64_t tls_handshake_timeout_ms = 10000;
  // Serve client, peer and Redis ports off loopback without TLS, and gossip
  // off loopback without a key (with a warning). Default: false, such a
  // node refuses to start.
  bool insecure = false;

  // HOST:PORT where /metrics is served for Prometheus; empty: nowhere.
  std::string metrics_listen;

  // trace, debug, info, warn, error, off. Default: info.
  std::string log_level = "info";
};

// Either options to run with, or the exit code of a run that is over
// (0 after --help, 2 after a usage error, already printed).
using ParsedServerOptions = std::variant<ServerOptions, int>;

ParsedServerOptions ParseServerOptions(int argc, char** argv);

// The replicator's settings that come from flags as they are; the node
// fills in its name, callbacks, metrics and TLS.
ReplicatorOptions ReplicationOptionsOf(const ServerOptions& o);

}  // namespace geokv

#endif  // GEOKV_SERVER_OPTIONS_H_

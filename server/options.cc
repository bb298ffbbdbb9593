#include "server/options.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "replication/peer_types.h"
#include "util/cli.h"

namespace geokv {

ParsedServerOptions ParseServerOptions(int argc, char** argv) {
  ServerOptions o;
  CLI::App app{"geokv-server: one node of a geo-replicated CRDT key-value store"};
  app.set_config("--config", "", "TOML file of options (same names as the flags); flags win");
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.get_formatter()->column_width(34);

  app.add_option("--node-id", o.node_id,
                 "Name of this node in logs and membership (default: node-<replica id>)");
  app.add_option("--region", o.region, "Region this node belongs to")->capture_default_str();
  app.add_option("--listen", o.listen, "HOST:PORT of the client API")->capture_default_str();
  app.add_option("--data-dir", o.data_dir, "Directory of the node's RocksDB store")
      ->capture_default_str();
  std::string durability = "fsync";
  app.add_option("--durability", durability,
                 "fsync: acknowledged writes survive a machine crash; wal: a process crash")
      ->capture_default_str()
      ->check(CLI::IsMember({"fsync", "wal"}));
  app.add_flag("--new-identity", o.new_identity,
               "Continue under a new replica id, keeping the data: after restoring the data dir "
               "from a snapshot rolled back in place (docs/operations.md)");

  auto size_option = [&](const char* name, size_t* value, const char* help) {
    app.add_option(name, *value, help)
        ->transform(CLI::AsSizeValue(false))
        ->default_str(std::to_string(*value));
  };
  size_option("--max-key-bytes", &o.max_key_bytes, "Largest key or set element (accepts KiB, MiB)");
  size_option("--max-value-bytes", &o.max_value_bytes, "Largest LWW or multi-value value");
  app.add_option("--max-connections", o.max_connections,
                 "Client connections served at once; more are closed")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--max-connections-per-address", o.max_connections_per_address,
                 "Connections one address (host) may hold open on the client ports (together), "
                 "and on the peer port; beyond, closed at once (0: no limit)")
      ->capture_default_str();
  size_option("--max-message-bytes", &o.max_message_bytes, "Largest RPC message (call or batch)");
  app.add_option("--max-batch-requests", o.max_batch_requests,
                 "Requests of one batch call; a larger batch is refused whole")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1000000}));
  app.add_option("--max-calls-per-connection", o.max_calls_per_connection,
                 "Calls under way on one client connection; beyond, it is not read until one ends")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{4096}));
  app.add_option("--reader-threads", o.reader_threads,
                 "Threads reading the store for the event loop (one is kept for client reads)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{64}));
  app.add_option("--max-pending-writes", o.max_pending_writes,
                 "Writes waiting to commit; beyond, calls fail with OVERLOADED")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--leave-timeout", o.leave_timeout_seconds,
                 "Seconds `leave` may take to hand every key over; past it the node exits 1")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 7.0 * 86400.0));
  app.add_option("--shutdown-timeout", o.shutdown_timeout_seconds,
                 "Seconds calls in flight may take to finish after SIGTERM")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  auto ms_option = [&](const char* name, uint64_t* value, const char* help) {
    return app.add_option(name, *value, help)
        ->transform(CLI::AsNumberWithUnit(std::map<std::string, uint64_t>{
            {"ms", 1}, {"s", 1000}, {"min", 60000}}))
        ->default_str(std::to_string(*value) + "ms");
  };
  app.add_option("--peer-listen", o.peer_listen,
                 "HOST:PORT of the peer API other regions' nodes connect to (default: none)");
  std::string peers;
  app.add_option("--peers", peers,
                 "Seeds of the other regions: REGION=HOST:PORT,... (a node's peer API there)");
  app.add_option("--peer-advertise", o.peer_advertise,
                 "Peer address this region's nodes use (default: --peer-listen)");
  std::string routes;
  app.add_option("--peer-routes", routes,
                 "Peer addresses for other regions' nodes: REGION=HOST:PORT,...");
  app.add_option("--gossip-listen", o.gossip_listen,
                 "HOST:PORT (UDP) of membership gossip (default: none, a one-node region)");
  std::string seeds;
  app.add_option("--seeds", seeds, "Gossip addresses of this region's nodes: HOST:PORT,...");
  app.add_option("--gossip-key-file", o.gossip_key_file,
                 "File of the keys gossip datagrams are sealed under, one 'ID hex:SECRET' a "
                 "line, the first sent under (mode 600; read again on SIGHUP; default: none, "
                 "gossip unauthenticated)");
  app.add_flag("--gossip-accept-unauthenticated", o.gossip_accept_unauthenticated,
               "With --gossip-key-file, also accept unauthenticated datagrams: only while a "
               "region is switched to keys one node at a time");
  app.add_option("--replication-factor", o.replication_factor,
                 "Owners of each key in each region (the same on every node)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{16}));
  app.add_option("--vnodes", o.vnodes, "Ring tokens per node (the same on every node)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{4096}));
  app.add_option("--consistency", o.consistency,
                 "Level of requests that ask for the default: one, quorum, all")
      ->capture_default_str()
      ->check(CLI::IsMember({"one", "quorum", "all"}));
  ms_option("--request-timeout", &o.request_timeout_ms,
            "How long a coordinator waits for the key's other owners")
      ->check(CLI::Range(uint64_t{1}, uint64_t{3600000}));
  ms_option("--read-hedge", &o.read_hedge_ms,
            "How long a quorum read waits for the digests of the R-1 other owners it asked "
            "before it asks the rest too; 0 asks every other owner at once")
      ->check(CLI::Range(uint64_t{0}, uint64_t{3600000}));
  ms_option("--gossip-period", &o.gossip_period_ms, "Gossip protocol period (one probe each)")
      ->check(CLI::Range(uint64_t{10}, uint64_t{60000}));
  ms_option("--suspicion-timeout", &o.suspicion_timeout_ms,
            "How long a suspected member has to refute before it is declared dead")
      ->check(CLI::Range(uint64_t{10}, uint64_t{3600000}));
  ms_option("--confirmed-suspicion-timeout", &o.confirmed_suspicion_timeout_ms,
            "How long a suspect has to refute once a second member failed to reach it too "
            "(this node's own probe, or a helper's nack of its ping-req); at most "
            "--suspicion-timeout")
      ->check(CLI::Range(uint64_t{10}, uint64_t{3600000}));
  app.add_option("--gossip-drop", o.gossip_drop,
                 "Fraction of gossip packets to drop, for tests")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  size_option("--max-backlog", &o.max_backlog_bytes,
              "Log bytes a peer may lag before anti-entropy repairs it instead");
  ms_option("--max-clock-offset", &o.max_clock_offset_ms,
            "Clock offset from the peers' median beyond which writes are refused, and how "
            "far ahead of this node's clock a stamp received from a peer may be (ms, s)");
  ms_option("--idle-timeout", &o.idle_timeout_ms,
            "Close a client, Redis or peer connection that sends nothing for this long between "
            "requests (0: never)");
  ms_option("--read-timeout", &o.read_timeout_ms,
            "Close a connection that takes longer than this, plus 1 s per 64 KiB, to send one "
            "request once it began (0: never)");
  ms_option("--token-wait", &o.token_wait_ms,
            "How long a read waits for its tokens' writes to arrive (at most 60 min)");
  ms_option("--anti-entropy-interval", &o.anti_entropy_interval_ms,
            "Pause between anti-entropy passes against each peer");
  ms_option("--tombstone-grace", &o.tombstone_grace_ms,
            "How old a deleted register that every node holds must be before it is "
            "removed for good (ms, s, min; at least 1s)")
      ->check(CLI::Range(uint64_t{1000}, uint64_t{365} * 24 * 3600 * 1000));
  size_option("--anti-entropy-rate", &o.anti_entropy_bytes_per_second,
              "Bytes per second anti-entropy may exchange with each peer");
  size_option("--replication-batch-bytes", &o.replication_batch_bytes,
              "Log bytes per batch shipped to a peer");
  app.add_option("--replication-window", o.replication_window,
                 "Batches in flight to each peer")
      ->capture_default_str()
      ->check(AtLeast(1));
  ms_option("--heartbeat", &o.heartbeat_ms, "Interval of heartbeats to each peer")
      ->check(CLI::Range(uint64_t{10}, uint64_t{60000}));
  app.add_option("--client-loops", o.client_loops,
                 "Event loops serving the client API's connections: the node's own and N - 1 "
                 "threads that run the RPC layer and hand each call to it (no TLS, no users)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{64}));
  std::string compression = "cross-region";
  app.add_option("--peer-compression", compression,
                 "Which peer connections this node dials compressed (Zstandard): off, "
                 "cross-region (to nodes of other regions) or all")
      ->capture_default_str()
      ->check(CLI::IsMember({"off", "cross-region", "all"}));
  app.add_option("--resp-listen", o.resp_listen,
                 "HOST:PORT of the Redis protocol port (default: none; docs/resp.md)");
  app.add_option("--resp-max-args", o.resp_max_args,
                 "Arguments of one Redis command; more close the connection")
      ->capture_default_str()
      ->check(CLI::Range(size_t{3}, size_t{1} << 24));
  size_option("--resp-max-inline-bytes", &o.resp_max_inline_bytes,
              "Longest Redis inline command or protocol line");
  app.add_option("--tls-cert", o.tls_cert,
                 "PEM certificate chain of this node (CN=NODE-ID.REGION, DNS name REGION); with "
                 "--tls-key and --tls-ca, every port speaks TLS and peers authenticate mutually; "
                 "these files and --client-ca are read again on SIGHUP");
  app.add_option("--tls-key", o.tls_key, "PEM private key of --tls-cert (unencrypted)");
  app.add_option("--tls-ca", o.tls_ca,
                 "PEM certificates of the cluster's CA: a peer's certificate must be signed by "
                 "one");
  app.add_option("--client-ca", o.client_ca,
                 "PEM CA certificates: with TLS, clients must present a certificate one signed");
  app.add_option("--users", o.users_file,
                 "Users file (NAME ROLE SECRET_HASH lines, mode 600): clients must log in as one "
                 "of its users, and may do what its role (read, write, admin) allows; reloaded "
                 "on SIGHUP");
  ms_option("--tls-handshake-timeout", &o.tls_handshake_timeout_ms,
            "How long a TLS handshake may take before its connection is closed")
      ->check(CLI::Range(uint64_t{10}, uint64_t{600000}));
  app.add_flag("--insecure", o.insecure,
               "Serve ports off loopback without TLS and gossip off loopback without a key "
               "(refused at start without this flag)");
  app.add_option("--metrics-listen", o.metrics_listen,
                 "HOST:PORT serving /metrics for Prometheus (default: none)");
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  if (auto exit_code = ParseCommandLine(app, argc, argv)) return *exit_code;
  o.durability = durability == "wal" ? Durability::kWal : Durability::kFsync;
  o.peer_compression = compression == "off"   ? PeerCompression::kOff
                       : compression == "all" ? PeerCompression::kAll
                                              : PeerCompression::kCrossRegion;

  auto usage_error = [&](const std::string& message) {
    std::fprintf(stderr, "%s\nRun with --help for more information.\n", message.c_str());
    return ParsedServerOptions(kExitUsage);
  };
  if (o.max_key_bytes == 0) return usage_error("--max-key-bytes: must be at least 1");
  if (o.max_value_bytes == 0) return usage_error("--max-value-bytes: must be at least 1");
  // A call carrying one largest key and value must fit in a message.
  if (o.max_key_bytes >= o.max_message_bytes || o.max_value_bytes >= o.max_message_bytes ||
      o.max_message_bytes - o.max_key_bytes - o.max_value_bytes < 4096) {
    return usage_error("--max-message-bytes: must exceed --max-key-bytes plus --max-value-bytes "
                       "plus 4 KiB");
  }
  if (o.resp_max_inline_bytes < 64) {
    return usage_error("--resp-max-inline-bytes: must be at least 64");
  }
  if (!o.resp_listen.empty() && o.resp_listen.find(':') == std::string::npos) {
    return usage_error("--resp-listen: '" + o.resp_listen + "' is not HOST:PORT");
  }
  if (o.data_dir.empty()) return usage_error("--data-dir: must not be empty");
  const bool tls = !o.tls_cert.empty() || !o.tls_key.empty() || !o.tls_ca.empty();
  if (tls && (o.tls_cert.empty() || o.tls_key.empty() || o.tls_ca.empty())) {
    return usage_error("--tls-cert, --tls-key and --tls-ca: give all three or none");
  }
  if (!o.client_ca.empty() && !tls) {
    return usage_error("--client-ca: needs --tls-cert, --tls-key and --tls-ca");
  }
  if (o.client_loops > 1 && (tls || !o.users_file.empty())) {
    return usage_error("--client-loops: above 1 serves neither TLS nor users yet");
  }
  auto parsed_peers = ParsePeers(peers, o.region);
  if (!parsed_peers.ok()) return usage_error("--peers: " + parsed_peers.status().message());
  o.peers = std::move(parsed_peers).value();
  auto parsed_routes = ParsePeers(routes, o.region);
  if (!parsed_routes.ok()) return usage_error("--peer-routes: " + parsed_routes.status().message());
  o.peer_routes = std::move(parsed_routes).value();
  for (size_t pos = 0; pos < seeds.size();) {
    size_t comma = std::min(seeds.find(',', pos), seeds.size());
    std::string seed = seeds.substr(pos, comma - pos);
    if (seed.find(':') == std::string::npos) {
      return usage_error("--seeds: '" + seed + "' is not HOST:PORT");
    }
    o.seeds.push_back(seed);
    pos = comma + 1;
  }
  if (!o.seeds.empty() && o.gossip_listen.empty()) {
    return usage_error("--seeds: needs --gossip-listen");
  }
  if (!o.gossip_key_file.empty() && o.gossip_listen.empty()) {
    return usage_error("--gossip-key-file: needs --gossip-listen");
  }
  if (o.gossip_accept_unauthenticated && o.gossip_key_file.empty()) {
    return usage_error("--gossip-accept-unauthenticated: needs --gossip-key-file");
  }
  if (o.gossip_period_ms * 2 > o.suspicion_timeout_ms) {
    return usage_error("--suspicion-timeout: must be at least twice --gossip-period");
  }
  if (o.confirmed_suspicion_timeout_ms > o.suspicion_timeout_ms) {
    return usage_error("--confirmed-suspicion-timeout: must be at most --suspicion-timeout");
  }
  if (app.count("--replication-batch-bytes") == 0) {
    o.replication_batch_bytes = std::min(o.replication_batch_bytes, o.max_message_bytes / 4);
  }
  if (o.replication_batch_bytes == 0 || o.replication_batch_bytes > o.max_message_bytes / 2) {
    return usage_error("--replication-batch-bytes: must be between 1 and half of "
                       "--max-message-bytes");
  }
  if (o.anti_entropy_bytes_per_second == 0) {
    return usage_error("--anti-entropy-rate: must be at least 1");
  }
  if (o.token_wait_ms > static_cast<uint64_t>(kMaxReplicationWait.count())) {
    return usage_error("--token-wait: must be at most " +
                       std::to_string(kMaxReplicationWait.count()) +
                       " ms, the longest wait a client may ask for");
  }
  return o;
}

ReplicatorOptions ReplicationOptionsOf(const ServerOptions& o) {
  ReplicatorOptions r;
  r.region = o.region;
  r.replication_factor = static_cast<uint32_t>(o.replication_factor);
  r.vnodes = static_cast<uint32_t>(o.vnodes);
  r.seeds = o.peers;
  r.max_message_bytes = o.max_message_bytes;
  r.batch_bytes = o.replication_batch_bytes;
  r.window = o.replication_window;
  r.max_backlog_bytes = o.max_backlog_bytes;
  r.max_clock_offset = std::chrono::milliseconds(o.max_clock_offset_ms);
  r.token_wait = std::chrono::milliseconds(o.token_wait_ms);
  r.anti_entropy_interval = std::chrono::milliseconds(o.anti_entropy_interval_ms);
  r.tombstone_grace = std::chrono::milliseconds(o.tombstone_grace_ms);
  r.anti_entropy_bytes_per_second = o.anti_entropy_bytes_per_second;
  r.compression = o.peer_compression;
  r.heartbeat = std::chrono::milliseconds(o.heartbeat_ms);
  return r;
}

}  // namespace geokv

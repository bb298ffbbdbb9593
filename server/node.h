// One geokv node: opens the store, serves the client API and the peer API,
// follows gossip, replicates, reads its certificates and keys again on
// SIGHUP, and shuts down cleanly on SIGTERM or SIGINT, or once it has left
// the cluster.

#ifndef GEOKV_SERVER_NODE_H_
#define GEOKV_SERVER_NODE_H_

#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/options.h"
#include "util/status.h"

namespace geokv {

class Admin;
class AsyncStore;
class Authenticator;
class ClientLoops;
class ClusterView;
class Coordinator;
class Gossip;
class GroupCommitter;
class KvService;
class Leaver;
class MembershipFollower;
class MetricSampler;
class Metrics;
class MetricsServer;
class Replicator;
class ServingGate;
class ReplicatorForwarder;
class RespServer;
class RpcListener;
class Store;
class TlsContextHolder;
struct Member;

// Lives on the thread that constructs it, which runs its event loop.
// Create one per process: it takes SIGTERM, SIGINT and SIGHUP.
class Node {
 public:
  explicit Node(ServerOptions options);
  ~Node();

  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Opens the store, listens, starts gossip, replication and the metrics.
  // Not OK (logged): the node cannot start; Shutdown() is then not needed.
  Status Start();
  // Serves until SIGTERM or SIGINT, or until the node has left the cluster;
  // each SIGHUP meanwhile runs Reload(). REQUIRES: Start() returned OK.
  void RunUntilStopped();
  // Reads the files of every reloadable part again (the TLS certificate,
  // key and CAs; the gossip key file; the users file) and puts what loaded
  // in force: new TLS handshakes, gossip datagrams and logins use it, live
  // connections carry on.
  // A part whose files fail to load keeps what it had and logs why, naming
  // the file. Logs what was reloaded and counts each part's reloads in
  // geokv_reloads_total. OK when every part reloaded, else the first
  // failure. On the event loop's thread; REQUIRES: Start() returned OK.
  Status Reload();
  // Stops accepting connections and calls, lets the calls in flight finish
  // (up to shutdown_timeout_seconds), makes every acknowledged write
  // durable and closes the store. Returns the process exit code (0 after a
  // clean shutdown). Exits the process at once when the writer is stuck.
  int Shutdown();

  // Start, RunUntilStopped, Shutdown: the exit code (1 when the node cannot
  // start).
  int Run();

 private:
  // A part whose files Reload() reads again. `reload` loads them and, when
  // they load, puts them in force and says what it loaded; otherwise it
  // changes nothing.
  struct Reloadable {
    std::string part;  // for logs and geokv_reloads_total{part}
    std::function<StatusOr<std::string>()> reload;
  };

  // Loads the TLS files and checks that the certificate names this node.
  Status LoadTls();
  // Without TLS, refuses ports off loopback unless --insecure.
  Status RefusePlaintext();
  // The peer and client contexts from the TLS files.
  struct TlsContexts {
    kj::Own<kj::TlsContext> peer;
    kj::Own<kj::TlsContext> client;
  };
  StatusOr<TlsContexts> LoadTlsContexts();
  StatusOr<std::string> ReloadTls();
  StatusOr<std::string> ReloadGossipKeys();
  // Runs Reload() on every SIGHUP, until dropped.
  kj::Promise<void> ReloadOnSighup();
  // Reads --users, if given.
  Status LoadUsers();
  Status Listen();
  // Gossip joins through `kept_seeds` (where the region's other members
  // gossiped when this node last ran) as well as through --seeds.
  Status StartGossip(const std::vector<std::string>& kept_seeds);
  Status StartMetricsServer();
  // The view starts from `kept_remote` (the other regions' members this
  // node knew when it last ran).
  void StartReplication(const std::vector<Member>& kept_remote);
  void StartServices();
  void StartJoining();
  // Gives the replicator the view's placement.
  void Place();
  // The node has learned its region's members (`how`).
  void Joined(const char* how);
  // Keeps the members this node knows for its next start.
  void KeepMembers();

  const ServerOptions options_;
  std::string name_;
  // Gossip has seeds other than this node (given, or kept from its last
  // run): it must hear from one (or wait kJoinWait) before it knows its
  // region.
  bool must_join_ = false;
  std::unique_ptr<Store> store_;
  std::unique_ptr<kj::AsyncIoContext> io_;
  // With TLS: the peer port's and dialling's context (mutual), and the
  // client ports'.
  std::unique_ptr<TlsContextHolder> peer_tls_;
  std::unique_ptr<TlsContextHolder> client_tls_;
  std::vector<Reloadable> reloadables_;
  std::unique_ptr<AsyncStore> async_store_;
  kj::Own<kj::ConnectionReceiver> receiver_;
  kj::Own<kj::ConnectionReceiver> peer_receiver_;
  kj::Own<kj::ConnectionReceiver> resp_receiver_;
  std::unique_ptr<Gossip> gossip_;
  std::unique_ptr<ClusterView> view_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::unique_ptr<GroupCommitter> committer_;
  std::unique_ptr<Replicator> replicator_;
  std::unique_ptr<ReplicatorForwarder> forwarder_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<Admin> admin_;
  std::unique_ptr<Leaver> leaver_;
  std::unique_ptr<ServingGate> serving_;
  // Runs the requests other nodes forward here.
  std::unique_ptr<Authenticator> users_;
  std::unique_ptr<KvService> forward_service_;
  std::unique_ptr<RpcListener> listener_;
  // With --client-loops above 1: the other loops' listening sockets until
  // they start, and the loops.
  std::vector<kj::AutoCloseFd> loop_fds_;
  std::unique_ptr<ClientLoops> client_loops_;
  std::unique_ptr<RpcListener> peer_listener_;
  std::unique_ptr<RespServer> resp_server_;
  std::unique_ptr<MembershipFollower> follower_;
  std::unique_ptr<MetricSampler> sampler_;
  kj::Promise<void> join_wait_ = nullptr;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_NODE_H_

// A multi-region cluster on loopback for tests and benchmarks: one or more
// geokv-servers per region (with gossip when more than one), and a WAN proxy
// on every directed link from a region to a node of another region, which
// that node advertises to the region (--peer-routes), so a caller can delay
// traffic, cut connections or partition a region off.

#ifndef GEOKV_TESTING_CLUSTER_H_
#define GEOKV_TESTING_CLUSTER_H_

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/connection.h"
#include "schema/kv.capnp.h"
#include "testing/server_process.h"
#include "tools/wan_proxy.h"

namespace geokv::testing {

// A loopback port free for TCP and UDP at the time of the call, never one
// returned before in this process, and below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range) when that leaves room: a port of the range
// may be taken, between this call and the bind of the node given it (or
// between a node's kill and its restart), by any outgoing connection or
// bind to port 0 on the machine. Thread-safe.
int FreePort();

// Every key's encoded states, as a data dir holds them.
using Dump = std::map<std::string, std::vector<std::string>>;

// Reads a stopped node's data dir whole; the error in *why.
Dump DumpDataDir(const std::string& dir, std::string* why);

class Cluster;

// A client of one node, on the calling thread's KJ event loop
// (client/connection.h), with TLS when `tls.ca` is given. Not thread-safe.
class Client {
 public:
  explicit Client(const std::string& address, const ClientTlsOptions& tls = {});
  // A client of `cluster`'s node `node`, with TLS when the cluster runs it
  // (Cluster::client_tls of the node's region).
  Client(const Cluster& cluster, int node);

  kj::WaitScope& ws() { return connection_.ws(); }
  kj::AsyncIoProvider& io() { return connection_.io(); }
  rpc::GeoKv::Client& kv() { return kv_; }

  // Each write returns its token, or "" when it failed.
  std::string Set(const std::string& key, const std::string& value);
  std::string Del(const std::string& key);
  std::string MvSet(const std::string& key, const std::string& value);
  std::string SAdd(const std::string& key, const std::string& element);
  std::string SRem(const std::string& key, const std::string& element);
  std::string IncrBy(const std::string& key, int64_t delta);

  // nullopt when absent; the outcome code in *code when given.
  std::optional<std::string> Get(const std::string& key, const std::vector<std::string>& tokens = {},
                                 rpc::Outcome::Code* code = nullptr);
  std::vector<std::string> MvGet(const std::string& key);
  std::vector<std::string> SMembers(const std::string& key);
  int64_t Counter(const std::string& key);
  uint64_t StateDigest();
  // Whether every peer link is up, and there are at least `peers`.
  bool AllPeersConnected(size_t peers = 0);

 private:
  ClientConnection connection_;
  rpc::GeoKv::Client kv_;
};

// Not thread-safe; the proxies run on a thread of their own.
class Cluster {
 public:
  struct Options {
    int regions = 3;
    std::chrono::milliseconds delay{0};   // one-way, on every link
    std::vector<std::string> flags;       // for every node
    // Per region, a command the node runs under (e.g. faketime).
    std::map<int, std::vector<std::string>> wrappers;
    int nodes_per_region = 1;
    bool metrics = false;  // serve /metrics on a port of each node's
    bool gossip = false;   // run gossip even with one node per region
    // Every node names all of its region's first nodes_per_region nodes as
    // gossip seeds, as docs/cluster.md advises, instead of the region's
    // first node alone (which then names only itself, and after a restart
    // joins through the members its data dir kept).
    bool all_seeds = false;
    // Every node runs with TLS and mutual authentication between nodes: a
    // CA and a certificate per node are made under the cluster's dir
    // (tls/), and clients made with client_tls() trust that CA.
    bool tls = false;
  };

  // Nodes run this build's geokv-server (a target that starts clusters adds
  // the dependency on it); their data dirs and logs go under `dir`, which
  // must exist.
  Cluster(std::string dir, Options options);
  ~Cluster();

  static std::string Region(int i) { return "r" + std::to_string(i); }
  std::string DataDir(int i) const { return dir_ + "/data" + std::to_string(i); }
  // Nodes are numbered region by region at the start (node k of region r
  // is r * nodes_per_region + k); AddNode numbers on from there.
  int nodes() const { return static_cast<int>(region_of_.size()); }
  int RegionOf(int node) const { return region_of_[node]; }
  std::string Name(int node) const;

  // Starts the proxies and every node, and waits until every link is up.
  bool Start(std::string* why);

  // Adds a node to region r and starts it; returns its number, or -1.
  int AddNode(int r, std::string* why);

  // Starts node i (again, after a kill), on the same ports and data dir.
  bool StartNode(int i, std::string* why);

  // Runs node i under `wrapper` instead of its region's from its next start
  // on (e.g. faketime for this node alone); an empty one runs it bare.
  void SetNodeWrapper(int i, std::vector<std::string> wrapper) {
    node_wrappers_[i] = std::move(wrapper);
  }
  // Goes back to the region's wrapper from node i's next start on.
  void ClearNodeWrapper(int i) { node_wrappers_.erase(i); }

  // Waits until every node's peer links are up.
  bool WaitConnected(std::string* why);
  // Waits until every running node is in step with its region's other
  // owners on every segment it owns (info's unsettledSegments is 0), as
  // quorum reads need after a start, a restart or a change of owners.
  bool WaitSettled(std::chrono::milliseconds timeout, std::string* why);

  ServerProcess& node(int i) { return *nodes_[i]; }
  // Where node i serves /metrics (with Options::metrics).
  std::string metrics_address(int i) const {
    return "127.0.0.1:" + std::to_string(metrics_ports_[i]);
  }
  // What a client needs to reach the nodes (empty without Options::tls):
  // the CA, and the name every node's certificate carries (region r1).
  ClientTlsOptions client_tls(int region = 0) const;
  // Clients made with client_tls() present this certificate and key (PEM
  // files), for nodes run with --client-ca.
  void SetClientCertificate(std::string cert, std::string key) {
    client_cert_ = std::move(cert);
    client_key_ = std::move(key);
  }
  // Where the certificates are (Options::tls): ca.pem, ca.key, and NAME.pem
  // and NAME.key per node.
  std::string tls_dir() const { return dir_ + "/tls"; }

  // Every node's log, for failure messages.
  std::string Logs();
  std::string address(int i) const { return nodes_[i]->address(); }
  // Node i's peer API.
  std::string peer_address(int i) const {
    return "127.0.0.1:" + std::to_string(peer_ports_[i]);
  }
  // The proxy region `from` reaches node `to` of another region through.
  WanProxy& proxy(int from, int to) { return *proxies_.at({from, to}); }

  // Cuts region r off from every other region, both ways.
  void Partition(int r);
  void Heal(int r);
  // Resets every open connection between regions (they reconnect).
  void CutAll();

  // Waits until every node shows the same state digest.
  bool WaitConverged(std::chrono::milliseconds timeout, std::string* why);
  // The same for the nodes numbered in `which` (e.g. leaving out one that
  // left).
  bool WaitConverged(std::chrono::milliseconds timeout, std::string* why,
                     const std::vector<int>& which);

  // Stops every node (SIGTERM) and compares their data dirs whole.
  bool StopAndCompareDumps(std::string* why);

 private:
  using WorkGuard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;

  int Place(int r);

  // The proxies every other region reaches node j through.
  bool AddProxies(int j, std::string* why);

  template <typename F>
  void ForLinksOf(int r, F f) {
    for (auto& [link, proxy] : proxies_) {
      if (link.first == r || RegionOf(link.second) == r) f(*proxy);
    }
  }

  std::string dir_;
  Options options_;
  boost::asio::io_context io_;
  std::unique_ptr<WorkGuard> work_ = std::make_unique<WorkGuard>(io_.get_executor());
  std::thread io_thread_;
  std::vector<int> region_of_;
  std::vector<int> peer_ports_;
  std::vector<int> gossip_ports_;
  std::vector<int> metrics_ports_;
  std::map<int, int> runs_;  // starts of each node
  std::string client_cert_, client_key_;
  std::map<int, std::vector<std::string>> node_wrappers_;
  std::map<std::pair<int, int>, std::unique_ptr<WanProxy>> proxies_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
};

}  // namespace geokv::testing

#endif  // GEOKV_TESTING_CLUSTER_H_

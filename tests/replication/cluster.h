// A multi-region cluster on loopback for tests: one or more geokv-servers
// per region (with gossip when more than one), and a WAN proxy on every
// directed link from a region to a node of another region, which that node
// advertises to the region (--peer-routes), so a test can delay traffic, cut
// connections or partition a region off.

#ifndef GEOKV_TESTS_REPLICATION_CLUSTER_H_
#define GEOKV_TESTS_REPLICATION_CLUSTER_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <capnp/ez-rpc.h>

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "crdt/codec.h"
#include "schema/kv.capnp.h"
#include "schema/kv_text.h"
#include "storage/store.h"
#include "tests/server/server_process.h"
#include "tools/wan_proxy.h"
#include "util/coding.h"

namespace geokv::testing {

// A loopback port free at the time of the call.
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// Every key's encoded states, as a data dir holds them.
using Dump = std::map<std::string, std::vector<std::string>>;

// Reads a stopped node's data dir whole.
inline Dump DumpDataDir(const std::string& dir, std::string* why) {
  Dump out;
  auto store = Store::Open(dir, StoreOptions{Durability::kWal});
  if (!store.ok()) {
    *why = store.status().ToString();
    return out;
  }
  for (size_t seg = 0; seg < kTreeSegments; ++seg) {
    auto keys = (*store)->SegmentKeys(seg);
    if (!keys.ok()) {
      *why = keys.status().ToString();
      return out;
    }
    for (const KeyDigest& kd : *keys) {
      auto states = (*store)->GetStates(kd.key);
      if (!states.ok()) {
        *why = states.status().ToString();
        return out;
      }
      for (const Crdt& c : *states) out[kd.key].push_back(EncodeCrdt(c));
    }
  }
  return out;
}

// A client of one node, on the calling thread.
class Client {
 public:
  explicit Client(const std::string& address) : ez_(address), kv_(ez_.getMain<rpc::GeoKv>()) {}

  kj::WaitScope& ws() { return ez_.getWaitScope(); }
  rpc::GeoKv::Client& kv() { return kv_; }

  // Each write returns its token, or "" when it failed.
  std::string Set(const std::string& key, const std::string& value) {
    auto req = kv_.setRequest();
    req.setKey(AsData(key));
    req.setValue(AsData(value));
    return Token(req.send().wait(ws()));
  }
  std::string Del(const std::string& key) {
    auto req = kv_.delRequest();
    req.setKey(AsData(key));
    return Token(req.send().wait(ws()));
  }
  std::string MvSet(const std::string& key, const std::string& value) {
    auto req = kv_.mvSetRequest();
    req.setKey(AsData(key));
    req.setValue(AsData(value));
    return Token(req.send().wait(ws()));
  }
  std::string SAdd(const std::string& key, const std::string& element) {
    auto req = kv_.sAddRequest();
    req.setKey(AsData(key));
    req.initElements(1).set(0, AsData(element));
    return Token(req.send().wait(ws()));
  }
  std::string SRem(const std::string& key, const std::string& element) {
    auto req = kv_.sRemRequest();
    req.setKey(AsData(key));
    req.initElements(1).set(0, AsData(element));
    return Token(req.send().wait(ws()));
  }
  std::string IncrBy(const std::string& key, int64_t delta) {
    auto req = kv_.incrByRequest();
    req.setKey(AsData(key));
    req.setDelta(delta);
    return Token(req.send().wait(ws()));
  }

  // nullopt when absent; the outcome code in *code when given.
  std::optional<std::string> Get(const std::string& key, const std::vector<std::string>& tokens = {},
                                 rpc::Outcome::Code* code = nullptr) {
    auto req = kv_.getRequest();
    req.setKey(AsData(key));
    auto list = req.initTokens(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) list.set(i, AsData(tokens[i]));
    auto reply = req.send().wait(ws());
    if (code) *code = reply.getOutcome().getCode();
    if (reply.getOutcome().getCode() != rpc::Outcome::Code::OK) return std::nullopt;
    return String(reply.getValue());
  }
  std::vector<std::string> MvGet(const std::string& key) {
    auto req = kv_.mvGetRequest();
    req.setKey(AsData(key));
    auto reply = req.send().wait(ws());
    std::vector<std::string> out;
    for (auto v : reply.getValues()) out.push_back(String(v));
    return out;
  }
  std::vector<std::string> SMembers(const std::string& key) {
    auto req = kv_.sMembersRequest();
    req.setKey(AsData(key));
    req.setLimit(1000);
    auto reply = req.send().wait(ws());
    std::vector<std::string> out;
    for (auto e : reply.getElements()) out.push_back(String(e));
    return out;
  }
  int64_t Counter(const std::string& key) {
    auto req = kv_.counterGetRequest();
    req.setKey(AsData(key));
    return req.send().wait(ws()).getValue();
  }
  uint64_t StateDigest() { return kv_.infoRequest().send().wait(ws()).getStateDigest(); }
  // Whether every peer link is up, and there are at least `peers`.
  bool AllPeersConnected(size_t peers = 0) {
    auto info = kv_.infoRequest().send().wait(ws());
    if (info.getPeers().size() < peers) return false;
    for (auto p : info.getPeers()) {
      if (!p.getConnected()) return false;
    }
    return true;
  }

 private:
  template <typename Reply>
  static std::string Token(const Reply& reply) {
    if (reply.getOutcome().getCode() != rpc::Outcome::Code::OK) return "";
    return String(reply.getToken());
  }

  capnp::EzRpcClient ez_;
  rpc::GeoKv::Client kv_;
};

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
  };

  Cluster(std::string dir, Options options) : dir_(std::move(dir)), options_(std::move(options)) {}

  ~Cluster() {
    for (auto& node : nodes_) {
      if (node && node->child().Running()) node->Kill();
    }
    for (auto& [link, proxy] : proxies_) proxy->Stop();
    work_.reset();
    if (io_thread_.joinable()) io_thread_.join();
  }

  static std::string Region(int i) { return "r" + std::to_string(i); }
  std::string DataDir(int i) const { return dir_ + "/data" + std::to_string(i); }
  // Nodes are numbered region by region at the start (node k of region r
  // is r * nodes_per_region + k); AddNode numbers on from there.
  int nodes() const { return static_cast<int>(region_of_.size()); }
  int RegionOf(int node) const { return region_of_[node]; }
  std::string Name(int node) const {
    if (options_.nodes_per_region == 1 && node < options_.regions) return "node-" + Region(node);
    int k = 0;
    for (int j = 0; j < node; ++j) k += region_of_[j] == region_of_[node];
    return Region(RegionOf(node)) + "-" + std::to_string(k);
  }

  // Starts the proxies and every node, and waits until every link is up.
  bool Start(std::string* why) {
    for (int r = 0; r < options_.regions; ++r) {
      for (int k = 0; k < options_.nodes_per_region; ++k) Place(r);
    }
    for (int j = 0; j < nodes(); ++j) {
      if (!AddProxies(j, why)) return false;
    }
    io_thread_ = std::thread([this] { io_.run(); });
    for (int i = 0; i < nodes(); ++i) {
      if (!StartNode(i, why)) return false;
    }
    return WaitConnected(why);
  }

  // Adds a node to region r and starts it; returns its number, or -1.
  int AddNode(int r, std::string* why) {
    int j = Place(r);
    if (!AddProxies(j, why) || !StartNode(j, why)) return -1;
    return j;
  }

  // Starts node i (again, after a kill), on the same ports and data dir.
  bool StartNode(int i, std::string* why) {
    const int region = RegionOf(i);
    std::string peers, routes;
    for (int r = 0; r < options_.regions; ++r) {
      if (r == region) continue;
      int seed = r * options_.nodes_per_region;
      peers += (peers.empty() ? "" : ",") + Region(r) + "=" +
               proxies_[{region, seed}]->listen_address();
      routes += (routes.empty() ? "" : ",") + Region(r) + "=" +
                proxies_[{r, i}]->listen_address();
    }
    std::vector<std::string> flags{"--region", Region(region), "--node-id", Name(i),
                                   "--peer-listen",
                                   "127.0.0.1:" + std::to_string(peer_ports_[i]),
                                   "--peers", peers, "--peer-routes", routes,
                                   "--durability", "wal"};
    if (options_.gossip || options_.nodes_per_region > 1 || nodes() > options_.regions) {
      int seed = region * options_.nodes_per_region;
      flags.insert(flags.end(),
                   {"--gossip-listen", "127.0.0.1:" + std::to_string(gossip_ports_[i]),
                    "--seeds", "127.0.0.1:" + std::to_string(gossip_ports_[seed])});
    }
    if (options_.metrics) flags.insert(flags.end(), {"--metrics-listen", metrics_address(i)});
    flags.insert(flags.end(), options_.flags.begin(), options_.flags.end());
    auto wrapper = options_.wrappers.find(region);
    const int run = ++runs_[i];
    auto process = std::make_unique<ServerProcess>(
        GEOKV_SERVER_BIN, DataDir(i),
        dir_ + "/node" + std::to_string(i) + (run > 1 ? "-run" + std::to_string(run) : "") + ".log",
        flags,
        wrapper == options_.wrappers.end() ? std::vector<std::string>{} : wrapper->second);
    if (i < static_cast<int>(nodes_.size())) {
      nodes_[i] = std::move(process);
    } else {
      nodes_.push_back(std::move(process));
    }
    return nodes_[i]->Start(why);
  }

  bool WaitConnected(std::string* why) {
    for (int i = 0; i < nodes(); ++i) {
      Client c(address(i));
      if (!PollUntil([&] { return c.AllPeersConnected(nodes() - 1); },
                     std::chrono::seconds(30))) {
        *why = Name(i) + "'s peer links did not come up." + Logs();
        return false;
      }
    }
    return true;
  }

  ServerProcess& node(int i) { return *nodes_[i]; }
  // Where node i serves /metrics (with Options::metrics).
  std::string metrics_address(int i) const {
    return "127.0.0.1:" + std::to_string(metrics_ports_[i]);
  }
  // Every node's log, for failure messages.
  std::string Logs() {
    std::string out;
    for (int j = 0; j < nodes(); ++j) out += "\n--- " + Name(j) + ":\n" + node(j).child().Log();
    return out;
  }
  std::string address(int i) const { return nodes_[i]->address(); }
  // The proxy region `from` reaches node `to` of another region through.
  WanProxy& proxy(int from, int to) { return *proxies_.at({from, to}); }

  // Cuts region r off from every other region, both ways.
  void Partition(int r) { ForLinksOf(r, [](WanProxy& p) { p.Partition(); }); }
  void Heal(int r) { ForLinksOf(r, [](WanProxy& p) { p.Heal(); }); }
  // Resets every open connection between regions (they reconnect).
  void CutAll() {
    for (auto& [link, proxy] : proxies_) {
      proxy->Partition();
      proxy->Heal();
    }
  }

  // Waits until every node shows the same state digest.
  bool WaitConverged(std::chrono::milliseconds timeout, std::string* why) {
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < nodes(); ++i) clients.push_back(std::make_unique<Client>(address(i)));
    std::vector<uint64_t> digests;
    bool ok = PollUntil(
        [&] {
          digests.clear();
          for (auto& c : clients) digests.push_back(c->StateDigest());
          return std::all_of(digests.begin(), digests.end(),
                             [&](uint64_t d) { return d == digests[0]; });
        },
        timeout);
    if (!ok) {
      *why = "digests still differ:";
      for (uint64_t d : digests) *why += " " + ToHex(EncodeBigEndian64(d));
    }
    return ok;
  }

  // Stops every node (SIGTERM) and compares their data dirs whole.
  bool StopAndCompareDumps(std::string* why) {
    for (int i = 0; i < nodes(); ++i) {
      auto status = node(i).Stop();
      if (!status || *status != 0) {
        *why = Name(i) + " did not stop cleanly:\n" + node(i).child().Log();
        return false;
      }
    }
    Dump first = DumpDataDir(DataDir(0), why);
    if (!why->empty()) return false;
    if (first.empty()) {
      *why = "empty dump";
      return false;
    }
    for (int i = 1; i < nodes(); ++i) {
      Dump other = DumpDataDir(DataDir(i), why);
      if (!why->empty()) return false;
      if (other != first) {
        *why = Name(i) + "'s dump differs from " + Name(0) + "'s (" +
               std::to_string(other.size()) + " against " + std::to_string(first.size()) +
               " keys)";
        return false;
      }
    }
    return true;
  }

 private:
  int Place(int r) {
    region_of_.push_back(r);
    peer_ports_.push_back(FreePort());
    gossip_ports_.push_back(FreePort());
    metrics_ports_.push_back(FreePort());
    return nodes() - 1;
  }

  // The proxies every other region reaches node j through.
  bool AddProxies(int j, std::string* why) {
    for (int r = 0; r < options_.regions; ++r) {
      if (RegionOf(j) == r) continue;
      WanProxyOptions po;
      po.target = "127.0.0.1:" + std::to_string(peer_ports_[j]);
      po.delay = options_.delay;
      po.seed = static_cast<uint64_t>(r * 1000 + j + 1);
      auto proxy = std::make_unique<WanProxy>(io_, po);
      Status started = proxy->Start();
      if (!started.ok()) {
        *why = "proxy: " + started.ToString();
        return false;
      }
      proxies_[{r, j}] = std::move(proxy);
    }
    return true;
  }

  template <typename F>
  void ForLinksOf(int r, F f) {
    for (auto& [link, proxy] : proxies_) {
      if (link.first == r || RegionOf(link.second) == r) f(*proxy);
    }
  }

  std::string dir_;
  Options options_;
  boost::asio::io_context io_;
  std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_ =
      std::make_unique<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>(
          io_.get_executor());
  std::thread io_thread_;
  std::vector<int> region_of_;
  std::vector<int> peer_ports_;
  std::vector<int> gossip_ports_;
  std::vector<int> metrics_ports_;
  std::map<int, int> runs_;  // starts of each node
  std::map<std::pair<int, int>, std::unique_ptr<WanProxy>> proxies_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
};

}  // namespace geokv::testing

#endif  // GEOKV_TESTS_REPLICATION_CLUSTER_H_

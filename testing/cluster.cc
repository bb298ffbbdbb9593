#include "testing/cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>

#include "crdt/codec.h"
#include "schema/kv_text.h"
#include "storage/store.h"
#include "testing/certificates.h"
#include "util/coding.h"

namespace geokv::testing {

namespace {

template <typename Reply>
std::string Token(const Reply& reply) {
  if (reply.getOutcome().getCode() != rpc::Outcome::Code::OK) return "";
  return String(reply.getToken());
}

}  // namespace

namespace {

// Binds a socket of `type` to 127.0.0.1:port (0: any) and closes it; the
// port bound, or 0 when the bind failed.
int TryBind(int type, int port) {
  int fd = socket(AF_INET, type, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  int bound = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) bound = ntohs(addr.sin_port);
  }
  close(fd);
  return bound;
}

// The first port of the kernel's ephemeral range.
int EphemeralLow() {
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0, high = 0;
  if (range >> low >> high && low > 0) return low;
  return 32768;
}

}  // namespace

int FreePort() {
  // Below the range, where nothing but an explicit bind takes a port.
  constexpr int kLowest = 10000;
  static std::mutex mu;
  static std::set<int> given;
  static std::mt19937 rng(std::random_device{}());
  static const int high = EphemeralLow();
  std::lock_guard<std::mutex> lock(mu);
  for (int attempt = 0; high - kLowest >= 2000 && attempt < 1000; ++attempt) {
    const int port = kLowest + static_cast<int>(rng() % static_cast<unsigned>(high - kLowest));
    if (!given.count(port) && TryBind(SOCK_STREAM, port) == port &&
        TryBind(SOCK_DGRAM, port) == port) {
      given.insert(port);
      return port;
    }
  }
  // No room below the range: any free port the kernel picks.
  int port = 0;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    port = TryBind(SOCK_STREAM, 0);
    if (port != 0 && !given.count(port) && TryBind(SOCK_DGRAM, port) == port) break;
  }
  given.insert(port);
  return port;
}

Dump DumpDataDir(const std::string& dir, std::string* why) {
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

// ---- Client --------------------------------------------------------------------

Client::Client(const std::string& address, const ClientTlsOptions& tls)
    : connection_(address, tls), kv_(connection_.Main()) {}

Client::Client(const Cluster& cluster, int node)
    : Client(cluster.address(node), cluster.client_tls(cluster.RegionOf(node))) {}

std::string Client::Set(const std::string& key, const std::string& value) {
  auto req = kv_.setRequest();
  req.setKey(AsData(key));
  req.setValue(AsData(value));
  return Token(req.send().wait(ws()));
}

std::string Client::Del(const std::string& key) {
  auto req = kv_.delRequest();
  req.setKey(AsData(key));
  return Token(req.send().wait(ws()));
}

std::string Client::MvSet(const std::string& key, const std::string& value) {
  auto req = kv_.mvSetRequest();
  req.setKey(AsData(key));
  req.setValue(AsData(value));
  return Token(req.send().wait(ws()));
}

std::string Client::SAdd(const std::string& key, const std::string& element) {
  auto req = kv_.sAddRequest();
  req.setKey(AsData(key));
  req.initElements(1).set(0, AsData(element));
  return Token(req.send().wait(ws()));
}

std::string Client::SRem(const std::string& key, const std::string& element) {
  auto req = kv_.sRemRequest();
  req.setKey(AsData(key));
  req.initElements(1).set(0, AsData(element));
  return Token(req.send().wait(ws()));
}

std::string Client::IncrBy(const std::string& key, int64_t delta) {
  auto req = kv_.incrByRequest();
  req.setKey(AsData(key));
  req.setDelta(delta);
  return Token(req.send().wait(ws()));
}

std::optional<std::string> Client::Get(const std::string& key,
                                       const std::vector<std::string>& tokens,
                                       rpc::Outcome::Code* code) {
  auto req = kv_.getRequest();
  req.setKey(AsData(key));
  auto list = req.initTokens(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) list.set(i, AsData(tokens[i]));
  auto reply = req.send().wait(ws());
  if (code) *code = reply.getOutcome().getCode();
  if (reply.getOutcome().getCode() != rpc::Outcome::Code::OK) return std::nullopt;
  return String(reply.getValue());
}

std::vector<std::string> Client::MvGet(const std::string& key) {
  auto req = kv_.mvGetRequest();
  req.setKey(AsData(key));
  auto reply = req.send().wait(ws());
  std::vector<std::string> out;
  for (auto v : reply.getValues()) out.push_back(String(v));
  return out;
}

std::vector<std::string> Client::SMembers(const std::string& key) {
  auto req = kv_.sMembersRequest();
  req.setKey(AsData(key));
  req.setLimit(1000);
  auto reply = req.send().wait(ws());
  std::vector<std::string> out;
  for (auto e : reply.getElements()) out.push_back(String(e));
  return out;
}

int64_t Client::Counter(const std::string& key) {
  auto req = kv_.counterGetRequest();
  req.setKey(AsData(key));
  return req.send().wait(ws()).getValue();
}

uint64_t Client::StateDigest() { return kv_.infoRequest().send().wait(ws()).getStateDigest(); }

bool Client::AllPeersConnected(size_t peers) {
  auto info = kv_.infoRequest().send().wait(ws());
  if (info.getPeers().size() < peers) return false;
  for (auto p : info.getPeers()) {
    if (!p.getConnected()) return false;
  }
  return true;
}

// ---- Cluster -------------------------------------------------------------------

Cluster::Cluster(std::string dir, Options options)
    : dir_(std::move(dir)), options_(std::move(options)) {}

Cluster::~Cluster() {
  for (auto& node : nodes_) {
    if (node && node->Running()) node->Kill();
  }
  for (auto& [link, proxy] : proxies_) proxy->Stop();
  work_.reset();
  if (io_thread_.joinable()) io_thread_.join();
}

std::string Cluster::Name(int node) const {
  if (options_.nodes_per_region == 1 && node < options_.regions) return "node-" + Region(node);
  int k = 0;
  for (int j = 0; j < node; ++j) k += region_of_[j] == region_of_[node];
  return Region(RegionOf(node)) + "-" + std::to_string(k);
}

ClientTlsOptions Cluster::client_tls(int region) const {
  if (!options_.tls) return {};
  ClientTlsOptions tls;
  tls.ca = tls_dir() + "/ca.pem";
  tls.cert = client_cert_;
  tls.key = client_key_;
  tls.name = Region(region);
  return tls;
}

bool Cluster::Start(std::string* why) {
  for (int r = 0; r < options_.regions; ++r) {
    for (int k = 0; k < options_.nodes_per_region; ++k) Place(r);
  }
  if (options_.tls) {
    std::filesystem::create_directories(tls_dir());
    if (!MakeCa(tls_dir(), "ca", why)) return false;
  }
  for (int j = 0; j < nodes(); ++j) {
    if (!AddProxies(j, why)) return false;
  }
  io_thread_ = std::thread([this] { io_.run(); });
  for (int i = 0; i < nodes(); ++i) {
    if (!StartNode(i, why)) return false;
  }
  return WaitConnected(why) && WaitSettled(std::chrono::seconds(30), why);
}

int Cluster::AddNode(int r, std::string* why) {
  int j = Place(r);
  if (!AddProxies(j, why) || !StartNode(j, why)) return -1;
  return j;
}

bool Cluster::StartNode(int i, std::string* why) {
  const int region = RegionOf(i);
  std::string peers, routes;
  for (int r = 0; r < options_.regions; ++r) {
    if (r == region) continue;
    int seed = r * options_.nodes_per_region;
    peers += (peers.empty() ? "" : ",") + Region(r) + "=" +
             proxies_[{region, seed}]->listen_address();
    routes += (routes.empty() ? "" : ",") + Region(r) + "=" + proxies_[{r, i}]->listen_address();
  }
  std::vector<std::string> flags{"--region", Region(region), "--node-id", Name(i),
                                 "--peer-listen", "127.0.0.1:" + std::to_string(peer_ports_[i]),
                                 "--peers", peers, "--peer-routes", routes,
                                 "--durability", "wal"};
  if (options_.gossip || options_.nodes_per_region > 1 || nodes() > options_.regions) {
    const int first = region * options_.nodes_per_region;
    std::string seeds = "127.0.0.1:" + std::to_string(gossip_ports_[first]);
    for (int k = 1; options_.all_seeds && k < options_.nodes_per_region; ++k) {
      seeds += ",127.0.0.1:" + std::to_string(gossip_ports_[first + k]);
    }
    flags.insert(flags.end(), {"--gossip-listen", "127.0.0.1:" + std::to_string(gossip_ports_[i]),
                               "--seeds", seeds});
  }
  if (options_.metrics) flags.insert(flags.end(), {"--metrics-listen", metrics_address(i)});
  if (options_.tls) {
    const std::string cert = tls_dir() + "/" + Name(i);
    if (runs_[i] == 0 && !MakeCertificate(tls_dir(), "ca", Name(i), Name(i) + "." + Region(region),
                                          {Region(region)}, why)) {
      return false;
    }
    flags.insert(flags.end(), {"--tls-cert", cert + ".pem", "--tls-key", cert + ".key",
                               "--tls-ca", tls_dir() + "/ca.pem"});
  }
  flags.insert(flags.end(), options_.flags.begin(), options_.flags.end());
  std::vector<std::string> wrapper;
  if (auto own = node_wrappers_.find(i); own != node_wrappers_.end()) {
    wrapper = own->second;
  } else if (auto shared = options_.wrappers.find(region); shared != options_.wrappers.end()) {
    wrapper = shared->second;
  }
  const int run = ++runs_[i];
  auto process = std::make_unique<ServerProcess>(
      GEOKV_SERVER_BIN, DataDir(i),
      dir_ + "/node" + std::to_string(i) + (run > 1 ? "-run" + std::to_string(run) : "") + ".log",
      flags, wrapper);
  if (i < static_cast<int>(nodes_.size())) {
    nodes_[i] = std::move(process);
  } else {
    nodes_.push_back(std::move(process));
  }
  return nodes_[i]->Start(why);
}

bool Cluster::WaitConnected(std::string* why) {
  for (int i = 0; i < nodes(); ++i) {
    Client c(*this, i);
    if (!PollUntil([&] { return c.AllPeersConnected(nodes() - 1); }, std::chrono::seconds(30))) {
      *why = Name(i) + "'s peer links did not come up." + Logs();
      return false;
    }
  }
  return true;
}

bool Cluster::WaitSettled(std::chrono::milliseconds timeout, std::string* why) {
  for (int i = 0; i < nodes(); ++i) {
    if (!nodes_[i]->Running()) continue;
    Client c(*this, i);
    auto settled = [&] {
      return c.kv().infoRequest().send().wait(c.ws()).getUnsettledSegments() == 0;
    };
    if (!PollUntil(settled, timeout)) {
      *why = Name(i) + " did not get in step with its region's other owners." + Logs();
      return false;
    }
  }
  return true;
}

std::string Cluster::Logs() {
  std::string out;
  for (int j = 0; j < static_cast<int>(nodes_.size()); ++j) {
    out += "\n--- " + Name(j) + ":\n" + nodes_[j]->Log();
  }
  return out;
}

void Cluster::Partition(int r) { ForLinksOf(r, [](WanProxy& p) { p.Partition(); }); }

void Cluster::Heal(int r) { ForLinksOf(r, [](WanProxy& p) { p.Heal(); }); }

void Cluster::CutAll() {
  for (auto& [link, proxy] : proxies_) {
    proxy->Partition();
    proxy->Heal();
  }
}

bool Cluster::WaitConverged(std::chrono::milliseconds timeout, std::string* why) {
  std::vector<int> all;
  for (int i = 0; i < nodes(); ++i) all.push_back(i);
  return WaitConverged(timeout, why, all);
}

bool Cluster::WaitConverged(std::chrono::milliseconds timeout, std::string* why,
                            const std::vector<int>& which) {
  std::vector<std::unique_ptr<Client>> clients;
  for (int i : which) {
    clients.push_back(std::make_unique<Client>(*this, i));
  }
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

bool Cluster::StopAndCompareDumps(std::string* why) {
  for (int i = 0; i < nodes(); ++i) {
    auto status = node(i).Stop();
    if (!status || *status != 0) {
      *why = Name(i) + " did not stop cleanly:\n" + node(i).Log();
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
      *why = Name(i) + "'s dump differs from " + Name(0) + "'s (" + std::to_string(other.size()) +
             " against " + std::to_string(first.size()) + " keys)";
      return false;
    }
  }
  return true;
}

int Cluster::Place(int r) {
  region_of_.push_back(r);
  peer_ports_.push_back(FreePort());
  gossip_ports_.push_back(FreePort());
  metrics_ports_.push_back(FreePort());
  return nodes() - 1;
}

bool Cluster::AddProxies(int j, std::string* why) {
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

}  // namespace geokv::testing

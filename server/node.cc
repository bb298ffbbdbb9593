#include "server/node.h"

#include <kj/async-unix.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "cluster/gossip.h"
#include "cluster/gossip_key.h"
#include "monitoring/metrics.h"
#include "replication/group_commit.h"
#include "replication/members.h"
#include "replication/replicator.h"
#include "server/admin.h"
#include "server/client_loops.h"
#include "server/cluster_view.h"
#include "server/coordinator.h"
#include "server/forwarder.h"
#include "server/kv_service.h"
#include "server/leave.h"
#include "server/membership_feed.h"
#include "server/metric_sampler.h"
#include "server/resp_server.h"
#include "server/rpc_listener.h"
#include "storage/async_store.h"
#include "storage/store.h"
#include "util/tls.h"

namespace geokv {
namespace {

// A node with seeds other than itself waits this long for one to answer
// before it serves as its region's only member.
constexpr auto kJoinWait = 10 * kj::SECONDS;

// Every part Reload() may name (Reloadable::part), so that each has its
// geokv_reloads_total series from the start.
constexpr const char* kReloadableParts[] = {"tls", "gossip_keys", "users"};

std::string DefaultName(ReplicaId id) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "node-%08llx", static_cast<unsigned long long>(id >> 32));
  return buf;
}

// Whether HOST:PORT can be reached only from this machine.
bool IsLoopback(const std::string& address) {
  std::string host = address.substr(0, address.rfind(':'));
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return host.rfind("127.", 0) == 0 || host == "::1" || host == "localhost";
}

Acceptor::Wrap ServeTls(TlsContextHolder* tls) {
  if (tls == nullptr) return nullptr;
  return [tls](kj::AuthenticatedStream accepted) { return tls->WrapServer(kj::mv(accepted)); };
}

Consistency ConsistencyNamed(const std::string& name) {
  if (name == "one") return Consistency::kOne;
  if (name == "all") return Consistency::kAll;
  return Consistency::kQuorum;
}

}  // namespace

Node::Node(ServerOptions options) : options_(std::move(options)) {}

Node::~Node() {
  // Gossip's callbacks reach the follower; they end first.
  if (gossip_) gossip_->Stop();
  if (client_loops_) client_loops_->Stop(io_->provider->getTimer()).wait(io_->waitScope);
}

int Node::Run() {
  if (!Start().ok()) return 1;
  RunUntilStopped();
  return Shutdown();
}

Status Node::Start() {
  // Signals are taken by the event loop; capture them before any thread
  // (RocksDB's among them) starts so that every thread inherits them blocked.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGHUP);
  std::signal(SIGPIPE, SIG_IGN);

  StoreOptions store_options;
  store_options.durability = options_.durability;
  store_options.new_identity = options_.new_identity;
  auto opened = Store::Open(options_.data_dir, store_options);
  if (!opened.ok()) {
    spdlog::error("cannot open the store in {}: {}", options_.data_dir,
                  opened.status().ToString());
    return opened.status();
  }
  store_ = std::move(opened).value();
  name_ = options_.node_id.empty() ? DefaultName(store_->node_id()) : options_.node_id;
  spdlog::info("node {} (replica {:016x}) of region {} opened {} (durability {})", name_,
               store_->node_id(), options_.region, options_.data_dir,
               options_.durability == Durability::kFsync ? "fsync" : "wal");
  if (!store_->IdentityChange().empty()) {
    spdlog::warn("this node continues under the new replica id {:016x}, retiring {:016x} (its "
                 "log through {}): {}; its peers are repaired by anti-entropy",
                 store_->node_id(), store_->RetiredIds().back().id,
                 store_->RetiredIds().back().last_seq, store_->IdentityChange());
  }

  KeptMembers kept;
  if (!store_->PeerMembers().empty()) {
    std::optional<KeptMembers> decoded = DecodeLearnedMembers(store_->PeerMembers());
    if (decoded) {
      kept = std::move(*decoded);
    } else {
      spdlog::warn("the members kept in the data dir do not decode; starting from --peers and "
                   "--seeds alone");
    }
  }

  io_ = std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo());
  // Check the sockets and the writer's answers every 64 events, not only
  // when the queue runs dry: a steady stream of calls would otherwise starve
  // the commit answers.
  io_->waitScope.setBusyPollInterval(64);
  async_store_ = std::make_unique<AsyncStore>(*store_, options_.reader_threads);

  GEOKV_RETURN_IF_ERROR(LoadTls());
  GEOKV_RETURN_IF_ERROR(Listen());
  GEOKV_RETURN_IF_ERROR(RefusePlaintext());
  GEOKV_RETURN_IF_ERROR(StartGossip(kept.region_seeds));
  metrics_ = std::make_unique<Metrics>(options_.region);
  for (const char* part : kReloadableParts) {
    metrics_->Reloads(part, true);
    metrics_->Reloads(part, false);
  }
  GEOKV_RETURN_IF_ERROR(StartMetricsServer());
  GEOKV_RETURN_IF_ERROR(LoadUsers());
  StartReplication(kept.remote);
  StartServices();
  StartJoining();
  Place();
  replicator_->Start();
  sampler_ = std::make_unique<MetricSampler>(*async_store_, options_.data_dir, gossip_.get(),
                                             *view_, *metrics_, io_->provider->getTimer());
  sampler_->Start();
  if (gossip_) {
    follower_ = std::make_unique<MembershipFollower>(
        *gossip_, *view_, [this](const char* how) { Joined(how); },
        [this] {
          Place();
          KeepMembers();
        });
    follower_->Start();
  }
  return Status::OK();
}

Status Node::LoadTls() {
  if (options_.tls_cert.empty()) return Status::OK();
  auto contexts = LoadTlsContexts();
  if (!contexts.ok()) {
    spdlog::error("cannot start with TLS: {}", contexts.status().message());
    return contexts.status();
  }
  peer_tls_ = std::make_unique<TlsContextHolder>(kj::mv(contexts->peer));
  client_tls_ = std::make_unique<TlsContextHolder>(kj::mv(contexts->client));
  reloadables_.push_back({"tls", [this] { return ReloadTls(); }});
  spdlog::info("TLS on every port: this node is {}; peers must present a certificate of {}{}",
               NodeCommonName({options_.node_id, options_.region}), options_.tls_ca,
               options_.client_ca.empty() ? ""
                                          : ", clients one of " + options_.client_ca);
  return Status::OK();
}

StatusOr<Node::TlsContexts> Node::LoadTlsContexts() {
  const NodeIdentity self{options_.node_id, options_.region};
  GEOKV_RETURN_IF_ERROR(CheckNodeNames(self));
  GEOKV_RETURN_IF_ERROR(CheckNodeCertificate(options_.tls_cert, self));
  TlsContextOptions tls;
  tls.files = TlsFiles{options_.tls_cert, options_.tls_key, options_.tls_ca};
  tls.require_client_certificate = true;
  tls.certificate_from_ca = true;
  tls.timer = &io_->provider->getTimer();
  tls.handshake_timeout =
      static_cast<int64_t>(options_.tls_handshake_timeout_ms) * kj::MILLISECONDS;
  auto peer = MakeTlsContext(tls);
  if (!peer.ok()) return peer.status();
  tls.files.ca = options_.client_ca;
  tls.require_client_certificate = !options_.client_ca.empty();
  tls.certificate_from_ca = false;
  auto client = MakeTlsContext(tls);
  if (!client.ok()) return client.status();
  return TlsContexts{std::move(peer).value(), std::move(client).value()};
}

StatusOr<std::string> Node::ReloadTls() {
  auto contexts = LoadTlsContexts();
  if (!contexts.ok()) return contexts.status();
  peer_tls_->Replace(kj::mv(contexts->peer));
  client_tls_->Replace(kj::mv(contexts->client));
  return "certificate " + options_.tls_cert + ", key " + options_.tls_key + ", CA " +
         options_.tls_ca + (options_.client_ca.empty() ? "" : ", client CA " + options_.client_ca);
}

StatusOr<std::string> Node::ReloadGossipKeys() {
  auto keys = LoadGossipKeys(options_.gossip_key_file);
  if (!keys.ok()) return keys.status();
  const std::string what = std::to_string(keys->size()) + " key(s) from " +
                           options_.gossip_key_file + ", sealing under '" + keys->front().id + "'";
  gossip_->SetKeys(std::move(keys).value());
  return what;
}

Status Node::Reload() {
  Status first = Status::OK();
  if (reloadables_.empty()) {
    spdlog::info("reload: nothing to reload (no TLS, no gossip key, no users)");
  }
  for (const Reloadable& r : reloadables_) {
    auto reloaded = r.reload();
    metrics_->Reloads(r.part, reloaded.ok()).Increment();
    if (reloaded.ok()) {
      spdlog::info("reload: {} reloaded: {}", r.part, *reloaded);
    } else {
      spdlog::error("reload: {} not reloaded, the old one stays in force: {}", r.part,
                    reloaded.status().message());
      if (first.ok()) first = reloaded.status();
    }
  }
  return first;
}

kj::Promise<void> Node::ReloadOnSighup() {
  return io_->unixEventPort.onSignal(SIGHUP).then([this](siginfo_t) {
    spdlog::info("SIGHUP received: reloading");
    (void)Reload();
    return ReloadOnSighup();
  });
}

Status Node::RefusePlaintext() {
  if (!options_.tls_cert.empty()) return Status::OK();
  const std::pair<const char*, const std::string*> ports[] = {
      {"--listen", &options_.listen},
      {"--peer-listen", &options_.peer_listen},
      {"--resp-listen", &options_.resp_listen}};
  for (const auto& [flag, address] : ports) {
    if (address->empty() || IsLoopback(*address)) continue;
    if (!options_.insecure) {
      Status refused = Status::InvalidArgument(
          std::string(flag) + " " + *address + " is reachable off this machine without TLS: " +
          "give --tls-cert, --tls-key and --tls-ca, or --insecure to serve it in plaintext");
      spdlog::error("cannot start: {}", refused.message());
      return refused;
    }
    spdlog::warn("{} {} is reachable off this machine without TLS (--insecure): anyone who "
                 "reaches it can read and write",
                 flag, *address);
  }
  return Status::OK();
}

Status Node::LoadUsers() {
  if (options_.users_file.empty()) return Status::OK();
  auto users = Authenticator::Open(options_.users_file, *async_store_, *metrics_);
  if (!users.ok()) {
    spdlog::error("cannot start: {}", users.status().message());
    return users.status();
  }
  users_ = std::move(users).value();
  reloadables_.push_back({"users", [this]() -> StatusOr<std::string> {
                            GEOKV_RETURN_IF_ERROR(users_->Reload());
                            return std::to_string(users_->users()) + " users from " +
                                   options_.users_file;
                          }});
  spdlog::info("{} users from {}: clients must log in{}", users_->users(), options_.users_file,
               options_.client_ca.empty() ? ""
                                          : " or present a certificate naming a user");
  return Status::OK();
}

Status Node::Listen() {
  auto listen = [&](const std::string& address) -> kj::Own<kj::ConnectionReceiver> {
    kj::Own<kj::ConnectionReceiver> receiver;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
      receiver = io_->provider->getNetwork().parseAddress(address).wait(io_->waitScope)->listen();
    })) {
      spdlog::error("cannot listen on {}: {}", address, e->getDescription().cStr());
    }
    return receiver;
  };
  if (options_.client_loops > 1) {
    // Every loop listens on the address itself (server/client_loops.h).
    GEOKV_ASSIGN_OR_RETURN(loop_fds_, ListenSharing(options_.listen, options_.client_loops));
    receiver_ = WrapListening(*io_->lowLevelProvider, kj::mv(loop_fds_.front()));
    loop_fds_.erase(loop_fds_.begin());
  } else {
    receiver_ = listen(options_.listen);
  }
  if (receiver_.get() == nullptr) return Status::IOError("cannot listen on " + options_.listen);
  if (!options_.peer_listen.empty()) {
    peer_receiver_ = listen(options_.peer_listen);
    if (peer_receiver_.get() == nullptr) {
      return Status::IOError("cannot listen on " + options_.peer_listen);
    }
  }
  if (!options_.resp_listen.empty()) {
    resp_receiver_ = listen(options_.resp_listen);
    if (resp_receiver_.get() == nullptr) {
      return Status::IOError("cannot listen on " + options_.resp_listen);
    }
  }
  return Status::OK();
}

Status Node::StartGossip(const std::vector<std::string>& kept_seeds) {
  Member self;
  self.id = store_->node_id();
  self.name = name_;
  self.region = options_.region;
  // The address the client API really listens on (port 0 picks one).
  self.client_address = options_.listen.substr(0, options_.listen.rfind(':') + 1) +
                        std::to_string(receiver_->getPort());
  self.peer_address =
      options_.peer_advertise.empty() ? options_.peer_listen : options_.peer_advertise;
  for (const PeerAddress& route : options_.peer_routes) {
    self.peer_routes[route.region] = route.address;
  }
  if (!options_.gossip_listen.empty()) {
    GossipOptions g;
    g.listen = options_.gossip_listen;
    g.self = self;
    // A node whose --seeds name only itself (its region's first node, as
    // docs/cluster.md starts it) would otherwise serve as its region's only
    // member after a restart, until the others' gossip reached it.
    g.seeds = options_.seeds;
    for (const std::string& seed : kept_seeds) {
      if (std::find(g.seeds.begin(), g.seeds.end(), seed) == g.seeds.end()) {
        g.seeds.push_back(seed);
      }
    }
    const std::vector<std::string> join_through = g.seeds;
    g.membership.period = std::chrono::milliseconds(options_.gossip_period_ms);
    g.membership.ping_timeout = std::chrono::milliseconds(options_.gossip_period_ms * 2 / 5);
    g.membership.suspicion_timeout = std::chrono::milliseconds(options_.suspicion_timeout_ms);
    g.membership.confirmed_suspicion_timeout =
        std::chrono::milliseconds(options_.confirmed_suspicion_timeout_ms);
    g.drop_probability = options_.gossip_drop;
    if (!options_.gossip_key_file.empty()) {
      auto keys = LoadGossipKeys(options_.gossip_key_file);
      if (!keys.ok()) {
        spdlog::error("cannot start gossip: {}", keys.status().ToString());
        return keys.status();
      }
      g.auth.keys = std::move(keys).value();
      g.auth.accept_unauthenticated = options_.gossip_accept_unauthenticated;
      reloadables_.push_back({"gossip_keys", [this] { return ReloadGossipKeys(); }});
    } else if (!IsLoopback(options_.gossip_listen) && !options_.insecure) {
      Status refused = Status::InvalidArgument(
          "--gossip-listen " + options_.gossip_listen + " is reachable off this machine " +
          "without a gossip key: give --gossip-key-file, or --insecure to gossip unauthenticated");
      spdlog::error("cannot start: {}", refused.message());
      return refused;
    }
    for (const RetiredId& r : store_->RetiredIds()) g.membership.retired.push_back(r.id);
    gossip_ = std::make_unique<Gossip>(std::move(g));
    Status started = gossip_->Start();
    if (!started.ok()) {
      spdlog::error("cannot start gossip: {}", started.ToString());
      return started;
    }
    self = gossip_->Self();
    must_join_ = std::any_of(join_through.begin(), join_through.end(),
                             [&](const std::string& seed) { return seed != self.gossip_address; });
    std::string seeds;
    for (const std::string& seed : join_through) seeds += (seeds.empty() ? "" : ",") + seed;
    spdlog::info("gossip on {} (UDP), seeds {} ({} kept from the last run)", self.gossip_address,
                 seeds.empty() ? "none" : seeds, kept_seeds.size());
  }
  view_ = std::make_unique<ClusterView>(self, options_.replication_factor, options_.vnodes);
  return Status::OK();
}

Status Node::StartMetricsServer() {
  if (options_.metrics_listen.empty()) return Status::OK();
  auto served = MetricsServer::Start(options_.metrics_listen, metrics_->registry());
  if (!served.ok()) {
    spdlog::error("{}", served.status().ToString());
    return served.status();
  }
  metrics_server_ = std::move(served).value();
  spdlog::info("metrics on http://{}/metrics port {}", options_.metrics_listen,
               metrics_server_->port());
  return Status::OK();
}

void Node::StartReplication(const std::vector<Member>& kept_remote) {
  committer_ = std::make_unique<GroupCommitter>(*store_, options_.max_pending_writes);
  ReplicatorOptions replication = ReplicationOptionsOf(options_);
  replication.name = name_;
  // Whatever this node learns of other regions is kept for its next start,
  // when its --peers seeds may be gone.
  replication.on_remote_members = [this](const std::string& region,
                                         std::vector<Member> members) {
    if (!view_->MergeRemote(region, members)) return;
    Place();
    KeepMembers();
  };
  replication.local_members = [this] {
    // Other regions learn here that the ids this node used before left.
    std::vector<Member> members = view_->LocalMembers();
    for (const RetiredId& r : store_->RetiredIds()) {
      auto known = std::find_if(members.begin(), members.end(),
                                [&](const Member& m) { return m.id == r.id; });
      if (known != members.end() && known->state == MemberState::kLeft) continue;
      Member gone;
      gone.id = r.id;
      gone.name = DefaultName(r.id);
      gone.region = options_.region;
      gone.state = MemberState::kLeft;
      gone.incarnation = kRetiredIncarnation;
      if (known != members.end()) {
        *known = gone;
      } else {
        members.push_back(std::move(gone));
      }
    }
    return members;
  };
  replication.metrics = metrics_.get();
  replication.tls = peer_tls_.get();
  replicator_ = std::make_unique<Replicator>(*store_, *async_store_, *committer_, *io_->provider,
                                             std::move(replication));
  std::map<std::string, std::vector<Member>> kept;
  for (const Member& m : kept_remote) kept[m.region].push_back(m);
  for (const auto& [region, members] : kept) {
    view_->MergeRemote(region, members);
    spdlog::info("{} members of region {} known from the data dir", members.size(), region);
  }
}

void Node::StartServices() {
  forwarder_ = std::make_unique<ReplicatorForwarder>(*replicator_);
  CoordinatorOptions coordination;
  coordination.consistency = ConsistencyNamed(options_.consistency);
  coordination.request_timeout = std::chrono::milliseconds(options_.request_timeout_ms);
  coordination.read_hedge = std::chrono::milliseconds(options_.read_hedge_ms);
  coordination.max_message_bytes = options_.max_message_bytes;
  coordination.metrics = metrics_.get();
  coordinator_ = std::make_unique<Coordinator>(*async_store_, *committer_, *replicator_, *view_,
                                               *forwarder_, coordination);
  RequestLimits limits{options_.max_key_bytes, options_.max_value_bytes,
                       options_.max_batch_requests};
  admin_ = std::make_unique<Admin>(*async_store_, *replicator_, *view_,
                                   AdminOptions{name_, options_.region, limits, metrics_.get()});
  kj::Timer& timer = io_->provider->getTimer();
  leaver_ = std::make_unique<Leaver>(
      gossip_.get(), *replicator_, timer,
      static_cast<int64_t>(options_.leave_timeout_seconds * 1000) * kj::MILLISECONDS);
  admin_->SetLeave([this] { return leaver_->Leave(); });
  if (gossip_) {
    admin_->SetFailureDetections([this] { return gossip_->failure_detections(); });
    admin_->SetMemberRemoval([this](ReplicaId id) { return gossip_->Remove(id); });
  }
  serving_ = std::make_unique<ServingGate>();
  const KvServiceOptions service_options{limits, metrics_.get()};
  forward_service_ = std::make_unique<KvService>(*coordinator_, *admin_, *replicator_, *serving_,
                                                 nullptr, service_options);
  replicator_->SetForwardHandler(
      [this](rpc::Request::Reader request, rpc::Consistency level, rpc::Reply::Builder reply) {
        return forward_service_->RunForwarded(request, level, reply);
      });
  // One service per connection, counting its calls.
  const size_t calls_per_connection = options_.max_calls_per_connection;
  // A connection is served as the user its certificate names, or must log
  // in, when the node has users.
  auto sessions = [this, service_options, calls_per_connection](kj::PeerIdentity& client) {
    auto calls = std::make_shared<CallLimit>(calls_per_connection);
    auto open = [this, service_options, calls](Role role) -> capnp::Capability::Client {
      return kj::heap<KvService>(*coordinator_, *admin_, *replicator_, *serving_, calls,
                                 service_options, ClientAccess{role, users_.get()});
    };
    std::optional<Role> role = Role::kAdmin;
    if (users_) {
      std::optional<std::string> name = CertifiedName(client);
      role = name ? users_->CertifiedRole(*name) : std::nullopt;
    }
    capnp::Capability::Client service =
        role ? open(*role) : capnp::Capability::Client(kj::heap<LoginService>(*users_, open));
    return RpcSession{kj::mv(service), [calls] { return calls->Wait(); },
                      [calls] { return calls->under_way() > 0; }};
  };
  RpcListenerOptions client_options;
  client_options.max_connections = options_.max_connections;
  client_options.max_message_bytes = options_.max_message_bytes;
  client_options.idle_timeout = std::chrono::milliseconds(options_.idle_timeout_ms);
  client_options.read_timeout = std::chrono::milliseconds(options_.read_timeout_ms);
  // The two client ports share one connection limit.
  auto client_slots = std::make_shared<ConnectionSlots>(options_.max_connections,
                                                        options_.max_connections_per_address);
  client_options.slots = client_slots;
  client_options.wrap = ServeTls(client_tls_.get());
  if (!loop_fds_.empty()) {
    auto open = [this, service_options] {
      return capnp::Capability::Client(kj::heap<KvService>(
          *coordinator_, *admin_, *replicator_, *serving_, nullptr, service_options));
    };
    client_loops_ = std::make_unique<ClientLoops>(std::move(loop_fds_), open, client_options,
                                                  calls_per_connection);
  }
  listener_ = std::make_unique<RpcListener>(kj::mv(receiver_), sessions, timer, client_options);
  spdlog::info("client API listening on {} port {} ({} event loop{})", options_.listen,
               listener_->port(), options_.client_loops, options_.client_loops > 1 ? "s" : "");
  if (resp_receiver_.get() != nullptr) {
    RespServerOptions resp;
    resp.limits.max_bulk_bytes = std::max(options_.max_value_bytes, options_.max_key_bytes);
    resp.limits.max_args = options_.resp_max_args;
    resp.limits.max_inline_bytes = options_.resp_max_inline_bytes;
    resp.limits.max_command_bytes = options_.max_message_bytes;
    resp.slots = client_slots;
    resp.idle_timeout = client_options.idle_timeout;
    resp.read_timeout = client_options.read_timeout;
    resp.wrap = ServeTls(client_tls_.get());
    RespNode node{*coordinator_, *admin_, *replicator_, *async_store_, limits,
                  options_.max_message_bytes / 2, {}, {}, users_.get()};
    resp_server_ = std::make_unique<RespServer>(kj::mv(resp_receiver_), std::move(node), timer,
                                                std::move(resp));
    spdlog::info("redis protocol listening on {} port {}", options_.resp_listen,
                 resp_server_->port());
  }
  if (peer_receiver_.get() != nullptr) {
    RpcListenerOptions peer_options;
    peer_options.max_connections = options_.max_connections;
    peer_options.slots = std::make_shared<ConnectionSlots>(
        options_.max_connections, options_.max_connections_per_address);
    peer_options.max_message_bytes = options_.max_message_bytes;
    peer_options.idle_timeout = client_options.idle_timeout;
    peer_options.read_timeout = client_options.read_timeout;
    peer_options.wrap = ServeTls(peer_tls_.get());
    peer_options.packed = replicator_->packed_port();
    peer_options.compressed = replicator_->compressed_port();
    // Each connection's hello is checked against its certificate.
    auto peer_sessions = [this](kj::PeerIdentity& caller) {
      return RpcSession{replicator_->PeerBootstrap(CertifiedName(caller)), {}, {}};
    };
    peer_listener_ = std::make_unique<RpcListener>(kj::mv(peer_receiver_), peer_sessions, timer,
                                                   peer_options);
    spdlog::info("peer API listening on {} port {}", options_.peer_listen,
                 peer_listener_->port());
  } else if (!options_.peers.empty()) {
    spdlog::warn("--peers given without --peer-listen: this node ships to its peers, but they "
                 "cannot ship to it");
  }
}

void Node::StartJoining() {
  // A node with seeds other than itself knows its region only once another
  // member answers; until then its ring holds only itself. It serves ONE
  // and keeps its whole log until then, or until kJoinWait passes without
  // an answer (it is then its region's only member).
  const bool must_join = must_join_;
  view_->set_joined(!must_join);
  replicator_->HoldTrimming(must_join);
  if (!must_join) return;
  join_wait_ = io_->provider->getTimer()
                   .afterDelay(kJoinWait)
                   .then([this] {
                     if (view_->joined()) return;
                     spdlog::warn("no gossip seed answered within {} s: serving as the only "
                                  "member of region {}",
                                  kJoinWait / kj::SECONDS, options_.region);
                     Joined("no seed answered");
                   })
                   .eagerlyEvaluate(nullptr);
}

void Node::Place() {
  if (replicator_) replicator_->SetPlacement(view_->OwnSegments(), view_->Targets());
}

void Node::Joined(const char* how) {
  if (view_->joined()) return;
  view_->set_joined(true);
  replicator_->HoldTrimming(false);
  spdlog::info("joined region {}: {}", options_.region, how);
}

void Node::KeepMembers() {
  KeptMembers kept;
  kept.remote = view_->RemoteMembers();
  if (gossip_) {
    const Member self = gossip_->Self();
    for (const Member& m : gossip_->Members()) {
      if (m.id == self.id || m.state == MemberState::kLeft || m.gossip_address.empty() ||
          m.gossip_address == self.gossip_address) {
        continue;
      }
      kept.region_seeds.push_back(m.gossip_address);
    }
  }
  replicator_->KeepPeerMembers(kept);
}

void Node::RunUntilStopped() {
  auto sigterm = io_->unixEventPort.onSignal(SIGTERM);
  auto sigint = io_->unixEventPort.onSignal(SIGINT);
  auto reloads = ReloadOnSighup().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("reloading on SIGHUP stopped: {}", e.getDescription().cStr());
  });
  auto stop = sigterm.exclusiveJoin(kj::mv(sigint)).then([](siginfo_t signal) {
    spdlog::info("{} received: shutting down", signal.si_signo == SIGTERM ? "SIGTERM" : "SIGINT");
  });
  stop.exclusiveJoin(leaver_->Left().then([this] {
        if (leaver_->failed().ok()) {
          spdlog::info("left the cluster: every key is with its owners; shutting down");
        } else {
          spdlog::error("shutting down without having left: {}", leaver_->failed().ToString());
        }
      }))
      .wait(io_->waitScope);
  leaver_->Stop();
}

int Node::Shutdown() {
  kj::WaitScope& ws = io_->waitScope;
  kj::Timer& timer = io_->provider->getTimer();
  listener_->StopAccepting();
  if (client_loops_) client_loops_->StopAccepting();
  if (peer_listener_) peer_listener_->StopAccepting();
  if (resp_server_) resp_server_->StopAccepting();
  serving_->Close();
  if (gossip_) gossip_->Stop();
  if (follower_) follower_->Stop();
  sampler_->Stop();
  auto timeout = static_cast<int64_t>(options_.shutdown_timeout_seconds * 1000) * kj::MILLISECONDS;
  if (leaver_->leaving()) {
    // Writes taken between the hand-over check and StopServing are only in
    // this node's log: the others must have them before it goes.
    leaver_->Delivered(*committer_, timer.now() + timeout).wait(ws);
    if (!replicator_->LogDelivered()) {
      spdlog::error("left with writes not yet shipped to every node after {} s; they reach the "
                    "others only if this data dir is started again",
                    options_.shutdown_timeout_seconds);
    }
  }
  replicator_->Stop();
  bool drained = committer_->Drain()
                     .then([] { return true; })
                     .exclusiveJoin(timer.afterDelay(timeout).then([] { return false; }))
                     .wait(ws);
  if (!drained) {
    spdlog::warn("{} writes still pending after {} s; their clients get no answer",
                 committer_->pending(), options_.shutdown_timeout_seconds);
  }
  // Replies leave through each connection's write queue.
  auto deadline = timer.now() + 2 * kj::SECONDS;
  while (!listener_->RepliesSent() && timer.now() < deadline) {
    timer.afterDelay(10 * kj::MILLISECONDS).wait(ws);
  }
  if (client_loops_) client_loops_->Stop(timer).wait(ws);
  client_loops_.reset();
  resp_server_.reset();
  listener_.reset();
  peer_listener_.reset();
  if (!drained) {
    // The writer thread is stuck in a group (a hung disk); joining it would
    // hang too. Make what was acknowledged durable and leave without it.
    Status synced = store_->Sync();
    spdlog::error("exiting with writes still pending (final sync: {})", synced.ToString());
    spdlog::default_logger()->flush();
    std::_Exit(1);
  }
  forward_service_.reset();
  admin_.reset();
  coordinator_.reset();
  forwarder_.reset();
  replicator_.reset();
  committer_.reset();
  async_store_.reset();
  Status synced = store_->Sync();
  if (!synced.ok()) {
    spdlog::error("final sync failed: {}", synced.ToString());
    return 1;
  }
  store_.reset();
  if (!leaver_->failed().ok()) return 1;
  spdlog::info("shut down cleanly");
  return 0;
}

}  // namespace geokv

#include "server/node.h"

#include <kj/async-unix.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include <sys/statvfs.h>

#include "cluster/gossip.h"
#include "monitoring/metrics.h"
#include "replication/group_commit.h"
#include "server/cluster_view.h"
#include "server/kv_service.h"
#include "server/rpc_listener.h"

namespace geokv {
namespace {

std::string DefaultName(ReplicaId id) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "node-%08llx",
                static_cast<unsigned long long>(id >> 32));
  return buf;
}

rpc::Consistency ConsistencyNamed(const std::string& name) {
  if (name == "one") return rpc::Consistency::ONE;
  if (name == "all") return rpc::Consistency::ALL;
  return rpc::Consistency::QUORUM;
}

// Carries gossip's "members changed" from its thread to the event loop.
class GossipFeed {
 public:
  // Called on the gossip thread.
  void Changed() {
    std::lock_guard<std::mutex> lock(mu_);
    if (waiting_) {
      waiting_->fulfill();
      waiting_ = nullptr;
    } else {
      pending_ = true;
    }
  }

  // Resolves at the next change (at once if one came since the last call).
  kj::Promise<void> Next() {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_) {
      pending_ = false;
      return kj::READY_NOW;
    }
    auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
    waiting_ = kj::mv(paf.fulfiller);
    return kj::mv(paf.promise);
  }

 private:
  std::mutex mu_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> waiting_;
  bool pending_ = false;
};

}  // namespace

int RunNode(const ServerOptions& options) {
  // Signals are taken by the event loop; capture them before any thread
  // (RocksDB's among them) starts so that every thread inherits them blocked.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  std::signal(SIGPIPE, SIG_IGN);

  StoreOptions store_options;
  store_options.durability = options.durability;
  auto opened = Store::Open(options.data_dir, store_options);
  if (!opened.ok()) {
    spdlog::error("cannot open the store in {}: {}", options.data_dir,
                  opened.status().ToString());
    return 1;
  }
  std::unique_ptr<Store> store = std::move(opened).value();
  std::string name = options.node_id.empty() ? DefaultName(store->node_id()) : options.node_id;
  spdlog::info("node {} (replica {:016x}) of region {} opened {} (durability {})", name,
               store->node_id(), options.region, options.data_dir,
               options.durability == Durability::kFsync ? "fsync" : "wal");

  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  // Check the sockets and the writer's answers every 64 events, not only
  // when the queue runs dry: a steady stream of calls would otherwise starve
  // the commit answers.
  ws.setBusyPollInterval(64);
  kj::Timer& timer = io.provider->getTimer();

  auto listen = [&](const std::string& address) -> kj::Own<kj::ConnectionReceiver> {
    kj::Own<kj::ConnectionReceiver> receiver;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
      receiver = io.provider->getNetwork().parseAddress(address).wait(ws)->listen();
    })) {
      spdlog::error("cannot listen on {}: {}", address, e->getDescription().cStr());
    }
    return receiver;
  };
  kj::Own<kj::ConnectionReceiver> receiver = listen(options.listen);
  kj::Own<kj::ConnectionReceiver> peer_receiver;
  if (receiver.get() != nullptr && !options.peer_listen.empty()) {
    peer_receiver = listen(options.peer_listen);
  }
  if (receiver.get() == nullptr || (!options.peer_listen.empty() && peer_receiver.get() == nullptr)) {
    return 1;
  }
  Member self;
  self.id = store->node_id();
  self.name = name;
  self.region = options.region;
  // The address the client API really listens on (port 0 picks one).
  self.client_address =
      options.listen.substr(0, options.listen.rfind(':') + 1) + std::to_string(receiver->getPort());
  self.peer_address = options.peer_advertise.empty() ? options.peer_listen : options.peer_advertise;
  for (const PeerAddress& route : options.peer_routes) self.peer_routes[route.region] = route.address;
  std::unique_ptr<Gossip> gossip;
  if (!options.gossip_listen.empty()) {
    GossipOptions g;
    g.listen = options.gossip_listen;
    g.self = self;
    g.seeds = options.seeds;
    g.membership.period = std::chrono::milliseconds(options.gossip_period_ms);
    g.membership.ping_timeout = std::chrono::milliseconds(options.gossip_period_ms * 2 / 5);
    g.membership.suspicion_timeout = std::chrono::milliseconds(options.suspicion_timeout_ms);
    g.drop_probability = options.gossip_drop;
    gossip = std::make_unique<Gossip>(std::move(g));
    Status started = gossip->Start();
    if (!started.ok()) {
      spdlog::error("cannot start gossip: {}", started.ToString());
      return 1;
    }
    self = gossip->Self();
    std::string seeds;
    for (const std::string& seed : options.seeds) seeds += (seeds.empty() ? "" : ",") + seed;
    spdlog::info("gossip on {} (UDP), seeds {}", self.gossip_address,
                 seeds.empty() ? "none" : seeds);
  }
  ClusterView view(self, options.replication_factor, options.vnodes);
  Metrics metrics(options.region);
  std::unique_ptr<MetricsServer> metrics_server;
  if (!options.metrics_listen.empty()) {
    auto served = MetricsServer::Start(options.metrics_listen, metrics.registry());
    if (!served.ok()) {
      spdlog::error("{}", served.status().ToString());
      return 1;
    }
    metrics_server = std::move(served).value();
    spdlog::info("metrics on http://{}/metrics port {}", options.metrics_listen,
                 metrics_server->port());
  }

  auto committer = std::make_unique<GroupCommitter>(*store, options.max_pending_writes);
  std::unique_ptr<Replicator> replicator;
  auto place = [&] {
    if (replicator) replicator->SetPlacement(view.OwnSegments(), view.Targets());
  };
  ReplicatorOptions replication;
  replication.name = name;
  replication.region = options.region;
  replication.replication_factor = static_cast<uint32_t>(options.replication_factor);
  replication.vnodes = static_cast<uint32_t>(options.vnodes);
  replication.seeds = options.peers;
  replication.on_remote_members = [&](const std::string& region, std::vector<MemberRecord> members) {
    if (view.MergeRemote(region, members)) place();
  };
  replication.local_members = [&] { return view.LocalRecords(); };
  replication.metrics = &metrics;
  replication.max_message_bytes = options.max_message_bytes;
  replication.batch_bytes = options.replication_batch_bytes;
  replication.window = options.replication_window;
  replication.max_backlog_bytes = options.max_backlog_bytes;
  replication.max_clock_offset = std::chrono::milliseconds(options.max_clock_offset_ms);
  replication.token_wait = std::chrono::milliseconds(options.token_wait_ms);
  replication.anti_entropy_interval = std::chrono::milliseconds(options.anti_entropy_interval_ms);
  replication.anti_entropy_bytes_per_second = options.anti_entropy_bytes_per_second;
  replication.heartbeat = std::chrono::milliseconds(options.heartbeat_ms);
  replicator =
      std::make_unique<Replicator>(*store, *committer, *io.provider, std::move(replication));
  KvServiceOptions service_options;
  service_options.name = name;
  service_options.region = options.region;
  service_options.max_key_bytes = options.max_key_bytes;
  service_options.max_value_bytes = options.max_value_bytes;
  service_options.max_message_bytes = options.max_message_bytes;
  service_options.consistency = ConsistencyNamed(options.consistency);
  service_options.request_timeout = std::chrono::milliseconds(options.request_timeout_ms);
  service_options.metrics = &metrics;
  auto service_own = kj::heap<KvService>(*store, *committer, *replicator, view,
                                         std::move(service_options));
  KvService& service = *service_own;
  replicator->SetForwardHandler(
      [&service](rpc::Request::Reader request, rpc::Consistency level, rpc::Reply::Builder reply) {
        return service.RunForwarded(request, level, reply);
      });
  if (gossip) {
    service.SetFailureDetections([&gossip] { return gossip->failure_detections(); });
  }

  auto listener = std::make_unique<RpcListener>(
      kj::mv(receiver), kj::mv(service_own), timer,
      RpcListenerOptions{options.max_connections, options.max_message_bytes});
  spdlog::info("client API listening on {} port {}", options.listen, listener->port());
  std::unique_ptr<RpcListener> peer_listener;
  if (peer_receiver.get() != nullptr) {
    peer_listener = std::make_unique<RpcListener>(
        kj::mv(peer_receiver), replicator->PeerBootstrap(), timer,
        RpcListenerOptions{options.max_connections, options.max_message_bytes});
    spdlog::info("peer API listening on {} port {}", options.peer_listen, peer_listener->port());
  } else if (!options.peers.empty()) {
    spdlog::warn("--peers given without --peer-listen: this node ships to its peers, but they "
                 "cannot ship to it");
  }
  // A node with seeds other than itself knows its region only once another
  // member answers; until then its ring holds only itself. It serves ONE
  // and keeps its whole log until then, or until kJoinWait passes without
  // an answer (it is then its region's only member).
  constexpr auto kJoinWait = 10 * kj::SECONDS;
  const bool must_join =
      gossip && std::any_of(options.seeds.begin(), options.seeds.end(),
                            [&](const std::string& seed) { return seed != self.gossip_address; });
  auto joined = [&](const char* how) {
    if (view.joined()) return;
    view.set_joined(true);
    replicator->HoldTrimming(false);
    spdlog::info("joined region {}: {}", options.region, how);
  };
  view.set_joined(!must_join);
  replicator->HoldTrimming(must_join);
  kj::Promise<void> join_wait = nullptr;
  if (must_join) {
    join_wait = timer.afterDelay(kJoinWait).then([&] {
      if (view.joined()) return;
      spdlog::warn("no gossip seed answered within {} s: serving as the only member of region {}",
                   kJoinWait / kj::SECONDS, options.region);
      joined("no seed answered");
    }).eagerlyEvaluate(nullptr);
  }
  place();
  replicator->Start();
  // Once a second: what the store, the disk and gossip report.
  uint64_t lww_counted = 0, detections_counted = 0;
  std::function<kj::Promise<void>()> sample = [&]() -> kj::Promise<void> {
    Store::SpaceEstimates space = store->Space();
    metrics.rocksdb_live_data.Set(static_cast<double>(space.live_data_bytes));
    metrics.rocksdb_memtable.Set(static_cast<double>(space.memtable_bytes));
    metrics.rocksdb_pending_compaction.Set(static_cast<double>(space.pending_compaction_bytes));
    struct statvfs fs {};
    if (statvfs(options.data_dir.c_str(), &fs) == 0) {
      metrics.disk_free.Set(static_cast<double>(fs.f_bavail) * fs.f_frsize);
      metrics.disk_total.Set(static_cast<double>(fs.f_blocks) * fs.f_frsize);
    }
    uint64_t lww = store->LwwOverwritten();
    metrics.lww_overwritten.Increment(static_cast<double>(lww - lww_counted));
    lww_counted = lww;
    if (gossip) {
      uint64_t detections = gossip->failure_detections();
      metrics.failure_detections.Increment(static_cast<double>(detections - detections_counted));
      detections_counted = detections;
    }
    std::map<std::pair<std::string, std::string>, int> members;
    for (const Member* m : view.Members()) {
      ++members[{m->region, std::string(MemberStateName(m->state))}];
    }
    metrics.SetMembers(members);
    return timer.afterDelay(1 * kj::SECONDS).then([&sample] { return sample(); });
  };
  kj::Promise<void> sampling = sample().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("sampling metrics stopped: {}", e.getDescription().cStr());
  });
  GossipFeed feed;
  kj::Promise<void> following = nullptr;
  std::function<kj::Promise<void>()> follow = [&]() -> kj::Promise<void> {
    std::vector<Member> members = gossip->Members();
    if (!view.joined() && std::any_of(members.begin(), members.end(), [&](const Member& m) {
          return m.id != self.id && m.state == MemberState::kAlive;
        })) {
      joined("heard from another member");
    }
    if (view.SetLocal(std::move(members))) place();
    return feed.Next().then([&follow] { return follow(); });
  };
  if (gossip) {
    gossip->OnChange([&feed] { feed.Changed(); });
    following = follow().eagerlyEvaluate([](kj::Exception&& e) {
      spdlog::error("following membership stopped: {}", e.getDescription().cStr());
    });
  }

  // Leaving: once every key is with its owners and every live node holds
  // this node's log, the node shuts down as on SIGTERM.
  bool leaving = false;
  auto left = kj::newPromiseAndFulfiller<void>();
  std::function<kj::Promise<void>()> watch_leave = [&]() -> kj::Promise<void> {
    return timer.afterDelay(200 * kj::MILLISECONDS).then([&]() -> kj::Promise<void> {
      if (replicator->HoldsOnlyOwned() && replicator->LogDelivered()) {
        left.fulfiller->fulfill();
        return kj::READY_NOW;
      }
      return watch_leave();
    });
  };
  kj::Promise<void> leave_watch = nullptr;
  service.SetLeave([&]() -> Status {
    if (!gossip) {
      return Status::Unavailable("this node runs no gossip (--gossip-listen): it is its region's "
                                 "only member, and its keys have no other owner to go to");
    }
    if (leaving) return Status::OK();
    leaving = true;
    spdlog::info("leaving the cluster: announcing it, then handing every key over");
    gossip->Leave(std::chrono::milliseconds(0));
    leave_watch = watch_leave().eagerlyEvaluate([](kj::Exception&& e) {
      spdlog::error("leaving failed: {}", e.getDescription().cStr());
    });
    return Status::OK();
  });

  if (gossip) service.SetMemberRemoval([&gossip](ReplicaId id) { return gossip->Remove(id); });

  auto sigterm = io.unixEventPort.onSignal(SIGTERM);
  auto sigint = io.unixEventPort.onSignal(SIGINT);
  auto stop = sigterm.exclusiveJoin(kj::mv(sigint)).then([](siginfo_t signal) {
    spdlog::info("{} received: shutting down",
                 signal.si_signo == SIGTERM ? "SIGTERM" : "SIGINT");
  });
  stop.exclusiveJoin(left.promise.then([] {
        spdlog::info("left the cluster: every key is with its owners; shutting down");
      }))
      .wait(ws);
  leave_watch = nullptr;

  listener->StopAccepting();
  if (peer_listener) peer_listener->StopAccepting();
  service.StopServing();
  if (gossip) gossip->Stop();
  following = nullptr;
  sampling = nullptr;
  auto timeout = static_cast<int64_t>(options.shutdown_timeout_seconds * 1000) * kj::MILLISECONDS;
  if (leaving) {
    // Writes taken between the hand-over check and StopServing are only in
    // this node's log: the others must have them before it goes.
    auto deadline = timer.now() + timeout;
    while (!(committer->pending() == 0 && replicator->LogDelivered()) && timer.now() < deadline) {
      timer.afterDelay(50 * kj::MILLISECONDS).wait(ws);
    }
    if (!replicator->LogDelivered()) {
      spdlog::error("left with writes not yet shipped to every node after {} s; they reach the "
                    "others only if this data dir is started again",
                    options.shutdown_timeout_seconds);
    }
  }
  replicator->Stop();
  bool drained = committer->Drain()
                     .then([] { return true; })
                     .exclusiveJoin(timer.afterDelay(timeout).then([] { return false; }))
                     .wait(ws);
  if (!drained) {
    spdlog::warn("{} writes still pending after {} s; their clients get no answer",
                 committer->pending(), options.shutdown_timeout_seconds);
  }
  // Replies leave through each connection's write queue.
  auto deadline = timer.now() + 2 * kj::SECONDS;
  while (!listener->RepliesSent() && timer.now() < deadline) {
    timer.afterDelay(10 * kj::MILLISECONDS).wait(ws);
  }
  listener.reset();
  peer_listener.reset();
  if (!drained) {
    // The writer thread is stuck in a group (a hung disk); joining it would
    // hang too. Make what was acknowledged durable and leave without it.
    Status synced = store->Sync();
    spdlog::error("exiting with writes still pending (final sync: {})", synced.ToString());
    spdlog::default_logger()->flush();
    std::_Exit(1);
  }
  replicator.reset();
  committer.reset();
  Status synced = store->Sync();
  if (!synced.ok()) {
    spdlog::error("final sync failed: {}", synced.ToString());
    return 1;
  }
  store.reset();
  spdlog::info("shut down cleanly");
  return 0;
}

}  // namespace geokv

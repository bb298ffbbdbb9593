#include "server/node.h"

#include <kj/async-unix.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "replication/group_commit.h"
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

  auto committer = std::make_unique<GroupCommitter>(*store, options.max_pending_writes);
  ReplicatorOptions replication;
  replication.name = name;
  replication.region = options.region;
  replication.peers = options.peers;
  replication.max_message_bytes = options.max_message_bytes;
  replication.batch_bytes = options.replication_batch_bytes;
  replication.window = options.replication_window;
  replication.max_backlog_bytes = options.max_backlog_bytes;
  replication.max_clock_offset = std::chrono::milliseconds(options.max_clock_offset_ms);
  replication.token_wait = std::chrono::milliseconds(options.token_wait_ms);
  replication.anti_entropy_interval = std::chrono::milliseconds(options.anti_entropy_interval_ms);
  replication.anti_entropy_bytes_per_second = options.anti_entropy_bytes_per_second;
  replication.heartbeat = std::chrono::milliseconds(options.heartbeat_ms);
  auto replicator =
      std::make_unique<Replicator>(*store, *committer, *io.provider, std::move(replication));
  auto service_own = kj::heap<KvService>(
      *store, *committer, *replicator,
      KvServiceOptions{name, options.region, options.max_key_bytes, options.max_value_bytes,
                       options.max_message_bytes});
  KvService& service = *service_own;

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
    committer->Drain().wait(ws);
    return 1;
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
  replicator->Start();

  auto sigterm = io.unixEventPort.onSignal(SIGTERM);
  auto sigint = io.unixEventPort.onSignal(SIGINT);
  siginfo_t signal = sigterm.exclusiveJoin(kj::mv(sigint)).wait(ws);
  spdlog::info("{} received: shutting down", signal.si_signo == SIGTERM ? "SIGTERM" : "SIGINT");

  listener->StopAccepting();
  if (peer_listener) peer_listener->StopAccepting();
  service.StopServing();
  replicator->Stop();
  auto timeout = static_cast<int64_t>(options.shutdown_timeout_seconds * 1000) * kj::MILLISECONDS;
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

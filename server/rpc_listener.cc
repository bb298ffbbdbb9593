#include "server/rpc_listener.h"

#include <capnp/rpc-twoparty.h>
#include <spdlog/spdlog.h>

namespace geokv {

struct RpcListener::Connection {
  Connection(kj::Own<kj::AsyncIoStream> s, capnp::Capability::Client bootstrap,
             const RpcListenerOptions& options)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER, ReaderOptionsFor(options)),
        rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {
    rpc.setFlowLimit(options.max_message_bytes / sizeof(capnp::word));
  }

  static capnp::ReaderOptions ReaderOptionsFor(const RpcListenerOptions& options) {
    capnp::ReaderOptions r;
    r.traversalLimitInWords = options.max_message_bytes / sizeof(capnp::word);
    return r;
  }

  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

RpcListener::RpcListener(kj::Own<kj::ConnectionReceiver> receiver,
                         capnp::Capability::Client bootstrap, kj::Timer& timer,
                         RpcListenerOptions options)
    : receiver_(kj::mv(receiver)),
      bootstrap_(kj::mv(bootstrap)),
      timer_(timer),
      options_(options),
      port_(receiver_->getPort()),
      tasks_(*this) {
  accepting_ = AcceptLoop().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("accepting connections failed: {}", e.getDescription().cStr());
  });
}

RpcListener::~RpcListener() = default;

void RpcListener::StopAccepting() {
  accepting_ = nullptr;
  receiver_ = nullptr;
}

bool RpcListener::RepliesSent() {
  for (auto& c : connections_) {
    if (c->network.getCurrentQueueCount() > 0) return false;
  }
  return true;
}

kj::Promise<void> RpcListener::AcceptLoop() {
  return receiver_->accept().then(
      [this](kj::Own<kj::AsyncIoStream> stream) {
        Serve(kj::mv(stream));
        return AcceptLoop();
      },
      [this](kj::Exception&& e) {
        // Out of file descriptors, most likely: open connections will close
        // and free some.
        spdlog::error("accepting a connection failed (retrying in 100 ms): {}",
                      e.getDescription().cStr());
        return timer_.afterDelay(100 * kj::MILLISECONDS).then([this] { return AcceptLoop(); });
      });
}

void RpcListener::Serve(kj::Own<kj::AsyncIoStream> stream) {
  if (connections_.size() >= options_.max_connections) {
    spdlog::warn("refusing a connection: {} connections open (max-connections)",
                 connections_.size());
    return;  // dropping the stream closes it
  }
  connections_.push_back(kj::heap<Connection>(kj::mv(stream), bootstrap_, options_));
  auto it = std::prev(connections_.end());
  spdlog::debug("connection opened ({} open)", connections_.size());
  tasks_.add((*it)->network.onDisconnect()
                 .then([] { return kj::evalLater([] {}); })  // out of the network's own callback
                 .then([this, it] {
                   connections_.erase(it);
                   spdlog::debug("connection closed ({} open)", connections_.size());
                 }));
}

void RpcListener::taskFailed(kj::Exception&& exception) {
  spdlog::warn("connection task failed: {}", exception.getDescription().cStr());
}

}  // namespace geokv

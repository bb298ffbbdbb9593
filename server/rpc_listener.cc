#include "server/rpc_listener.h"

#include <capnp/rpc-twoparty.h>
#include <spdlog/spdlog.h>

#include <memory>

#include "server/read_deadlines.h"
#include "util/buffered_stream.h"
#include "util/packed_stream.h"
#include "util/stream_wrapper.h"

namespace geokv {

namespace {

// How long a connection that ended may take to send what it still had to.
constexpr kj::Duration kDrainTimeout = 2 * kj::SECONDS;

// The connection as the RPC system sees it, over its BufferedStream:
// reading pauses while the replies queued for the client exceed
// `max_queued` (a client that sends calls but does not read the answers
// cannot make the node buffer without bound), and until the session is
// ready for more calls. A read that passes its ReadDeadlines ends the
// connection.
class PacedStream final : public StreamWrapper {
 public:
  PacedStream(kj::Own<BufferedStream> inner, kj::Timer& timer, size_t max_queued,
              RpcSession& session, const RpcListenerOptions& options)
      : StreamWrapper(kj::mv(inner)),
        buffered_(static_cast<BufferedStream&>(*inner_)),
        timer_(timer),
        max_queued_(max_queued),
        wait_(std::move(session.wait)),
        busy_(std::move(session.busy)),
        deadlines_(options.idle_timeout.count() * kj::MILLISECONDS,
                   options.read_timeout.count() * kj::MILLISECONDS, timer.now()) {}

  // The network whose outgoing queue paces reading; set once it exists.
  void PaceBy(capnp::TwoPartyVatNetwork* network) { network_ = network; }

  BufferedStream& buffered() { return buffered_; }

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    if (network_ != nullptr && network_->getCurrentQueueSize() > max_queued_) {
      return timer_.afterDelay(5 * kj::MILLISECONDS).then([this, buffer, min_bytes, max_bytes] {
        return tryRead(buffer, min_bytes, max_bytes);
      });
    }
    if (wait_) {
      KJ_IF_MAYBE(room, wait_()) {
        return room->then([this, buffer, min_bytes, max_bytes] {
          return tryRead(buffer, min_bytes, max_bytes);
        });
      }
    }
    return ReadInTime(static_cast<kj::byte*>(buffer), min_bytes, max_bytes);
  }

 private:
  // Reads, within the deadline of ReadDeadlines when the read has to wait
  // for the socket (one served from the buffer needs no timer).
  kj::Promise<size_t> ReadInTime(kj::byte* out, size_t min_bytes, size_t max_bytes) {
    const bool at_hand = buffered_.Buffered() >= min_bytes;
    auto read = inner_->tryRead(out, min_bytes, max_bytes).then([this, out](size_t got) {
      deadlines_.Arrived(kj::arrayPtr(out, got), timer_.now());
      return got;
    });
    if (at_hand) return read;
    KJ_IF_MAYBE(deadline, deadlines_.Next()) {
      return read.exclusiveJoin(Expire(*deadline, deadlines_.between_messages()));
    }
    return read;
  }

  // Ends the connection at `deadline`; an idle one whose calls are under
  // way (a long wait) counts as active now and gets a new deadline.
  kj::Promise<size_t> Expire(kj::TimePoint deadline, bool idle) {
    return timer_.atTime(deadline).then([this, idle]() -> kj::Promise<size_t> {
      if (idle && busy_ && busy_()) {
        deadlines_.Active(timer_.now());
        KJ_IF_MAYBE(next, deadlines_.Next()) { return Expire(*next, true); }
      }
      const char* why = idle ? "sent no message within --idle-timeout"
                             : "did not send a whole message within --read-timeout";
      spdlog::info("closing a connection that {}", why);
      return KJ_EXCEPTION(DISCONNECTED, "connection timed out", why);
    });
  }

  BufferedStream& buffered_;  // inner_
  kj::Timer& timer_;
  const size_t max_queued_;
  const std::function<kj::Maybe<kj::Promise<void>>()> wait_;
  const std::function<bool()> busy_;
  capnp::TwoPartyVatNetwork* network_ = nullptr;
  ReadDeadlines deadlines_;
};

// The connection's stream (the socket, or TLS over it) buffered, over a
// PackedStream when the port takes packed connections.
kj::Own<BufferedStream> Buffered(kj::Own<kj::AsyncIoStream> s, kj::Timer& timer,
                                 const RpcListenerOptions& options) {
  if (options.packed) {
    s = kj::heap<PackedStream>(kj::mv(s), options.compressed
                                              ? PackedStream::Side::kAcceptor
                                              : PackedStream::Side::kUncompressedAcceptor);
  }
  return kj::heap<BufferedStream>(kj::mv(s), &timer);
}

}  // namespace

struct RpcListener::Connection {
  Connection(kj::Own<kj::AsyncIoStream> s, ConnectionSlots::Slot slot, RpcSession session,
             kj::Timer& timer, const RpcListenerOptions& options)
      : slot(std::move(slot)),
        stream(kj::heap<PacedStream>(Buffered(kj::mv(s), timer, options), timer,
                                     options.max_message_bytes, session, options)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER, ReaderOptionsFor(options)),
        rpc(capnp::makeRpcServer(network, kj::mv(session.bootstrap))) {
    stream->PaceBy(&network);
    rpc.setFlowLimit(options.max_message_bytes / sizeof(capnp::word));
  }

  static capnp::ReaderOptions ReaderOptionsFor(const RpcListenerOptions& options) {
    capnp::ReaderOptions r;
    r.traversalLimitInWords = options.max_message_bytes / sizeof(capnp::word);
    return r;
  }

  ConnectionSlots::Slot slot;
  kj::Own<PacedStream> stream;  // over Buffered(the socket or TLS)
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

RpcListener::RpcListener(kj::Own<kj::ConnectionReceiver> receiver,
                         capnp::Capability::Client bootstrap, kj::Timer& timer,
                         RpcListenerOptions options)
    : RpcListener(
          kj::mv(receiver),
          [shared = std::make_shared<capnp::Capability::Client>(kj::mv(bootstrap))](
              kj::PeerIdentity&) {
            return RpcSession{*shared, {}, {}};
          },
          timer, options) {}

RpcListener::RpcListener(kj::Own<kj::ConnectionReceiver> receiver, RpcSessionFactory sessions,
                         kj::Timer& timer, RpcListenerOptions options)
    : sessions_(std::move(sessions)),
      timer_(timer),
      options_(options),
      tasks_(*this),
      acceptor_(kj::mv(receiver), timer,
                [this](kj::AuthenticatedStream accepted, ConnectionSlots::Slot slot) {
                  Serve(kj::mv(accepted), std::move(slot));
                },
                "RPC",
                options_.slots ? options_.slots
                               : std::make_shared<ConnectionSlots>(options_.max_connections),
                options_.wrap) {}

RpcListener::~RpcListener() = default;

void RpcListener::StopAccepting() { acceptor_.Stop(); }

bool RpcListener::RepliesSent() {
  for (auto& c : connections_) {
    if (c->network.getCurrentQueueCount() > 0 || !c->stream->buffered().Flushed()) return false;
  }
  return true;
}

void RpcListener::Serve(kj::AuthenticatedStream accepted, ConnectionSlots::Slot slot) {
  RpcSession session = sessions_(*accepted.peerIdentity);
  connections_.push_back(kj::heap<Connection>(kj::mv(accepted.stream), std::move(slot),
                                              kj::mv(session), timer_, options_));
  auto it = std::prev(connections_.end());
  spdlog::debug("connection opened ({} open)", connections_.size());
  tasks_.add((*it)->network.onDisconnect()
                 .then([] { return kj::evalLater([] {}); })  // out of the network's own callback
                 .then([this, it] {
                   // What it still had to send (the abort that says why it
                   // ended, the last replies) goes out first, within a bound.
                   return (*it)->stream->buffered().Drained().exclusiveJoin(
                       timer_.afterDelay(kDrainTimeout));
                 })
                 .then([this, it] {
                   connections_.erase(it);
                   spdlog::debug("connection closed ({} open)", connections_.size());
                 }));
}

void RpcListener::taskFailed(kj::Exception&& exception) {
  spdlog::warn("connection task failed: {}", exception.getDescription().cStr());
}

}  // namespace geokv

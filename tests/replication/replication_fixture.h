// What the replication tests share: a node (real store, reader pool, group
// committer and replicator in a scratch directory) with helpers to write
// and read it; two such nodes linked over loopback; the peer API of such a
// node reached in-process through a proxy that records calls and can fail
// or hold them; a timer that moves
// only when the test moves it; and a ReplicationEnv on that timer, to run
// one replication unit alone.

#ifndef GEOKV_TESTS_REPLICATION_REPLICATION_FIXTURE_H_
#define GEOKV_TESTS_REPLICATION_REPLICATION_FIXTURE_H_

#include <capnp/capability.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/schema.h>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/timer.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "crdt/hlc.h"
#include "replication/peer_wire.h"
#include "replication/replication_env.h"
#include "replication/replicator.h"
#include "schema/replication.capnp.h"
#include "testing/test_dir.h"
#include "util/packed_stream.h"

namespace geokv::testing {

// Limits a test shrinks so that a set outgrows one message quickly.
struct Tuning {
  size_t max_message_bytes = 64 << 20;
  size_t batch_bytes = 1 << 20;
  uint64_t anti_entropy_bytes_per_second = 8 << 20;
};

// A test node's options: short heartbeats, intervals and backoff, and
// `tuning`.
inline ReplicatorOptions NodeOptions(const std::string& name, const Tuning& tuning) {
  ReplicatorOptions o;
  o.name = name;
  o.region = "eu";
  o.heartbeat = std::chrono::milliseconds(100);
  o.anti_entropy_interval = std::chrono::milliseconds(200);
  o.backoff_min = std::chrono::milliseconds(20);
  o.backoff_max = std::chrono::milliseconds(100);
  o.max_message_bytes = tuning.max_message_bytes;
  o.batch_bytes = tuning.batch_bytes;
  o.anti_entropy_bytes_per_second = tuning.anti_entropy_bytes_per_second;
  return o;
}

// Changes a test node's options before its replicator is made.
using Configure = std::function<void(ReplicatorOptions&)>;

inline ReplicatorOptions Configured(ReplicatorOptions o, const Configure& configure) {
  if (configure) configure(o);
  return o;
}

// One node: store, readers, committer and replicator (not started). The
// store's hybrid clock is `clock` when given (it must outlive the node),
// else one on the system clock.
struct Node {
  Node(const std::string& dir, const std::string& name, kj::AsyncIoProvider& io,
       const Tuning& tuning = {}, HybridClock* clock = nullptr,
       const Configure& configure = nullptr)
      : options(Configured(NodeOptions(name, tuning), configure)) {
    StoreOptions store_options{Durability::kWal};
    store_options.clock = clock;
    auto opened = Store::Open(dir, store_options);
    KJ_REQUIRE(opened.ok(), opened.status().ToString());
    store = std::move(opened).value();
    reader = std::make_unique<AsyncStore>(*store, 2);
    committer = std::make_unique<GroupCommitter>(*store, 1000);
    replicator = std::make_unique<Replicator>(*store, *reader, *committer, io, options);
  }

  void Write(kj::WaitScope& ws, const std::string& key, const std::string& value) {
    WriteResult r = committer->Submit(key, LwwSet{value}).wait(ws);
    KJ_REQUIRE(r.status.ok(), r.status.ToString());
  }
  // Writes `value` at keys prefix0..prefix(n-1).
  void WriteMany(kj::WaitScope& ws, const std::string& prefix, int n, const std::string& value) {
    for (int i = 0; i < n; ++i) Write(ws, prefix + std::to_string(i), value);
  }

  // Adds elements prefix[from..to) (zero-padded) to the set at `key`, a
  // thousand per write so that each log entry stays small.
  void AddElements(kj::WaitScope& ws, const std::string& key, const std::string& prefix, int from,
                   int to) {
    for (int i = from; i < to;) {
      SetAdd add;
      for (int end = std::min(to, i + 1000); i < end; ++i) add.elements.push_back(Element(prefix, i));
      WriteResult r = committer->Submit(key, std::move(add)).wait(ws);
      KJ_REQUIRE(r.status.ok(), r.status.ToString());
    }
  }
  void RemoveElements(kj::WaitScope& ws, const std::string& key, std::vector<std::string> elements) {
    WriteResult r = committer->Submit(key, SetRemove{std::move(elements)}).wait(ws);
    KJ_REQUIRE(r.status.ok(), r.status.ToString());
  }
  static std::string Element(const std::string& prefix, int i) {
    std::string n = std::to_string(i);
    return prefix + std::string(8 - n.size(), '0') + n;
  }
  std::vector<std::string> Elements(const std::string& key) {
    auto page = store->SetMembers(key, std::nullopt, size_t{1} << 30);
    KJ_REQUIRE(page.ok(), page.status().ToString());
    return page->elements;
  }
  uint64_t SetSize(const std::string& key) {
    auto size = store->SetSize(key);
    KJ_REQUIRE(size.ok(), size.status().ToString());
    return *size;
  }
  uint64_t Digest(const std::string& key) {
    auto digest = store->KeyDigest(key);
    KJ_REQUIRE(digest.ok(), digest.status().ToString());
    return *digest;
  }

  std::optional<std::string> Value(const std::string& key) {
    auto got = store->Get(key, CrdtType::kLww);
    if (!got.ok() || !got->has_value()) return std::nullopt;
    return std::get<LwwRegister>(**got).value();
  }

  void Shutdown(kj::WaitScope& ws) {
    replicator->Stop();
    committer->Drain().wait(ws);
    replicator.reset();
    committer.reset();
    reader.reset();
  }

  const ReplicatorOptions options;
  std::unique_ptr<Store> store;
  std::unique_ptr<AsyncStore> reader;
  std::unique_ptr<GroupCommitter> committer;
  std::unique_ptr<Replicator> replicator;
};

// Runs the loop until `done` or `limit` has passed; whether it was done.
inline bool RunUntil(kj::AsyncIoContext& io, const std::function<bool()>& done,
                     kj::Duration limit = 10 * kj::SECONDS) {
  kj::Timer& timer = io.provider->getTimer();
  const kj::TimePoint deadline = timer.now() + limit;
  while (!done()) {
    if (timer.now() >= deadline) return false;
    timer.afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  return true;
}

// `n` distinct keys starting with `prefix` that fall in tree segment
// `segment`.
inline std::vector<std::string> KeysIn(size_t segment, const std::string& prefix, size_t n) {
  std::vector<std::string> out;
  for (int i = 0; out.size() < n; ++i) {
    std::string key = prefix + std::to_string(i);
    if (TreeSegmentOf(key) == segment) out.push_back(key);
  }
  return out;
}

// A kj::Timer that moves only when the test moves it, and that tells the
// test when something starts waiting on it.
class ManualTimer final : public kj::Timer {
 public:
  kj::TimePoint now() const override { return impl_.now(); }
  kj::Promise<void> atTime(kj::TimePoint time) override {
    waits_.push_back(time);
    for (auto& w : watchers_) {
      if (!w.fulfiller->isWaiting() || (w.time && *w.time != time)) continue;
      w.fulfiller->fulfill(kj::cp(time));
    }
    watchers_.erase(std::remove_if(watchers_.begin(), watchers_.end(),
                                   [](Watcher& w) { return !w.fulfiller->isWaiting(); }),
                    watchers_.end());
    return impl_.atTime(time);
  }
  kj::Promise<void> afterDelay(kj::Duration delay) override { return atTime(now() + delay); }

  // Moves to `time`, firing every wait up to it; waits that began before
  // are forgotten by WaitBegan.
  void AdvanceTo(kj::TimePoint time) {
    waits_.clear();
    impl_.advanceTo(time);
  }
  void Advance(kj::Duration delay) { AdvanceTo(now() + delay); }

  // Resolves once a wait for `time` has begun since the last move.
  kj::Promise<void> WaitBegan(kj::TimePoint time) {
    if (std::find(waits_.begin(), waits_.end(), time) != waits_.end()) return kj::READY_NOW;
    return Watch(time).ignoreResult();
  }
  // Resolves with the earliest time waited for: at once when a wait is
  // pending, else when one begins.
  kj::Promise<kj::TimePoint> NextWait() {
    KJ_IF_MAYBE(next, impl_.nextEvent()) { return *next; }
    return Watch(std::nullopt);
  }

 private:
  struct Watcher {
    std::optional<kj::TimePoint> time;  // any when empty
    kj::Own<kj::PromiseFulfiller<kj::TimePoint>> fulfiller;
  };
  kj::Promise<kj::TimePoint> Watch(std::optional<kj::TimePoint> time) {
    auto paf = kj::newPromiseAndFulfiller<kj::TimePoint>();
    watchers_.push_back(Watcher{time, kj::mv(paf.fulfiller)});
    return kj::mv(paf.promise);
  }

  kj::TimerImpl impl_{kj::origin<kj::TimePoint>()};
  std::vector<kj::TimePoint> waits_;  // begun since the last move
  std::vector<Watcher> watchers_;
};

// Waits for `promise`; fails instead of hanging when a broken unit never
// gets there (the limit is in real time).
template <typename T>
T WaitGuarded(kj::AsyncIoContext& io, kj::Promise<T> promise,
              kj::Duration limit = 60 * kj::SECONDS) {
  return io.provider->getTimer().timeoutAfter(limit, kj::mv(promise)).wait(io.waitScope);
}

// Runs the loop until `work` resolves, moving `timer` to each time that
// something waits for meanwhile (a unit's own waits only: a pending
// timeout would fire). Rethrows what `work` throws.
inline void RunMovingTime(kj::AsyncIoContext& io, ManualTimer& timer, kj::Promise<void> work) {
  auto done = work.then([]() -> kj::Maybe<kj::TimePoint> { return nullptr; }).fork();
  for (;;) {
    kj::Maybe<kj::TimePoint> next = WaitGuarded(
        io, done.addBranch().exclusiveJoin(
                timer.NextWait().then([](kj::TimePoint t) -> kj::Maybe<kj::TimePoint> {
                  return t;
                })));
    KJ_IF_MAYBE(t, next) {
      timer.AdvanceTo(*t);
    } else {
      return;
    }
  }
}

// The peer API of another node as a unit sees it: every call is forwarded
// to the node's real session and recorded; a test may fail or hold the
// calls of a method.
class PeerProxy {
 public:
  struct Call {
    std::string method;
    kj::TimePoint at;
    uint64_t response_bytes = 0;  // as the caller measures the response
    bool answered = false;
  };
  // Runs before a call is forwarded: a rejected promise fails the call,
  // one that waits holds it.
  using Gate = std::function<kj::Promise<void>(capnp::AnyPointer::Reader params)>;

  // `clock` stamps the calls; both must outlive the proxy's clients.
  PeerProxy(peer::PeerSession::Client inner, const kj::Timer& clock)
      : inner_(kj::mv(inner)), clock_(clock) {}

  peer::PeerSession::Client Client() {
    return capnp::Capability::Client(kj::heap<Server>(*this)).castAs<peer::PeerSession>();
  }
  // nullptr: forward the method's calls again.
  void SetGate(const std::string& method, Gate gate) { gates_[method] = std::move(gate); }

  std::vector<Call> Calls(const std::string& method) const {
    std::vector<Call> out;
    for (const Call& c : calls_) {
      if (c.method == method) out.push_back(c);
    }
    return out;
  }
  size_t Count(const std::string& method) const { return Calls(method).size(); }

  // Resolve once `n` calls of `method` have arrived, or have been answered.
  kj::Promise<void> Called(const std::string& method, size_t n) {
    return When([this, method, n] { return Count(method) >= n; });
  }
  kj::Promise<void> Answered(const std::string& method, size_t n) {
    return When([this, method, n] {
      auto calls = Calls(method);
      return std::count_if(calls.begin(), calls.end(), [](const Call& c) { return c.answered; }) >=
             static_cast<std::ptrdiff_t>(n);
    });
  }

 private:
  class Server final : public capnp::Capability::Server {
   public:
    explicit Server(PeerProxy& proxy) : proxy_(proxy) {}
    DispatchCallResult dispatchCall(
        uint64_t interface_id, uint16_t method_id,
        capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
      return {proxy_.Forward(interface_id, method_id, context), false};
    }

   private:
    PeerProxy& proxy_;
  };

  kj::Promise<void> Forward(uint64_t interface_id, uint16_t method_id,
                            capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) {
    auto methods = capnp::Schema::from<peer::PeerSession>().getMethods();
    std::string method = method_id < methods.size()
                             ? std::string(methods[method_id].getProto().getName().cStr())
                             : "?";
    const size_t index = calls_.size();
    calls_.push_back(Call{method, clock_.now()});
    Notify();
    kj::Promise<void> gate = kj::READY_NOW;
    auto it = gates_.find(method);
    if (it != gates_.end() && it->second) gate = it->second(context.getParams());
    return gate.then([this, interface_id, method_id, context, index]() mutable {
      auto params = context.getParams();
      auto req = inner_.typelessRequest(interface_id, method_id, params.targetSize());
      req.set(params);
      return req.send().then(
          [this, context, index](capnp::Response<capnp::AnyPointer>&& resp) mutable {
            calls_[index].response_bytes = resp.targetSize().wordCount * sizeof(capnp::word);
            calls_[index].answered = true;
            context.getResults(resp.targetSize()).set(resp);
            Notify();
          });
    });
  }

  kj::Promise<void> When(std::function<bool()> done) {
    if (done()) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    watchers_.emplace_back(std::move(done), kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
  void Notify() {
    for (auto& [done, fulfiller] : watchers_) {
      if (fulfiller->isWaiting() && done()) fulfiller->fulfill();
    }
    watchers_.erase(std::remove_if(watchers_.begin(), watchers_.end(),
                                   [](auto& w) { return !w.second->isWaiting(); }),
                    watchers_.end());
  }

  peer::PeerSession::Client inner_;
  const kj::Timer& clock_;
  std::vector<std::pair<std::function<bool()>, kj::Own<kj::PromiseFulfiller<void>>>> watchers_;
  std::map<std::string, Gate> gates_;
  std::vector<Call> calls_;
};

// What the default logger logs while it lives.
class CapturedLog {
 public:
  CapturedLog() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~CapturedLog() { spdlog::default_logger()->sinks().pop_back(); }
  std::string str() const { return out_.str(); }
  // Lines that contain `what`.
  size_t Count(const std::string& what) const {
    const std::string log = out_.str();
    size_t n = 0;
    for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) ++n;
    return n;
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

// `node`, named `name` in region eu, as a link's target at `port` of
// loopback, owning every segment.
inline PeerTarget TargetAt(Node& node, const std::string& name, unsigned port) {
  PeerTarget t;
  t.id = node.store->node_id();
  t.name = name;
  t.region = "eu";
  t.address = "127.0.0.1:" + std::to_string(port);
  t.owned.assign(kTreeSegments, true);
  return t;
}

// Serves `server` on `listener` as a node's peer port does: each
// connection compressed, packed or plain, as its first word says (`side`
// kUncompressedAcceptor: as a build before compressed connections).
inline kj::Promise<void> ServePeerPort(
    kj::ConnectionReceiver& listener, capnp::TwoPartyServer& server,
    PackedStream::Side side = PackedStream::Side::kAcceptor) {
  return listener.accept().then([&listener, &server, side](kj::Own<kj::AsyncIoStream> s) {
    server.accept(kj::heap<PackedStream>(kj::mv(s), side));
    return ServePeerPort(listener, server, side);
  });
}

// Says hello to `server`'s peer service in-process, as `caller`, and
// returns the session it answers with.
inline peer::PeerSession::Client OpenSession(kj::WaitScope& ws, Node& server, Node& caller) {
  auto peer = server.replicator->PeerBootstrap(std::nullopt).castAs<peer::Peer>();
  auto req = peer.helloRequest();
  FillHello(caller.options, caller.store->node_id(), 1, req.initHello());
  return req.send().wait(ws).getSession();
}

// Two nodes, a and b: b serves the peer API on a loopback port, and a links
// to it once told (Link).
// The nodes' stores run on `a_clock` and `b_clock` when given.
struct Pair {
  explicit Pair(kj::AsyncIoContext& io, const Tuning& tuning = {}, HybridClock* a_clock = nullptr,
                HybridClock* b_clock = nullptr, const Configure& configure_a = nullptr,
                const Configure& configure_b = nullptr)
      : a(dir.Sub("a"), "a", *io.provider, tuning, a_clock, configure_a),
        b(dir.Sub("b"), "b", *io.provider, tuning, b_clock, configure_b) {
    auto address = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope);
    listener = address->listen();
    server = kj::heap<capnp::TwoPartyServer>(b.replicator->PeerBootstrap(std::nullopt));
    serving = ServePeerPort(*listener, *server).eagerlyEvaluate(nullptr);
  }

  // b as a's target: it owns every segment.
  PeerTarget B() { return TargetAt(b, "b", listener->getPort()); }

  // Starts a's link to b; `a_owns` are the segments a owns (empty: all).
  void Link(std::vector<bool> a_owns = {}) {
    a.replicator->SetPlacement(std::move(a_owns), {B()});
    a.replicator->Start();
  }

  uint64_t BHolds() {
    auto applied = b.store->AppliedPositions();
    auto it = applied.find(a.store->node_id());
    return it == applied.end() ? 0 : it->second;
  }

  void Shutdown(kj::WaitScope& ws) {
    a.Shutdown(ws);
    serving = nullptr;
    server = nullptr;
    listener = nullptr;
    b.Shutdown(ws);
  }

  TestDir dir;
  Node a;
  Node b;
  kj::Own<kj::ConnectionReceiver> listener;
  kj::Own<capnp::TwoPartyServer> server;
  kj::Promise<void> serving = nullptr;
};

// A ReplicationEnv over `node` whose timer and wall clock only the test
// moves, to run one unit alone.
struct UnitEnv {
  explicit UnitEnv(Node& node, kj::AsyncIoProvider& io, std::vector<bool> owns = {})
      : options(WithClocks(node.options, wall, metrics)),
        own_segments(std::move(owns)),
        env{*node.store, *node.reader, *node.committer, io,      timer,
            options,     metrics,      own_segments} {}

  static ReplicatorOptions WithClocks(ReplicatorOptions o, ManualClock& wall, Metrics& metrics) {
    o.wall_clock = &wall;
    o.metrics = &metrics;
    return o;
  }

  ManualTimer timer;
  ManualClock wall{1'000'000};
  Metrics metrics{"eu"};
  ReplicatorOptions options;
  std::vector<bool> own_segments;  // empty: all
  ReplicationEnv env;
};

}  // namespace geokv::testing

#endif  // GEOKV_TESTS_REPLICATION_REPLICATION_FIXTURE_H_

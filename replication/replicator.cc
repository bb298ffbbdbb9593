#include "replication/replicator.h"

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <random>
#include <set>

#include "crdt/codec.h"
#include "schema/kv_text.h"
#include "schema/replication.capnp.h"
#include "util/coding.h"
#include "util/hash.h"

namespace geokv {
namespace {

// Entries per pushed batch, whatever their size.
constexpr size_t kMaxBatchEntries = 10000;
// How long a key that differs must keep the same digests on both sides
// before a routine anti-entropy pass repairs it: a key still being written
// differs only until its deltas arrive.
constexpr auto kSettle = 500 * kj::MILLISECONDS;

kj::Duration ToKj(std::chrono::milliseconds ms) {
  return static_cast<int64_t>(ms.count()) * kj::MILLISECONDS;
}

std::string Hex(uint64_t v) {
  std::string bytes = EncodeBigEndian64(v);
  return ToHex(bytes);
}

std::string Describe(const CausalToken& t) {
  return "write " + std::to_string(t.seq) + " of node " + Hex(t.origin);
}

// A wakeup for loops waiting for "something changed".
class Signal {
 public:
  kj::Promise<void> Wait() {
    auto paf = kj::newPromiseAndFulfiller<void>();
    waiting_.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
  void Notify() {
    auto waiting = kj::mv(waiting_);
    waiting_.clear();
    for (auto& f : waiting) f->fulfill();
  }

 private:
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiting_;
};

// A stream that counts the bytes through it.
class CountingStream final : public kj::AsyncIoStream {
 public:
  CountingStream(kj::Own<kj::AsyncIoStream> inner, prometheus::Counter& sent,
                 prometheus::Counter& received)
      : inner_(kj::mv(inner)), sent_(sent), received_(received) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    return inner_->tryRead(buffer, min_bytes, max_bytes).then([this](size_t n) {
      received_.Increment(static_cast<double>(n));
      return n;
    });
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    sent_.Increment(static_cast<double>(size));
    return inner_->write(buffer, size);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    size_t n = 0;
    for (auto piece : pieces) n += piece.size();
    sent_.Increment(static_cast<double>(n));
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }

 private:
  kj::Own<kj::AsyncIoStream> inner_;
  prometheus::Counter& sent_;
  prometheus::Counter& received_;
};

// The client end of a connection to a peer.
struct PeerConnection {
  PeerConnection(kj::Own<kj::AsyncIoStream> s, size_t max_message_bytes)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::CLIENT,
                capnp::ReaderOptions{max_message_bytes / sizeof(capnp::word), 64}),
        rpc(capnp::makeRpcClient(network)) {}

  peer::Peer::Client Bootstrap() {
    capnp::word scratch[4] = {};
    capnp::MallocMessageBuilder message(scratch);
    auto host = message.getRoot<capnp::rpc::twoparty::VatId>();
    host.setSide(capnp::rpc::twoparty::Side::SERVER);
    return rpc.bootstrap(host).castAs<peer::Peer>();
  }

  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

// Decodes framed states; a state that does not decode fails the call.
std::vector<std::pair<std::string, Crdt>> DecodeStates(
    capnp::List<peer::KeyStates>::Reader list) {
  std::vector<std::pair<std::string, Crdt>> out;
  for (auto ks : list) {
    std::string key(String(ks.getKey()));
    for (auto bytes : ks.getStates()) {
      StatusOr<Crdt> state = DecodeCrdt(View(bytes));
      KJ_REQUIRE(state.ok(), "a state that does not decode", key, state.status().ToString());
      out.emplace_back(key, std::move(state).value());
    }
  }
  return out;
}

PeerState FromWire(peer::MemberState s) {
  switch (s) {
    case peer::MemberState::ALIVE: return PeerState::kAlive;
    case peer::MemberState::SUSPECT: return PeerState::kSuspect;
    case peer::MemberState::DEAD: return PeerState::kDead;
    case peer::MemberState::LEFT: return PeerState::kLeft;
  }
  return PeerState::kDead;
}

std::vector<MemberRecord> DecodeMembers(capnp::List<peer::Member>::Reader list) {
  std::vector<MemberRecord> out;
  for (auto m : list) {
    MemberRecord r;
    r.id = m.getReplicaId();
    r.name = m.getName();
    r.region = m.getRegion();
    r.peer_address = m.getPeerAddress();
    r.client_address = m.getClientAddress();
    for (auto route : m.getRoutes()) r.routes[route.getRegion()] = route.getAddress();
    r.incarnation = m.getIncarnation();
    r.state = FromWire(m.getState());
    out.push_back(std::move(r));
  }
  return out;
}

void EncodeMembers(const std::vector<MemberRecord>& members,
                   capnp::List<peer::Member>::Builder out) {
  for (size_t i = 0; i < members.size(); ++i) {
    const MemberRecord& r = members[i];
    auto m = out[i];
    m.setReplicaId(r.id);
    m.setName(r.name);
    m.setRegion(r.region);
    m.setPeerAddress(r.peer_address);
    m.setClientAddress(r.client_address);
    auto routes = m.initRoutes(r.routes.size());
    size_t j = 0;
    for (const auto& [region, address] : r.routes) {
      routes[j].setRegion(region);
      routes[j].setAddress(address);
      ++j;
    }
    m.setIncarnation(r.incarnation);
    m.setState(static_cast<peer::MemberState>(static_cast<uint16_t>(r.state)));
  }
}

// Tells apart member lists, so that a heartbeat carries one only when it
// changed.
uint64_t ViewHash(const std::vector<MemberRecord>& members) {
  std::string bytes;
  for (const MemberRecord& m : members) {
    bytes += EncodeBigEndian64(m.id) + EncodeBigEndian64(m.incarnation);
    bytes += static_cast<char>(m.state);
    for (const std::string* s : {&m.name, &m.region, &m.peer_address, &m.client_address}) {
      bytes += EncodeBigEndian64(s->size()) + *s;
    }
    for (const auto& [region, address] : m.routes) {
      bytes += EncodeBigEndian64(region.size()) + region + EncodeBigEndian64(address.size()) + address;
    }
  }
  return Hash64(bytes);
}

}  // namespace

template <typename Builder>
void SetStates(Builder out, const std::vector<std::pair<std::string, std::vector<std::string>>>& found) {
  for (size_t i = 0; i < found.size(); ++i) {
    out[i].setKey(AsData(found[i].first));
    auto list = out[i].initStates(found[i].second.size());
    for (size_t j = 0; j < found[i].second.size(); ++j) list.set(j, AsData(found[i].second[j]));
  }
}

// ---- options and clock -----------------------------------------------------

StatusOr<std::vector<PeerAddress>> ParsePeers(std::string_view spec, std::string_view own_region) {
  std::vector<PeerAddress> out;
  std::set<std::string> regions;
  size_t pos = 0;
  while (pos <= spec.size() && !spec.empty()) {
    size_t comma = spec.find(',', pos);
    std::string_view entry =
        spec.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    size_t eq = entry.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == entry.size() ||
        entry.find(':', eq) == std::string_view::npos) {
      return Status::InvalidArgument("peer '" + std::string(entry) +
                                     "' is not REGION=HOST:PORT");
    }
    PeerAddress peer{std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1))};
    if (peer.region == own_region) {
      return Status::InvalidArgument("peer '" + std::string(entry) +
                                     "' is in this node's own region " + peer.region);
    }
    if (!regions.insert(peer.region).second) {
      return Status::InvalidArgument("region " + peer.region + " is named twice in --peers");
    }
    out.push_back(std::move(peer));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

int64_t ClockJudge::OwnOffset(const std::vector<int64_t>& peer_offsets) {
  // Clocks relative to this node's: 0 for itself, each peer's offset.
  std::vector<int64_t> clocks = peer_offsets;
  clocks.push_back(0);
  std::sort(clocks.begin(), clocks.end());
  size_t n = clocks.size();
  int64_t median = n % 2 == 1 ? clocks[n / 2] : (clocks[n / 2 - 1] + clocks[n / 2]) / 2;
  return -median;
}

Status ClockJudge::Judge(const std::vector<int64_t>& peer_offsets) const {
  int64_t off = OwnOffset(peer_offsets);
  if (std::abs(off) <= max_offset_.count()) return Status::OK();
  return Status::Unavailable("this node's clock is " + std::to_string(off) +
                             " ms off its peers' (limit --max-clock-offset " +
                             std::to_string(max_offset_.count()) +
                             " ms); writes are refused until it is back in range");
}

// ---- the link to one peer --------------------------------------------------

// A link to a seed (`target` empty: hello and heartbeats only, to learn its
// region's members) or to a node this node replicates to.
class PeerLink final : public kj::TaskSet::ErrorHandler {
 public:
  PeerLink(Replicator& r, PeerAddress address, std::optional<PeerTarget> target)
      : r_(r), address_(std::move(address)), target_(std::move(target)),
        backoff_(r.options_.backoff_min), rng_(std::random_device{}()) {
    if (target_) name_ = target_->name;
  }
  ~PeerLink() noexcept(false) { canceler_.cancel("the link closed"); }

  void Start() { run_ = Run().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("peer link stopped: {}", e.getDescription().cStr());
  }); }

  const PeerAddress& address() const { return address_; }
  bool connected() const { return connected_; }
  bool is_seed() const { return !target_; }
  const PeerTarget& target() const { return *target_; }
  // Whether the peer owns `segment` (what Push ships it). REQUIRES: !is_seed().
  bool Owns(size_t segment) const {
    return target_->owned.empty() || target_->owned[segment];
  }
  void Retarget(PeerTarget target) {
    target_ = std::move(target);
    name_ = target_->name;
  }
  uint64_t acked() const { return acked_; }

  // This link's series: by the peer's name, or "seed:ADDRESS" for a seed.
  Metrics::Peer& metrics() {
    if (metrics_ == nullptr) metrics_ = &r_.metrics_->PeerMetrics(metrics_name(), address_.region);
    return *metrics_;
  }
  // The `peer` label of this link's series.
  std::string metrics_name() const {
    return target_ ? target_->name : "seed:" + address_.address;
  }

  // A write of `seq` was acknowledged while this peer, one of its owners,
  // was away.
  void Hint(uint64_t seq) {
    if (seq <= acked_) return;
    r_.metrics_->hints_stored.Increment();
    // A peer under repair gets the write from the repair, not the log.
    if (repairing_) {
      r_.metrics_->hints_dropped.Increment();
      return;
    }
    hinted_.push_back(seq);
  }
  size_t hints_pending() const { return hinted_.size(); }
  // Counts the hints the peer now holds, or that repair takes over.
  void SettleHints(bool dropped) {
    while (!hinted_.empty() && (dropped || hinted_.front() <= acked_)) {
      hinted_.pop_front();
      (dropped ? r_.metrics_->hints_dropped : r_.metrics_->hints_replayed).Increment();
    }
  }
  bool has_session() const { return session_ != nullptr; }
  kj::Maybe<peer::PeerSession::Client> MaybeSession() {
    KJ_IF_MAYBE(s, session_) { return *s; }
    return nullptr;
  }

  PeerStatus Report() const {
    PeerStatus s;
    s.address = address_;
    s.name = name_;
    s.connected = connected_;
    s.repairing = repairing_;
    s.acked = acked_;
    s.clock_offset_ms = offset_ms_;
    s.backlog_bytes = r_.store_.LastSeq() > acked_ ? r_.store_.LogBytesAfter(acked_) : 0;
    return s;
  }

  std::optional<int64_t> offset_ms() const { return offset_ms_; }

  // The log position this peer still needs, or nullopt when it does not
  // hold the log back (it is being repaired while away).
  std::optional<uint64_t> TrimFloor() const {
    if (!target_) {
      // A seed not yet heard from stands for nodes this node does not know
      // yet, which may need the whole log: it holds it, up to --max-backlog.
      const uint64_t trimmed = r_.store_.TrimmedThrough();
      if (heard_ || (r_.store_.LastSeq() > trimmed &&
                     r_.store_.LogBytesAfter(trimmed) > r_.options_.max_backlog_bytes)) {
        return std::nullopt;
      }
      return trimmed;
    }
    if (repairing_) {
      if (repair_active_ && repair_pins_log_) return repair_from_;
      return std::nullopt;
    }
    return acked_known_ ? acked_ : r_.store_.TrimmedThrough();
  }

  // Switches to repair when the backlog is over the limit.
  void CheckBacklog() {
    if (repairing_) {
      // A long pass must not hold the log without bound either: past the
      // limit it lets go, and another pass follows from where the log is.
      if (repair_active_ && repair_pins_log_ && r_.store_.LastSeq() > repair_from_ &&
          r_.store_.LogBytesAfter(repair_from_) > r_.options_.max_backlog_bytes) {
        repair_pins_log_ = false;
      }
      return;
    }
    uint64_t floor = acked_known_ ? acked_ : r_.store_.TrimmedThrough();
    if (r_.store_.LastSeq() <= floor) return;
    uint64_t backlog = r_.store_.LogBytesAfter(floor);
    if (backlog > r_.options_.max_backlog_bytes) {
      StartRepair("its backlog of " + std::to_string(backlog) +
                  " bytes exceeds --max-backlog");
    }
  }

  void Wake() { wake_.Notify(); }

  // Resolves true once the peer holds every token's write, false at
  // `deadline`.
  kj::Promise<bool> WaitVisible(std::vector<CausalToken> tokens, kj::TimePoint deadline) {
    kj::Timer& timer = r_.io_.getTimer();
    if (timer.now() >= deadline) return false;
    KJ_IF_MAYBE(session, session_) {
      auto req = session->waitVisibleRequest();
      auto list = req.initTokens(tokens.size());
      for (size_t i = 0; i < tokens.size(); ++i) list.set(i, AsData(EncodeToken(tokens[i])));
      auto left = (deadline - timer.now()) / kj::MILLISECONDS;
      req.setTimeoutMs(static_cast<uint32_t>(std::min<int64_t>(left, UINT32_MAX)));
      return canceler_.wrap(
          timer.timeoutAfter(deadline - timer.now() + 1 * kj::SECONDS, req.send())
              .then([](auto&& resp) -> kj::Promise<bool> { return resp.getVisible(); },
                    [this, tokens, deadline](kj::Exception&&) mutable {
                      return Retry(std::move(tokens), deadline);
                    }));
    }
    return canceler_.wrap(Retry(std::move(tokens), deadline));
  }

  // Brings one segment in step with the peer, both ways, every differing
  // key. REQUIRES: has_session(). Ends, failed, if the link is destroyed
  // meanwhile (its continuations refer to it).
  kj::Promise<void> SyncSegment(uint32_t segment) {
    return canceler_.wrap(RepairSegment(segment, true));
  }
  // Waits as long as `bytes` take at the anti-entropy rate; as SyncSegment
  // if the link goes.
  kj::Promise<void> Budget(size_t bytes) { return canceler_.wrap(Throttle(bytes)); }

 private:
  kj::Promise<bool> Retry(std::vector<CausalToken> tokens, kj::TimePoint deadline) {
    return r_.io_.getTimer().afterDelay(50 * kj::MILLISECONDS).then(
        [this, tokens = std::move(tokens), deadline]() mutable {
          return WaitVisible(std::move(tokens), deadline);
        });
  }

  kj::Promise<void> Run() {
    return Session()
        .catch_([this](kj::Exception&& e) {
          std::string why = e.getDescription().cStr();
          if (connected_ || why != last_error_) {
            spdlog::warn("peer {} ({}): link down: {}", address_.region, address_.address, why);
          }
          last_error_ = why;
        })
        .then([this] {
          Teardown();
          auto max = backoff_.count();
          std::uniform_int_distribution<int64_t> jitter(max / 2, max);
          auto delay = std::chrono::milliseconds(jitter(rng_));
          backoff_ = std::min(backoff_ * 2, r_.options_.backoff_max);
          return r_.io_.getTimer().afterDelay(ToKj(delay));
        })
        .then([this] { return Run(); });
  }

  // A clock probe's start: the wall clock sent, and the monotonic time.
  struct Probe {
    int64_t wall_ms;
    kj::TimePoint sent;
  };

  Probe StartProbe() {
    return Probe{static_cast<int64_t>(r_.NowMillis()), r_.io_.getTimer().now()};
  }

  // Connects and says hello; a peer that accepts and then stays silent (or
  // a connect that hangs) must not hold the link forever.
  kj::Promise<void> Session() {
    auto hello = Connect();
    return r_.io_.getTimer().timeoutAfter(HelloLimit(), kj::mv(hello)).then([this] {
      session_started_ = r_.io_.getTimer().now();
      return Serve();
    });
  }

  kj::Promise<void> Connect() {
    return r_.io_.getNetwork()
        .parseAddress(address_.address)
        .then([](kj::Own<kj::NetworkAddress> a) { return a->connect(); })
        .then([this](kj::Own<kj::AsyncIoStream> stream) {
          Metrics::Peer& m = metrics();
          conn_ = kj::heap<PeerConnection>(
              kj::heap<CountingStream>(kj::mv(stream), *m.sent_bytes, *m.received_bytes),
              r_.options_.max_message_bytes);
          auto req = conn_->Bootstrap().helloRequest();
          auto hello = req.initHello();
          hello.setReplicaId(r_.store_.node_id());
          hello.setName(r_.options_.name);
          hello.setRegion(r_.options_.region);
          hello.setSchemaVersion(peer::SCHEMA_VERSION);
          hello.setReplicationFactor(r_.options_.replication_factor);
          hello.setVnodes(r_.options_.vnodes);
          Probe probe = StartProbe();
          hello.setWallClockMs(probe.wall_ms);
          return req.send().then([this, probe](capnp::Response<peer::Peer::HelloResults>&& resp) {
            Established(resp, probe);
          });
        });
  }

  void Established(peer::Peer::HelloResults::Reader resp, Probe probe) {
    auto hello = resp.getHello();
    KJ_REQUIRE(hello.getSchemaVersion() == peer::SCHEMA_VERSION,
               "peer speaks another peer schema version", hello.getSchemaVersion());
    r_.CheckPlacementSettings(hello);
    if (hello.getRegion() != address_.region) {
      spdlog::warn("peer at {} says it is in region {}, expected {}", address_.address,
                   hello.getRegion().cStr(), address_.region);
    }
    if (target_ && hello.getReplicaId() != target_->id) {
      // Another node now listens there (a restart with a new data dir):
      // its members list will say who it is.
      KJ_FAIL_REQUIRE("the peer at this address is another node", address_.address,
                      hello.getName().cStr());
    }
    RecordOffset(hello.getWallClockMs(), probe);
    name_ = hello.getName();
    session_ = resp.getSession();
    TakeMembers(hello.getRegion(), resp.getViewHash(), resp.getMembers());
    heard_ = true;
    if (!target_) {
      connected_ = true;
      last_error_.clear();
      return;
    }
    acked_ = resp.getApplied();
    acked_known_ = true;
    sent_ = acked_;
    inflight_ = 0;
    connected_ = true;
    last_error_.clear();
    if (acked_ > r_.store_.LastSeq()) {
      // The peer holds entries this node no longer has: the log lost its
      // tail (a machine crash in wal mode) or the data dir was restored
      // from a copy. New writes would reuse those sequences.
      spdlog::error("peer {} holds this node's log through {}, past its last entry {}: this "
                    "node's log went back; its new writes reach that peer only by "
                    "anti-entropy",
                    address_.region, acked_, r_.store_.LastSeq());
    }
    spdlog::info("peer {} ({}, {}) connected; it holds this node's log through {}",
                 address_.region, name_, address_.address, acked_);
    if (acked_ < r_.store_.TrimmedThrough()) {
      StartRepair("it needs log entries after " + std::to_string(acked_) +
                  ", trimmed through " + std::to_string(r_.store_.TrimmedThrough()));
    }
  }

  // Runs the session's loops until one fails or the connection drops.
  kj::Promise<void> Serve() {
    auto failed = kj::newPromiseAndFulfiller<void>();
    failed_ = kj::mv(failed.fulfiller);
    session_tasks_ = kj::heap<kj::TaskSet>(*this);
    session_tasks_->add(Heartbeats());
    if (target_) {
      session_tasks_->add(Ship());
      session_tasks_->add(AntiEntropyLoop());
    }
    return kj::mv(failed.promise).exclusiveJoin(conn_->network.onDisconnect().then([]() {
      kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "connection closed"));
    }));
  }

  // How long a peer may leave a hello or heartbeat unanswered before the
  // link is given up and reconnected.
  kj::Duration SilenceLimit() const {
    return std::max(3 * ToKj(r_.options_.heartbeat), 1 * kj::SECONDS);
  }
  // How long connecting and saying hello may take, whatever the heartbeat.
  kj::Duration HelloLimit() const { return std::min(SilenceLimit(), 5 * kj::SECONDS); }

  void Teardown() {
    // A session that lasted resets the backoff; one that fails at once (a
    // batch the peer refuses) keeps backing off.
    if (connected_ && r_.io_.getTimer().now() - session_started_ > 10 * kj::SECONDS) {
      backoff_ = r_.options_.backoff_min;
    }
    session_tasks_ = nullptr;
    failed_ = nullptr;
    session_ = nullptr;
    conn_ = nullptr;
    if (connected_) spdlog::info("peer {} ({}) disconnected", address_.region, name_);
    connected_ = false;
    inflight_ = 0;
    offset_ms_.reset();
    samples_.clear();
    repair_active_ = false;
  }

  void taskFailed(kj::Exception&& e) override {
    if (failed_.get() != nullptr) {
      failed_->reject(kj::mv(e));
      failed_ = nullptr;
    }
  }

  peer::PeerSession::Client& session() {
    KJ_IF_MAYBE(s, session_) { return *s; }
    KJ_FAIL_REQUIRE("no session");
  }

  void TakeMembers(kj::StringPtr region, uint64_t hash,
                   capnp::List<peer::Member>::Reader members) {
    region_seen_ = region;
    view_hash_ = hash;
    if (r_.options_.on_remote_members && members.size() > 0 && region_seen_ != r_.options_.region) {
      r_.options_.on_remote_members(region_seen_, DecodeMembers(members));
    }
  }

  void StartRepair(const std::string& why) {
    if (repairing_) return;
    repairing_ = true;
    SettleHints(true);
    spdlog::warn("peer {} ({}): repairing by anti-entropy instead of the log: {}",
                 address_.region, address_.address, why);
    wake_.Notify();
  }

  // Records the peer's clock offset from a probe answered with its wall
  // clock: remote − (sent + round trip / 2), the round trip measured on the
  // monotonic clock. Of the last few samples, the one with the shortest
  // round trip counts (the least queueing).
  void RecordOffset(int64_t remote_ms, Probe probe) {
    int64_t rtt_ms = (r_.io_.getTimer().now() - probe.sent) / kj::MILLISECONDS;
    constexpr int64_t kBound = int64_t{1} << 50;  // far beyond any real clock
    if (rtt_ms < 0 || remote_ms < -kBound || remote_ms > kBound) return;
    samples_.push_back({rtt_ms, remote_ms - (probe.wall_ms + rtt_ms / 2)});
    if (samples_.size() > 8) samples_.erase(samples_.begin());
    offset_ms_ = std::min_element(samples_.begin(), samples_.end())->second;
  }

  // ---- shipping ----

  kj::Promise<void> Ship() {
    while (!repairing_ && inflight_ < r_.options_.window && sent_ < r_.store_.LastSeq()) {
      auto read = r_.store_.ReadLog(sent_, kMaxBatchEntries, r_.options_.batch_bytes);
      if (!read.ok()) {
        if (read.status().code() == Status::Code::kFailedPrecondition) {
          StartRepair(read.status().message());
          break;
        }
        KJ_FAIL_REQUIRE("cannot read the replication log", read.status().ToString());
      }
      if (read->empty()) break;
      Push(*read);
    }
    if (repairing_) return Repair().then([this] { return Ship(); });
    return wake_.Wait().then([this] { return Ship(); });
  }

  // Sends the entries of `read` for keys the peer owns, as covering the log
  // from sent_ through the last of `read`.
  void Push(const std::vector<LogEntry>& read) {
    std::vector<const LogEntry*> entries;
    for (const LogEntry& e : read) {
      if (Owns(TreeSegmentOf(e.key))) entries.push_back(&e);
    }
    auto req = session().pushDeltasRequest();
    auto batch = req.initBatch();
    batch.setOrigin(r_.store_.node_id());
    batch.setFrom(sent_);
    batch.setThrough(read.back().seq);
    auto list = batch.initEntries(entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      list[i].setSeq(entries[i]->seq);
      list[i].setTimestampMs(entries[i]->timestamp.wall_ms);
      list[i].setKey(AsData(entries[i]->key));
      list[i].setValue(AsData(EncodeCrdt(entries[i]->delta)));
    }
    const uint64_t last = read.back().seq;
    sent_ = last;
    ++inflight_;
    session_tasks_->add(req.send().then([this, last](auto&& resp) {
      --inflight_;
      uint64_t applied = resp.getApplied();
      if (applied > acked_) {
        acked_ = applied;
        SettleHints(false);
        r_.AckAdvanced();
      }
      // A gap at the peer (entries it lost with a restart): resend from
      // what it holds.
      if (applied < last && sent_ > acked_) sent_ = acked_;
      // Replies to a previous session's hand-overs can acknowledge more
      // than this session sent.
      sent_ = std::max(sent_, acked_);
      wake_.Notify();
    }));
  }

  kj::Promise<void> Heartbeats() {
    kj::Timer& timer = r_.io_.getTimer();
    return timer.afterDelay(ToKj(r_.options_.heartbeat)).then([this, &timer] {
      Probe probe = StartProbe();
      auto req = session().heartbeatRequest();
      req.setWallClockMs(probe.wall_ms);
      req.setViewHash(view_hash_);
      return timer.timeoutAfter(SilenceLimit(), req.send())
          .then([this, probe](auto&& resp) {
            RecordOffset(resp.getWallClockMs(), probe);
            if (resp.hasMembers()) TakeMembers(region_seen_, resp.getViewHash(), resp.getMembers());
            return Heartbeats();
          });
    });
  }

  // ---- anti-entropy ----

  kj::Promise<void> AntiEntropyLoop() {
    kj::Promise<void> pass = repairing_ ? kj::Promise<void>(kj::READY_NOW) : AePass(false);
    return pass.then([this] {
      return r_.io_.getTimer().afterDelay(ToKj(r_.options_.anti_entropy_interval));
    }).then([this] { return AntiEntropyLoop(); });
  }

  // A complete pass, then the peer holds the log through where it began.
  kj::Promise<void> Repair() {
    repair_from_ = r_.store_.LastSeq();
    repair_active_ = true;
    repair_pins_log_ = true;
    spdlog::info("peer {}: anti-entropy repair pass from log position {}", address_.region,
                 repair_from_);
    return AePass(true)
        .then([this]() -> kj::Promise<void> {
          if (r_.store_.TrimmedThrough() > repair_from_) {
            // The log let go of the pass's start: go again from now.
            return Repair();
          }
          auto req = session().markRepairedRequest();
          req.setThrough(repair_from_);
          return req.send().then([this](auto&& resp) {
            acked_ = std::max(acked_, resp.getApplied());
            r_.AckAdvanced();
            sent_ = acked_;
            repairing_ = false;
            repair_active_ = false;
            spdlog::info("peer {}: repaired; shipping the log from {}", address_.region, acked_);
          });
        });
  }

  // Compares the trees and repairs every segment that differs. A complete
  // pass repairs every differing key; a routine one only keys whose
  // difference stays put (see kSettle).
  kj::Promise<void> AePass(bool complete) {
    return session().treeDigestsRequest().send().then([this, complete](auto&& resp) {
      auto remote = resp.getDigests();
      KJ_REQUIRE(remote.size() == kTreeSegments, "peer has another tree shape", remote.size());
      std::vector<uint64_t> local = r_.store_.TreeDigests();
      std::vector<uint32_t> differing;
      for (uint32_t i = 0; i < kTreeSegments; ++i) {
        if (remote[i] != local[i] && BothOwn(i)) differing.push_back(i);
      }
      if (!differing.empty()) {
        spdlog::debug("peer {}: {} tree segments differ", address_.region, differing.size());
      }
      return RepairSegments(std::move(differing), 0, complete);
    });
  }

  kj::Promise<void> RepairSegments(std::vector<uint32_t> segments, size_t i, bool complete) {
    if (i == segments.size()) return kj::READY_NOW;
    uint32_t segment = segments[i];
    return RepairSegment(segment, complete)
        .then([this, segments = std::move(segments), i, complete]() mutable {
          return RepairSegments(std::move(segments), i + 1, complete);
        });
  }

  // Key -> (local digest, remote digest) for the keys of `segment` that
  // differ (0: absent on that side).
  using Differences = std::map<std::string, std::pair<uint64_t, uint64_t>>;

  kj::Promise<Differences> Differ(uint32_t segment) {
    auto req = session().segmentKeysRequest();
    req.setSegment(segment);
    return req.send().then([this, segment](auto&& resp) {
      auto keys = resp.getKeys();
      size_t bytes = 0;
      Differences diff;
      for (auto kd : keys) {
        diff[std::string(String(kd.getKey()))] = {0, kd.getDigest()};
        bytes += kd.getKey().size() + 16;
      }
      auto local = r_.store_.SegmentKeys(segment);
      KJ_REQUIRE(local.ok(), "cannot list a tree segment", local.status().ToString());
      r_.metrics_->ae_keys_compared.Increment(static_cast<double>(local->size()));
      for (const KeyDigest& kd : *local) {
        auto it = diff.find(kd.key);
        if (it == diff.end()) {
          diff[kd.key] = {kd.digest, 0};
        } else if (it->second.second == kd.digest) {
          diff.erase(it);
        } else {
          it->second.first = kd.digest;
        }
      }
      return Throttle(bytes).then([diff = std::move(diff)]() mutable { return std::move(diff); });
    });
  }

  kj::Promise<void> RepairSegment(uint32_t segment, bool complete) {
    return Differ(segment).then([this, segment, complete](Differences first) -> kj::Promise<void> {
      if (first.empty()) return kj::READY_NOW;
      if (complete) return RepairKeys(KeysOf(first), 0);
      return r_.io_.getTimer()
          .afterDelay(kSettle)
          .then([this, segment] { return Differ(segment); })
          .then([this, first = std::move(first)](Differences second) {
            std::vector<std::string> stable;
            for (const auto& [key, digests] : second) {
              auto it = first.find(key);
              if (it != first.end() && it->second == digests) stable.push_back(key);
            }
            return RepairKeys(std::move(stable), 0);
          });
    });
  }

  // Whether this node and the peer both own `segment`: only then do both
  // hold all of its keys.
  bool BothOwn(size_t segment) const {
    const auto& mine = r_.own_segments_;
    return (mine.empty() || mine[segment]) && Owns(segment);
  }

  static std::vector<std::string> KeysOf(const Differences& d) {
    std::vector<std::string> out;
    for (const auto& [key, digests] : d) out.push_back(key);
    return out;
  }

  // Exchanges the states of keys[from..] both ways, in chunks of at most
  // kRepairChunkKeys keys and about batch_bytes of states each way.
  kj::Promise<void> RepairKeys(std::vector<std::string> keys, size_t from) {
    constexpr size_t kRepairChunkKeys = 64;
    if (from >= keys.size()) return kj::READY_NOW;
    std::vector<std::pair<std::string, std::vector<std::string>>> local;
    size_t bytes = 0, to = from;
    for (; to < keys.size() && to - from < kRepairChunkKeys &&
           (to == from || bytes < r_.options_.batch_bytes);
         ++to) {
      auto states = r_.EncodedStates(keys[to]);
      bytes += states.bytes + keys[to].size();
      if (!states.encoded.empty()) local.emplace_back(keys[to], std::move(states.encoded));
    }
    r_.metrics_->ae_keys_repaired.Increment(static_cast<double>(to - from));
    auto push = session().putStatesRequest();
    SetStates(push.initStates(local.size()), local);
    auto pull = session().getStatesRequest();
    auto names = pull.initKeys(to - from);
    for (size_t i = from; i < to; ++i) names.set(i - from, AsData(keys[i]));

    kj::Promise<void> pushed = local.empty() ? kj::Promise<void>(kj::READY_NOW)
                                             : push.send().ignoreResult();
    auto pulled = pull.send().then([this](auto&& resp) {
      RemoteApply apply;
      apply.joins = DecodeStates(resp.getStates());
      size_t received = resp.totalSize().wordCount * sizeof(capnp::word);
      uint32_t served = std::max<uint32_t>(resp.getServed(), 1);
      kj::Promise<void> joined = kj::READY_NOW;
      if (!apply.joins.empty()) {
        joined = r_.committer_.SubmitRemote(std::move(apply)).then([](WriteResult result) {
          KJ_REQUIRE(result.status.ok(), "cannot join repaired states", result.status.ToString());
        });
      }
      return joined.then([this, received] { return Throttle(received); }).then([served] {
        return served;
      });
    });
    return pushed.then([this, bytes] { return Throttle(bytes); })
        .then([pulled = kj::mv(pulled)]() mutable { return kj::mv(pulled); })
        .then([this, keys = std::move(keys), from](uint32_t served) mutable {
          // Keys the peer left out are asked for again (and their local
          // states sent again, harmlessly).
          return RepairKeys(std::move(keys), from + served);
        });
  }

  // Waits as long as `bytes` take at the anti-entropy rate.
  kj::Promise<void> Throttle(size_t bytes) {
    kj::Timer& timer = r_.io_.getTimer();
    kj::TimePoint now = timer.now();
    if (budget_free_at_ < now) budget_free_at_ = now;
    uint64_t rate = std::max<uint64_t>(r_.options_.anti_entropy_bytes_per_second, 1);
    budget_free_at_ += static_cast<int64_t>(bytes * 1'000'000 / rate) * kj::MICROSECONDS;
    if (budget_free_at_ <= now) return kj::READY_NOW;
    return timer.atTime(budget_free_at_);
  }

  Replicator& r_;
  const PeerAddress address_;
  std::optional<PeerTarget> target_;
  kj::Canceler canceler_;  // calls whose continuations refer to the link
  Metrics::Peer* metrics_ = nullptr;
  std::string region_seen_;  // the region the peer said it is in
  uint64_t view_hash_ = 0;   // of the members it last sent
  std::chrono::milliseconds backoff_;
  std::mt19937_64 rng_;
  std::string last_error_;
  kj::Promise<void> run_ = nullptr;

  // Per connection.
  kj::Own<PeerConnection> conn_;
  kj::Maybe<peer::PeerSession::Client> session_;
  kj::Own<kj::TaskSet> session_tasks_;
  kj::Own<kj::PromiseFulfiller<void>> failed_;
  bool connected_ = false;
  bool heard_ = false;  // the peer answered hello on this link at least once
  std::string name_;
  std::optional<int64_t> offset_ms_;
  std::vector<std::pair<int64_t, int64_t>> samples_;  // (round trip, offset) ms
  kj::TimePoint session_started_ = kj::origin<kj::TimePoint>();
  size_t inflight_ = 0;
  uint64_t sent_ = 0;  // the last entry sent

  // Across connections.
  uint64_t acked_ = 0;  // the peer's durable position in this node's log
  std::deque<uint64_t> hinted_;  // hinted writes it does not hold yet
  bool acked_known_ = false;
  bool repairing_ = false;
  bool repair_active_ = false;  // a repair pass runs now, from repair_from_
  bool repair_pins_log_ = false;  // and the log is kept from repair_from_ for it
  uint64_t repair_from_ = 0;
  kj::TimePoint budget_free_at_ = kj::origin<kj::TimePoint>();
  Signal wake_;
};

// ---- the service peers call ------------------------------------------------

class PeerSessionImpl final : public peer::PeerSession::Server {
 public:
  PeerSessionImpl(Replicator& r, ReplicaId caller, std::string region)
      : r_(r), caller_(caller), region_(std::move(region)) {}

  kj::Promise<void> pushDeltas(PushDeltasContext context) override {
    CheckRunning();
    auto batch = context.getParams().getBatch();
    const ReplicaId origin = batch.getOrigin();
    KJ_REQUIRE(origin != r_.store_.node_id() && origin != 0, "deltas of a bad origin", origin);
    uint64_t& submitted = Submitted(origin);
    // A hand-over that failed may have lowered it below what later ones
    // made durable.
    submitted = std::max(submitted, r_.DurablePosition(origin));
    const uint64_t from = batch.getFrom();
    const uint64_t through = batch.getThrough();
    KJ_REQUIRE(from < through, "a batch covering no log positions", from, through);
    RemoteApply apply;
    apply.origin = origin;
    // Positions from+1..submitted are replays; a batch starting past
    // submitted + 1 leaves a gap, and the peer resends from the answer.
    const bool gap = from > submitted;
    std::vector<uint64_t> made_ms;  // when the origin made each joined entry
    uint64_t prev = from;
    for (auto e : batch.getEntries()) {
      uint64_t seq = e.getSeq();
      KJ_REQUIRE(seq > prev && seq <= through, "log entries out of order", prev, seq);
      prev = seq;
      if (gap || seq <= submitted) continue;
      StatusOr<Crdt> delta = DecodeCrdt(View(e.getValue()));
      KJ_REQUIRE(delta.ok(), "a delta that does not decode", seq, delta.status().ToString());
      apply.joins.emplace_back(std::string(String(e.getKey())), std::move(delta).value());
      made_ms.push_back(e.getTimestampMs());
    }
    if (gap || through <= submitted) {
      // Answer once what was handed over before has committed.
      auto it = r_.last_submit_.find(origin);
      kj::Promise<void> before =
          it == r_.last_submit_.end() || gap ? kj::Promise<void>(kj::READY_NOW)
                                             : it->second.addBranch();
      return before.then([this, context, origin]() mutable {
        context.getResults().setApplied(r_.DurablePosition(origin));
      });
    }
    apply.first = submitted + 1;
    apply.through = through;
    submitted = through;
    Replicator& r = r_;
    auto committed = r_.committer_.SubmitRemote(std::move(apply))
                         .then([&r, origin, region = region_,
                                made_ms = std::move(made_ms)](WriteResult result) {
                           if (!result.status.ok()) {
                             // Later hand-overs of this origin fail their
                             // continuity check; the peer resends from here.
                             r.submitted_[origin] = r.DurablePosition(origin);
                             KJ_FAIL_REQUIRE("cannot apply deltas", result.status.ToString());
                           }
                           const double now_ms = static_cast<double>(r.NowMillis());
                           for (uint64_t ms : made_ms) {
                             if (ms != 0) r.metrics_->ReplicationLag(region, (now_ms - ms) / 1000);
                           }
                         })
                         .fork();
    kj::Promise<void> mine = committed.addBranch();
    r_.last_submit_.insert_or_assign(origin, kj::mv(committed));
    return mine.then([this, context, origin]() mutable {
      context.getResults().setApplied(r_.DurablePosition(origin));
    });
  }

  kj::Promise<void> heartbeat(HeartbeatContext context) override {
    CheckRunning();
    auto results = context.getResults();
    results.setWallClockMs(static_cast<int64_t>(r_.NowMillis()));
    std::vector<MemberRecord> members = r_.LocalMembers();
    uint64_t hash = ViewHash(members);
    results.setViewHash(hash);
    if (hash != context.getParams().getViewHash()) {
      EncodeMembers(members, results.initMembers(members.size()));
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> forward(ForwardContext context) override {
    CheckRunning();
    KJ_REQUIRE(r_.forward_handler_ != nullptr, "this node does not coordinate requests");
    auto params = context.getParams();
    return r_.forward_handler_(params.getRequest(), params.getConsistency(),
                               context.getResults().initReply());
  }

  kj::Promise<void> keyDigests(KeyDigestsContext context) override {
    CheckRunning();
    auto keys = context.getParams().getKeys();
    auto out = context.getResults().initDigests(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      auto digest = r_.store_.KeyDigest(View(keys[i]));
      KJ_REQUIRE(digest.ok(), "cannot read a key's digest", digest.status().ToString());
      out.set(i, *digest);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> treeDigests(TreeDigestsContext context) override {
    CheckRunning();
    std::vector<uint64_t> digests = r_.store_.TreeDigests();
    auto out = context.getResults().initDigests(digests.size());
    for (size_t i = 0; i < digests.size(); ++i) out.set(i, digests[i]);
    return kj::READY_NOW;
  }

  kj::Promise<void> segmentKeys(SegmentKeysContext context) override {
    CheckRunning();
    uint32_t segment = context.getParams().getSegment();
    KJ_REQUIRE(segment < kTreeSegments, "no such tree segment", segment);
    auto keys = r_.store_.SegmentKeys(segment);
    KJ_REQUIRE(keys.ok(), "cannot list a tree segment", keys.status().ToString());
    auto out = context.getResults().initKeys(keys->size());
    for (size_t i = 0; i < keys->size(); ++i) {
      out[i].setKey(AsData((*keys)[i].key));
      out[i].setDigest((*keys)[i].digest);
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> getStates(GetStatesContext context) override {
    CheckRunning();
    auto keys = context.getParams().getKeys();
    std::vector<std::pair<std::string, std::vector<std::string>>> found;
    size_t bytes = 0;
    uint32_t served = 0;
    for (auto k : keys) {
      auto states = r_.EncodedStates(View(k));
      if (!found.empty() && bytes + states.bytes > r_.options_.batch_bytes) break;
      ++served;
      bytes += states.bytes;
      if (!states.encoded.empty()) found.emplace_back(std::string(View(k)), std::move(states.encoded));
    }
    auto results = context.getResults();
    results.setServed(served);
    SetStates(results.initStates(found.size()), found);
    return kj::READY_NOW;
  }

  kj::Promise<void> putStates(PutStatesContext context) override {
    CheckRunning();
    RemoteApply apply;
    apply.joins = DecodeStates(context.getParams().getStates());
    return r_.committer_.SubmitRemote(std::move(apply)).then([](WriteResult result) {
      KJ_REQUIRE(result.status.ok(), "cannot join states", result.status.ToString());
    });
  }

  kj::Promise<void> markRepaired(MarkRepairedContext context) override {
    CheckRunning();
    uint64_t through = context.getParams().getThrough();
    RemoteApply apply;
    apply.origin = caller_;
    apply.through = through;
    uint64_t& submitted = Submitted(caller_);
    submitted = std::max(submitted, through);
    return r_.committer_.SubmitRemote(std::move(apply))
        .then([this, context](WriteResult result) mutable {
          KJ_REQUIRE(result.status.ok(), "cannot record the repair", result.status.ToString());
          spdlog::info("region {} repaired this node through its log position {}", region_,
                       context.getParams().getThrough());
          context.getResults().setApplied(r_.DurablePosition(caller_));
        });
  }

  kj::Promise<void> waitVisible(WaitVisibleContext context) override {
    CheckRunning();
    auto params = context.getParams();
    auto tokens = DecodeTokens(params.getTokens());
    KJ_REQUIRE(tokens.ok(), tokens.status().ToString());
    auto timeout = std::chrono::milliseconds(params.getTimeoutMs());
    return r_.WaitVisible(std::move(tokens).value(), timeout)
        .then([context](Status s) mutable { context.getResults().setVisible(s.ok()); });
  }

 private:
  void CheckRunning() const {
    if (r_.stopped_) kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "node is shutting down"));
  }

  uint64_t& Submitted(ReplicaId origin) {
    auto it = r_.submitted_.find(origin);
    if (it == r_.submitted_.end()) it = r_.submitted_.emplace(origin, r_.DurablePosition(origin)).first;
    return it->second;
  }


  Replicator& r_;
  const ReplicaId caller_;
  const std::string region_;
};

class PeerServiceImpl final : public peer::Peer::Server {
 public:
  explicit PeerServiceImpl(Replicator& r) : r_(r) {}

  kj::Promise<void> hello(HelloContext context) override {
    if (r_.stopped_) kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "node is shutting down"));
    auto theirs = context.getParams().getHello();
    KJ_REQUIRE(theirs.getSchemaVersion() == peer::SCHEMA_VERSION,
               "this node speaks peer schema version 1 only", theirs.getSchemaVersion());
    const ReplicaId caller = theirs.getReplicaId();
    KJ_REQUIRE(caller != r_.store_.node_id() && caller != 0,
               "the caller has this node's replica id (a copied data dir?)");
    r_.CheckPlacementSettings(theirs);
    auto results = context.getResults();
    auto mine = results.initHello();
    mine.setReplicaId(r_.store_.node_id());
    mine.setName(r_.options_.name);
    mine.setRegion(r_.options_.region);
    mine.setSchemaVersion(peer::SCHEMA_VERSION);
    mine.setReplicationFactor(r_.options_.replication_factor);
    mine.setVnodes(r_.options_.vnodes);
    mine.setWallClockMs(static_cast<int64_t>(r_.NowMillis()));
    auto applied = r_.store_.AppliedPositions();
    auto it = applied.find(caller);
    results.setApplied(it == applied.end() ? 0 : it->second);
    results.setSession(kj::heap<PeerSessionImpl>(r_, caller, theirs.getRegion()));
    std::vector<MemberRecord> members = r_.LocalMembers();
    results.setViewHash(ViewHash(members));
    EncodeMembers(members, results.initMembers(members.size()));
    spdlog::debug("peer {} of region {} said hello", theirs.getName().cStr(),
                  theirs.getRegion().cStr());
    return kj::READY_NOW;
  }

 private:
  Replicator& r_;
};

// ---- the replicator --------------------------------------------------------

void Replicator::CheckPlacementSettings(peer::NodeHello::Reader theirs) const {
  auto differs = [](uint32_t mine, uint32_t other) { return mine != 0 && other != 0 && mine != other; };
  if (differs(options_.replication_factor, theirs.getReplicationFactor()) ||
      differs(options_.vnodes, theirs.getVnodes())) {
    std::string why = fmt::format(
        "placement settings differ: this node ({}) has --replication-factor {} --vnodes {}, "
        "node {} of region {} has {} and {}; every node must use the same",
        options_.name, options_.replication_factor, options_.vnodes, theirs.getName().cStr(),
        theirs.getRegion().cStr(), theirs.getReplicationFactor(), theirs.getVnodes());
    spdlog::error("{}", why);
    KJ_FAIL_REQUIRE(why);
  }
}

Replicator::EncodedKeyStates Replicator::EncodedStates(std::string_view key) {
  EncodedKeyStates out;
  auto states = store_.GetStates(key);
  KJ_REQUIRE(states.ok(), "cannot read states", states.status().ToString());
  for (const Crdt& c : *states) {
    out.encoded.push_back(EncodeCrdt(c));
    out.bytes += out.encoded.back().size();
  }
  if (out.bytes + key.size() > options_.max_message_bytes / 2) {
    spdlog::error("key '{}': its states ({} bytes) exceed half of --max-message-bytes; "
                  "anti-entropy cannot repair it",
                  PrintableBytes(key), out.bytes);
    out.encoded.clear();
    out.bytes = 0;
  }
  return out;
}

class Replicator::ErrorLogger final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& e) override {
    spdlog::error("replication task failed: {}", e.getDescription().cStr());
  }
};

Replicator::Replicator(Store& store, GroupCommitter& committer, kj::AsyncIoProvider& io,
                       ReplicatorOptions options)
    : store_(store),
      committer_(committer),
      io_(io),
      options_(std::move(options)),
      judge_(options_.max_clock_offset),
      error_logger_(kj::heap<ErrorLogger>()) {
  if (options_.wall_clock == nullptr) options_.wall_clock = WallClock::System();
  if (options_.metrics == nullptr) {
    own_metrics_ = std::make_unique<Metrics>(options_.region);
    options_.metrics = own_metrics_.get();
  }
  metrics_ = options_.metrics;
  metrics_->max_clock_offset.Set(static_cast<double>(options_.max_clock_offset.count()) / 1000);
  tasks_ = kj::heap<kj::TaskSet>(*error_logger_);
  for (const PeerAddress& p : options_.seeds) {
    seed_links_.push_back(kj::heap<PeerLink>(*this, p, std::nullopt));
  }
  committer_.OnCommitted([this] { Committed(); });
}

Replicator::~Replicator() {
  committer_.OnCommitted(nullptr);
  Stop();
}

void Replicator::Start() {
  started_ = true;
  dropped_ = store_.DroppedSegments();
  for (auto& link : seed_links_) link->Start();
  for (auto& [id, link] : links_) link->Start();
  tasks_->add(Maintain());
  tasks_->add(Rebalance());
}

bool Replicator::Dropped(size_t segment) const {
  return segment < dropped_.size() && dropped_[segment];
}

bool Replicator::Syncing(size_t segment) const {
  return Dropped(segment) && (own_segments_.empty() || own_segments_[segment]);
}

bool Replicator::HoldsOnlyOwned() const {
  if (own_segments_.empty()) return true;
  std::vector<uint64_t> digests = store_.TreeDigests();
  for (size_t s = 0; s < digests.size(); ++s) {
    if (digests[s] != 0 && !own_segments_[s]) return false;
  }
  return true;
}

bool Replicator::LogDelivered() const {
  for (const auto& [id, link] : links_) {
    PeerState state = link->target().state;
    if (state == PeerState::kDead || state == PeerState::kLeft) continue;
    if (link->acked() < store_.LastSeq()) return false;
  }
  return true;
}

std::vector<ReplicaId> Replicator::RegionOwners(size_t segment) const {
  std::vector<ReplicaId> out;
  for (const auto& [id, link] : links_) {
    const PeerTarget& t = link->target();
    if (t.region != options_.region || t.state == PeerState::kLeft) continue;
    if (!t.owned.empty() && t.owned[segment]) out.push_back(id);
  }
  return out;
}

kj::Promise<void> Replicator::Rebalance() {
  return io_.getTimer()
      .afterDelay(ToKj(std::min(options_.anti_entropy_interval, std::chrono::milliseconds(1000))))
      .then([this] {
        std::vector<uint64_t> digests = store_.TreeDigests();
        kj::Promise<void> pass = kj::READY_NOW;
        size_t handing = 0;
        for (size_t s = 0; s < digests.size() && !own_segments_.empty(); ++s) {
          std::vector<ReplicaId> owners = RegionOwners(s);
          bool reachable = !owners.empty() &&
                           std::all_of(owners.begin(), owners.end(),
                                       [this](ReplicaId id) { return IsConnected(id); });
          if (digests[s] != 0 && !own_segments_[s] && reachable) {
            ++handing;
            pass = pass.then([this, s, owners] { return HandOff(s, owners); });
          } else if (Syncing(s) && reachable) {
            // Links are looked up when used: one may close meanwhile.
            pass = pass.then([this, s, owner = owners.front()] {
              return LinkWithSession(owner).SyncSegment(static_cast<uint32_t>(s)).then([this, s] {
                return ClearDropped(s);
              });
            });
          } else if (Syncing(s) && owners.empty() && !trim_held_) {
            // No other node of the region (as gossip knows it) owns it: the
            // nodes it went to handed it back before they left.
            pass = pass.then([this, s] { return ClearDropped(s); });
          }
        }
        if (handing > 0) spdlog::info("handing {} segments over to their owners", handing);
        return pass;
      })
      .catch_([](kj::Exception&& e) {
        spdlog::warn("rebalancing pass failed: {}", e.getDescription().cStr());
      })
      .then([this] { return Rebalance(); });
}

kj::Promise<void> Replicator::ClearDropped(size_t segment) {
  RemoteApply apply;
  apply.clear_dropped.push_back(segment);
  return committer_.SubmitRemote(std::move(apply)).then([this, segment](WriteResult r) {
    KJ_REQUIRE(r.status.ok(), "cannot clear a segment's mark", r.status.ToString());
    dropped_[segment] = false;
  });
}

kj::Promise<void> Replicator::HandOff(size_t segment, std::vector<ReplicaId> owners) {
  auto keys = store_.SegmentKeys(segment);
  KJ_REQUIRE(keys.ok(), "cannot list a segment", keys.status().ToString());
  return HandOffKeys(segment, std::move(owners), std::move(keys).value(), 0);
}

kj::Promise<void> Replicator::HandOffKeys(size_t segment, std::vector<ReplicaId> owners,
                                          std::vector<geokv::KeyDigest> keys, size_t from) {
  constexpr size_t kChunkKeys = 64;
  if (from >= keys.size()) return kj::READY_NOW;
  std::vector<std::pair<std::string, std::vector<std::string>>> states;
  RemoteApply drops;
  size_t bytes = 0, to = from;
  for (; to < keys.size() && to - from < kChunkKeys && (to == from || bytes < options_.batch_bytes);
       ++to) {
    auto encoded = EncodedStates(keys[to].key);
    if (encoded.encoded.empty()) continue;  // too large to travel: kept here
    bytes += encoded.bytes + keys[to].key.size();
    states.emplace_back(keys[to].key, std::move(encoded.encoded));
    drops.drops.emplace_back(keys[to].key, keys[to].digest);
  }
  // Every owner confirms (its commit) before this node lets go of a key,
  // and a key written here since it was read is kept.
  kj::Vector<kj::Promise<void>> puts;
  for (ReplicaId owner : owners) {
    auto session = KJ_ASSERT_NONNULL(LinkWithSession(owner).MaybeSession());
    auto req = session.putStatesRequest();
    SetStates(req.initStates(states.size()), states);
    puts.add(io_.getTimer().timeoutAfter(30 * kj::SECONDS, req.send()).ignoreResult());
  }
  return kj::joinPromises(puts.releaseAsArray())
      .then([this, drops = std::move(drops)]() mutable {
        if (drops.drops.empty()) return kj::Promise<WriteResult>(WriteResult{});
        return committer_.SubmitRemote(std::move(drops));
      })
      .then([this, segment](WriteResult r) {
        KJ_REQUIRE(r.status.ok(), "cannot drop handed-over keys", r.status.ToString());
        if (segment < dropped_.size()) dropped_[segment] = true;
      })
      .then([this, owner = owners.front(), bytes] {
        return LinkWithSession(owner).Budget(bytes * 2);
      })
      .then([this, segment, owners = std::move(owners), keys = std::move(keys), to]() mutable {
        return HandOffKeys(segment, std::move(owners), std::move(keys), to);
      });
}

void Replicator::SetPlacement(std::vector<bool> own_segments, std::vector<PeerTarget> targets) {
  if (stopped_) return;
  own_segments_ = std::move(own_segments);
  std::map<ReplicaId, kj::Own<PeerLink>> links;
  for (PeerTarget& t : targets) {
    if (t.id == store_.node_id() || t.state == PeerState::kLeft) continue;
    auto it = links_.find(t.id);
    if (it != links_.end() && it->second->address().address == t.address) {
      it->second->Retarget(std::move(t));
      links.emplace(it->first, kj::mv(it->second));
      links_.erase(it);
      continue;
    }
    spdlog::info("replicating to {} of region {} at {}", t.name, t.region, t.address);
    ReplicaId id = t.id;
    PeerAddress address{t.region, t.address};
    auto link = kj::heap<PeerLink>(*this, std::move(address), std::move(t));
    if (started_) link->Start();
    links.emplace(id, kj::mv(link));
  }
  std::vector<std::pair<std::string, std::string>> gone;
  for (auto& [id, link] : links_) {
    spdlog::info("no longer replicating to {} of region {}", link->Report().name,
                 link->address().region);
    link->SettleHints(true);  // the node left: its hints have no one to go to
    gone.emplace_back(link->metrics_name(), link->address().region);
    // Destroyed later: this may run inside one of the link's own calls.
    retired_.push_back(kj::mv(link));
  }
  links_ = std::move(links);
  if (!retired_.empty()) {
    tasks_->add(kj::evalLater([this, gone = std::move(gone)] {
      retired_.clear();
      // A peer no link goes to leaves no gauges behind (a disconnected
      // series would look like a link that is down).
      for (const auto& [name, region] : gone) {
        bool linked = std::any_of(links_.begin(), links_.end(), [&](const auto& l) {
          return l.second->metrics_name() == name && l.second->address().region == region;
        });
        if (!linked) metrics_->ForgetPeer(name, region);
      }
    }));
  }
  // A node that left may have been what waiters were waiting for.
  AckAdvanced();
}

std::vector<MemberRecord> Replicator::LocalMembers() const {
  if (options_.local_members) return options_.local_members();
  MemberRecord self;
  self.id = store_.node_id();
  self.name = options_.name;
  self.region = options_.region;
  return {self};
}

bool Replicator::IsConnected(ReplicaId node) const {
  auto it = links_.find(node);
  return it != links_.end() && it->second->has_session();
}

void Replicator::NoteHints(const std::vector<ReplicaId>& owners, uint64_t seq) {
  for (ReplicaId id : owners) {
    auto it = links_.find(id);
    if (it == links_.end() || it->second->connected()) continue;
    it->second->Hint(seq);
  }
}

Replicator::HintStats Replicator::Hints() const {
  HintStats out;
  out.stored = static_cast<uint64_t>(metrics_->hints_stored.Value());
  out.replayed = static_cast<uint64_t>(metrics_->hints_replayed.Value());
  out.dropped = static_cast<uint64_t>(metrics_->hints_dropped.Value());
  for (const auto& [id, link] : links_) out.pending += link->hints_pending();
  return out;
}

PeerLink& Replicator::LinkWithSession(ReplicaId node) {
  auto it = links_.find(node);
  if (it == links_.end() || !it->second->has_session()) {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "node is not connected", Hex(node)));
  }
  return *it->second;
}

kj::Promise<capnp::Response<peer::PeerSession::ForwardResults>> Replicator::Forward(
    ReplicaId node, rpc::Request::Reader request, rpc::Consistency consistency,
    std::chrono::milliseconds timeout) {
  return kj::evalNow([&]() {
    auto session = KJ_ASSERT_NONNULL(LinkWithSession(node).MaybeSession());
    auto req = session.forwardRequest();
    req.setRequest(request);
    req.setConsistency(consistency);
    return io_.getTimer().timeoutAfter(ToKj(timeout), req.send());
  });
}

kj::Promise<uint64_t> Replicator::KeyDigest(ReplicaId node, std::string key,
                                            std::chrono::milliseconds timeout) {
  return kj::evalNow([&]() {
    auto session = KJ_ASSERT_NONNULL(LinkWithSession(node).MaybeSession());
    auto req = session.keyDigestsRequest();
    req.initKeys(1).set(0, AsData(key));
    return io_.getTimer().timeoutAfter(ToKj(timeout), req.send()).then([](auto&& resp) {
      KJ_REQUIRE(resp.getDigests().size() == 1, "a digest reply of the wrong size");
      return resp.getDigests()[0];
    });
  });
}

kj::Promise<std::vector<Crdt>> Replicator::FetchStates(ReplicaId node, std::string key,
                                                       std::chrono::milliseconds timeout) {
  return kj::evalNow([&]() {
    auto session = KJ_ASSERT_NONNULL(LinkWithSession(node).MaybeSession());
    auto req = session.getStatesRequest();
    req.initKeys(1).set(0, AsData(key));
    return io_.getTimer().timeoutAfter(ToKj(timeout), req.send()).then([](auto&& resp) {
      std::vector<Crdt> out;
      for (auto& [k, state] : DecodeStates(resp.getStates())) out.push_back(std::move(state));
      return out;
    });
  });
}

kj::Promise<void> Replicator::PushStates(ReplicaId node, std::string key,
                                         std::chrono::milliseconds timeout) {
  return kj::evalNow([&]() -> kj::Promise<void> {
    auto session = KJ_ASSERT_NONNULL(LinkWithSession(node).MaybeSession());
    auto states = EncodedStates(key);
    if (states.encoded.empty()) return kj::READY_NOW;
    auto req = session.putStatesRequest();
    std::vector<std::pair<std::string, std::vector<std::string>>> found;
    found.emplace_back(std::move(key), std::move(states.encoded));
    SetStates(req.initStates(1), found);
    return io_.getTimer().timeoutAfter(ToKj(timeout), req.send()).ignoreResult();
  });
}

size_t Replicator::Acked(const AckWaiter& w) const {
  size_t n = 0;
  for (ReplicaId id : w.nodes) {
    auto it = links_.find(id);
    // Shipping leaves out the entries of segments a node does not own, so
    // its position covers the write only while it owns the write's segment.
    if (it != links_.end() && it->second->Owns(w.segment) && it->second->acked() >= w.seq) ++n;
  }
  return n;
}

kj::Promise<size_t> Replicator::WaitAcked(std::vector<ReplicaId> nodes, uint64_t seq,
                                          size_t segment, size_t needed,
                                          std::chrono::milliseconds timeout) {
  auto waiter =
      std::make_shared<AckWaiter>(AckWaiter{std::move(nodes), seq, segment, needed, {}});
  size_t now = Acked(*waiter);
  if (now >= needed) return now;
  if (stopped_) return now;
  auto paf = kj::newPromiseAndFulfiller<size_t>();
  waiter->fulfiller = kj::mv(paf.fulfiller);
  ack_waiters_.push_back(waiter);
  auto expired = io_.getTimer().afterDelay(ToKj(timeout)).then([this, waiter] {
    ack_waiters_.erase(std::remove(ack_waiters_.begin(), ack_waiters_.end(), waiter),
                       ack_waiters_.end());
    return Acked(*waiter);
  });
  return canceler_.wrap(paf.promise.exclusiveJoin(kj::mv(expired)));
}

void Replicator::AckAdvanced() {
  if (ack_waiters_.empty()) return;
  std::vector<std::shared_ptr<AckWaiter>> still;
  for (auto& w : ack_waiters_) {
    if (!w->fulfiller->isWaiting()) continue;
    size_t n = Acked(*w);
    if (n >= w->needed) {
      w->fulfiller->fulfill(kj::mv(n));
    } else {
      still.push_back(w);
    }
  }
  ack_waiters_ = std::move(still);
}

void Replicator::Stop() {
  if (stopped_) return;
  stopped_ = true;
  // Waits still running refer to the links and timers: end them first.
  canceler_.cancel("node is shutting down");
  tasks_ = nullptr;
  links_.clear();
  seed_links_.clear();
  for (auto& w : waiters_) w->fulfiller->fulfill(Status::Unavailable("node is shutting down"));
  waiters_.clear();
  ack_waiters_.clear();
}

capnp::Capability::Client Replicator::PeerBootstrap() {
  return kj::heap<PeerServiceImpl>(*this);
}

std::vector<int64_t> Replicator::PeerOffsets() const {
  std::vector<int64_t> out;
  for (const auto& [id, link] : links_) {
    if (link->connected() && link->offset_ms()) out.push_back(*link->offset_ms());
  }
  return out;
}

Status Replicator::WritesAllowed() const { return judge_.Judge(PeerOffsets()); }

int64_t Replicator::ClockOffsetMs() const { return ClockJudge::OwnOffset(PeerOffsets()); }

uint64_t Replicator::HeldThrough(ReplicaId origin) const {
  return origin == store_.node_id() ? store_.LastSeq() : DurablePosition(origin);
}

bool Replicator::Visible(const std::vector<CausalToken>& tokens) const {
  return std::all_of(tokens.begin(), tokens.end(),
                     [this](const CausalToken& t) { return t.seq <= HeldThrough(t.origin); });
}

kj::Promise<Status> Replicator::WaitVisible(std::vector<CausalToken> tokens,
                                            std::chrono::milliseconds timeout) {
  if (Visible(tokens)) return Status::OK();
  if (stopped_) return Status::Unavailable("node is shutting down");
  auto paf = kj::newPromiseAndFulfiller<Status>();
  auto waiter = std::make_shared<Waiter>(Waiter{tokens, kj::mv(paf.fulfiller)});
  waiters_.push_back(waiter);
  auto expired = io_.getTimer().afterDelay(ToKj(timeout)).then([this, waiter, timeout] {
    waiters_.erase(std::remove(waiters_.begin(), waiters_.end(), waiter), waiters_.end());
    for (const CausalToken& t : waiter->tokens) {
      uint64_t held = HeldThrough(t.origin);
      if (t.seq <= held) continue;
      return Status::Timeout("waited " + std::to_string(timeout.count()) + " ms for the " +
                             Describe(t) + "; this node holds that node's log through " +
                             std::to_string(held));
    }
    return Status::OK();
  });
  return canceler_.wrap(paf.promise.exclusiveJoin(kj::mv(expired)));
}

kj::Promise<StatusOr<std::vector<std::string>>> Replicator::WaitReplicated(
    std::vector<CausalToken> tokens, std::vector<std::string> regions,
    std::chrono::milliseconds timeout) {
  using Result = StatusOr<std::vector<std::string>>;
  std::set<std::string> known{options_.region};
  for (const auto& [id, link] : links_) known.insert(link->address().region);
  if (regions.empty()) regions.assign(known.begin(), known.end());
  kj::TimePoint deadline = io_.getTimer().now() + ToKj(timeout);
  kj::Vector<kj::Promise<bool>> waits;
  for (const std::string& region : regions) {
    if (!known.count(region)) {
      return Result(Status::InvalidArgument("region '" + region +
                                            "' is not this node's nor one it replicates to"));
    }
    // A region has the writes once each of its live nodes holds them.
    kj::Vector<kj::Promise<bool>> nodes;
    if (region == options_.region) {
      nodes.add(WaitVisible(tokens, timeout).then([](Status s) { return s.ok(); }));
    }
    for (auto& [id, link] : links_) {
      if (link->address().region != region) continue;
      PeerState state = link->target().state;
      if (state == PeerState::kDead || state == PeerState::kLeft) continue;
      nodes.add(link->WaitVisible(tokens, deadline));
    }
    waits.add(kj::joinPromises(nodes.releaseAsArray()).then([](kj::Array<bool> done) {
      return std::all_of(done.begin(), done.end(), [](bool b) { return b; });
    }));
  }
  return canceler_.wrap(kj::joinPromises(waits.releaseAsArray()))
      .then([regions = std::move(regions)](kj::Array<bool> done) {
        std::vector<std::string> missing;
        for (size_t i = 0; i < done.size(); ++i) {
          if (!done[i]) missing.push_back(regions[i]);
        }
        return Result(std::move(missing));
      });
}

void Replicator::Report() {
  size_t pending = 0;
  for (auto& [id, link] : links_) {
    PeerStatus status = link->Report();
    Metrics::Peer& m = link->metrics();
    m.connected->Set(status.connected ? 1 : 0);
    m.backlog_entries->Set(
        static_cast<double>(store_.LastSeq() > status.acked ? store_.LastSeq() - status.acked : 0));
    m.backlog_bytes->Set(static_cast<double>(status.backlog_bytes));
    m.clock_offset->Set(static_cast<double>(status.clock_offset_ms.value_or(0)) / 1000);
    pending += link->hints_pending();
  }
  for (auto& link : seed_links_) {
    Metrics::Peer& m = link->metrics();
    m.connected->Set(link->connected() ? 1 : 0);
    m.clock_offset->Set(static_cast<double>(link->offset_ms().value_or(0)) / 1000);
  }
  metrics_->hints_pending.Set(static_cast<double>(pending));
  metrics_->clock_offset.Set(static_cast<double>(ClockOffsetMs()) / 1000);
}

uint64_t Replicator::DurablePosition(ReplicaId origin) const {
  auto applied = store_.AppliedPositions();
  auto it = applied.find(origin);
  return it == applied.end() ? 0 : it->second;
}

std::vector<PeerStatus> Replicator::Peers() const {
  std::vector<PeerStatus> out;
  for (const auto& [id, link] : links_) out.push_back(link->Report());
  return out;
}

void Replicator::Committed() {
  for (auto& [id, link] : links_) link->Wake();
  if (waiters_.empty()) return;
  std::vector<std::shared_ptr<Waiter>> still;
  for (auto& w : waiters_) {
    if (!w->fulfiller->isWaiting()) continue;
    if (Visible(w->tokens)) {
      w->fulfiller->fulfill(Status::OK());
    } else {
      still.push_back(w);
    }
  }
  waiters_ = std::move(still);
}

kj::Promise<void> Replicator::Maintain() {
  return io_.getTimer().afterDelay(1 * kj::SECONDS).then([this] {
    Status writes = WritesAllowed();
    if (writes.ok() != writes_allowed_) {
      writes_allowed_ = writes.ok();
      if (writes.ok()) {
        spdlog::info("clock back within --max-clock-offset of the peers': writes accepted again");
      } else {
        spdlog::error("{}", writes.message());
      }
    }
    for (auto& [id, link] : links_) link->CheckBacklog();
    Report();
    uint64_t through = store_.LastSeq();
    for (const auto& [id, link] : links_) {
      if (auto floor = link->TrimFloor()) through = std::min(through, *floor);
    }
    for (const auto& link : seed_links_) {
      if (auto floor = link->TrimFloor()) through = std::min(through, *floor);
    }
    if (!trim_held_ && through > store_.TrimmedThrough()) {
      Status trimmed = store_.TrimLog(through);
      if (!trimmed.ok()) spdlog::error("cannot trim the log: {}", trimmed.ToString());
    }
    return Maintain();
  });
}

}  // namespace geokv

#include "replication/peer_link.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "crdt/codec.h"
#include "replication/members.h"
#include "replication/token_visibility.h"

namespace geokv {
namespace {

ShipperOptions ShipperOptionsFor(const ReplicationEnv& env, const PeerAddress& address,
                                 std::function<void()> on_acked,
                                 std::function<void(uint64_t)> on_log_behind) {
  ShipperOptions o;
  o.region = address.region;
  o.address = address.address;
  o.batch_bytes = env.options.batch_bytes;
  o.window = env.options.window;
  o.max_backlog_bytes = env.options.max_backlog_bytes;
  o.on_acked = std::move(on_acked);
  o.on_log_behind = std::move(on_log_behind);
  o.metrics = &env.metrics;
  return o;
}

}  // namespace

PeerLink::PeerLink(ReplicationEnv& env, PeerAddress address, std::optional<PeerTarget> target,
                   std::function<void()> on_acked, std::function<void(uint64_t)> on_log_behind)
    : env_(env),
      address_(std::move(address)),
      target_(std::move(target)),
      on_acked_(on_acked),
      log_(env.reader),
      shipper_(log_,
               ShipperOptionsFor(env, address_, std::move(on_acked), std::move(on_log_behind))),
      anti_entropy_(env, address_.region, [this](size_t s) { return Owns(s); }),
      backoff_(env.options.backoff_min),
      rng_(std::random_device{}()),
      framing_(Wanted()) {
  if (target_) name_ = target_->name;
  shipper_.SetOwns([this](size_t s) { return Owns(s); });
}

PeerFraming PeerLink::Wanted() const {
  switch (env_.options.compression) {
    case PeerCompression::kOff:
      break;
    case PeerCompression::kCrossRegion:
      if (address_.region != env_.options.region) return PeerFraming::kCompressed;
      break;
    case PeerCompression::kAll:
      return PeerFraming::kCompressed;
  }
  return PeerFraming::kPacked;
}

PeerLink::~PeerLink() noexcept(false) {
  canceler_.cancel("the link closed");
  // The session's calls go before the connection they travel on.
  session_tasks_ = nullptr;
  shipper_.Disconnected();
}

void PeerLink::Start() {
  run_ = Run().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("peer link stopped: {}", e.getDescription().cStr());
  });
}

void PeerLink::Retarget(PeerTarget target) {
  target_ = std::move(target);
  name_ = target_->name;
}

Metrics::Peer& PeerLink::metrics() {
  if (metrics_ == nullptr) metrics_ = &env_.metrics.PeerMetrics(metrics_name(), address_.region);
  return *metrics_;
}

std::string PeerLink::metrics_name() const {
  return target_ ? target_->name : "seed:" + address_.address;
}

kj::Maybe<peer::PeerSession::Client> PeerLink::MaybeSession() {
  KJ_IF_MAYBE(s, session_) { return *s; }
  return nullptr;
}

PeerStatus PeerLink::Report() const {
  PeerStatus s;
  s.address = address_;
  s.name = name_;
  s.connected = connected_;
  s.repairing = shipper_.repairing();
  s.acked = shipper_.acked();
  s.clock_offset_ms = clock_.offset_ms();
  s.backlog_bytes = shipper_.backlog_bytes();
  return s;
}

std::optional<uint64_t> PeerLink::TrimFloor(uint64_t bytes_after_trimmed) const {
  if (target_) return shipper_.TrimFloor();
  // A seed not yet heard from stands for nodes this node does not know yet,
  // which may need the whole log: it holds it, up to --max-backlog.
  const uint64_t trimmed = env_.store.TrimmedThrough();
  if (heard_ || (env_.store.LastSeq() > trimmed &&
                 bytes_after_trimmed > env_.options.max_backlog_bytes)) {
    return std::nullopt;
  }
  return trimmed;
}

kj::Promise<void> PeerLink::SampleBacklog() {
  if (!target_) return kj::READY_NOW;
  return canceler_.wrap(shipper_.SampleBacklog()).catch_([](kj::Exception&&) {});
}

kj::Promise<bool> PeerLink::WaitVisible(std::vector<CausalToken> tokens, kj::TimePoint deadline) {
  return canceler_.wrap(WaitRemoteVisible(
      env_.timer, [this] { return MaybeSession(); }, std::move(tokens), deadline));
}

kj::Promise<void> PeerLink::SyncSegment(uint32_t segment) {
  return canceler_.wrap(
      anti_entropy_.RepairSegment(session(), segment, AntiEntropy::Scope::kComplete));
}

kj::Promise<void> PeerLink::Budget(size_t bytes) {
  return canceler_.wrap(anti_entropy_.Throttle(bytes));
}

PeerLink::Probe PeerLink::StartProbe() {
  return Probe{static_cast<int64_t>(env_.NowMillis()), env_.timer.now()};
}

void PeerLink::RecordOffset(int64_t remote_ms, Probe probe) {
  int64_t rtt_ms = (env_.timer.now() - probe.sent) / kj::MILLISECONDS;
  clock_.Record(remote_ms, probe.wall_ms, rtt_ms);
}

kj::Promise<void> PeerLink::Run() {
  return Session()
      .catch_([this](kj::Exception&& e) {
        std::string why = e.getDescription().cStr();
        if (conn_ && conn_->packing != nullptr && !hello_answered_ &&
            conn_->packing->received() > 0) {
          // What came back was no answer to the hello: an older build's
          // port read the preamble as a message, refused it and said so,
          // plainly. The next try goes a step down. (A connection that
          // ended or timed out with nothing back, a peer that went away or
          // paused, says nothing of its build.)
          const PeerFraming was = framing_;
          framing_ = was == PeerFraming::kCompressed ? PeerFraming::kPacked : PeerFraming::kPlain;
          why += fmt::format(" (over a {} connection; the next one is {})", FramingName(was),
                             FramingName(framing_));
        }
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
        backoff_ = std::min(backoff_ * 2, env_.options.backoff_max);
        return env_.timer.afterDelay(ToKj(delay));
      })
      .then([this] { return Run(); });
}

// A peer that accepts and then stays silent (or a connect that hangs) must
// not hold the link forever.
kj::Promise<void> PeerLink::Session() {
  auto hello = Connect();
  return env_.timer.timeoutAfter(HelloLimit(), kj::mv(hello)).then([this] {
    session_started_ = env_.timer.now();
    return Serve();
  });
}

kj::Promise<void> PeerLink::Connect() {
  return env_.io.getNetwork()
      .parseAddress(address_.address)
      .then([](kj::Own<kj::NetworkAddress> a) { return a->connect(); })
      .then([this](kj::Own<kj::AsyncIoStream> stream) { return Secure(kj::mv(stream)); })
      .then([this](kj::Own<kj::AsyncIoStream> stream) {
        Metrics::Peer& m = metrics();
        conn_ = kj::heap<PeerConnection>(
            kj::heap<CountingStream>(kj::mv(stream), *m.sent_bytes, *m.received_bytes),
            env_.options.max_message_bytes, env_.timer, framing_);
        hello_answered_ = false;
        auto req = conn_->Bootstrap().helloRequest();
        Probe probe = StartProbe();
        FillHello(env_.options, env_.store.node_id(), probe.wall_ms, req.initHello());
        std::vector<Member> members = MembersFor(env_.options, address_.region);
        EncodeMembers(members, req.initMembers(static_cast<unsigned>(members.size())));
        sent_hash_ = ViewHash(members);
        return req.send().then([this, probe](capnp::Response<peer::Peer::HelloResults>&& resp) {
          Established(resp, probe);
        });
      });
}

kj::Promise<kj::Own<kj::AsyncIoStream>> PeerLink::Secure(kj::Own<kj::AsyncIoStream> stream) {
  certified_.reset();
  if (env_.options.tls == nullptr) return kj::mv(stream);
  // Any node of the region carries its name as a DNS name (util/tls.h).
  kj::AuthenticatedStream plain{kj::mv(stream), kj::UnknownPeerIdentity::newInstance()};
  return env_.options.tls->WrapClient(kj::mv(plain), address_.region.c_str())
      .then([this](kj::AuthenticatedStream secured) {
        std::optional<std::string> name = CertifiedName(*secured.peerIdentity);
        std::optional<NodeIdentity> node = name ? ParseNodeCommonName(*name) : std::nullopt;
        KJ_REQUIRE(node.has_value() && node->region == address_.region,
                   "the peer's certificate names no node of the region dialled",
                   name.value_or("(none)").c_str(), address_.region.c_str());
        KJ_REQUIRE(!target_ || node->name == target_->name,
                   "the peer's certificate names another node", name->c_str(),
                   target_->name.c_str());
        certified_ = std::move(node);
        return kj::mv(secured.stream);
      });
}

void PeerLink::Established(peer::Peer::HelloResults::Reader resp, Probe probe) {
  auto hello = resp.getHello();
  hello_answered_ = true;
  const PeerFraming taken = hello.getCompressedStreams() ? PeerFraming::kCompressed
                            : hello.getPackedStreams()   ? PeerFraming::kPacked
                                                         : PeerFraming::kPlain;
  const PeerFraming next = std::min(Wanted(), taken);
  if (next > framing_) {
    // The peer was upgraded: this connection ends, and the next one follows
    // at the shortest backoff since the peer just answered.
    framing_ = next;
    backoff_ = env_.options.backoff_min;
    if (next == PeerFraming::kCompressed) {
      KJ_FAIL_REQUIRE("the peer takes compressed connections: reconnecting compressed");
    }
    KJ_FAIL_REQUIRE("the peer takes packed connections: reconnecting packed");
  }
  if (certified_) {
    KJ_REQUIRE(hello.getName() == certified_->name.c_str() &&
                   hello.getRegion() == certified_->region.c_str(),
               "the peer's hello names another node than its certificate",
               hello.getName().cStr(), hello.getRegion().cStr(),
               NodeCommonName(*certified_).c_str());
  }
  KJ_REQUIRE(hello.getSchemaVersion() == peer::SCHEMA_VERSION,
             "peer speaks another peer schema version", hello.getSchemaVersion());
  CheckPlacementSettings(env_.options, hello);
  if (hello.getRegion() != address_.region) {
    spdlog::warn("peer at {} says it is in region {}, expected {}", address_.address,
                 hello.getRegion().cStr(), address_.region);
  }
  if (target_ && hello.getReplicaId() != target_->id) {
    // Another node now listens there (a restart with a new data dir): its
    // members list will say who it is.
    KJ_FAIL_REQUIRE("the peer at this address is another node", address_.address,
                    hello.getName().cStr());
  }
  RecordOffset(hello.getWallClockMs(), probe);
  name_ = hello.getName();
  session_ = resp.getSession();
  TakeMembers(hello.getRegion(), resp.getViewHash(), resp.getMembers());
  heard_ = true;
  connected_ = true;
  last_error_.clear();
  claimed_.clear();
  TakeClaimed(resp.getOwned());
  if (!target_) return;
  spdlog::info("peer {} ({}, {}) connected ({}); it holds this node's log through {}",
               address_.region, name_, address_.address,
               FramingName(framing_),
               resp.getApplied());
  shipper_.Connected(resp.getApplied());
}

kj::Promise<void> PeerLink::Serve() {
  auto failed = kj::newPromiseAndFulfiller<void>();
  failed_ = kj::mv(failed.fulfiller);
  session_tasks_ = kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this));
  session_tasks_->add(Heartbeats());
  if (target_) {
    session_tasks_->add(shipper_.Run(*this));
    session_tasks_->add(AntiEntropyLoop());
  }
  return kj::mv(failed.promise).exclusiveJoin(conn_->network.onDisconnect().then([]() {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "connection closed"));
  }));
}

kj::Duration PeerLink::SilenceLimit() const {
  return std::max(3 * ToKj(env_.options.heartbeat), 1 * kj::SECONDS);
}

kj::Duration PeerLink::HelloLimit() const { return std::min(SilenceLimit(), 5 * kj::SECONDS); }

void PeerLink::Teardown() {
  // A session that lasted resets the backoff; one that fails at once (a
  // batch the peer refuses) keeps backing off.
  if (connected_ && env_.timer.now() - session_started_ > 10 * kj::SECONDS) {
    backoff_ = env_.options.backoff_min;
  }
  session_tasks_ = nullptr;
  shipper_.Disconnected();
  failed_ = nullptr;
  session_ = nullptr;
  conn_ = nullptr;
  if (connected_) spdlog::info("peer {} ({}) disconnected", address_.region, name_);
  connected_ = false;
  clock_.Reset();
}

void PeerLink::taskFailed(kj::Exception&& e) {
  if (failed_.get() != nullptr) {
    failed_->reject(kj::mv(e));
    failed_ = nullptr;
  }
}

peer::PeerSession::Client& PeerLink::session() {
  KJ_IF_MAYBE(s, session_) { return *s; }
  KJ_FAIL_REQUIRE("no session");
}

void PeerLink::TakeMembers(kj::StringPtr region, uint64_t hash,
                           capnp::List<peer::Member>::Reader members) {
  region_seen_ = region;
  view_hash_ = hash;
  LearnMembers(env_.options, region_seen_, members);
}

kj::Promise<void> PeerLink::Heartbeats() {
  kj::Timer& timer = env_.timer;
  return timer.afterDelay(ToKj(env_.options.heartbeat)).then([this, &timer] {
    Probe probe = StartProbe();
    auto req = session().heartbeatRequest();
    req.setWallClockMs(probe.wall_ms);
    req.setViewHash(view_hash_);
    req.setStableMs(env_.stable_stamp.wall_ms);
    req.setStableLogical(env_.stable_stamp.logical);
    // Ours, only when they changed since this session last sent them.
    std::vector<Member> members = MembersFor(env_.options, address_.region);
    uint64_t hash = ViewHash(members);
    if (hash != sent_hash_) {
      EncodeMembers(members, req.initMembers(static_cast<unsigned>(members.size())));
      sent_hash_ = hash;
    }
    return timer.timeoutAfter(SilenceLimit(), req.send()).then([this, probe](auto&& resp) {
      RecordOffset(resp.getWallClockMs(), probe);
      if (resp.hasMembers()) TakeMembers(region_seen_, resp.getViewHash(), resp.getMembers());
      if (resp.hasOwned()) {
        // The segments it vouches for changed: a write waiting on it may count.
        TakeClaimed(resp.getOwned());
        if (on_acked_) on_acked_();
      }
      return Heartbeats();
    });
  });
}

kj::Promise<void> PeerLink::AntiEntropyLoop() {
  kj::Promise<void> pass = shipper_.repairing()
                               ? kj::Promise<void>(kj::READY_NOW)
                               : anti_entropy_.Pass(session(), AntiEntropy::Scope::kRoutine);
  return pass
      .then([this] { return env_.timer.afterDelay(ToKj(env_.options.anti_entropy_interval)); })
      .then([this] { return AntiEntropyLoop(); });
}

kj::Promise<uint64_t> PeerLink::PushDeltas(uint64_t from, uint64_t through,
                                           const std::vector<const LogEntry*>& entries,
                                           const std::vector<uint16_t>& skipped) {
  auto req = session().pushDeltasRequest();
  auto batch = req.initBatch();
  batch.setOrigin(env_.store.node_id());
  batch.setFrom(from);
  batch.setThrough(through);
  auto list = batch.initEntries(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    list[i].setSeq(entries[i]->seq);
    list[i].setTimestampMs(entries[i]->timestamp.wall_ms);
    list[i].setKey(AsData(entries[i]->key));
    list[i].setValue(AsData(EncodeCrdt(entries[i]->delta)));
  }
  if (!skipped.empty()) {
    auto segments = batch.initSkipped(skipped.size());
    for (size_t i = 0; i < skipped.size(); ++i) segments.set(i, skipped[i]);
  }
  return req.send().then([this, from, through, sent = entries.size()](auto&& resp) {
    TakeClaimed(resp.getOwned());
    // No more than the batch's entries, and only positions it covered.
    size_t taken = 0;
    for (auto s : resp.getSuperseded()) {
      if (taken++ == sent) break;
      if (s.getSeq() <= from || s.getSeq() > through) continue;
      held_above_[s.getSeq()] = HlcTimestamp{s.getHeldWallMs(), s.getHeldLogical()};
    }
    while (held_above_.size() > kHeldAboveKept) held_above_.erase(held_above_.begin());
    return resp.getApplied();
  });
}

std::optional<HlcTimestamp> PeerLink::HeldAbove(uint64_t position) const {
  auto it = held_above_.find(position);
  if (it == held_above_.end()) return std::nullopt;
  return it->second;
}

void PeerLink::TakeClaimed(capnp::Data::Reader owned) {
  if (owned.size() == 0) return;
  if (!DecodeSegmentSet(View(owned), &claimed_)) {
    // A set of the wrong size says nothing: vouch for no segment.
    claimed_.assign(kTreeSegments, false);
  }
}

kj::Promise<void> PeerLink::RepairPass() {
  return anti_entropy_.Pass(session(), AntiEntropy::Scope::kPush);
}

kj::Promise<uint64_t> PeerLink::MarkRepaired(uint64_t through) {
  auto req = session().markRepairedRequest();
  req.setThrough(through);
  return req.send().then([this](auto&& resp) {
    TakeClaimed(resp.getOwned());
    return resp.getApplied();
  });
}

}  // namespace geokv

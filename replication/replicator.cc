#include "replication/replicator.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "replication/delta_receiver.h"
#include "replication/members.h"
#include "replication/peer_link.h"
#include "replication/peer_wire.h"
#include "replication/quorum_acks.h"
#include "replication/token_visibility.h"

namespace geokv {

class Replicator::ErrorLogger final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& e) override {
    spdlog::error("replication task failed: {}", e.getDescription().cStr());
  }
};

Replicator::Replicator(Store& store, AsyncStore& reader, GroupCommitter& committer,
                       kj::AsyncIoProvider& io, ReplicatorOptions options)
    : store_(store),
      reader_(reader),
      committer_(committer),
      io_(io),
      options_(std::move(options)),
      judge_(options_.max_clock_offset),
      error_logger_(kj::heap<ErrorLogger>()) {
  if (options_.wall_clock == nullptr) options_.wall_clock = WallClock::System();
  if (!options_.local_members) options_.local_members = [this] { return SelfAlone(); };
  if (options_.metrics == nullptr) {
    own_metrics_ = std::make_unique<Metrics>(options_.region);
    options_.metrics = own_metrics_.get();
  }
  metrics_ = options_.metrics;
  metrics_->max_clock_offset.Set(static_cast<double>(options_.max_clock_offset.count()) / 1000);
  committer_.SetMaxStampAhead(options_.max_clock_offset);
  WarnIfClockAhead();
  env_.reset(new ReplicationEnv{store_, reader_, committer_, io_, io_.getTimer(), options_,
                                *metrics_, own_segments_});
  coverage_ = std::make_unique<LogCoverage>([this](ReplicaId origin) { return HeldThrough(origin); });
  env_->coverage = coverage_.get();
  coverage_->Load(store_.AppliedPositions(), store_.node_id(), store_.LastSeq(),
                  store_.DroppedSegments());
  DeltaReceiverOptions receiving;
  receiving.self = store_.node_id();
  receiving.submit = [this](RemoteApply apply) { return committer_.SubmitRemote(std::move(apply)); };
  receiving.durable = [this](ReplicaId origin) { return DurablePosition(origin); };
  receiving.coverage = coverage_.get();
  receiving.clock = options_.wall_clock;
  receiving.metrics = metrics_;
  receiver_ = std::make_unique<DeltaReceiver>(std::move(receiving));
  acks_ = std::make_unique<QuorumAcks>(
      io_.getTimer(), [this](ReplicaId node, uint64_t position, size_t segment) {
        auto it = links_.find(node);
        return it != links_.end() && it->second->Owns(segment) &&
               it->second->Vouches(segment) && it->second->acked() >= position;
      });
  gap_cover_ = std::make_unique<GapCover>(
      io_.getTimer(), *metrics_,
      GapCover::Hooks{
          [this](ReplicaId origin, size_t segment) { return CoverPeers(origin, segment); },
          [this](ReplicaId node, uint32_t segment) { return SyncSegment(node, segment); },
          [this] { visibility_->Committed(); }});
  visibility_ = std::make_unique<TokenVisibility>(
      io_.getTimer(), *coverage_,
      [this](ReplicaId origin, size_t segment) { gap_cover_->Cover(origin, segment); });
  hand_over_ = std::make_unique<HandOver>(*env_, static_cast<HandOver::Links&>(*this), trim_held_);
  TombstoneCollectorOptions collecting;
  collecting.grace = options_.tombstone_grace;
  collector_ = std::make_unique<TombstoneCollector>(*env_, collecting);
  service_context_.reset(new PeerServiceContext{
      *env_, *receiver_, *visibility_, stopped_, forward_handler_, options_.local_members,
      [this](size_t s) { return Settled(s); }, [this](size_t s) { return Vouches(s); },
      [this](ReplicaId caller, HlcTimestamp stable) {
        if (links_.count(caller) > 0) collector_->PeerStable(caller, stable);
      },
      [this] { return KnownNodes(); }});
  tasks_ = kj::heap<kj::TaskSet>(*error_logger_);
  for (const PeerAddress& p : options_.seeds) {
    seed_links_.push_back(kj::heap<PeerLink>(
        *env_, p, std::nullopt, [this] { AckAdvanced(); },
        [this, region = p.region](uint64_t held) { LogBehind(region, held); }));
  }
  committer_.OnCommitted([this] { Committed(); });
  kept_members_ = store_.PeerMembers();
}

Replicator::~Replicator() {
  committer_.OnCommitted(nullptr);
  Stop();
}

void Replicator::Start() {
  started_ = true;
  hand_over_->Load(store_.DroppedSegments(), store_.VouchedSegments(), kept_members_.empty());
  for (auto& link : seed_links_) link->Start();
  for (auto& [id, link] : links_) link->Start();
  tasks_->add(Maintain());
  tasks_->add(hand_over_->Run());
}

bool Replicator::Dropped(size_t segment) const { return hand_over_->Dropped(segment); }

bool Replicator::Syncing(size_t segment) const { return hand_over_->Syncing(segment); }

bool Replicator::Settled(size_t segment) const {
  // A refused batch or repair (its stamps ahead of this node's clock) may
  // have held writes the region acknowledged: no segment counts until the
  // next maintenance turn unsettles them all, and then until each is in
  // step again.
  return committer_.stamps_refused() == stamps_unsettled_ && hand_over_->Settled(segment);
}

bool Replicator::Vouches(size_t segment) const { return hand_over_->Vouches(segment); }

size_t Replicator::UnsettledSegments() const { return hand_over_->UnsettledCount(); }

bool Replicator::HoldsOnlyOwned() const { return hand_over_->Held().empty(); }

bool Replicator::LogDelivered() const {
  for (const auto& [id, link] : links_) {
    if (!IsUp(link->target().state)) continue;
    if (link->acked() < store_.LastSeq()) return false;
  }
  return true;
}

std::string Replicator::LeaveWaitingFor() const {
  std::string out;
  std::vector<size_t> held = hand_over_ ? hand_over_->Held() : std::vector<size_t>();
  if (!held.empty()) {
    out = fmt::format("{} segments not handed over (", held.size());
    for (size_t i = 0; i < held.size() && i < 8; ++i) {
      std::string error = hand_over_->LastError(held[i]);
      out += fmt::format("{}{}{}", i == 0 ? "" : ", ", held[i],
                         error.empty() ? "" : ": " + error);
    }
    out += held.size() > 8 ? ", ...)" : ")";
  }
  std::string behind;
  for (const auto& [id, link] : links_) {
    const PeerTarget& t = link->target();
    if (t.state == MemberState::kDead || t.state == MemberState::kLeft) continue;
    if (link->acked() >= store_.LastSeq()) continue;
    behind += fmt::format("{}{} at {}", behind.empty() ? "" : ", ",
                          t.name.empty() ? Hex(id) : t.name, link->acked());
  }
  if (!behind.empty()) {
    if (!out.empty()) out += "; ";
    out += fmt::format("peers not holding the log through {}: {}", store_.LastSeq(), behind);
  }
  return out;
}

std::vector<ReplicaId> Replicator::RegionOwners(size_t segment) const {
  std::vector<ReplicaId> out;
  for (const auto& [id, link] : links_) {
    const PeerTarget& t = link->target();
    if (t.region != options_.region || t.state == MemberState::kLeft) continue;
    if (!t.owned.empty() && t.owned[segment]) out.push_back(id);
  }
  return out;
}

std::vector<ReplicaId> Replicator::RegionMembers() const {
  std::vector<ReplicaId> out;
  for (const auto& [id, link] : links_) {
    const PeerTarget& t = link->target();
    if (t.region == options_.region && t.state != MemberState::kLeft) out.push_back(id);
  }
  return out;
}

void Replicator::SetPlacement(std::vector<bool> own_segments, std::vector<PeerTarget> targets) {
  if (stopped_) return;
  std::vector<bool> before = std::move(own_segments_);
  own_segments_ = std::move(own_segments);
  hand_over_->PlacementChanged(before);
  std::map<ReplicaId, kj::Own<PeerLink>> links;
  for (PeerTarget& t : targets) {
    if (t.id == store_.node_id() || t.state == MemberState::kLeft) continue;
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
    auto on_log_behind = [this, name = t.name](uint64_t held) { LogBehind(name, held); };
    auto link = kj::heap<PeerLink>(*env_, std::move(address), std::move(t),
                                   [this] { AckAdvanced(); }, kj::mv(on_log_behind));
    if (started_) link->Start();
    links.emplace(id, kj::mv(link));
  }
  std::vector<std::pair<std::string, std::string>> gone;
  for (auto& [id, link] : links_) {
    spdlog::info("no longer replicating to {} of region {}", link->Report().name,
                 link->address().region);
    link->shipper().SettleHints(true);  // the node left: its hints have no one to go to
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

std::vector<Member> Replicator::SelfAlone() const {
  Member self;
  self.id = store_.node_id();
  self.name = options_.name;
  self.region = options_.region;
  return {self};
}

uint64_t Replicator::HeldByAll() const {
  for (const auto& link : seed_links_) {
    if (!Linked(link->address().region)) return 0;
  }
  uint64_t held = store_.LastSeq();
  for (const auto& [id, link] : links_) held = std::min(held, link->acked());
  return held;
}

bool Replicator::Linked(const std::string& region) const {
  return std::any_of(links_.begin(), links_.end(),
                     [&](const auto& l) { return l.second->address().region == region; });
}

bool Replicator::IsConnected(ReplicaId node) const {
  auto it = links_.find(node);
  return it != links_.end() && it->second->has_session();
}

void Replicator::NoteHints(const std::vector<ReplicaId>& owners, uint64_t position) {
  for (ReplicaId id : owners) {
    auto it = links_.find(id);
    if (it == links_.end() || it->second->connected()) continue;
    it->second->shipper().Hint(position);
  }
}

Replicator::HintStats Replicator::Hints() const {
  HintStats out;
  out.stored = static_cast<uint64_t>(metrics_->hints_stored.Value());
  out.replayed = static_cast<uint64_t>(metrics_->hints_replayed.Value());
  out.dropped = static_cast<uint64_t>(metrics_->hints_dropped.Value());
  for (const auto& [id, link] : links_) out.pending += link->shipper().hints_pending();
  return out;
}

PeerLink& Replicator::LinkWithSession(ReplicaId node) {
  auto it = links_.find(node);
  if (it == links_.end() || !it->second->has_session()) {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "node is not connected", Hex(node)));
  }
  return *it->second;
}

peer::PeerSession::Client Replicator::Session(ReplicaId node) {
  return KJ_ASSERT_NONNULL(LinkWithSession(node).MaybeSession());
}

kj::Promise<void> Replicator::SyncSegment(ReplicaId node, uint32_t segment) {
  return LinkWithSession(node).SyncSegment(segment);
}

kj::Promise<void> Replicator::Budget(ReplicaId node, size_t bytes) {
  return LinkWithSession(node).Budget(bytes);
}

kj::Promise<capnp::Response<peer::PeerSession::ForwardResults>> Replicator::Forward(
    ReplicaId node, rpc::Request::Reader request, rpc::Consistency consistency,
    std::chrono::milliseconds timeout) {
  return kj::evalNow([&]() {
    auto session = Session(node);
    auto req = session.forwardRequest();
    req.setRequest(request);
    req.setConsistency(consistency);
    // Not timeoutAfter: its OVERLOADED would read as the owner's own
    // refusal, which means nothing ran there. Without an answer, the owner
    // may have run the request, as when the connection is lost.
    using Response = capnp::Response<peer::PeerSession::ForwardResults>;
    const int64_t ms = timeout.count();
    return req.send().exclusiveJoin(
        io_.getTimer().afterDelay(ToKj(timeout)).then([ms]() -> Response {
          kj::throwFatalException(KJ_EXCEPTION(
              DISCONNECTED, kj::str("no answer from the owner within ", ms, " ms")));
        }));
  });
}

kj::Promise<Replicator::PeerDigest> Replicator::KeyDigest(ReplicaId node, std::string key,
                                                          std::chrono::milliseconds timeout) {
  return kj::evalNow([&]() -> kj::Promise<PeerDigest> {
    LinkWithSession(node);  // DISCONNECTED now, not at the end of the turn
    PendingDigests& pending = pending_digests_[node];
    if (pending.waiters.empty()) {
      tasks_->add(kj::evalLater([this, node]() { SendDigests(node); }));
    }
    auto paf = kj::newPromiseAndFulfiller<PeerDigest>();
    pending.waiters.push_back(DigestWaiter{std::move(key), kj::mv(paf.fulfiller)});
    pending.timeout = std::max(pending.timeout, timeout);
    if (pending.waiters.size() >= kMaxPeerListEntries) SendDigests(node);
    return kj::mv(paf.promise);
  });
}

void Replicator::SendDigests(ReplicaId node) {
  auto it = pending_digests_.find(node);
  if (it == pending_digests_.end()) return;
  auto waiters = std::make_shared<std::vector<DigestWaiter>>(std::move(it->second.waiters));
  const std::chrono::milliseconds timeout = it->second.timeout;
  pending_digests_.erase(it);
  if (waiters->empty()) return;
  auto fail = [waiters](kj::Exception&& e) {
    for (DigestWaiter& w : *waiters) w.fulfiller->reject(kj::cp(e));
  };
  tasks_->add(
      kj::evalNow([&]() {
        auto req = Session(node).keyDigestsRequest();
        auto keys = req.initKeys(static_cast<unsigned>(waiters->size()));
        for (size_t i = 0; i < waiters->size(); ++i) {
          keys.set(static_cast<unsigned>(i), AsData((*waiters)[i].key));
        }
        return io_.getTimer().timeoutAfter(ToKj(timeout), req.send());
      })
          .then(
              [waiters](auto&& resp) {
                auto digests = resp.getDigests();
                auto unsettled = resp.getUnsettled();
                KJ_REQUIRE(digests.size() == waiters->size(), "a digest reply of the wrong size");
                for (size_t i = 0; i < waiters->size(); ++i) {
                  PeerDigest out;
                  out.digest = digests[static_cast<unsigned>(i)];
                  out.settled = unsettled.size() != waiters->size() ||
                                !unsettled[static_cast<unsigned>(i)];
                  (*waiters)[i].fulfiller->fulfill(kj::mv(out));
                }
              })
          .catch_(kj::mv(fail)));
}

kj::Promise<EncodedJoins> Replicator::FetchStates(ReplicaId node, std::string key,
                                                       std::chrono::milliseconds timeout) {
  return kj::evalNow([&]() {
    auto session = Session(node);
    auto req = session.getStatesRequest();
    req.initKeys(1).set(0, AsData(key));
    req.setForRead(true);
    return io_.getTimer().timeoutAfter(ToKj(timeout), req.send()).then([key](auto&& resp) {
      EncodedJoins out;
      for (auto ks : resp.getStates()) {
        KJ_REQUIRE(View(ks.getKey()) == key, "states of a key not asked for");
        for (auto state : ks.getStates()) out.Add(key, View(state));
      }
      return out;
    });
  });
}

kj::Promise<void> Replicator::PushStates(ReplicaId node, std::string key,
                                         std::chrono::milliseconds timeout,
                                         bool leave_out_emptied) {
  return kj::evalNow([&]() {
    LinkWithSession(node);  // DISCONNECTED at once
    const size_t limit = options_.max_message_bytes;
    auto read = reader_.Run([key, limit, leave_out_emptied](Store& s) {
      return EncodeKeyStates(s, key, limit, leave_out_emptied);
    });
    return canceler_.wrap(kj::mv(read)).then(
        [this, node, key = std::move(key), timeout](EncodedKeyStates states) mutable
        -> kj::Promise<void> {
          if (states.encoded.empty()) return kj::READY_NOW;
          auto session = Session(node);
          auto req = session.putStatesRequest();
          EncodedStatesList found;
          found.emplace_back(std::move(key), std::move(states.encoded));
          SetStates(req.initStates(1), found);
          return io_.getTimer().timeoutAfter(ToKj(timeout), req.send()).ignoreResult();
        });
  });
}

kj::Promise<size_t> Replicator::WaitAcked(std::vector<ReplicaId> nodes, uint64_t position,
                                          size_t segment, size_t needed,
                                          std::chrono::milliseconds timeout) {
  return acks_->WaitAcked(std::move(nodes), position, segment, needed, timeout);
}

void Replicator::AckAdvanced() { acks_->AckAdvanced(); }

std::optional<HlcTimestamp> Replicator::HeldAbove(const std::vector<ReplicaId>& nodes,
                                                  uint64_t position) const {
  std::optional<HlcTimestamp> out;
  for (ReplicaId id : nodes) {
    auto it = links_.find(id);
    if (it == links_.end()) continue;
    std::optional<HlcTimestamp> held = it->second->HeldAbove(position);
    if (held && (!out || *out < *held)) out = held;
  }
  return out;
}

void Replicator::Stop() {
  if (stopped_) return;
  stopped_ = true;
  // Waits still running refer to the links and timers: end them first.
  canceler_.cancel("node is shutting down");
  acks_->Stop();
  tasks_ = nullptr;
  links_.clear();
  seed_links_.clear();
  visibility_->Stop();
}

std::vector<KnownNode> Replicator::KnownNodes() const {
  std::vector<KnownNode> out;
  for (const auto& [id, link] : links_) {
    out.push_back(KnownNode{id, link->target().name, link->target().region});
  }
  return out;
}

capnp::Capability::Client Replicator::PeerBootstrap(std::optional<std::string> certified) {
  return NewPeerService(*service_context_, std::move(certified));
}

std::vector<int64_t> Replicator::PeerOffsets() const {
  std::vector<int64_t> out;
  for (const auto& [id, link] : links_) {
    if (link->connected() && link->offset_ms()) out.push_back(*link->offset_ms());
  }
  return out;
}

Status Replicator::WritesAllowed() const {
  if (!log_behind_.empty()) return Status::Unavailable(log_behind_);
  return judge_.Judge(PeerOffsets());
}

void Replicator::LogBehind(const std::string& peer, uint64_t held) {
  if (!log_behind_.empty()) return;
  const std::string why = "peer " + peer + " holds this node's log through " +
                          std::to_string(held) + ", past its last entry " +
                          std::to_string(store_.LastSeq()) +
                          ": the log went back (a data dir restored from a copy, or a machine "
                          "crash in --durability wal)";
  log_behind_ = why + "; writes are refused until the node restarts, under a new replica id";
  spdlog::error("{}", log_behind_);
  tasks_->add(reader_.Run([why](Store& store) { return store.RetireAtNextOpen(why); })
                  .then([](Status recorded) {
                    if (!recorded.ok()) {
                      spdlog::error("cannot record that the next start takes a new replica id: {}",
                                    recorded.ToString());
                    }
                  }));
}

int64_t Replicator::ClockOffsetMs() const { return ClockJudge::OwnOffset(PeerOffsets()); }

uint64_t Replicator::HeldThrough(ReplicaId origin) const {
  return origin == store_.node_id() ? store_.LastSeq() : DurablePosition(origin);
}

bool Replicator::Visible(const std::vector<CausalToken>& tokens,
                         std::optional<size_t> segment) const {
  return visibility_->Visible(tokens, segment);
}

kj::Promise<Status> Replicator::WaitVisible(std::vector<CausalToken> tokens,
                                            std::optional<size_t> segment,
                                            std::chrono::milliseconds timeout) {
  return visibility_->WaitVisible(std::move(tokens), segment, timeout);
}

std::vector<ReplicaId> Replicator::CoverPeers(ReplicaId origin, size_t segment) const {
  std::vector<ReplicaId> peers;
  if (stopped_ || !started_) return peers;
  auto it = links_.find(origin);
  if (it != links_.end() && it->second->has_session() && it->second->Owns(segment)) {
    peers.push_back(origin);
  }
  for (ReplicaId id : RegionOwners(segment)) {
    if (id != origin && IsConnected(id)) peers.push_back(id);
  }
  return peers;
}

kj::Promise<StatusOr<std::vector<std::string>>> Replicator::WaitReplicated(
    std::vector<CausalToken> tokens, std::vector<std::string> regions,
    std::chrono::milliseconds timeout) {
  using Result = StatusOr<std::vector<std::string>>;
  if (timeout > kMaxReplicationWait) {
    return Result(Status::InvalidArgument(
        "a wait of " + std::to_string(timeout.count()) + " ms is over the limit of " +
        std::to_string(kMaxReplicationWait.count()) + " ms"));
  }
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
      nodes.add(WaitVisible(tokens, std::nullopt, timeout).then([](Status s) { return s.ok(); }));
    }
    for (auto& [id, link] : links_) {
      if (link->address().region != region) continue;
      if (!IsUp(link->target().state)) continue;
      nodes.add(link->WaitVisible(tokens, deadline));
    }
    waits.add(kj::joinPromises(nodes.releaseAsArray()).then([](kj::Array<bool> done) {
      return std::all_of(done.begin(), done.end(), [](bool b) { return b; });
    }));
  }
  return canceler_.wrap(kj::joinPromises(waits.releaseAsArray()))
      .then([regions = std::move(regions)](kj::Array<bool> done) {
        return Result(MissingRegions(regions, done));
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
    pending += link->shipper().hints_pending();
  }
  for (auto& link : seed_links_) {
    Metrics::Peer& m = link->metrics();
    m.connected->Set(link->connected() ? 1 : 0);
    m.clock_offset->Set(static_cast<double>(link->offset_ms().value_or(0)) / 1000);
  }
  metrics_->hints_pending.Set(static_cast<double>(pending));
  const uint64_t refused = committer_.stamps_refused();
  metrics_->stamps_refused.Increment(static_cast<double>(refused - stamps_counted_));
  stamps_counted_ = refused;
  metrics_->clock_offset.Set(static_cast<double>(ClockOffsetMs()) / 1000);
}

void Replicator::WarnIfClockAhead() {
  // The clock as read back from the data dir: this node's own history,
  // honoured so that no stamp goes back, even when it is ahead.
  const HlcTimestamp last = store_.clock()->Last();
  const uint64_t wall = store_.clock()->wall()->NowMillis();
  const uint64_t bound = static_cast<uint64_t>(options_.max_clock_offset.count());
  if (last.wall_ms <= wall || last.wall_ms - wall <= bound) return;
  spdlog::warn("this node's hybrid clock, read back from its data dir at {}, is {} ms ahead of "
               "its wall clock {} (limit --max-clock-offset {} ms): its writes carry that clock "
               "until the wall clock catches up, and peers refuse them until theirs do",
               DescribeStamp(last), last.wall_ms - wall, wall, bound);
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

void Replicator::KeepPeerMembers(const KeptMembers& kept) {
  if (stopped_) return;
  std::string bytes = EncodeLearnedMembers(kept);
  if (keeping_) {
    members_to_keep_ = std::move(bytes);
  } else if (bytes != kept_members_) {
    KeepPeerMemberBytes(std::move(bytes));
  }
}

void Replicator::KeepPeerMemberBytes(std::string bytes) {
  keeping_ = true;
  kept_members_ = bytes;
  RemoteApply apply;
  apply.peer_members = std::move(bytes);
  tasks_->add(committer_.SubmitRemote(std::move(apply)).then([this](WriteResult written) {
    keeping_ = false;
    if (!written.status.ok()) {
      spdlog::warn("cannot keep the members this node knows: {}", written.status.ToString());
      kept_members_.clear();  // tried again on the next change
    }
    if (members_to_keep_) {
      std::string next = std::move(*members_to_keep_);
      members_to_keep_.reset();
      if (next != kept_members_) KeepPeerMemberBytes(std::move(next));
    }
  }));
}

void Replicator::Committed() {
  for (auto& [id, link] : links_) link->shipper().Wake();
  visibility_->Committed();
}

kj::Promise<void> Replicator::Maintain() {
  return io_.getTimer()
      .afterDelay(1 * kj::SECONDS)
      .then([this] { return MaintainTurn(); })
      .catch_([](kj::Exception&& e) {
        spdlog::warn("maintenance turn failed: {}", e.getDescription().cStr());
      })
      .then([this] { return Maintain(); });
}

kj::Promise<void> Replicator::MaintainTurn() {
  Status writes = WritesAllowed();
  if (writes.ok() != writes_allowed_) {
    writes_allowed_ = writes.ok();
    if (writes.ok()) {
      spdlog::info("clock back within --max-clock-offset of the peers': writes accepted again");
    } else {
      spdlog::error("{}", writes.message());
    }
  }
  // Backlogs are sampled on the reader pool; the decisions below use them.
  kj::Vector<kj::Promise<void>> samples;
  for (auto& [id, link] : links_) samples.add(link->SampleBacklog());
  const uint64_t trimmed = store_.TrimmedThrough();
  kj::Promise<uint64_t> seed_bytes = seed_links_.empty() || store_.LastSeq() <= trimmed
                                         ? kj::Promise<uint64_t>(uint64_t{0})
                                         : reader_.LogBytesAfter(trimmed);
  return kj::joinPromises(samples.releaseAsArray())
      .then([seed_bytes = kj::mv(seed_bytes)]() mutable { return kj::mv(seed_bytes); })
      .then([this](uint64_t bytes_after_trimmed) {
        for (auto& [id, link] : links_) link->shipper().CheckBacklog();
        Report();
        if (const uint64_t refused = committer_.stamps_refused(); refused != stamps_unsettled_) {
          hand_over_->UnsettleAll();
          stamps_unsettled_ = refused;
        }
        uint64_t through = store_.LastSeq();
        for (const auto& [id, link] : links_) {
          if (auto floor = link->TrimFloor(bytes_after_trimmed)) through = std::min(through, *floor);
        }
        for (const auto& link : seed_links_) {
          // A seed stands for the nodes of its region this node does not
          // know yet; once it knows one (learned, or kept from an earlier
          // run), that node's link holds what it needs, as after the seed
          // answered. A seed that is gone would otherwise hold the log.
          if (Linked(link->address().region)) continue;
          if (auto floor = link->TrimFloor(bytes_after_trimmed)) through = std::min(through, *floor);
        }
        collector_->Advance(UnsettledSegments() == 0 ? HeldByAll() : 0);
        env_->stable_stamp = collector_->stable();
        std::vector<ReplicaId> members;
        members.reserve(links_.size());
        for (const auto& [id, link] : links_) members.push_back(id);
        tasks_->add(collector_->Collect(members));
        if (trim_held_ || trimming_ || through <= store_.TrimmedThrough()) return;
        trimming_ = true;
        tasks_->add(committer_.SubmitTrim(through).then([this](Status trimmed) {
          trimming_ = false;
          if (!trimmed.ok()) spdlog::error("cannot trim the log: {}", trimmed.ToString());
        }));
      });
}

}  // namespace geokv

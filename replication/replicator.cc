#include "replication/replicator.h"

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>
#include <set>

#include "crdt/codec.h"
#include "schema/kv_text.h"
#include "schema/replication.capnp.h"
#include "util/coding.h"

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

class PeerLink final : public kj::TaskSet::ErrorHandler {
 public:
  PeerLink(Replicator& r, PeerAddress address)
      : r_(r), address_(std::move(address)), backoff_(r.options_.backoff_min),
        rng_(std::random_device{}()) {}

  void Start() { run_ = Run().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("peer link stopped: {}", e.getDescription().cStr());
  }); }

  const PeerAddress& address() const { return address_; }
  bool connected() const { return connected_; }

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
      return timer.timeoutAfter(deadline - timer.now() + 1 * kj::SECONDS, req.send())
          .then([](auto&& resp) -> kj::Promise<bool> { return resp.getVisible(); },
                [this, tokens, deadline](kj::Exception&&) mutable {
                  return Retry(std::move(tokens), deadline);
                });
    }
    return Retry(std::move(tokens), deadline);
  }

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
          conn_ = kj::heap<PeerConnection>(kj::mv(stream), r_.options_.max_message_bytes);
          auto req = conn_->Bootstrap().helloRequest();
          auto hello = req.initHello();
          hello.setReplicaId(r_.store_.node_id());
          hello.setName(r_.options_.name);
          hello.setRegion(r_.options_.region);
          hello.setSchemaVersion(peer::SCHEMA_VERSION);
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
    if (hello.getRegion() != address_.region) {
      spdlog::warn("peer at {} says it is in region {}, configured as {}", address_.address,
                   hello.getRegion().cStr(), address_.region);
    }
    RecordOffset(hello.getWallClockMs(), probe);
    name_ = hello.getName();
    session_ = resp.getSession();
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
    session_tasks_->add(Ship());
    session_tasks_->add(Heartbeats());
    session_tasks_->add(AntiEntropyLoop());
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

  void StartRepair(const std::string& why) {
    if (repairing_) return;
    repairing_ = true;
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

  void Push(const std::vector<LogEntry>& entries) {
    auto req = session().pushDeltasRequest();
    auto batch = req.initBatch();
    batch.setOrigin(r_.store_.node_id());
    auto list = batch.initEntries(entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      list[i].setSeq(entries[i].seq);
      list[i].setKey(AsData(entries[i].key));
      list[i].setValue(AsData(EncodeCrdt(entries[i].delta)));
    }
    const uint64_t last = entries.back().seq;
    sent_ = last;
    ++inflight_;
    session_tasks_->add(req.send().then([this, last](auto&& resp) {
      --inflight_;
      uint64_t applied = resp.getApplied();
      if (applied > acked_) acked_ = applied;
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
      return timer.timeoutAfter(SilenceLimit(), req.send())
          .then([this, probe](auto&& resp) {
            RecordOffset(resp.getWallClockMs(), probe);
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
        if (remote[i] != local[i]) differing.push_back(i);
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
  std::string name_;
  std::optional<int64_t> offset_ms_;
  std::vector<std::pair<int64_t, int64_t>> samples_;  // (round trip, offset) ms
  kj::TimePoint session_started_ = kj::origin<kj::TimePoint>();
  size_t inflight_ = 0;
  uint64_t sent_ = 0;  // the last entry sent

  // Across connections.
  uint64_t acked_ = 0;  // the peer's durable position in this node's log
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
    RemoteApply apply;
    apply.origin = origin;
    bool gap = false;
    uint64_t prev = 0;
    for (auto e : batch.getEntries()) {
      uint64_t seq = e.getSeq();
      KJ_REQUIRE(prev == 0 || seq == prev + 1, "log entries out of order", prev, seq);
      prev = seq;
      if (seq <= submitted) continue;  // a replay
      if (apply.joins.empty() && seq != submitted + 1) {
        gap = true;
        break;
      }
      StatusOr<Crdt> delta = DecodeCrdt(View(e.getValue()));
      KJ_REQUIRE(delta.ok(), "a delta that does not decode", seq, delta.status().ToString());
      apply.joins.emplace_back(std::string(String(e.getKey())), std::move(delta).value());
      apply.through = seq;
    }
    if (gap || apply.joins.empty()) {
      // Answer once what was handed over before has committed.
      auto it = r_.last_submit_.find(origin);
      kj::Promise<void> before =
          it == r_.last_submit_.end() || gap ? kj::Promise<void>(kj::READY_NOW)
                                             : it->second.addBranch();
      return before.then([this, context, origin]() mutable {
        context.getResults().setApplied(r_.DurablePosition(origin));
      });
    }
    apply.first = apply.through - apply.joins.size() + 1;
    submitted = apply.through;
    Replicator& r = r_;
    auto committed = r_.committer_.SubmitRemote(std::move(apply))
                         .then([&r, origin](WriteResult result) {
                           if (!result.status.ok()) {
                             // Later hand-overs of this origin fail their
                             // continuity check; the peer resends from here.
                             r.submitted_[origin] = r.DurablePosition(origin);
                             KJ_FAIL_REQUIRE("cannot apply deltas", result.status.ToString());
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
    context.getResults().setWallClockMs(static_cast<int64_t>(r_.NowMillis()));
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
    auto results = context.getResults();
    auto mine = results.initHello();
    mine.setReplicaId(r_.store_.node_id());
    mine.setName(r_.options_.name);
    mine.setRegion(r_.options_.region);
    mine.setSchemaVersion(peer::SCHEMA_VERSION);
    mine.setWallClockMs(static_cast<int64_t>(r_.NowMillis()));
    auto applied = r_.store_.AppliedPositions();
    auto it = applied.find(caller);
    results.setApplied(it == applied.end() ? 0 : it->second);
    results.setSession(kj::heap<PeerSessionImpl>(r_, caller, theirs.getRegion()));
    spdlog::info("peer {} of region {} said hello", theirs.getName().cStr(),
                 theirs.getRegion().cStr());
    return kj::READY_NOW;
  }

 private:
  Replicator& r_;
};

// ---- the replicator --------------------------------------------------------

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
  tasks_ = kj::heap<kj::TaskSet>(*error_logger_);
  for (const PeerAddress& p : options_.peers) links_.push_back(kj::heap<PeerLink>(*this, p));
  committer_.OnCommitted([this] { Committed(); });
}

Replicator::~Replicator() {
  committer_.OnCommitted(nullptr);
  Stop();
}

void Replicator::Start() {
  for (auto& link : links_) link->Start();
  tasks_->add(Maintain());
}

void Replicator::Stop() {
  if (stopped_) return;
  stopped_ = true;
  // Waits still running refer to the links and timers: end them first.
  canceler_.cancel("node is shutting down");
  tasks_ = nullptr;
  links_.clear();
  for (auto& w : waiters_) w->fulfiller->fulfill(Status::Unavailable("node is shutting down"));
  waiters_.clear();
}

capnp::Capability::Client Replicator::PeerBootstrap() {
  return kj::heap<PeerServiceImpl>(*this);
}

std::vector<int64_t> Replicator::PeerOffsets() const {
  std::vector<int64_t> out;
  for (const auto& link : links_) {
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
  if (regions.empty()) {
    regions.push_back(options_.region);
    for (const auto& link : links_) regions.push_back(link->address().region);
  }
  kj::TimePoint deadline = io_.getTimer().now() + ToKj(timeout);
  kj::Vector<kj::Promise<bool>> waits;
  for (const std::string& region : regions) {
    if (region == options_.region) {
      waits.add(WaitVisible(tokens, timeout).then([](Status s) { return s.ok(); }));
      continue;
    }
    auto link = std::find_if(links_.begin(), links_.end(),
                             [&](const auto& l) { return l->address().region == region; });
    if (link == links_.end()) {
      return Result(Status::InvalidArgument("region '" + region +
                                            "' is not this node's nor one of its peers'"));
    }
    waits.add(canceler_.wrap((*link)->WaitVisible(tokens, deadline)));
  }
  return kj::joinPromises(waits.releaseAsArray())
      .then([regions = std::move(regions)](kj::Array<bool> done) {
        std::vector<std::string> missing;
        for (size_t i = 0; i < done.size(); ++i) {
          if (!done[i]) missing.push_back(regions[i]);
        }
        return Result(std::move(missing));
      });
}

uint64_t Replicator::DurablePosition(ReplicaId origin) const {
  auto applied = store_.AppliedPositions();
  auto it = applied.find(origin);
  return it == applied.end() ? 0 : it->second;
}

std::vector<PeerStatus> Replicator::Peers() const {
  std::vector<PeerStatus> out;
  for (const auto& link : links_) out.push_back(link->Report());
  return out;
}

void Replicator::Committed() {
  for (auto& link : links_) link->Wake();
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
    for (auto& link : links_) link->CheckBacklog();
    uint64_t through = store_.LastSeq();
    for (const auto& link : links_) {
      if (auto floor = link->TrimFloor()) through = std::min(through, *floor);
    }
    if (through > store_.TrimmedThrough()) {
      Status trimmed = store_.TrimLog(through);
      if (!trimmed.ok()) spdlog::error("cannot trim the log: {}", trimmed.ToString());
    }
    return Maintain();
  });
}

}  // namespace geokv

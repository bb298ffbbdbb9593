// The link to one other node: its connection lifecycle, and the units that
// run while it is connected.
//
// A link connects, says hello (refusing a peer of another schema, other
// placement settings or, for a target, another replica id) and then serves
// the session: heartbeats every `heartbeat` (clock samples, silence
// detection, and member exchange with a node of another region: each side
// sends its region's members, on hello and when they changed), and for a
// target the log shipper
// and routine anti-entropy passes. Whatever fails ends the session; the
// link tears it down and reconnects after a jittered exponential backoff
// (reset by a session that lasted). A hello or heartbeat unanswered for the
// silence limit ends the session too.
//
// A seed link (no target) only says hello and heartbeats, to learn the
// members of another region; until it first hears from its seed it holds
// the log (through its trim floor), up to --max-backlog, unless the
// replicator knows nodes of that region already.
//
// Thread safety: loop thread only. Promises a link returns end, failed,
// when it is destroyed (their continuations refer to it).

#ifndef GEOKV_REPLICATION_PEER_LINK_H_
#define GEOKV_REPLICATION_PEER_LINK_H_

#include <kj/async-io.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "replication/anti_entropy.h"
#include "replication/causal_token.h"
#include "replication/clock.h"
#include "replication/log_shipper.h"
#include "replication/peer_wire.h"
#include "replication/replication_env.h"
#include "util/tls.h"

namespace geokv {

class PeerLink final : private kj::TaskSet::ErrorHandler, private ShipTransport {
 public:
  // `target` empty: a seed link. `on_acked` runs when the target's position
  // advanced, `on_log_behind` when it holds this node's log past its last
  // entry (ShipperOptions). `env` must outlive the link.
  PeerLink(ReplicationEnv& env, PeerAddress address, std::optional<PeerTarget> target,
           std::function<void()> on_acked, std::function<void(uint64_t)> on_log_behind);
  ~PeerLink() noexcept(false);

  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;

  // Starts connecting (and reconnecting) until destroyed.
  void Start();

  const PeerAddress& address() const { return address_; }
  bool connected() const { return connected_; }
  bool is_seed() const { return !target_; }
  // REQUIRES: !is_seed().
  const PeerTarget& target() const { return *target_; }
  // Whether the target owns `segment` (what the shipper ships it).
  // REQUIRES: !is_seed().
  bool Owns(size_t segment) const { return target_->owned.empty() || target_->owned[segment]; }
  // Takes the target's new state and segments (same node, same address).
  void Retarget(PeerTarget target);

  // Whether the target said it owns `segment` by its own view when it last
  // answered with its position (hello, pushDeltas, markRepaired); true when
  // it never says (an older node).
  bool Vouches(size_t segment) const { return claimed_.empty() || claimed_[segment]; }

  // The stamp of the newer register the target held when it joined the
  // entry at `position` of this node's log (it said so in the answer that
  // acknowledged it: pushDeltas' `superseded`); nullopt: none known. The
  // last kHeldAboveKept reported are kept.
  std::optional<HlcTimestamp> HeldAbove(uint64_t position) const;
  static constexpr size_t kHeldAboveKept = 1024;

  // The target's position in this node's log.
  uint64_t acked() const { return shipper_.acked(); }
  LogShipper& shipper() { return shipper_; }
  const LogShipper& shipper() const { return shipper_; }

  // This link's series: by the peer's name, or "seed:ADDRESS" for a seed.
  Metrics::Peer& metrics();
  std::string metrics_name() const;

  bool has_session() const { return session_ != nullptr; }
  kj::Maybe<peer::PeerSession::Client> MaybeSession();

  PeerStatus Report() const;
  std::optional<int64_t> offset_ms() const { return clock_.offset_ms(); }

  // As LogShipper::TrimFloor; for a seed, `bytes_after_trimmed` is the log's
  // size after its trimmed position as last sampled.
  std::optional<uint64_t> TrimFloor(uint64_t bytes_after_trimmed) const;
  // The shipper's backlog sample; never fails (a failed sample keeps the
  // last one).
  kj::Promise<void> SampleBacklog();

  // Resolves true once the peer holds every token's write, false at
  // `deadline`.
  kj::Promise<bool> WaitVisible(std::vector<CausalToken> tokens, kj::TimePoint deadline);
  // Brings one segment in step with the peer, both ways, every differing
  // key. REQUIRES: has_session().
  kj::Promise<void> SyncSegment(uint32_t segment);
  // Waits as long as `bytes` take at the anti-entropy rate.
  kj::Promise<void> Budget(size_t bytes);

 private:
  // A clock probe's start: the wall clock sent, and the monotonic time.
  struct Probe {
    int64_t wall_ms;
    kj::TimePoint sent;
  };
  Probe StartProbe();
  void RecordOffset(int64_t remote_ms, Probe probe);

  kj::Promise<void> Run();
  kj::Promise<void> Session();
  kj::Promise<void> Connect();
  // With TLS (ReplicatorOptions::tls): the handshake, and the node the
  // callee's certificate names checked against the one dialled.
  kj::Promise<kj::Own<kj::AsyncIoStream>> Secure(kj::Own<kj::AsyncIoStream> stream);
  void Established(peer::Peer::HelloResults::Reader resp, Probe probe);
  // How this node frames its connections to the peer: compressed as
  // --peer-compression says, else packed.
  PeerFraming Wanted() const;
  kj::Promise<void> Serve();
  void Teardown();
  kj::Promise<void> Heartbeats();
  kj::Promise<void> AntiEntropyLoop();
  void TakeMembers(kj::StringPtr region, uint64_t hash, capnp::List<peer::Member>::Reader members);
  // Takes the segment set of an answer (empty: unchanged).
  void TakeClaimed(capnp::Data::Reader owned);
  peer::PeerSession::Client& session();
  // How long a peer may leave a hello or heartbeat unanswered.
  kj::Duration SilenceLimit() const;
  // How long connecting and saying hello may take, whatever the heartbeat.
  kj::Duration HelloLimit() const;
  void taskFailed(kj::Exception&& e) override;

  // ShipTransport, over the session.
  kj::Promise<uint64_t> PushDeltas(uint64_t from, uint64_t through,
                                   const std::vector<const LogEntry*>& entries,
                                   const std::vector<uint16_t>& skipped) override;
  kj::Promise<void> RepairPass() override;
  kj::Promise<uint64_t> MarkRepaired(uint64_t through) override;

  ReplicationEnv& env_;
  const PeerAddress address_;
  std::optional<PeerTarget> target_;
  const std::function<void()> on_acked_;  // as the shipper's
  StoreLog log_;
  LogShipper shipper_;
  AntiEntropy anti_entropy_;
  ClockEstimator clock_;
  kj::Canceler canceler_;  // calls whose continuations refer to the link
  Metrics::Peer* metrics_ = nullptr;
  std::string region_seen_;  // the region the peer said it is in
  uint64_t view_hash_ = 0;   // of the members it last sent
  uint64_t sent_hash_ = 0;   // of the members this node last sent it
  std::chrono::milliseconds backoff_;
  std::mt19937_64 rng_;
  std::string last_error_;
  kj::Promise<void> run_ = nullptr;
  // How the next connection is framed: as this node wants (Wanted), or a
  // step below after a connection got back something other than an answer
  // to its hello (an older build's port refusing the preamble), until a
  // hello says the peer takes more.
  PeerFraming framing_;

  // Per connection.
  kj::Own<PeerConnection> conn_;
  std::optional<NodeIdentity> certified_;  // whom the callee's certificate names
  kj::Maybe<peer::PeerSession::Client> session_;
  kj::Own<kj::TaskSet> session_tasks_;
  kj::Own<kj::PromiseFulfiller<void>> failed_;
  bool connected_ = false;
  bool hello_answered_ = false;  // on this connection
  bool heard_ = false;  // the peer answered hello on this link at least once
  // The segments the target said it owns (see Vouches); empty: not said.
  std::vector<bool> claimed_;
  std::map<uint64_t, HlcTimestamp> held_above_;  // see HeldAbove
  std::string name_;
  kj::TimePoint session_started_ = kj::origin<kj::TimePoint>();
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_PEER_LINK_H_

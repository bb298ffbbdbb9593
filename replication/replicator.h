// Replication of one node to every other node it knows (DESIGN.md section 4),
// in its own region and in the others.
//
// The server tells the replicator who the other nodes are and which key
// segments each owns (SetPlacement, from gossip and the rings). For every
// such node a link connects, says hello and then, while the connection lasts:
//   - ships this node's replication log from the node's durable position,
//     leaving out entries for keys the node does not own, in batches of at
//     most `batch_bytes`, with up to `window` batches in flight;
//   - sends a heartbeat every `heartbeat`, which estimates the node's clock
//     offset, notices a silent node and brings back its region's members;
//   - runs anti-entropy over the segments both nodes own: compares hash
//     trees and exchanges the full states of keys that differ, both ways,
//     under a byte-rate budget.
// A link that fails reconnects after a jittered exponential backoff. A node
// that is down keeps the log entries it needs (hinted writes) until they
// exceed `max_backlog_bytes`, or when it needs entries already trimmed, it
// is repaired by a complete anti-entropy pass instead, after which shipping
// resumes from the log; the log is trimmed through the position every node
// holds (repaired ones aside). Seed links (`seeds`) only say hello and
// heartbeat, to learn the members of other regions.
//
// The other direction, deltas and states coming in, is the peer service
// (PeerBootstrap) that the node serves on --peer-listen: it joins them through
// the group committer and answers with durable positions. It also runs
// requests other nodes of the region forward (SetForwardHandler) and answers
// key digests for quorum reads.
//
// Everything here lives on the KJ event loop's thread.

#ifndef GEOKV_REPLICATION_REPLICATOR_H_
#define GEOKV_REPLICATION_REPLICATOR_H_

#include <capnp/capability.h>
#include <kj/async-io.h>

#include <chrono>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crdt/hlc.h"
#include "monitoring/metrics.h"
#include "replication/causal_token.h"
#include "schema/kv.capnp.h"
#include "schema/replication.capnp.h"
#include "replication/group_commit.h"
#include "storage/store.h"

namespace geokv {

// A seed of another region as configured: its region and the HOST:PORT of
// its peer API.
struct PeerAddress {
  std::string region;
  std::string address;
};

// Parses "region=host:port,region=host:port". InvalidArgument names the bad
// entry; a region named twice, or `own_region`, is refused.
StatusOr<std::vector<PeerAddress>> ParsePeers(std::string_view spec, std::string_view own_region);

enum class PeerState : uint8_t { kAlive = 0, kSuspect = 1, kDead = 2, kLeft = 3 };

// A member of a region as its region's gossip knows it; nodes send their
// region's members to the nodes of other regions.
struct MemberRecord {
  ReplicaId id = 0;
  std::string name;
  std::string region;
  std::string peer_address;    // for nodes of its own region
  std::string client_address;
  std::map<std::string, std::string> routes;  // region -> peer address for it
  uint64_t incarnation = 0;
  PeerState state = PeerState::kAlive;
};

// Another node this node replicates to.
struct PeerTarget {
  ReplicaId id = 0;
  std::string name;
  std::string region;
  std::string address;  // its peer API, as this node reaches it
  PeerState state = PeerState::kAlive;
  // The key segments it owns (kSegments entries).
  std::vector<bool> owned;
};

struct ReplicatorOptions {
  std::string name;    // this node's --node-id
  std::string region;  // this node's --region
  // The placement settings every node must share (--replication-factor,
  // --vnodes): peers whose hello says otherwise are refused. 0 checks
  // nothing. Default: 0.
  uint32_t replication_factor = 0;
  uint32_t vnodes = 0;
  // Nodes of other regions to learn those regions' members from.
  std::vector<PeerAddress> seeds;
  // Called with the members of another region as one of its nodes sent
  // them (on hello, and on a heartbeat when they changed).
  std::function<void(const std::string& region, std::vector<MemberRecord>)> on_remote_members;
  // This node's region's members, sent to nodes of other regions. Default:
  // this node alone.
  std::function<std::vector<MemberRecord>()> local_members;

  // The largest message sent or accepted on a peer connection.
  size_t max_message_bytes = 64 << 20;
  // Log bytes per pushed batch (a batch holds at least one entry).
  size_t batch_bytes = 1 << 20;
  // Batches in flight per peer.
  size_t window = 64;
  // Unacknowledged log bytes beyond which a peer is repaired by
  // anti-entropy instead.
  uint64_t max_backlog_bytes = uint64_t{256} << 20;
  // A node whose clock is further than this from the median of its peers'
  // refuses client writes.
  std::chrono::milliseconds max_clock_offset{500};
  // How long a read with tokens waits for them to become visible.
  std::chrono::milliseconds token_wait{5000};
  // Pause between anti-entropy passes against each peer.
  std::chrono::milliseconds anti_entropy_interval{10000};
  // Bytes of keys and states exchanged by anti-entropy per second, per peer.
  uint64_t anti_entropy_bytes_per_second = 8 << 20;
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{5000};
  // The clock heartbeats read. Not owned. Default (nullptr): the system's.
  WallClock* wall_clock = nullptr;
  // Where replication reports. Not owned. Default (nullptr): its own,
  // served nowhere.
  Metrics* metrics = nullptr;
};

// A peer's state, for `info` and logs.
struct PeerStatus {
  PeerAddress address;
  std::string name;
  bool connected = false;
  bool repairing = false;
  uint64_t acked = 0;
  uint64_t backlog_bytes = 0;
  std::optional<int64_t> clock_offset_ms;  // the peer's clock minus ours
};

// Decides from the peers' clock offsets whether this node's clock is off.
// This node is off by the median of {0} and the peers' offsets (negated):
// with three or more nodes, the one whose clock is wrong is the one off the
// median; with two, each is off by half their difference.
class ClockJudge {
 public:
  explicit ClockJudge(std::chrono::milliseconds max_offset) : max_offset_(max_offset) {}

  // This node's clock minus the median clock; 0 without peer samples.
  static int64_t OwnOffset(const std::vector<int64_t>& peer_offsets);

  // OK, or Unavailable saying how far off the clock is.
  Status Judge(const std::vector<int64_t>& peer_offsets) const;

 private:
  std::chrono::milliseconds max_offset_;
};

class PeerLink;
class PeerServiceImpl;
class PeerSessionImpl;

class Replicator {
 public:
  // `store`, `committer` and `io` must outlive the replicator.
  Replicator(Store& store, GroupCommitter& committer, kj::AsyncIoProvider& io,
             ReplicatorOptions options);
  ~Replicator();

  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;

  // Starts the seed links and the maintenance task.
  void Start();

  // Replaces the set of nodes to replicate to, and the segments this node
  // owns (anti-entropy compares only segments both sides own). Links to
  // nodes no longer listed close; new ones start.
  void SetPlacement(std::vector<bool> own_segments, std::vector<PeerTarget> targets);

  // While held, the log is not trimmed: this node does not yet know every
  // node of its region that may still need it (gossip has not joined), nor
  // whether another node owns a segment it handed over.
  // (Seed links hold the log too, through their trim floor, until they
  // first said hello or the log passes --max-backlog.) Default: not held.
  void HoldTrimming(bool held) { trim_held_ = held; }

  // Runs requests that nodes of this region forward; set before Start().
  using ForwardHandler = std::function<kj::Promise<void>(
      rpc::Request::Reader, rpc::Consistency, rpc::Reply::Builder)>;
  void SetForwardHandler(ForwardHandler handler) { forward_handler_ = std::move(handler); }

  // Calls on one other node, for the coordinator. Each fails with
  // DISCONNECTED at once when the node is not connected, and after
  // `timeout` without an answer.
  kj::Promise<capnp::Response<peer::PeerSession::ForwardResults>> Forward(
      ReplicaId node, rpc::Request::Reader request, rpc::Consistency consistency,
      std::chrono::milliseconds timeout);
  kj::Promise<uint64_t> KeyDigest(ReplicaId node, std::string key,
                                  std::chrono::milliseconds timeout);
  kj::Promise<std::vector<Crdt>> FetchStates(ReplicaId node, std::string key,
                                             std::chrono::milliseconds timeout);
  // Joins this node's states of `key` into `node`; resolves once committed there.
  kj::Promise<void> PushStates(ReplicaId node, std::string key, std::chrono::milliseconds timeout);

  // Whether this node handed `segment` over and has not since brought it
  // back in step with another owner.
  bool Dropped(size_t segment) const;
  // Whether this node owns `segment` again after it handed it over, and has
  // not yet brought it back in step with another owner: it must not
  // coordinate writes there (its own dots and counter totals there may be
  // behind what it made before).
  bool Syncing(size_t segment) const;
  // Whether every key this node holds is in a segment it owns (after a
  // leave or a join, once the hand-over is done).
  bool HoldsOnlyOwned() const;
  // Whether every node that is not dead holds this node's whole log.
  bool LogDelivered() const;

  // Whether the link to `node` has a session now.
  bool IsConnected(ReplicaId node) const;

  // Counts `seq` as a hinted write for each of `owners` not connected now:
  // its log entry is kept for that owner (up to --max-backlog) and shipped
  // when it is back.
  void NoteHints(const std::vector<ReplicaId>& owners, uint64_t seq);
  struct HintStats {
    uint64_t stored = 0;    // hinted writes so far
    uint64_t replayed = 0;  // of them, acknowledged by their owner since
    uint64_t dropped = 0;   // of them, left to anti-entropy (backlog limit)
    uint64_t pending = 0;   // waiting for their owner now
  };
  HintStats Hints() const;

  // Resolves with how many of `nodes` hold this node's log entry `seq`, of
  // tree segment `segment`, durably: once `needed` of them do, or after
  // `timeout` with fewer. A node counts only while it owns the segment
  // (shipping leaves other segments' entries out of what its position
  // covers).
  kj::Promise<size_t> WaitAcked(std::vector<ReplicaId> nodes, uint64_t seq, size_t segment,
                                size_t needed, std::chrono::milliseconds timeout);
  // Closes every link; the peer service refuses further calls.
  void Stop();

  // The capability served to peers on --peer-listen.
  capnp::Capability::Client PeerBootstrap();

  // OK, or why client writes are refused now (the clock).
  Status WritesAllowed() const;

  // Whether every token's write is visible on this node.
  bool Visible(const std::vector<CausalToken>& tokens) const;
  // Resolves OK once Visible(tokens), or Timeout after `timeout`.
  kj::Promise<Status> WaitVisible(std::vector<CausalToken> tokens,
                                  std::chrono::milliseconds timeout);
  std::chrono::milliseconds token_wait() const { return options_.token_wait; }

  // Resolves with the regions of `regions` (empty: every region this node
  // knows) that did not have every token's write within `timeout`: a region
  // has them once each of its live nodes holds the tokens' logs through
  // them. InvalidArgument for a region this node does not know.
  kj::Promise<StatusOr<std::vector<std::string>>> WaitReplicated(
      std::vector<CausalToken> tokens, std::vector<std::string> regions,
      std::chrono::milliseconds timeout);

  std::vector<PeerStatus> Peers() const;
  // This node's clock minus the median clock (see ClockJudge).
  int64_t ClockOffsetMs() const;

 private:
  friend class PeerLink;
  friend class PeerServiceImpl;
  friend class PeerSessionImpl;

  struct Waiter {
    std::vector<CausalToken> tokens;
    kj::Own<kj::PromiseFulfiller<Status>> fulfiller;
  };
  struct AckWaiter {
    std::vector<ReplicaId> nodes;
    uint64_t seq;
    size_t segment;
    size_t needed;
    kj::Own<kj::PromiseFulfiller<size_t>> fulfiller;
  };

  // Of `w`'s nodes, how many acknowledged its sequence.
  size_t Acked(const AckWaiter& w) const;
  // After a link's acknowledged position advanced.
  void AckAdvanced();
  // Fails (and logs) when a peer's hello names other placement settings.
  void CheckPlacementSettings(peer::NodeHello::Reader theirs) const;
  // The link to `node`; DISCONNECTED unless it has a session.
  PeerLink& LinkWithSession(ReplicaId node);
  // This node's region's members, and their hash.
  std::vector<MemberRecord> LocalMembers() const;

  // Every second: hands the segments this node holds but no longer owns to
  // their owners in its region (then drops them), and brings segments it
  // owns again after a hand-over back in step.
  kj::Promise<void> Rebalance();
  kj::Promise<void> HandOff(size_t segment, std::vector<ReplicaId> owners);
  // Lets this node coordinate writes in `segment` again (durably).
  kj::Promise<void> ClearDropped(size_t segment);
  kj::Promise<void> HandOffKeys(size_t segment, std::vector<ReplicaId> owners,
                                std::vector<geokv::KeyDigest> keys, size_t from);
  // The other owners of `segment` in this node's region.
  std::vector<ReplicaId> RegionOwners(size_t segment) const;

  // After each committed group: wakes waiters and shippers.
  void Committed();
  // Trims the log through what every peer holds, and switches peers whose
  // backlog is too large to repair; every second.
  kj::Promise<void> Maintain();
  std::vector<int64_t> PeerOffsets() const;
  // Sets the per-peer gauges (backlog, connection, clock) and the node's.
  void Report();
  // This node's committed position in `origin`'s log.
  uint64_t DurablePosition(ReplicaId origin) const;
  // How far this node holds `origin`'s log: its own through its last
  // committed entry, another's through the committed position.
  uint64_t HeldThrough(ReplicaId origin) const;

  // The full states of a key, encoded for the peer API. A key whose states
  // could not travel in one message is left out (and logged): repairing it
  // needs paging, which the peer API does not have yet.
  struct EncodedKeyStates {
    std::vector<std::string> encoded;
    size_t bytes = 0;
  };
  EncodedKeyStates EncodedStates(std::string_view key);
  uint64_t NowMillis() const { return options_.wall_clock->NowMillis(); }

  Store& store_;
  GroupCommitter& committer_;
  kj::AsyncIoProvider& io_;
  ReplicatorOptions options_;
  ClockJudge judge_;
  std::vector<kj::Own<PeerLink>> seed_links_;
  std::map<ReplicaId, kj::Own<PeerLink>> links_;
  std::vector<kj::Own<PeerLink>> retired_;
  std::vector<bool> own_segments_;
  std::vector<bool> dropped_;  // as the store's DroppedSegments, kept here
  ForwardHandler forward_handler_;
  std::vector<std::shared_ptr<Waiter>> waiters_;
  std::vector<std::shared_ptr<AckWaiter>> ack_waiters_;
  std::unique_ptr<Metrics> own_metrics_;
  Metrics* metrics_ = nullptr;
  // Per origin: the last log sequence handed to the committer, and the
  // promise of that hand-over's commit (replays wait for it).
  std::map<ReplicaId, uint64_t> submitted_;
  std::map<ReplicaId, kj::ForkedPromise<void>> last_submit_;
  bool started_ = false;
  bool stopped_ = false;
  bool trim_held_ = false;
  bool writes_allowed_ = true;  // as last logged
  kj::Canceler canceler_;  // waits that must end when the replicator stops
  kj::Own<kj::TaskSet> tasks_;
  class ErrorLogger;
  kj::Own<ErrorLogger> error_logger_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_REPLICATOR_H_

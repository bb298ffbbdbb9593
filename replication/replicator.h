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
// heartbeat, to learn the members of other regions. Every link to a node of
// another region exchanges members both ways, so a node also learns a
// region from the nodes of it that dial in; the server keeps what it
// learned, with where its region's members gossip, in the store
// (KeepPeerMembers) for the next start.
//
// The other direction, deltas and states coming in, is the peer service
// (PeerBootstrap) that the node serves on --peer-listen: it joins them through
// the group committer and answers with durable positions. It also runs
// requests other nodes of the region forward (SetForwardHandler) and answers
// key digests for quorum reads.
//
// The replicator only wires the units of replication/, one role each:
// peer_link (a link's connection lifecycle), log_shipper, delta_receiver,
// anti_entropy, hand_over, clock, quorum_acks, token_visibility, members
// and peer_service (the Cap'n Proto adapter). A "position" is a sequence in
// one node's replication log, everywhere.
//
// Everything here lives on the KJ event loop's thread, which never reads the
// store: reads run on an AsyncStore's pool, writes (trims too) on the group
// committer's writer thread.

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
#include "replication/clock.h"
#include "replication/group_commit.h"
#include "replication/gap_cover.h"
#include "replication/hand_over.h"
#include "replication/log_coverage.h"
#include "replication/members.h"
#include "replication/peer_service.h"
#include "replication/peer_types.h"
#include "replication/tombstone_collector.h"
#include "schema/kv.capnp.h"
#include "schema/replication.capnp.h"
#include "storage/async_store.h"
#include "storage/store.h"

namespace geokv {

class PeerLink;
class DeltaReceiver;
class QuorumAcks;
class TokenVisibility;

class Replicator final : private HandOver::Links {
 public:
  // `store`, `reader` (over `store`), `committer` and `io` must outlive the
  // replicator; every store read it makes goes through `reader`.
  Replicator(Store& store, AsyncStore& reader, GroupCommitter& committer,
             kj::AsyncIoProvider& io, ReplicatorOptions options);
  ~Replicator() override;

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
  // first said hello, a link goes to a node of their region, or the log
  // passes --max-backlog.) Default: not held.
  void HoldTrimming(bool held) { trim_held_ = held; }

  // Runs requests that nodes of this region forward; set before Start().
  using ForwardHandler = PeerForwardHandler;
  void SetForwardHandler(ForwardHandler handler) { forward_handler_ = std::move(handler); }

  // Calls on one other node, for the coordinator. Each fails with
  // DISCONNECTED at once when the node is not connected, and after
  // `timeout` without an answer. Forward passes the owner's own refusals
  // on as they came (OVERLOADED: it shed the request, nothing ran), and its
  // deadline is DISCONNECTED, never OVERLOADED.
  kj::Promise<capnp::Response<peer::PeerSession::ForwardResults>> Forward(
      ReplicaId node, rpc::Request::Reader request, rpc::Consistency consistency,
      std::chrono::milliseconds timeout);
  // `node`'s digest of `key`, and whether it counts toward a quorum read
  // (it is a settled owner of the key's segment; HandOver::Settled). The
  // keys asked of one node within a turn of the loop go in one call.
  struct PeerDigest {
    uint64_t digest = 0;
    bool settled = true;
  };
  kj::Promise<PeerDigest> KeyDigest(ReplicaId node, std::string key,
                                    std::chrono::milliseconds timeout);
  // The states `node` holds of `key`, encoded; fails if it sends another key's.
  kj::Promise<EncodedJoins> FetchStates(ReplicaId node, std::string key,
                                        std::chrono::milliseconds timeout);
  // Joins this node's states of `key` into `node`; resolves once committed
  // there. With `leave_out_emptied`, sends nothing when they are all
  // emptied registers and sets (for a node that holds nothing of the key).
  kj::Promise<void> PushStates(ReplicaId node, std::string key, std::chrono::milliseconds timeout,
                               bool leave_out_emptied = false);

  // Whether this node handed `segment` over and has not since brought it
  // back in step with another owner.
  bool Dropped(size_t segment) const;
  // Whether this node owns `segment` again after it handed it over, and has
  // not yet brought it back in step with another owner: it must not
  // coordinate writes there (its own dots and counter totals there may be
  // behind what it made before).
  bool Syncing(size_t segment) const;
  // Whether this node owns `segment` and has been in step with its other
  // owners since it started or came to own it (HandOver): only such owners
  // count toward a quorum read.
  bool Settled(size_t segment) const;
  // Whether this node vouches for `segment` in its acknowledgements, and
  // counts its own copy for a write there (HandOver::Vouches).
  bool Vouches(size_t segment) const;
  // The segments this node owns that are not settled.
  size_t UnsettledSegments() const;
  // Whether every key this node holds is in a segment it owns (after a
  // leave or a join, once the hand-over is done).
  bool HoldsOnlyOwned() const;
  // Whether every node that is not dead holds this node's whole log.
  bool LogDelivered() const;
  // What HoldsOnlyOwned and LogDelivered still wait for, for logs: the
  // segments not handed over (with the last error of each) and the peers
  // not holding the log (with their position); empty when neither waits.
  std::string LeaveWaitingFor() const;

  // Whether the link to `node` has a session now.
  bool IsConnected(ReplicaId node) const override;

  // Counts the write at `position` as hinted for each of `owners` not
  // connected now: its log entry is kept for that owner (up to
  // --max-backlog) and shipped when it is back.
  void NoteHints(const std::vector<ReplicaId>& owners, uint64_t position);
  struct HintStats {
    uint64_t stored = 0;    // hinted writes so far
    uint64_t replayed = 0;  // of them, acknowledged by their owner since
    uint64_t dropped = 0;   // of them, left to anti-entropy (backlog limit)
    uint64_t pending = 0;   // waiting for their owner now
  };
  HintStats Hints() const;

  // Resolves with how many of `nodes` hold this node's log through
  // `position`, a write of tree segment `segment`, durably: once `needed`
  // of them do, or after `timeout` with fewer. A node counts only while it owns the segment
  // (shipping leaves other segments' entries out of what its position
  // covers).
  // The highest stamp of a register that one of `nodes` already held when
  // it joined this node's log entry at `position` (PeerLink::HeldAbove);
  // nullopt: none said so.
  std::optional<HlcTimestamp> HeldAbove(const std::vector<ReplicaId>& nodes,
                                        uint64_t position) const;
  kj::Promise<size_t> WaitAcked(std::vector<ReplicaId> nodes, uint64_t position, size_t segment,
                                size_t needed, std::chrono::milliseconds timeout);
  // Closes every link; the peer service refuses further calls.
  void Stop();

  // The capability served to one connection on --peer-listen;
  // `certified`: the common name of its TLS certificate (NewPeerService).
  capnp::Capability::Client PeerBootstrap(std::optional<std::string> certified);

  // OK, or why client writes are refused now: the clock, or a log that went
  // back (for good, until a restart under a new replica id).
  Status WritesAllowed() const;

  // Whether every token's write is visible on this node: with `segment`,
  // for a read of a key of it (token_visibility.h); without, by position.
  bool Visible(const std::vector<CausalToken>& tokens,
               std::optional<size_t> segment = std::nullopt) const;
  // Resolves OK once Visible(tokens, segment), or Timeout after `timeout`.
  // A gap that keeps a token out (log_coverage.h) is covered meanwhile:
  // the segment is brought in step with the token's origin and its other
  // owners in this region (Cover).
  kj::Promise<Status> WaitVisible(std::vector<CausalToken> tokens, std::optional<size_t> segment,
                                  std::chrono::milliseconds timeout);
  std::chrono::milliseconds token_wait() const { return options_.token_wait; }
  // Whether the peer port is to take packed connections, as hello says.
  bool packed_port() const { return options_.packed_port; }
  bool compressed_port() const { return options_.compressed_port; }
  kj::Timer& timer() { return io_.getTimer(); }

  // Resolves with the regions of `regions` (empty: every region this node
  // knows) that did not have every token's write within `timeout`: a region
  // has them once each of its live nodes holds the tokens' logs through
  // them. InvalidArgument for a region this node does not know, and for a
  // timeout over kMaxReplicationWait.
  kj::Promise<StatusOr<std::vector<std::string>>> WaitReplicated(
      std::vector<CausalToken> tokens, std::vector<std::string> regions,
      std::chrono::milliseconds timeout);

  std::vector<PeerStatus> Peers() const;

  // Keeps `kept`, the members this node knows (members.h), in the store for
  // its next start (Store::PeerMembers): written by the committer's writer
  // thread, the last of calls close together winning. Nothing once stopped.
  void KeepPeerMembers(const KeptMembers& kept);
  // This node's clock minus the median clock (see ClockJudge).
  int64_t ClockOffsetMs() const;
  // The connected peers with a clock sample, on which ClockOffsetMs rests
  // (0: it is 0 for want of samples).
  size_t ClockSamples() const { return PeerOffsets().size(); }

 private:
  // HandOver::Links.
  std::vector<ReplicaId> RegionOwners(size_t segment) const override;
  std::vector<ReplicaId> RegionMembers() const override;
  peer::PeerSession::Client Session(ReplicaId node) override;
  kj::Promise<void> SyncSegment(ReplicaId node, uint32_t segment) override;
  kj::Promise<void> Budget(ReplicaId node, size_t bytes) override;

  // Whether a link goes to a node of `region`.
  bool Linked(const std::string& region) const;
  // The link to `node`; throws DISCONNECTED unless it has a session.
  PeerLink& LinkWithSession(ReplicaId node);

  // This node alone, as its region's members when the options give none.
  std::vector<Member> SelfAlone() const;
  // The position of this node's log every node it ships to holds: the
  // least acknowledged one, 0 while a region is known only through a seed.
  uint64_t HeldByAll() const;
  // After a link's acknowledged position advanced.
  void AckAdvanced();
  // A peer (named `peer`) holds this node's log through `held`, past its
  // last entry: refuses writes from now on and has the next open take a new
  // replica id (Store::RetireAtNextOpen).
  void LogBehind(const std::string& peer, uint64_t held);
  // After each committed group: wakes waiters and shippers.
  void Committed();
  // Every second: samples backlogs off the loop, then switches peers whose
  // backlog is too large to repair and trims the log (on the committer's
  // writer thread) through what every peer holds.
  kj::Promise<void> Maintain();
  kj::Promise<void> MaintainTurn();
  std::vector<int64_t> PeerOffsets() const;
  // Sets the per-peer gauges (backlog, connection, clock) and the node's.
  void Report();
  // Warns when the store's clock (as read back at open) is further ahead of
  // the wall clock than --max-clock-offset.
  void WarnIfClockAhead();
  // This node's committed position in `origin`'s log.
  uint64_t DurablePosition(ReplicaId origin) const;
  // How far this node holds `origin`'s log: its own through its last
  // committed entry, another's through the committed position.
  uint64_t HeldThrough(ReplicaId origin) const;
  // The nodes a token read kept out by a gap of `origin`'s log in
  // `segment` brings it in step with (gap_cover.h): `origin`, when it owns
  // the segment and is connected, and the segment's other connected owners
  // here.
  std::vector<ReplicaId> CoverPeers(ReplicaId origin, size_t segment) const;
  // The nodes linked to, by the ids they go by (for certified hellos).
  std::vector<KnownNode> KnownNodes() const;
  uint64_t NowMillis() const { return options_.wall_clock->NowMillis(); }
  // Hands `bytes` to the committer for the store's peer members, or holds
  // them until the write in flight is done.
  void KeepPeerMemberBytes(std::string bytes);
  // Sends the digest requests gathered for `node` as one call.
  void SendDigests(ReplicaId node);

  Store& store_;
  AsyncStore& reader_;
  GroupCommitter& committer_;
  uint64_t stamps_counted_ = 0;  // committer_.stamps_refused() added to the metric
  // committer_.stamps_refused() already turned into unsettled segments.
  uint64_t stamps_unsettled_ = 0;
  kj::AsyncIoProvider& io_;
  ReplicatorOptions options_;
  std::unique_ptr<Metrics> own_metrics_;
  Metrics* metrics_ = nullptr;
  std::vector<bool> own_segments_;
  bool started_ = false;
  bool stopped_ = false;
  bool trim_held_ = false;
  bool writes_allowed_ = true;  // as last logged
  std::string log_behind_;      // why writes are refused for good; empty: they are not
  bool trimming_ = false;       // a trim is with the committer
  bool keeping_ = false;        // peer members are with the committer
  std::string kept_members_;    // as last handed to the committer
  std::optional<std::string> members_to_keep_;  // the next, while keeping_
  ForwardHandler forward_handler_;
  ClockJudge judge_;
  std::unique_ptr<ReplicationEnv> env_;
  std::unique_ptr<DeltaReceiver> receiver_;
  std::unique_ptr<QuorumAcks> acks_;
  std::unique_ptr<LogCoverage> coverage_;
  std::unique_ptr<TokenVisibility> visibility_;
  std::unique_ptr<HandOver> hand_over_;
  std::unique_ptr<TombstoneCollector> collector_;
  std::unique_ptr<PeerServiceContext> service_context_;
  std::vector<kj::Own<PeerLink>> seed_links_;
  std::map<ReplicaId, kj::Own<PeerLink>> links_;
  // Digest requests not yet sent, by node (KeyDigest).
  struct DigestWaiter {
    std::string key;
    kj::Own<kj::PromiseFulfiller<PeerDigest>> fulfiller;
  };
  struct PendingDigests {
    std::vector<DigestWaiter> waiters;
    std::chrono::milliseconds timeout{0};
  };
  std::map<ReplicaId, PendingDigests> pending_digests_;
  std::vector<kj::Own<PeerLink>> retired_;
  kj::Canceler canceler_;  // waits that must end when the replicator stops
  kj::Own<kj::TaskSet> tasks_;
  class ErrorLogger;
  kj::Own<ErrorLogger> error_logger_;
  // Last, so that its rounds end before the links they sync through go.
  std::unique_ptr<GapCover> gap_cover_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_REPLICATOR_H_

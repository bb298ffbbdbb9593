// Cross-region replication of one node (DESIGN.md section 4).
//
// For every peer (a node of another region) a link connects, says hello and
// then, while the connection lasts:
//   - ships this node's replication log from the peer's durable position, in
//     batches of at most `batch_bytes`, with up to `window` batches in flight;
//   - sends a heartbeat every `heartbeat`, which estimates the peer's clock
//     offset and notices a silent peer;
//   - runs anti-entropy: compares hash trees and exchanges the full states of
//     keys that differ, both ways, under a byte-rate budget.
// A link that fails reconnects after a jittered exponential backoff. A peer
// whose unacknowledged log exceeds `max_backlog_bytes`, or that needs
// entries already trimmed, is repaired by a complete anti-entropy pass
// instead, after which shipping resumes from the log; the log is trimmed
// through the position every peer holds (repaired peers aside).
//
// The other direction, deltas and states coming in, is the peer service
// (PeerBootstrap) that the node serves on --peer-listen: it joins them through
// the group committer and answers with durable positions.
//
// Everything here lives on the KJ event loop's thread.

#ifndef GEOKV_REPLICATION_REPLICATOR_H_
#define GEOKV_REPLICATION_REPLICATOR_H_

#include <capnp/capability.h>
#include <kj/async-io.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crdt/hlc.h"
#include "replication/causal_token.h"
#include "replication/group_commit.h"
#include "storage/store.h"

namespace geokv {

// A peer as configured: its region and the HOST:PORT of its peer API.
struct PeerAddress {
  std::string region;
  std::string address;
};

// Parses "region=host:port,region=host:port". InvalidArgument names the bad
// entry; a region named twice, or `own_region`, is refused.
StatusOr<std::vector<PeerAddress>> ParsePeers(std::string_view spec, std::string_view own_region);

struct ReplicatorOptions {
  std::string name;    // this node's --node-id
  std::string region;  // this node's --region
  std::vector<PeerAddress> peers;

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
};

// A peer's state, for `info` and logs.
struct PeerStatus {
  PeerAddress address;
  std::string name;  // empty until it said hello
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

  // Starts the links to every peer.
  void Start();
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

  // Resolves with the regions of `regions` (empty: this node's and every
  // peer's) that did not have every token's write within `timeout`;
  // InvalidArgument for a region this node does not know.
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

  // After each committed group: wakes waiters and shippers.
  void Committed();
  // Trims the log through what every peer holds, and switches peers whose
  // backlog is too large to repair; every second.
  kj::Promise<void> Maintain();
  std::vector<int64_t> PeerOffsets() const;
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
  std::vector<kj::Own<PeerLink>> links_;
  std::vector<std::shared_ptr<Waiter>> waiters_;
  // Per origin: the last log sequence handed to the committer, and the
  // promise of that hand-over's commit (replays wait for it).
  std::map<ReplicaId, uint64_t> submitted_;
  std::map<ReplicaId, kj::ForkedPromise<void>> last_submit_;
  bool stopped_ = false;
  bool writes_allowed_ = true;  // as last logged
  kj::Canceler canceler_;  // waits that must end when the replicator stops
  kj::Own<kj::TaskSet> tasks_;
  class ErrorLogger;
  kj::Own<ErrorLogger> error_logger_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_REPLICATOR_H_

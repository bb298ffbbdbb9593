// The plain types replication shares with the server: peers as configured,
// replication targets, options and status. Members are domain/member.h's.
//
// One name for one idea across replication/: a "position" is a sequence in
// one node's replication log; a node's position in another's log is the
// last entry of it that it holds durably.

#ifndef GEOKV_REPLICATION_PEER_TYPES_H_
#define GEOKV_REPLICATION_PEER_TYPES_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crdt/hlc.h"
#include "domain/member.h"
#include "monitoring/metrics.h"
#include "storage/store.h"

namespace geokv {

class TlsContextHolder;

// A seed of another region as configured: its region and the HOST:PORT of
// its peer API.
struct PeerAddress {
  std::string region;
  std::string address;
};

// Parses "region=host:port,region=host:port". InvalidArgument names the bad
// entry; a region named twice, or `own_region`, is refused.
StatusOr<std::vector<PeerAddress>> ParsePeers(std::string_view spec, std::string_view own_region);

// Another node this node replicates to.
struct PeerTarget {
  ReplicaId id = 0;
  std::string name;
  std::string region;
  std::string address;  // its peer API, as this node reaches it
  MemberState state = MemberState::kAlive;
  // The key segments it owns (kSegments entries).
  std::vector<bool> owned;
};

// The longest wait for replication a client or a peer may ask for
// (waitReplicated, GEOKV.WAITREPLICATED, waitVisible): one hour. A longer one
// is refused as invalid, naming this limit.
constexpr std::chrono::milliseconds kMaxReplicationWait{3'600'000};

// Which peer connections a node compresses (docs/configuration.md,
// --peer-compression): none, those to nodes of other regions, or all.
enum class PeerCompression { kOff, kCrossRegion, kAll };

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
  // them (on hello, and on a heartbeat when they changed), whichever of the
  // two nodes dialled; within the bounds of replication/members.h.
  std::function<void(const std::string& region, std::vector<Member>)> on_remote_members;
  // This node's region's members, sent to nodes of other regions. Default:
  // this node alone.
  std::function<std::vector<Member>()> local_members;

  // Dials peers over TLS with this context (util/tls.h): the callee's
  // certificate must name a node of the region dialled, and a target's must
  // name that node. Not owned. Default (nullptr): plain TCP.
  TlsContextHolder* tls = nullptr;

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
  // How old a tombstone every node holds must be before it is collected
  // (replication/tombstone_collector.h).
  std::chrono::milliseconds tombstone_grace{std::chrono::minutes(10)};
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{2000};
  // Whether this node's peer port takes packed connections
  // (util/packed_stream.h), as its hello says; the node serves its port
  // so (server/node.cc). False plays an older build's.
  bool packed_port = true;
  // Whether it takes compressed ones too (util/zstd_stream.h), as its
  // hello says. False plays a build that takes packed connections only.
  bool compressed_port = true;
  // Which of the connections this node dials it compresses (--peer-compression).
  PeerCompression compression = PeerCompression::kCrossRegion;
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
  uint64_t acked = 0;  // its position in this node's log
  uint64_t backlog_bytes = 0;  // log bytes after acked, as last sampled
  std::optional<int64_t> clock_offset_ms;  // the peer's clock minus ours
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_PEER_TYPES_H_

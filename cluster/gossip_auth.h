// GossipAuthenticator: seals the gossip datagrams a node sends and opens
// the ones it receives, so that only holders of a cluster key
// (cluster/gossip_key.h) can change what a node knows of its region, and a
// datagram recorded on the wire and sent again changes nothing. Pure
// logic: the wall clock is injected, so tests run it on a manual one.
//
// A sealed datagram (docs/formats.md, "Gossip packets") is the framed
// gossip packet (schema/gossip.capnp) inside an envelope:
//
//   "GKVA" | version (1 byte, 1) | key id length (1 byte) | key id |
//   sender id (8) | recipient id (8) | stamp (8) | packet | HMAC-SHA256 (32)
//
// integers big-endian. The MAC is HMAC-SHA256 under the named key over
// every byte before it, compared in constant time. The recipient id is the
// member the sender meant (0 when it sends to an address whose member it
// does not know yet, as a join to a seed), so a datagram recorded on its
// way to one member is refused by any other. The stamp is the sender's
// wall clock in microseconds since the Unix epoch, raised where needed so
// that it grows strictly with every datagram the sender seals.
//
// Replay. A receiver accepts a datagram only if
//   1. its stamp is within `window` of the receiver's clock, either way;
//   2. its stamp is above the sender's floor: at first the receiver's own
//      start time less `start_slack`, raised as below;
//   3. its stamp is not among the stamps of that sender accepted since.
// Per sender, the receiver keeps the stamps it accepted that are still
// within the window, at most `max_stamps_per_sender` of them: when more
// arrive, or when they leave the window, the oldest goes and the floor
// rises to it. At most `max_senders` senders are kept; one more evicts the
// sender heard from least recently, and every sender's floor is then at
// least the newest stamp evicted. So memory is bounded, and a bound only
// ever refuses more, never accepts a datagram twice.
//
// Why a replay cannot bring back an old member state: a datagram is
// accepted at most once by the member it was meant for (3, and the floor,
// while the receiver runs), is refused by every other member it was not
// meant for (the recipient id), and is refused by a receiver that
// restarted unless it was stamped within `start_slack` before that start
// (2) — a receiver's memory of stamps dies with it, but so does its
// member list. What can still be accepted once is a datagram no older
// than the window sent to a member that never received it (a join to a
// seed, which names no recipient) or one stamped in the last `start_slack`
// before a restart: news at most that old, as a datagram delayed in the
// network would bring, which SWIM already tolerates, since entries merge
// by incarnation and a stale entry never supersedes a newer one.
// Forgetting dead or left members (MembershipOptions::dead_forget,
// left_forget) must take longer than the window (checked at start), so no
// accepted datagram predates what its receiver forgot.
//
// Without keys a node authenticates nothing, as before: it sends bare
// packets and accepts bare ones, and accepts sealed ones without checking
// them (so that a region can be switched to keys one node at a time; see
// `accept_unauthenticated`).
//
// Thread safety: none; one thread at a time (the gossip thread).

#ifndef GEOKV_CLUSTER_GOSSIP_AUTH_H_
#define GEOKV_CLUSTER_GOSSIP_AUTH_H_

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/gossip_key.h"
#include "domain/member.h"

namespace geokv {

// Why a datagram was refused; the `reason` label of
// geokv_gossip_datagrams_refused_total.
enum class GossipRefusal : uint8_t {
  kUnauthenticated,  // a bare packet, where keys are configured
  kMalformed,        // an envelope that does not parse or holds no packet
  kUnknownKey,       // names a key id this node does not hold
  kBadMac,           // the MAC does not match
  kMisdirected,      // meant for another member
  kStale,            // stamped outside the window of this node's clock
  kReplayed,         // at or below the sender's floor, or accepted before
};
inline constexpr size_t kGossipRefusals = 7;

// "unauthenticated", "malformed", "unknown_key", "bad_mac", "misdirected",
// "stale", "replayed".
std::string_view GossipRefusalName(GossipRefusal refusal);

struct GossipAuthOptions {
  // The keys; the first seals what this node starts a conversation with.
  // Empty: no authentication (see the file comment). Default: empty.
  std::vector<GossipKey> keys;
  // With keys: also accept bare packets, unauthenticated. Only for the
  // while a region is switched to keys one node at a time
  // (docs/operations.md). Default: false.
  bool accept_unauthenticated = false;
  // How far a datagram's stamp may be from this node's clock, either way:
  // covers the clock offsets between nodes and the time in flight.
  // Default: 30 s.
  std::chrono::milliseconds window{30000};
  // How long before this node's start a datagram may have been stamped.
  // REQUIRES: start_slack <= window. Default: 2 s.
  std::chrono::milliseconds start_slack{2000};
  size_t max_senders = 1024;            // Default: 1024.
  size_t max_stamps_per_sender = 512;  // Default: 512.
  // The wall clock. Default: std::chrono::system_clock::now.
  std::function<std::chrono::system_clock::time_point()> wall_clock;
};

class GossipAuthenticator {
 public:
  // The most bytes Seal adds to a packet.
  static constexpr size_t kMaxOverheadBytes = 4 + 1 + 1 + kMaxGossipKeyIdBytes + 24 + 32;

  // `self` is this node's replica id, the sender id of what it seals.
  // REQUIRES: every key valid (ParseGossipKeys), ids distinct.
  GossipAuthenticator(GossipAuthOptions options, ReplicaId self);

  GossipAuthenticator(const GossipAuthenticator&) = delete;
  GossipAuthenticator& operator=(const GossipAuthenticator&) = delete;

  // Whether keys are configured.
  bool enabled() const { return !options_.keys.empty(); }

  // The datagram carrying `packet` to `recipient` (0: not known): without
  // keys `packet` itself; with keys, sealed under the key `recipient` last
  // sealed an accepted datagram with, if this node holds it, else the
  // first, so that two members whose first keys differ during a rotation
  // still answer each other in a key both hold.
  std::string Seal(std::string_view packet, ReplicaId recipient);

  // Opens a received datagram. On acceptance returns nullopt and points
  // *packet into `datagram` at the packet to hand to the membership; on
  // refusal returns why, with a sentence for the log in *detail, and
  // changes nothing (a refused datagram leaves no trace in the replay
  // state).
  std::optional<GossipRefusal> Open(std::string_view datagram, std::string_view* packet,
                                    std::string* detail);

  // Seals and accepts under `keys` from now on; the replay state stays. A
  // sender's last key keeps answering it where `keys` still holds that id,
  // else the first key does. REQUIRES: `keys` valid, ids distinct, and
  // keys configured before (enabled()) and now.
  void SetKeys(std::vector<GossipKey> keys);

  // Senders whose stamps are kept (at most max_senders).
  size_t senders() const { return senders_.size(); }

 private:
  struct Sender {
    uint64_t floor = 0;          // stamps at or below are refused
    std::set<uint64_t> stamps;   // accepted, above the floor
    size_t key = 0;              // index of the key it last sealed with
    uint64_t heard = 0;          // tick of the last acceptance, for eviction
  };

  uint64_t NowMicros() const;
  const GossipKey* FindKey(std::string_view id, size_t* index) const;
  // Drops a sender's stamps that left the window, raising its floor.
  void Expire(Sender& sender, uint64_t now) const;

  GossipAuthOptions options_;
  const ReplicaId self_;
  uint64_t start_floor_ = 0;
  uint64_t evicted_floor_ = 0;
  uint64_t last_stamp_ = 0;
  uint64_t tick_ = 0;
  std::map<ReplicaId, Sender> senders_;
};

}  // namespace geokv

#endif  // GEOKV_CLUSTER_GOSSIP_AUTH_H_

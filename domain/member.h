// A member of the cluster: one node as its region's gossip knows it. The one
// definition used by gossip (cluster/), member exchange between regions
// (replication/) and the node's view and admin API (server/). Each wire
// format has its one converter next to the code that owns the format:
// cluster/membership.cc (gossip.capnp), replication/members.cc
// (replication.capnp), server/admin.cc (kv.capnp).
//
// Plain copyable values; thread safety is the holder's.

#ifndef GEOKV_DOMAIN_MEMBER_H_
#define GEOKV_DOMAIN_MEMBER_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "domain/replica_id.h"

namespace geokv {

// Ordered: Supersedes relies on alive < suspect < dead < left.
enum class MemberState : uint8_t { kAlive = 0, kSuspect = 1, kDead = 2, kLeft = 3 };

// "alive", "suspect", "dead" or "left": the names logs and metrics use.
std::string_view MemberStateName(MemberState state);

struct Member {
  ReplicaId id = 0;            // identity (the node's replica id), never 0
  std::string name;            // display name
  std::string region;
  // HOST:PORT, UDP. Known within the member's own region only: member
  // exchange between regions does not carry it.
  std::string gossip_address;
  std::string client_address;  // HOST:PORT of the client API
  std::string peer_address;    // HOST:PORT of the peer API, for nodes of its own region
  // Peer API addresses advertised to nodes of particular other regions
  // (region -> HOST:PORT), e.g. through a WAN proxy or NAT; other regions
  // use peer_address.
  std::map<std::string, std::string> peer_routes;
  // Raised only by the member itself: to refute a suspicion, to leave, or
  // to announce changed addresses.
  uint64_t incarnation = 0;
  MemberState state = MemberState::kAlive;
};

bool operator==(const Member& a, const Member& b);
inline bool operator!=(const Member& a, const Member& b) { return !(a == b); }

// Whether an update `a` about a member overrides what is known, `b`, by the
// SWIM rules: higher incarnation wins; on equal incarnation the state order
// alive < suspect < dead, and left overrides everything of equal or lower
// incarnation. Gossip merges by it, and so do views of other regions
// learned through member exchange. REQUIRES: a.id == b.id.
bool Supersedes(const Member& a, const Member& b);

// Updates above this incarnation are ignored when received: a member
// refutes by going one higher, which must not wrap.
inline constexpr uint64_t kMaxIncarnation = uint64_t{1} << 62;
// The incarnation of a retired id's left entry (MembershipOptions::retired):
// the highest accepted, so nothing brings the id back.
inline constexpr uint64_t kRetiredIncarnation = kMaxIncarnation;

// Whether `state` counts as up for placement and replication: alive or
// suspect.
inline bool IsUp(MemberState state) {
  return state == MemberState::kAlive || state == MemberState::kSuspect;
}

}  // namespace geokv

#endif  // GEOKV_DOMAIN_MEMBER_H_

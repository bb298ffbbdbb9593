// Member exchange: nodes send their region's members to the nodes of other
// regions, both ways on hello and on a heartbeat when the list changed (told
// apart by its view hash), so a node learns another region from every node
// of it that is connected, whichever of the two dialled. What a node learns
// is kept in its data dir (EncodeLearnedMembers) for its next start.
//
// A peer may lie: what a node takes from one is bounded (RemoteMembers and
// the limits below), whoever sent it.

#ifndef GEOKV_REPLICATION_MEMBERS_H_
#define GEOKV_REPLICATION_MEMBERS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "replication/peer_types.h"
#include "schema/replication.capnp.h"

namespace geokv {

// The converter between Member and replication.capnp's peer::Member, the
// only one. gossip_address stays within its region and is not sent.

// The members of a wire list, in its order.
std::vector<Member> DecodeMembers(capnp::List<peer::Member>::Reader list);

// Writes `members` into `out`. REQUIRES: out.size() == members.size().
void EncodeMembers(const std::vector<Member>& members,
                   capnp::List<peer::Member>::Builder out);

// A hash of every field the wire carries (not gossip_address) of every
// member, in order: equal lists hash equal, so a heartbeat carries the list
// only when the hash it names differs.
uint64_t ViewHash(const std::vector<Member>& members);

// What a node accepts of other regions' members: members per region,
// regions besides its own, bytes of each text field (name, region, each
// address, each route's region), and routes per member.
inline constexpr size_t kMaxRegionMembers = 1024;
inline constexpr size_t kMaxRemoteRegions = 64;
inline constexpr size_t kMaxMemberFieldBytes = 256;
inline constexpr size_t kMaxMemberRoutes = 64;

// Whether `m` has an id and every field within the bounds above.
bool WithinBounds(const Member& m);

// The members of region `region` that a node of it sent in `list`: entries
// of another region, with id 0 or out of bounds are left out, and at most
// kMaxRegionMembers are kept, those that did not leave first (the others in
// list order). Empty when `region` itself is out of bounds.
std::vector<Member> RemoteMembers(std::string_view region,
                                  capnp::List<peer::Member>::Reader list);

// Hands the members of `region` in `list` (RemoteMembers) that a node of
// it sent to options.on_remote_members; nothing for this node's own region
// (gossip tells it) or an empty list.
void LearnMembers(const ReplicatorOptions& options, std::string_view region,
                  capnp::List<peer::Member>::Reader list);

// This node's region's members as it sends them to a node of `region`:
// none for its own region.
std::vector<Member> MembersFor(const ReplicatorOptions& options, std::string_view region);

// What a node keeps of the members it knows for its next start: the members
// of other regions it learned, and the gossip addresses of its own region's
// other members, which it joins through besides its --seeds.
struct KeptMembers {
  std::vector<Member> remote;
  std::vector<std::string> region_seeds;

  friend bool operator==(const KeptMembers& a, const KeptMembers& b) {
    return a.remote == b.remote && a.region_seeds == b.region_seeds;
  }
};

// The value of the `peer_members` metadata row (replication.capnp's
// LearnedMembers, docs/formats.md) for `kept`.
std::string EncodeLearnedMembers(const KeptMembers& kept);
// What a `peer_members` row holds, members out of bounds and seeds longer
// than kMaxMemberFieldBytes left out, kMaxRegionMembers seeds at most;
// nullopt when it does not decode.
std::optional<KeptMembers> DecodeLearnedMembers(std::string_view bytes);

}  // namespace geokv

#endif  // GEOKV_REPLICATION_MEMBERS_H_

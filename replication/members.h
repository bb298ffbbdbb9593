// Member exchange: nodes send their region's members to the nodes of other
// regions, on hello and on a heartbeat when the list changed (told apart by
// its view hash).

#ifndef GEOKV_REPLICATION_MEMBERS_H_
#define GEOKV_REPLICATION_MEMBERS_H_

#include <cstdint>
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

}  // namespace geokv

#endif  // GEOKV_REPLICATION_MEMBERS_H_

// The identity of a node, shared by every folder that names nodes: dots of
// the CRDTs (crdt/), ring positions (placement/), members (domain/member.h).

#ifndef GEOKV_DOMAIN_REPLICA_ID_H_
#define GEOKV_DOMAIN_REPLICA_ID_H_

#include <cstdint>

namespace geokv {

// A node's identity: random, 64 bits, never 0, never reused.
using ReplicaId = uint64_t;

}  // namespace geokv

#endif  // GEOKV_DOMAIN_REPLICA_ID_H_

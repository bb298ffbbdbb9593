// The peer service served on --peer-listen: a thin Cap'n Proto adapter that
// turns the peer API's messages (schema/replication.capnp) into calls on the
// replication units and their answers back into messages. Bad input fails
// the call (KJ_REQUIRE); a stopping node answers DISCONNECTED.
//
// Thread safety: loop thread only.

#ifndef GEOKV_REPLICATION_PEER_SERVICE_H_
#define GEOKV_REPLICATION_PEER_SERVICE_H_

#include <capnp/capability.h>
#include <kj/async.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "replication/delta_receiver.h"
#include "replication/replication_env.h"
#include "replication/token_visibility.h"
#include "schema/kv.capnp.h"
#include "schema/replication.capnp.h"

namespace geokv {

// Runs a request another node of this region forwards.
using PeerForwardHandler = std::function<kj::Promise<void>(
    rpc::Request::Reader, rpc::Consistency, rpc::Reply::Builder)>;

// What the service adapts to. Every reference outlives the service and the
// sessions it hands out.
struct PeerServiceContext {
  ReplicationEnv& env;
  DeltaReceiver& receiver;
  TokenVisibility& visibility;
  const bool& stopped;              // refuse calls once set
  const PeerForwardHandler& forward;  // nullptr: forwarding is refused
  std::function<std::vector<Member>()> local_members;
  // Whether this node holds a segment's data as a settled owner
  // (HandOver::Settled); nullptr: every segment is.
  std::function<bool(size_t segment)> settled;
  // Whether this node vouches for a segment in its acknowledgements
  // (HandOver::Vouches); nullptr: for every segment it owns.
  std::function<bool(size_t segment)> vouches;
  // Takes a caller's stable stamp from its heartbeat; nullptr: ignored.
  std::function<void(ReplicaId caller, HlcTimestamp stable)> on_stable;
  // The nodes this node links to, whose certified hellos must go by the id
  // known for them (CheckHelloIdentity); nullptr: none.
  std::function<std::vector<KnownNode>()> known_nodes;
};

// The bootstrap capability of one connection: answers hello with a
// session. `certified` is the common name of the caller's TLS certificate
// (util/tls.h): a hello is then refused, and logged, unless it names the
// node that certificate names (NAME.REGION) and goes by the replica id this
// node knows for it (CheckHelloIdentity, refused through ClaimRefusals).
// nullopt: a connection without TLS, whose hello is taken at its word.
capnp::Capability::Client NewPeerService(PeerServiceContext& context,
                                         std::optional<std::string> certified);

}  // namespace geokv

#endif  // GEOKV_REPLICATION_PEER_SERVICE_H_

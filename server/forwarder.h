// Forwarding over the replicator's peer links: a parsed request is encoded
// as the client API's batch member (server/wire_request.h) and run by the
// owner's forward handler, whose reply is decoded back into a Result.
//
// Thread safety: lives on the KJ event loop's thread, like the replicator.

#ifndef GEOKV_SERVER_FORWARDER_H_
#define GEOKV_SERVER_FORWARDER_H_

#include "replication/replicator.h"
#include "server/coordinator.h"

namespace geokv {

class ReplicatorForwarder final : public Forwarder {
 public:
  // `replicator` must outlive this.
  explicit ReplicatorForwarder(Replicator& replicator) : replicator_(replicator) {}

  // Rejects as Replicator::Forward does, and with FAILED when the owner
  // answered another kind of reply.
  kj::Promise<Result> Forward(ReplicaId node, const ParsedRequest& request, Consistency level,
                              std::chrono::milliseconds timeout) override;

 private:
  Replicator& replicator_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_FORWARDER_H_

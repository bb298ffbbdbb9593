#include "server/forwarder.h"

#include <capnp/message.h>
#include <kj/debug.h>

#include "server/wire_request.h"

namespace geokv {

kj::Promise<Result> ReplicatorForwarder::Forward(ReplicaId node, const ParsedRequest& request,
                                                 Consistency level,
                                                 std::chrono::milliseconds timeout) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<rpc::Request>();
  EncodeRequest(request, root);
  const RequestKind kind = request.kind;
  return replicator_.Forward(node, root.asReader(), WireConsistency(level), timeout)
      .then([kind](capnp::Response<peer::PeerSession::ForwardResults>&& response) {
        StatusOr<Result> result = DecodeReply(kind, response.getReply());
        if (!result.ok()) KJ_FAIL_REQUIRE(result.status().message().c_str());
        return std::move(result).value();
      });
}

}  // namespace geokv

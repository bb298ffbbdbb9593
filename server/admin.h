// The administrative calls of the client API (info, cluster, owners, leave,
// remove): what a node says about itself and its cluster, and the two
// membership changes an operator asks for. The Cap'n Proto service hands
// these calls here; another front end may describe the same facts its way.
//
// Thread safety: lives on the KJ event loop's thread; every call is made
// there.

#ifndef GEOKV_SERVER_ADMIN_H_
#define GEOKV_SERVER_ADMIN_H_

#include <kj/async.h>

#include <cstdint>
#include <functional>
#include <string>

#include "monitoring/metrics.h"
#include "replication/replicator.h"
#include "schema/kv.capnp.h"
#include "server/cluster_view.h"
#include "server/wire_request.h"
#include "storage/async_store.h"

namespace geokv {

struct AdminOptions {
  std::string name;  // the node's name
  std::string region;
  RequestLimits limits;  // for the key `owners` is asked about
  // Where `info` reads the forwarded and read-repair counts. Not owned;
  // REQUIRES: not null.
  Metrics* metrics = nullptr;
};

class Admin {
 public:
  // Every reference must outlive the admin unit.
  Admin(AsyncStore& store, Replicator& replicator, const ClusterView& view, AdminOptions options);

  // Where `cluster` reads the failure detections count of gossip. Default: 0.
  void SetFailureDetections(std::function<uint64_t()> f) { failure_detections_ = std::move(f); }
  // What `leave` starts: OK, or why the node cannot leave. Default: it
  // cannot.
  void SetLeave(std::function<Status()> f) { leave_ = std::move(f); }
  // What `remove` does to a member of this region: see Membership::Remove.
  // Default: no gossip, nothing to remove.
  void SetMemberRemoval(std::function<Status(ReplicaId)> f) { remove_ = std::move(f); }

  // Fills `out`; the peers' addresses and states only when `with_peers`
  // (admin connections).
  kj::Promise<void> Info(rpc::NodeInfo::Builder out, bool with_peers);
  void Cluster(rpc::ClusterInfo::Builder out) const;
  void Owners(capnp::Data::Reader key, rpc::OwnersReply::Builder out) const;
  Status Leave();
  // `member`: a name or a replica id in 16 hex digits.
  Status Remove(const std::string& member);

 private:
  // The converter from Member to kv.capnp's MemberInfo, the only one: the
  // addresses as this node's region sees them, and the member's shares.
  void Describe(const Member& m, rpc::MemberInfo::Builder out) const;

  AsyncStore& store_;
  Replicator& replicator_;
  const ClusterView& view_;
  const AdminOptions options_;
  std::function<uint64_t()> failure_detections_;
  std::function<Status()> leave_;
  std::function<Status(ReplicaId)> remove_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_ADMIN_H_

// What one node knows of the cluster: its region's members from gossip, the
// other regions' members as their nodes report them, and a consistent-hash
// ring per region built from those. Feeds placement decisions (who owns a
// key), the replicator's targets and the cluster API.
//
// Lives on the KJ event loop's thread; not thread-safe.

#ifndef GEOKV_SERVER_CLUSTER_VIEW_H_
#define GEOKV_SERVER_CLUSTER_VIEW_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "domain/member.h"
#include "placement/ring.h"
#include "replication/replicator.h"

namespace geokv {

class ClusterView {
 public:
  // `self` is this node as it gossips itself. REQUIRES: replication_factor >= 1.
  ClusterView(Member self, size_t replication_factor, size_t vnodes);

  // Replaces this region's members (gossip's list, this node among them).
  // Returns whether anything placement depends on changed.
  bool SetLocal(std::vector<Member> members);
  // Merges another region's members as one of its nodes reported them (or
  // as the store kept them), entry by entry by the gossip precedence rule
  // (Supersedes). A peer may lie, so the view holds at most
  // kMaxRemoteRegions other regions and kMaxRegionMembers members of each
  // (replication/members.h): entries past those bounds (where a member
  // that left is forgotten to make room for one that did not), or out of
  // WithinBounds, are left out. Returns whether anything changed.
  bool MergeRemote(const std::string& region, const std::vector<Member>& members);

  ReplicaId self_id() const { return self_.id; }
  const std::string& region() const { return self_.region; }
  size_t replication_factor() const { return replication_factor_; }
  size_t vnodes() const { return vnodes_; }

  // The owners of `key` in `region` (this node's by default), in preference
  // order: min(N, nodes of the region) of them.
  std::vector<ReplicaId> Owners(std::string_view key) const;
  std::vector<ReplicaId> Owners(std::string_view key, const std::string& region) const;
  // Whether a member is believed up (alive or suspect).
  bool Up(ReplicaId id) const;
  const Member* Find(ReplicaId id) const;

  // Every region's members, this node's region first, each by name.
  std::vector<const Member*> Members() const;
  std::vector<std::string> Regions() const;
  // The share of its region's segments `id` owns, and of the hash space where
  // it owns first.
  double OwnedShare(ReplicaId id) const;
  double PrimaryShare(ReplicaId id) const;

  // Whether this node knows its region's members: it heard from another
  // member through gossip, had no other seed to hear from, or waited for
  // the seeds long enough to serve as the region's only member. Until then
  // its ring holds only itself, so only consistency ONE is served.
  // Default: true.
  bool joined() const { return joined_; }
  void set_joined(bool joined) { joined_ = joined; }

  // For the replicator.
  std::vector<bool> OwnSegments() const;
  std::vector<PeerTarget> Targets() const;
  // This region's members, for member exchange with other regions.
  std::vector<Member> LocalMembers() const;
  // The other regions' members, for the store to keep.
  std::vector<Member> RemoteMembers() const;

 private:
  void Rebuild();
  // Forgets one member of `region` that left; false when none did.
  bool ForgetOneLeft(const std::string& region);
  const Ring* RingOf(const std::string& region) const;

  Member self_;
  bool joined_ = true;
  const size_t replication_factor_;
  const size_t vnodes_;
  std::map<ReplicaId, Member> members_;  // every region's
  std::map<std::string, std::shared_ptr<const Ring>> rings_;  // by region
};

}  // namespace geokv

#endif  // GEOKV_SERVER_CLUSTER_VIEW_H_

#include "server/cluster_view.h"

#include <algorithm>
#include <set>

#include "replication/members.h"
#include "util/hash.h"

namespace geokv {

ClusterView::ClusterView(Member self, size_t replication_factor, size_t vnodes)
    : self_(std::move(self)), replication_factor_(replication_factor), vnodes_(vnodes) {
  members_[self_.id] = self_;
  Rebuild();
}

namespace {

// What placement and replication depend on.
bool SameForPlacement(const Member& a, const Member& b) {
  return a.state == b.state && a.incarnation == b.incarnation && a.region == b.region &&
         a.peer_address == b.peer_address && a.peer_routes == b.peer_routes &&
         a.client_address == b.client_address && a.name == b.name;
}

}  // namespace

bool ClusterView::SetLocal(std::vector<Member> members) {
  bool changed = false;
  std::set<ReplicaId> listed;
  for (Member& m : members) {
    if (m.region != self_.region) continue;
    listed.insert(m.id);
    auto it = members_.find(m.id);
    if (it == members_.end() || !SameForPlacement(it->second, m)) {
      members_[m.id] = std::move(m);
      changed = true;
    }
  }
  // Members gossip forgot (left long ago) leave the view.
  for (auto it = members_.begin(); it != members_.end();) {
    if (it->second.region == self_.region && !listed.count(it->first) && it->first != self_.id) {
      it = members_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  if (changed) Rebuild();
  return changed;
}

bool ClusterView::MergeRemote(const std::string& region, const std::vector<Member>& members) {
  if (region == self_.region) return false;
  size_t known = 0;  // of the region
  std::set<std::string> regions;
  for (const auto& [id, m] : members_) {
    if (m.region != self_.region) regions.insert(m.region);
    known += m.region == region;
  }
  if (!regions.count(region) && regions.size() >= kMaxRemoteRegions) return false;
  bool changed = false;
  for (const Member& m : members) {
    if (m.region != region || m.id == self_.id || !WithinBounds(m)) continue;
    auto it = members_.find(m.id);
    if (it != members_.end() && it->second.region != region) continue;  // not the sender's to tell
    if (it == members_.end()) {
      // At the bound, a member that left makes room for one that did not
      // (left members are known only so that they are not dialled).
      if (known == kMaxRegionMembers && (m.state == MemberState::kLeft || !ForgetOneLeft(region))) {
        continue;
      }
      if (known < kMaxRegionMembers) ++known;
      members_[m.id] = m;
      changed = true;
    } else if (Supersedes(m, it->second) && !SameForPlacement(m, it->second)) {
      it->second = m;
      changed = true;
    }
  }
  if (changed) Rebuild();
  return changed;
}

bool ClusterView::ForgetOneLeft(const std::string& region) {
  for (auto it = members_.begin(); it != members_.end(); ++it) {
    if (it->second.region == region && it->second.state == MemberState::kLeft) {
      members_.erase(it);
      return true;
    }
  }
  return false;
}

void ClusterView::Rebuild() {
  std::map<std::string, std::vector<ReplicaId>> ids;
  for (const auto& [id, m] : members_) {
    if (m.state != MemberState::kLeft) ids[m.region].push_back(id);
  }
  rings_.clear();
  for (auto& [region, list] : ids) {
    rings_[region] = std::make_shared<const Ring>(std::move(list), vnodes_);
  }
}

const Ring* ClusterView::RingOf(const std::string& region) const {
  auto it = rings_.find(region);
  return it == rings_.end() ? nullptr : it->second.get();
}

std::vector<ReplicaId> ClusterView::Owners(std::string_view key) const {
  return Owners(key, self_.region);
}

std::vector<ReplicaId> ClusterView::Owners(std::string_view key,
                                           const std::string& region) const {
  const Ring* ring = RingOf(region);
  if (ring == nullptr) return {};
  return ring->Owners(key, replication_factor_);
}

const Member* ClusterView::Find(ReplicaId id) const {
  auto it = members_.find(id);
  return it == members_.end() ? nullptr : &it->second;
}

bool ClusterView::Up(ReplicaId id) const {
  const Member* m = Find(id);
  return m != nullptr && IsUp(m->state);
}

std::vector<std::string> ClusterView::Regions() const {
  std::vector<std::string> out{self_.region};
  for (const auto& [region, ring] : rings_) {
    if (region != self_.region) out.push_back(region);
  }
  return out;
}

std::vector<const Member*> ClusterView::Members() const {
  std::vector<const Member*> out;
  for (const auto& [id, m] : members_) out.push_back(&m);
  std::sort(out.begin(), out.end(), [this](const Member* a, const Member* b) {
    bool a_mine = a->region == self_.region, b_mine = b->region == self_.region;
    if (a_mine != b_mine) return a_mine;
    if (a->region != b->region) return a->region < b->region;
    return a->name < b->name;
  });
  return out;
}

double ClusterView::OwnedShare(ReplicaId id) const {
  const Member* m = Find(id);
  const Ring* ring = m == nullptr ? nullptr : RingOf(m->region);
  if (ring == nullptr) return 0;
  std::vector<bool> owned = ring->OwnedSegments(id, replication_factor_);
  return static_cast<double>(std::count(owned.begin(), owned.end(), true)) / owned.size();
}

double ClusterView::PrimaryShare(ReplicaId id) const {
  const Member* m = Find(id);
  const Ring* ring = m == nullptr ? nullptr : RingOf(m->region);
  return ring == nullptr ? 0 : ring->PrimaryShare(id);
}

std::vector<bool> ClusterView::OwnSegments() const {
  const Ring* ring = RingOf(self_.region);
  if (ring == nullptr) return std::vector<bool>(kSegments, false);
  return ring->OwnedSegments(self_.id, replication_factor_);
}

std::vector<PeerTarget> ClusterView::Targets() const {
  std::vector<PeerTarget> out;
  for (const auto& [id, m] : members_) {
    if (id == self_.id || m.state == MemberState::kLeft) continue;
    PeerTarget t;
    t.id = id;
    t.name = m.name;
    t.region = m.region;
    auto route = m.peer_routes.find(self_.region);
    t.address = m.region != self_.region && route != m.peer_routes.end() ? route->second
                                                                         : m.peer_address;
    if (t.address.empty()) continue;  // serves no peer API
    t.state = m.state;
    const Ring* ring = RingOf(m.region);
    t.owned = ring == nullptr ? std::vector<bool>(kSegments, false)
                              : ring->OwnedSegments(id, replication_factor_);
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<Member> ClusterView::RemoteMembers() const {
  std::vector<Member> out;
  for (const auto& [id, m] : members_) {
    if (m.region != self_.region) out.push_back(m);
  }
  return out;
}

std::vector<Member> ClusterView::LocalMembers() const {
  std::vector<Member> out;
  for (const auto& [id, m] : members_) {
    if (m.region == self_.region) out.push_back(m);
  }
  return out;
}

}  // namespace geokv

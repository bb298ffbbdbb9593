#include "server/admin.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <utility>
#include <vector>

#include "schema/kv_text.h"
#include "util/hash.h"

namespace geokv {
namespace {

rpc::MemberState WireState(MemberState s) {
  switch (s) {
    case MemberState::kAlive: return rpc::MemberState::ALIVE;
    case MemberState::kSuspect: return rpc::MemberState::SUSPECT;
    case MemberState::kDead: return rpc::MemberState::DEAD;
    case MemberState::kLeft: return rpc::MemberState::LEFT;
  }
  return rpc::MemberState::DEAD;
}

}  // namespace

Admin::Admin(AsyncStore& store, Replicator& replicator, const ClusterView& view,
             AdminOptions options)
    : store_(store), replicator_(replicator), view_(view), options_(std::move(options)) {}

kj::Promise<void> Admin::Info(rpc::NodeInfo::Builder out, bool with_peers) {
  Store& store = store_.store();
  out.setName(options_.name);
  out.setRegion(options_.region);
  out.setReplicaId(store.node_id());
  out.setVersion(GEOKV_VERSION);
  out.setApiVersion(1);
  std::vector<uint64_t> digests = store.TreeDigests();
  out.setStateDigest(Hash64(std::string_view(reinterpret_cast<const char*>(digests.data()),
                                             digests.size() * sizeof(uint64_t))));
  out.setLastSeq(store.LastSeq());
  out.setClockOffsetMs(replicator_.ClockOffsetMs());
  out.setClockSamples(static_cast<uint32_t>(replicator_.ClockSamples()));
  out.setUnsettledSegments(static_cast<uint32_t>(replicator_.UnsettledSegments()));
  Status writes = replicator_.WritesAllowed();
  if (!writes.ok()) out.setWritesRefused(writes.message());
  Replicator::HintStats hints = replicator_.Hints();
  out.setHintsStored(hints.stored);
  out.setHintsReplayed(hints.replayed);
  out.setHintsDropped(hints.dropped);
  out.setHintsPending(hints.pending);
  out.setForwarded(static_cast<uint64_t>(options_.metrics->forwarded.Value()));
  out.setReadRepairs(static_cast<uint64_t>(options_.metrics->read_repairs.Value()));
  std::vector<PeerStatus> peers;
  if (with_peers) peers = replicator_.Peers();
  auto list = out.initPeers(peers.size());
  for (size_t i = 0; i < peers.size(); ++i) {
    const PeerStatus& p = peers[i];
    auto info = list[i];
    info.setRegion(p.address.region);
    info.setAddress(p.address.address);
    info.setName(p.name);
    info.setConnected(p.connected);
    info.setRepairing(p.repairing);
    info.setAcked(p.acked);
    info.setBacklogBytes(p.backlog_bytes);
    info.setClockOffsetMs(p.clock_offset_ms.value_or(0));
    info.setClockSampled(p.clock_offset_ms.has_value());
  }
  // The store keeps the count in memory (storage/store.h): no read.
  auto keys = store_.store().KeyCount();
  out.setKeyCount(keys.ok() ? *keys : 0);
  return kj::READY_NOW;
}

void Admin::Describe(const Member& m, rpc::MemberInfo::Builder out) const {
  out.setName(m.name);
  out.setRegion(m.region);
  out.setReplicaId(m.id);
  out.setState(WireState(m.state));
  out.setIncarnation(m.incarnation);
  if (m.region == view_.region()) out.setGossipAddress(m.gossip_address);
  out.setClientAddress(m.client_address);
  auto route = m.peer_routes.find(view_.region());
  out.setPeerAddress(m.region != view_.region() && route != m.peer_routes.end()
                         ? route->second
                         : m.peer_address);
  out.setOwnedShare(view_.OwnedShare(m.id));
  out.setPrimaryShare(view_.PrimaryShare(m.id));
}

void Admin::Cluster(rpc::ClusterInfo::Builder out) const {
  out.setReplicationFactor(static_cast<uint32_t>(view_.replication_factor()));
  out.setVnodes(static_cast<uint32_t>(view_.vnodes()));
  out.setFailureDetections(failure_detections_ ? failure_detections_() : 0);
  std::vector<const Member*> members = view_.Members();
  auto list = out.initMembers(members.size());
  for (size_t i = 0; i < members.size(); ++i) Describe(*members[i], list[i]);
}

void Admin::Owners(capnp::Data::Reader key, rpc::OwnersReply::Builder out) const {
  Status s = CheckKey(key, options_.limits);
  SetOutcome(s, out.initOutcome());
  if (!s.ok()) return;
  out.setSegment(static_cast<uint32_t>(TreeSegmentOf(View(key))));
  std::vector<std::string> regions = view_.Regions();
  auto list = out.initRegions(regions.size());
  for (size_t i = 0; i < regions.size(); ++i) {
    list[i].setRegion(regions[i]);
    std::vector<ReplicaId> owners = view_.Owners(View(key), regions[i]);
    auto owned = list[i].initOwners(owners.size());
    for (size_t j = 0; j < owners.size(); ++j) {
      if (const Member* m = view_.Find(owners[j])) Describe(*m, owned[j]);
    }
  }
}

Status Admin::Leave() { return leave_ ? leave_() : Status::Unavailable("this node cannot leave"); }

Status Admin::Remove(const std::string& wanted) {
  std::optional<ReplicaId> id;
  for (const Member* m : view_.Members()) {
    if (m->region == view_.region() &&
        (m->name == wanted || fmt::format("{:016x}", m->id) == wanted)) {
      id = m->id;
    }
  }
  if (!remove_) {
    return Status::Unavailable("this node runs no gossip (--gossip-listen): its region has no "
                               "other members");
  }
  if (!id) return Status::NotFound("region " + view_.region() + " has no member named " + wanted);
  Status s = remove_(*id);
  if (s.code() == Status::Code::kFailedPrecondition) s = Status::InvalidArgument(s.message());
  if (s.ok()) spdlog::info("member {} of region {} removed", wanted, view_.region());
  return s;
}

}  // namespace geokv

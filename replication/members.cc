#include "replication/members.h"

#include <capnp/message.h>

#include <string>

#include "schema/framing.h"

#include "util/coding.h"
#include "util/hash.h"

namespace geokv {

namespace {

MemberState FromWire(peer::MemberState s) {
  switch (s) {
    case peer::MemberState::ALIVE: return MemberState::kAlive;
    case peer::MemberState::SUSPECT: return MemberState::kSuspect;
    case peer::MemberState::DEAD: return MemberState::kDead;
    case peer::MemberState::LEFT: return MemberState::kLeft;
  }
  return MemberState::kDead;
}

peer::MemberState ToWire(MemberState s) {
  switch (s) {
    case MemberState::kAlive: return peer::MemberState::ALIVE;
    case MemberState::kSuspect: return peer::MemberState::SUSPECT;
    case MemberState::kDead: return peer::MemberState::DEAD;
    case MemberState::kLeft: return peer::MemberState::LEFT;
  }
  return peer::MemberState::DEAD;
}

bool FieldFits(const std::string& s) { return s.size() <= kMaxMemberFieldBytes; }

Member DecodeMember(peer::Member::Reader m) {
  Member r;
  r.id = m.getReplicaId();
  r.name = m.getName();
  r.region = m.getRegion();
  r.peer_address = m.getPeerAddress();
  r.client_address = m.getClientAddress();
  for (auto route : m.getRoutes()) r.peer_routes[route.getRegion()] = route.getAddress();
  r.incarnation = m.getIncarnation();
  r.state = FromWire(m.getState());
  return r;
}

}  // namespace

std::vector<Member> DecodeMembers(capnp::List<peer::Member>::Reader list) {
  std::vector<Member> out;
  for (auto m : list) out.push_back(DecodeMember(m));
  return out;
}

void EncodeMembers(const std::vector<Member>& members,
                   capnp::List<peer::Member>::Builder out) {
  for (size_t i = 0; i < members.size(); ++i) {
    const Member& r = members[i];
    auto m = out[i];
    m.setReplicaId(r.id);
    m.setName(r.name);
    m.setRegion(r.region);
    m.setPeerAddress(r.peer_address);
    m.setClientAddress(r.client_address);
    auto routes = m.initRoutes(r.peer_routes.size());
    size_t j = 0;
    for (const auto& [region, address] : r.peer_routes) {
      routes[j].setRegion(region);
      routes[j].setAddress(address);
      ++j;
    }
    m.setIncarnation(r.incarnation);
    m.setState(ToWire(r.state));
  }
}

uint64_t ViewHash(const std::vector<Member>& members) {
  std::string bytes;
  for (const Member& m : members) {
    bytes += EncodeBigEndian64(m.id) + EncodeBigEndian64(m.incarnation);
    bytes += static_cast<char>(m.state);
    for (const std::string* s : {&m.name, &m.region, &m.peer_address, &m.client_address}) {
      bytes += EncodeBigEndian64(s->size()) + *s;
    }
    for (const auto& [region, address] : m.peer_routes) {
      bytes += EncodeBigEndian64(region.size()) + region + EncodeBigEndian64(address.size()) + address;
    }
  }
  return Hash64(bytes);
}

bool WithinBounds(const Member& m) {
  if (m.id == 0 || m.peer_routes.size() > kMaxMemberRoutes) return false;
  for (const std::string* s : {&m.name, &m.region, &m.peer_address, &m.client_address}) {
    if (!FieldFits(*s)) return false;
  }
  for (const auto& [region, address] : m.peer_routes) {
    if (!FieldFits(region) || !FieldFits(address)) return false;
  }
  return true;
}

std::vector<Member> RemoteMembers(std::string_view region,
                                  capnp::List<peer::Member>::Reader list) {
  std::vector<Member> out;
  if (region.empty() || region.size() > kMaxMemberFieldBytes) return out;
  // Past the bound, members that left are the ones left out: they are
  // known only so that they are not dialled.
  for (bool left : {false, true}) {
    for (auto m : list) {
      if (out.size() == kMaxRegionMembers) return out;
      if ((m.getState() == peer::MemberState::LEFT) != left) continue;
      // Sizes are checked on the wire form, so an oversized entry is never copied.
      const std::string_view member_region(m.getRegion().cStr(), m.getRegion().size());
      if (member_region != region || m.getRoutes().size() > kMaxMemberRoutes ||
          m.getName().size() > kMaxMemberFieldBytes ||
          m.getPeerAddress().size() > kMaxMemberFieldBytes ||
          m.getClientAddress().size() > kMaxMemberFieldBytes) {
        continue;
      }
      Member decoded = DecodeMember(m);
      if (WithinBounds(decoded)) out.push_back(std::move(decoded));
    }
  }
  return out;
}

void LearnMembers(const ReplicatorOptions& options, std::string_view region,
                  capnp::List<peer::Member>::Reader list) {
  if (!options.on_remote_members || list.size() == 0 || region == options.region) return;
  std::vector<Member> members = RemoteMembers(region, list);
  if (!members.empty()) options.on_remote_members(std::string(region), std::move(members));
}

std::vector<Member> MembersFor(const ReplicatorOptions& options, std::string_view region) {
  if (region == options.region || !options.local_members) return {};
  return options.local_members();
}

std::string EncodeLearnedMembers(const KeptMembers& kept) {
  capnp::MallocMessageBuilder message(kFirstSegmentWords);
  auto root = message.initRoot<peer::LearnedMembers>();
  EncodeMembers(kept.remote, root.initMembers(static_cast<unsigned>(kept.remote.size())));
  auto seeds = root.initRegionSeeds(static_cast<unsigned>(kept.region_seeds.size()));
  for (unsigned i = 0; i < seeds.size(); ++i) seeds.set(i, kept.region_seeds[i]);
  return FrameMessage(message);
}

std::optional<KeptMembers> DecodeLearnedMembers(std::string_view bytes) {
  KeptMembers kept;
  Status read = ReadFramed(bytes, [&kept](capnp::MessageReader& m) {
    auto root = m.getRoot<peer::LearnedMembers>();
    for (auto member : root.getMembers()) {
      Member decoded = DecodeMember(member);
      if (WithinBounds(decoded)) kept.remote.push_back(std::move(decoded));
    }
    for (auto seed : root.getRegionSeeds()) {
      if (kept.region_seeds.size() == kMaxRegionMembers) break;
      if (seed.size() > 0 && seed.size() <= kMaxMemberFieldBytes) {
        kept.region_seeds.emplace_back(seed.cStr(), seed.size());
      }
    }
    return Status::OK();
  });
  if (!read.ok()) return std::nullopt;
  return kept;
}

}  // namespace geokv

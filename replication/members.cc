#include "replication/members.h"

#include <string>

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

}  // namespace

std::vector<Member> DecodeMembers(capnp::List<peer::Member>::Reader list) {
  std::vector<Member> out;
  for (auto m : list) {
    Member r;
    r.id = m.getReplicaId();
    r.name = m.getName();
    r.region = m.getRegion();
    r.peer_address = m.getPeerAddress();
    r.client_address = m.getClientAddress();
    for (auto route : m.getRoutes()) r.peer_routes[route.getRegion()] = route.getAddress();
    r.incarnation = m.getIncarnation();
    r.state = FromWire(m.getState());
    out.push_back(std::move(r));
  }
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

}  // namespace geokv

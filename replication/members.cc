#include "replication/members.h"

#include <string>

#include "util/coding.h"
#include "util/hash.h"

namespace geokv {

namespace {

PeerState FromWire(peer::MemberState s) {
  switch (s) {
    case peer::MemberState::ALIVE: return PeerState::kAlive;
    case peer::MemberState::SUSPECT: return PeerState::kSuspect;
    case peer::MemberState::DEAD: return PeerState::kDead;
    case peer::MemberState::LEFT: return PeerState::kLeft;
  }
  return PeerState::kDead;
}

}  // namespace

std::vector<MemberRecord> DecodeMembers(capnp::List<peer::Member>::Reader list) {
  std::vector<MemberRecord> out;
  for (auto m : list) {
    MemberRecord r;
    r.id = m.getReplicaId();
    r.name = m.getName();
    r.region = m.getRegion();
    r.peer_address = m.getPeerAddress();
    r.client_address = m.getClientAddress();
    for (auto route : m.getRoutes()) r.routes[route.getRegion()] = route.getAddress();
    r.incarnation = m.getIncarnation();
    r.state = FromWire(m.getState());
    out.push_back(std::move(r));
  }
  return out;
}

void EncodeMembers(const std::vector<MemberRecord>& members,
                   capnp::List<peer::Member>::Builder out) {
  for (size_t i = 0; i < members.size(); ++i) {
    const MemberRecord& r = members[i];
    auto m = out[i];
    m.setReplicaId(r.id);
    m.setName(r.name);
    m.setRegion(r.region);
    m.setPeerAddress(r.peer_address);
    m.setClientAddress(r.client_address);
    auto routes = m.initRoutes(r.routes.size());
    size_t j = 0;
    for (const auto& [region, address] : r.routes) {
      routes[j].setRegion(region);
      routes[j].setAddress(address);
      ++j;
    }
    m.setIncarnation(r.incarnation);
    m.setState(static_cast<peer::MemberState>(static_cast<uint16_t>(r.state)));
  }
}

uint64_t ViewHash(const std::vector<MemberRecord>& members) {
  std::string bytes;
  for (const MemberRecord& m : members) {
    bytes += EncodeBigEndian64(m.id) + EncodeBigEndian64(m.incarnation);
    bytes += static_cast<char>(m.state);
    for (const std::string* s : {&m.name, &m.region, &m.peer_address, &m.client_address}) {
      bytes += EncodeBigEndian64(s->size()) + *s;
    }
    for (const auto& [region, address] : m.routes) {
      bytes += EncodeBigEndian64(region.size()) + region + EncodeBigEndian64(address.size()) + address;
    }
  }
  return Hash64(bytes);
}

}  // namespace geokv

// The gossip wire form of membership packets (schema/gossip.capnp): the
// one converter of members to and from it, the size budget of an update,
// and Encode and Decode with their bounds.

#include "cluster/membership.h"

#include <capnp/message.h>

#include <algorithm>
#include <cassert>
#include <iterator>
#include <utility>

#include "schema/framing.h"
#include "schema/gossip.capnp.h"

namespace geokv {
namespace {

size_t TextWords(const std::string& s) { return s.empty() ? 0 : (s.size() + 1 + 7) / 8; }

capnp::Text::Reader AsText(const std::string& s) { return capnp::Text::Reader(s.c_str(), s.size()); }

std::string FromText(capnp::Text::Reader t) { return std::string(t.begin(), t.size()); }

gossip::MemberState ToWire(MemberState s) {
  switch (s) {
    case MemberState::kAlive:
      return gossip::MemberState::ALIVE;
    case MemberState::kSuspect:
      return gossip::MemberState::SUSPECT;
    case MemberState::kDead:
      return gossip::MemberState::DEAD;
    case MemberState::kLeft:
      return gossip::MemberState::LEFT;
  }
  return gossip::MemberState::ALIVE;
}

bool FromWire(gossip::MemberState s, MemberState* out) {
  switch (s) {
    case gossip::MemberState::ALIVE:
      *out = MemberState::kAlive;
      return true;
    case gossip::MemberState::SUSPECT:
      *out = MemberState::kSuspect;
      return true;
    case gossip::MemberState::DEAD:
      *out = MemberState::kDead;
      return true;
    case gossip::MemberState::LEFT:
      *out = MemberState::kLeft;
      return true;
  }
  return false;
}

// Member to gossip.capnp's MemberUpdate, the only such converter (Decode
// reads updates back). Empty strings stay null pointers, which UpdateBytes
// relies on.
void FillUpdate(const Member& m, ReplicaId suspected_by, gossip::MemberUpdate::Builder b) {
  b.setId(m.id);
  b.setSuspectedBy(suspected_by);
  b.setIncarnation(m.incarnation);
  b.setState(ToWire(m.state));
  if (!m.name.empty()) b.setName(AsText(m.name));
  if (!m.region.empty()) b.setRegion(AsText(m.region));
  if (!m.gossip_address.empty()) b.setGossipAddress(AsText(m.gossip_address));
  if (!m.client_address.empty()) b.setClientAddress(AsText(m.client_address));
  if (!m.peer_address.empty()) b.setPeerAddress(AsText(m.peer_address));
  if (!m.peer_routes.empty()) {
    auto routes = b.initPeerRoutes(static_cast<unsigned>(m.peer_routes.size()));
    unsigned i = 0;
    for (const auto& [region, address] : m.peer_routes) {
      if (!region.empty()) routes[i].setRegion(AsText(region));
      if (!address.empty()) routes[i].setAddress(AsText(address));
      ++i;
    }
  }
}

}  // namespace

size_t Membership::UpdateBytes(const Member& m) const {
  // An element of a struct list is the struct's data and pointer words,
  // followed by what its pointers point to.
  size_t words = gossip::MemberUpdate::_capnpPrivate::dataWordSize +
                 gossip::MemberUpdate::_capnpPrivate::pointerCount + TextWords(m.name) +
                 TextWords(m.region) + TextWords(m.gossip_address) +
                 TextWords(m.client_address) + TextWords(m.peer_address);
  if (!m.peer_routes.empty()) {
    words += 1;  // the list's tag
    for (const auto& [region, address] : m.peer_routes) {
      words += gossip::PeerRoute::_capnpPrivate::dataWordSize +
               gossip::PeerRoute::_capnpPrivate::pointerCount + TextWords(region) +
               TextWords(address);
    }
  }
  return words * sizeof(capnp::word);
}

std::string Membership::Encode(const Packet& p, const std::vector<const Member*>& updates) const {
  // One segment holds a whole packet, so the size estimate holds.
  capnp::MallocMessageBuilder message(
      static_cast<unsigned>(options_.max_packet_bytes / sizeof(capnp::word) + 64));
  auto root = message.initRoot<gossip::Packet>();
  root.setMagic(gossip::GOSSIP_MAGIC);
  root.setVersion(gossip::GOSSIP_VERSION);
  root.setSenderId(self_.id);
  root.setSenderIncarnation(self_.incarnation);
  switch (p.kind) {
    case Kind::kPing: {
      auto ping = root.initPing();
      ping.setSeq(p.seq);
      ping.setTargetId(p.target_id);
      break;
    }
    case Kind::kAck:
      root.initAck().setSeq(p.seq);
      break;
    case Kind::kPingReq: {
      auto req = root.initPingReq();
      req.setSeq(p.seq);
      req.setTargetId(p.target_id);
      req.setTargetAddress(AsText(p.target_address));
      break;
    }
    case Kind::kJoin:
      root.setJoin();
      break;
    case Kind::kJoinReply:
      root.setJoinReply();
      break;
    case Kind::kNack:
      root.initNack().setSeq(p.seq);
      break;
  }
  if (!updates.empty()) {
    auto list = root.initUpdates(static_cast<unsigned>(updates.size()));
    for (unsigned i = 0; i < updates.size(); ++i) {
      const Member& m = *updates[i];
      ReplicaId suspected_by = 0;
      if (auto it = members_.find(m.id); m.state == MemberState::kSuspect && it != members_.end()) {
        suspected_by = it->second.suspected_by;
      }
      FillUpdate(m, suspected_by, list[i]);
    }
  }
  return FrameMessage(message);
}

bool Membership::Decode(std::string_view bytes, Packet* out) {
  Status s = ReadFramed(bytes, [out](capnp::MessageReader& reader) -> Status {
    auto p = reader.getRoot<gossip::Packet>();
    if (p.getMagic() != gossip::GOSSIP_MAGIC) return Status::Corruption("not a gossip packet");
    if (p.getVersion() != gossip::GOSSIP_VERSION) {
      return Status::Corruption("gossip version " + std::to_string(p.getVersion()));
    }
    out->sender_id = p.getSenderId();
    out->sender_incarnation = p.getSenderIncarnation();
    switch (p.which()) {
      case gossip::Packet::PING:
        out->kind = Kind::kPing;
        out->seq = p.getPing().getSeq();
        out->target_id = p.getPing().getTargetId();
        break;
      case gossip::Packet::ACK:
        out->kind = Kind::kAck;
        out->seq = p.getAck().getSeq();
        break;
      case gossip::Packet::PING_REQ:
        out->kind = Kind::kPingReq;
        out->seq = p.getPingReq().getSeq();
        out->target_id = p.getPingReq().getTargetId();
        out->target_address = FromText(p.getPingReq().getTargetAddress());
        break;
      case gossip::Packet::JOIN:
        out->kind = Kind::kJoin;
        break;
      case gossip::Packet::JOIN_REPLY:
        out->kind = Kind::kJoinReply;
        break;
      case gossip::Packet::NACK:
        out->kind = Kind::kNack;
        out->seq = p.getNack().getSeq();
        break;
      default:
        return Status::Corruption("unknown packet kind");
    }
    for (auto u : p.getUpdates()) {
      Member m;
      // An entry in a state this version does not know is skipped.
      if (!FromWire(u.getState(), &m.state)) continue;
      m.id = u.getId();
      m.incarnation = u.getIncarnation();
      // No member counts this high; refuting it would wrap to 0.
      if (m.incarnation > kMaxIncarnation) continue;
      m.name = FromText(u.getName());
      m.region = FromText(u.getRegion());
      m.gossip_address = FromText(u.getGossipAddress());
      m.client_address = FromText(u.getClientAddress());
      m.peer_address = FromText(u.getPeerAddress());
      for (auto r : u.getPeerRoutes()) {
        m.peer_routes[FromText(r.getRegion())] = FromText(r.getAddress());
      }
      out->updates.emplace_back(std::move(m), u.getSuspectedBy());
    }
    return Status::OK();
  });
  return s.ok();
}

}  // namespace geokv

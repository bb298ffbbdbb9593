#include "domain/member.h"

#include <tuple>

namespace geokv {

std::string_view MemberStateName(MemberState state) {
  switch (state) {
    case MemberState::kAlive:
      return "alive";
    case MemberState::kSuspect:
      return "suspect";
    case MemberState::kDead:
      return "dead";
    case MemberState::kLeft:
      return "left";
  }
  return "unknown";
}

bool operator==(const Member& a, const Member& b) {
  return a.id == b.id && a.name == b.name && a.region == b.region &&
         a.gossip_address == b.gossip_address && a.client_address == b.client_address &&
         a.peer_address == b.peer_address && a.peer_routes == b.peer_routes &&
         a.incarnation == b.incarnation && a.state == b.state;
}

bool Supersedes(const Member& a, const Member& b) {
  // The state order alive < suspect < dead < left is the enum's.
  return std::make_tuple(a.incarnation, static_cast<int>(a.state)) >
         std::make_tuple(b.incarnation, static_cast<int>(b.state));
}

}  // namespace geokv

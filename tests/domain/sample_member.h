// Members for tests: a fully filled one, and a change of each field.

#ifndef GEOKV_TESTS_DOMAIN_SAMPLE_MEMBER_H_
#define GEOKV_TESTS_DOMAIN_SAMPLE_MEMBER_H_

#include <string>
#include <vector>

#include "domain/member.h"

namespace geokv {

// Member `i` of `region`, alive at incarnation 0, every address set and a
// route for "us"; distinct i give distinct ids and addresses.
inline Member SampleMember(int i, const std::string& region = "eu") {
  Member m;
  m.id = 1000 + static_cast<ReplicaId>(i);
  m.name = "node-" + std::to_string(i);
  m.region = region;
  m.gossip_address = "10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250) + ":7946";
  m.client_address = "10.0.0." + std::to_string(i) + ":7400";
  m.peer_address = "10.0.0." + std::to_string(i) + ":7401";
  m.peer_routes["us"] = "wan-proxy.example:" + std::to_string(9000 + i);
  return m;
}

// One change of one field of a member, named by the field.
struct FieldChange {
  const char* field;
  void (*apply)(Member&);
};

// A change of every field of Member, each to a value SampleMember never has.
inline std::vector<FieldChange> EveryFieldChange() {
  return {
      {"id", [](Member& m) { m.id = 1; }},
      {"name", [](Member& m) { m.name = "changed"; }},
      {"region", [](Member& m) { m.region = "changed"; }},
      {"gossip_address", [](Member& m) { m.gossip_address = "changed:1"; }},
      {"client_address", [](Member& m) { m.client_address = "changed:1"; }},
      {"peer_address", [](Member& m) { m.peer_address = "changed:1"; }},
      {"peer_routes", [](Member& m) { m.peer_routes["changed"] = "changed:1"; }},
      {"incarnation", [](Member& m) { m.incarnation += 1; }},
      {"state", [](Member& m) {
         m.state = m.state == MemberState::kDead ? MemberState::kLeft : MemberState::kDead;
       }},
  };
}

}  // namespace geokv

#endif  // GEOKV_TESTS_DOMAIN_SAMPLE_MEMBER_H_

#include "replication/members.h"

#include <capnp/any.h>
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/domain/sample_member.h"

namespace geokv {
namespace {

// A member with every field set, and one with few.
std::vector<Member> TwoMembers() {
  Member a = SampleMember(1);
  a.peer_routes["ap"] = "proxy-ap:9001";
  a.incarnation = 3;
  a.state = MemberState::kSuspect;
  Member b;
  b.id = 12;
  b.name = "eu-2";
  b.region = "eu";
  b.incarnation = 7;
  b.state = MemberState::kLeft;
  return {a, b};
}

std::vector<Member> RoundTrip(const std::vector<Member>& members) {
  capnp::MallocMessageBuilder message;
  auto list = message.initRoot<capnp::AnyPointer>().initAs<capnp::List<peer::Member>>(
      static_cast<unsigned>(members.size()));
  EncodeMembers(members, list);
  return DecodeMembers(list.asReader());
}

TEST(Members, PeerWireCarriesEveryFieldButTheGossipAddress) {
  std::vector<Member> sent = TwoMembers();
  std::vector<Member> got = RoundTrip(sent);
  ASSERT_EQ(got.size(), sent.size());
  EXPECT_EQ(got[0].gossip_address, "");
  sent[0].gossip_address.clear();
  EXPECT_EQ(got, sent);
  for (MemberState s : {MemberState::kAlive, MemberState::kSuspect, MemberState::kDead,
                        MemberState::kLeft}) {
    std::vector<Member> one{sent[1]};
    one[0].state = s;
    EXPECT_EQ(RoundTrip(one)[0].state, s) << MemberStateName(s);
  }
}

TEST(Members, ViewHashSurvivesTheWireAndSeesEveryCarriedField) {
  const std::vector<Member> sent = TwoMembers();
  EXPECT_EQ(ViewHash(RoundTrip(sent)), ViewHash(sent));
  for (const FieldChange& change : EveryFieldChange()) {
    std::vector<Member> other = sent;
    change.apply(other[0]);
    bool carried = std::string(change.field) != "gossip_address";
    EXPECT_EQ(ViewHash(other) != ViewHash(sent), carried) << change.field;
  }
}

}  // namespace
}  // namespace geokv

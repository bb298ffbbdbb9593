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

// A wire list of `members`, in a message `builder` holds.
capnp::List<peer::Member>::Reader WireList(capnp::MallocMessageBuilder& builder,
                                           const std::vector<Member>& members) {
  auto list = builder.initRoot<capnp::AnyPointer>().initAs<capnp::List<peer::Member>>(
      static_cast<unsigned>(members.size()));
  EncodeMembers(members, list);
  return list.asReader();
}

TEST(Members, RemoteMembersTakesOnlyTheSendersRegionWithinBounds) {
  const std::string long_text(kMaxMemberFieldBytes + 1, 'x');
  std::vector<Member> sent;
  for (int i = 0; i < 7; ++i) sent.push_back(SampleMember(i, "us"));
  sent[1].region = "ap";                      // another region's
  sent[2].id = 0;                             // no identity
  sent[3].name = long_text;                   // oversized fields
  sent[4].peer_routes["ap"] = long_text;
  for (size_t r = 0; r <= kMaxMemberRoutes; ++r) {
    sent[5].peer_routes["r" + std::to_string(r)] = "a:1";
  }
  capnp::MallocMessageBuilder builder;
  std::vector<Member> got = RemoteMembers("us", WireList(builder, sent));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].id, sent[0].id);
  EXPECT_EQ(got[1].id, sent[6].id);
  EXPECT_TRUE(RemoteMembers(long_text, WireList(builder, sent)).empty());
}

TEST(Members, RemoteMembersKeepsAtMostTheBoundOfOneRegionThoseThatLeftLast) {
  std::vector<Member> sent;
  for (size_t i = 0; i < kMaxRegionMembers + 10; ++i) {
    sent.push_back(SampleMember(static_cast<int>(i), "us"));
    // The first 20 left: 10 of them do not fit.
    if (i < 20) sent.back().state = MemberState::kLeft;
  }
  capnp::MallocMessageBuilder builder;
  std::vector<Member> got = RemoteMembers("us", WireList(builder, sent));
  ASSERT_EQ(got.size(), kMaxRegionMembers);
  size_t left = 0;
  for (const Member& m : got) left += m.state == MemberState::kLeft;
  EXPECT_EQ(left, 10u);
  EXPECT_EQ(got.back().id, sent[9].id);
}

TEST(Members, LearnedMembersRoundTripAndBadBytesDoNotDecode) {
  KeptMembers kept;
  kept.remote = TwoMembers();
  for (Member& m : kept.remote) m.gossip_address.clear();
  kept.region_seeds = {"127.0.0.1:7711", "127.0.0.1:7712"};
  auto got = DecodeLearnedMembers(EncodeLearnedMembers(kept));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, kept);
  auto none = DecodeLearnedMembers(EncodeLearnedMembers({}));
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->remote.empty());
  EXPECT_TRUE(none->region_seeds.empty());
  EXPECT_FALSE(DecodeLearnedMembers("not a message").has_value());
  EXPECT_FALSE(DecodeLearnedMembers(std::string(64, '\xff')).has_value());
}

}  // namespace
}  // namespace geokv

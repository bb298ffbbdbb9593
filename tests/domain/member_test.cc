#include "domain/member.h"

#include <gtest/gtest.h>

#include "tests/domain/sample_member.h"

namespace geokv {
namespace {

TEST(Member, SupersedesFollowsTheSwimRules) {
  Member known = SampleMember(1);
  known.incarnation = 5;
  auto with = [&](uint64_t incarnation, MemberState state) {
    Member m = known;
    m.incarnation = incarnation;
    m.state = state;
    return m;
  };
  using S = MemberState;
  // A higher incarnation wins whatever the states.
  EXPECT_TRUE(Supersedes(with(6, S::kAlive), with(5, S::kDead)));
  EXPECT_TRUE(Supersedes(with(6, S::kAlive), with(5, S::kLeft)));
  EXPECT_FALSE(Supersedes(with(4, S::kDead), with(5, S::kAlive)));
  // Equal incarnation: alive < suspect < dead < left.
  EXPECT_TRUE(Supersedes(with(5, S::kSuspect), with(5, S::kAlive)));
  EXPECT_TRUE(Supersedes(with(5, S::kDead), with(5, S::kSuspect)));
  EXPECT_TRUE(Supersedes(with(5, S::kDead), with(5, S::kAlive)));
  EXPECT_FALSE(Supersedes(with(5, S::kAlive), with(5, S::kSuspect)));
  EXPECT_FALSE(Supersedes(with(5, S::kSuspect), with(5, S::kDead)));
  // Left overrides everything of equal or lower incarnation, only that.
  for (S s : {S::kAlive, S::kSuspect, S::kDead}) {
    EXPECT_TRUE(Supersedes(with(5, S::kLeft), with(5, s)));
    EXPECT_TRUE(Supersedes(with(5, S::kLeft), with(4, s)));
    EXPECT_FALSE(Supersedes(with(5, s), with(5, S::kLeft)));
    EXPECT_FALSE(Supersedes(with(4, S::kLeft), with(5, s)));
  }
  // Nothing supersedes itself, so merging is idempotent.
  for (S s : {S::kAlive, S::kSuspect, S::kDead, S::kLeft}) {
    EXPECT_FALSE(Supersedes(with(5, s), with(5, s)));
  }
}

TEST(Member, StatesHaveTheirNamesAndUpMeansAliveOrSuspect) {
  EXPECT_EQ(MemberStateName(MemberState::kAlive), "alive");
  EXPECT_EQ(MemberStateName(MemberState::kSuspect), "suspect");
  EXPECT_EQ(MemberStateName(MemberState::kDead), "dead");
  EXPECT_EQ(MemberStateName(MemberState::kLeft), "left");
  EXPECT_TRUE(IsUp(MemberState::kAlive));
  EXPECT_TRUE(IsUp(MemberState::kSuspect));
  EXPECT_FALSE(IsUp(MemberState::kDead));
  EXPECT_FALSE(IsUp(MemberState::kLeft));
}

TEST(Member, EqualityComparesEveryField) {
  const Member m = SampleMember(1);
  EXPECT_EQ(m, m);
  for (const FieldChange& change : EveryFieldChange()) {
    Member other = m;
    change.apply(other);
    EXPECT_NE(other, m) << change.field;
  }
}

}  // namespace
}  // namespace geokv

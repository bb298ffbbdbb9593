// What the cluster view takes from other regions' nodes: merged by the
// gossip precedence rule, within bounds, and never about another region
// than the sender's.

#include "server/cluster_view.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "replication/members.h"
#include "tests/domain/sample_member.h"

namespace geokv {
namespace {

ClusterView ViewOf(const Member& self) { return ClusterView(self, 3, 16); }

TEST(ClusterView, MergeRemoteKeepsTheBoundsOfRegionsAndMembers) {
  ClusterView view = ViewOf(SampleMember(0, "eu"));
  for (size_t r = 0; r < kMaxRemoteRegions; ++r) {
    std::string region = "r" + std::to_string(r);
    ASSERT_TRUE(view.MergeRemote(region, {SampleMember(static_cast<int>(r) + 1, region)}));
  }
  EXPECT_FALSE(view.MergeRemote("one-too-many", {SampleMember(9999, "one-too-many")}));
  EXPECT_EQ(view.RemoteMembers().size(), kMaxRemoteRegions);
  // A known region still takes changes.
  Member back = SampleMember(1, "r0");
  back.incarnation = 1;
  back.state = MemberState::kLeft;
  EXPECT_TRUE(view.MergeRemote("r0", {back}));
  EXPECT_EQ(view.Find(back.id)->state, MemberState::kLeft);

  ClusterView small = ViewOf(SampleMember(0, "eu"));
  std::vector<Member> many;
  for (size_t i = 0; i < kMaxRegionMembers + 5; ++i) {
    many.push_back(SampleMember(static_cast<int>(i) + 1, "us"));
  }
  EXPECT_TRUE(small.MergeRemote("us", many));
  EXPECT_EQ(small.RemoteMembers().size(), kMaxRegionMembers);
  many.front().incarnation = 1;
  many.front().state = MemberState::kLeft;
  EXPECT_TRUE(small.MergeRemote("us", {many.front()}));
  // At the bound a newcomer takes the place of a member that left; once
  // none is left, newcomers are left out.
  Member newcomer = SampleMember(50000, "us");
  EXPECT_TRUE(small.MergeRemote("us", {newcomer}));
  EXPECT_NE(small.Find(newcomer.id), nullptr);
  EXPECT_EQ(small.Find(many.front().id), nullptr);
  EXPECT_FALSE(small.MergeRemote("us", {SampleMember(50001, "us")}));
  EXPECT_EQ(small.RemoteMembers().size(), kMaxRegionMembers);
}

TEST(ClusterView, MergeRemoteChangesOnlyTheSendersRegionAndSkipsMembersOutOfBounds) {
  Member self = SampleMember(0, "eu");
  ClusterView view = ViewOf(self);
  ASSERT_TRUE(view.MergeRemote("us", {SampleMember(1, "us")}));
  // A node of "ap" cannot tell of "us" or "eu" members, whatever it claims.
  Member us = SampleMember(1, "ap");
  us.incarnation = 5;
  Member mine = self;
  mine.region = "ap";
  mine.incarnation = 5;
  mine.state = MemberState::kLeft;
  EXPECT_FALSE(view.MergeRemote("ap", {us, mine}));
  EXPECT_EQ(view.Find(us.id)->region, "us");
  EXPECT_EQ(view.Find(self.id)->state, MemberState::kAlive);
  Member oversized = SampleMember(2, "ap");
  oversized.peer_address = std::string(kMaxMemberFieldBytes + 1, 'x');
  EXPECT_FALSE(view.MergeRemote("ap", {oversized}));
  EXPECT_EQ(view.Find(oversized.id), nullptr);
}

}  // namespace
}  // namespace geokv

// Placement plans as a pure function: a cluster view and the replicator's
// answers in, a plan out.

#include "server/plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

namespace geokv {
namespace {

constexpr ReplicaId kSelf = 100;

class FakeFacts final : public ReplicaFacts {
 public:
  bool Syncing(size_t segment) const override { return syncing.count(segment) > 0; }
  bool Dropped(size_t segment) const override { return dropped.count(segment) > 0; }
  bool Settled(size_t segment) const override { return unsettled.count(segment) == 0; }
  bool Vouches(size_t segment) const override { return arriving.count(segment) == 0; }
  bool IsConnected(ReplicaId node) const override { return connected.count(node) > 0; }
  std::set<size_t> syncing, dropped, unsettled, arriving;
  std::set<ReplicaId> connected;
};

Member MemberOf(ReplicaId id, MemberState state = MemberState::kAlive) {
  Member m;
  m.id = id;
  m.name = "n" + std::to_string(id);
  m.region = "eu";
  m.state = state;
  return m;
}

// A view of this node and `others` (ids 101...) in region eu, N = 3.
ClusterView ViewOf(size_t others, std::vector<MemberState> states = {}) {
  ClusterView view(MemberOf(kSelf), 3, 16);
  std::vector<Member> members{MemberOf(kSelf)};
  for (size_t i = 0; i < others; ++i) {
    members.push_back(MemberOf(kSelf + 1 + i, i < states.size() ? states[i] : MemberState::kAlive));
  }
  view.SetLocal(members);
  return view;
}

bool Owns(const ClusterView& view, const std::string& key) {
  auto owners = view.Owners(key);
  return std::find(owners.begin(), owners.end(), kSelf) != owners.end();
}

// The first key of "k0", "k1", ... that this node owns (or not).
std::string KeyOwned(const ClusterView& view, bool owned) {
  for (int i = 0; i < 10000; ++i) {
    std::string k = "k" + std::to_string(i);
    if (Owns(view, k) == owned) return k;
  }
  ADD_FAILURE() << "no such key";
  return "";
}

TEST(Plan, AnOwnerRunsHereAndWaitsForItsLevel) {
  ClusterView view = ViewOf(2);
  FakeFacts facts;
  Plan quorum = MakePlan(view, {"k", Consistency::kQuorum, false, true}, facts);
  ASSERT_TRUE(quorum.status.ok()) << quorum.status.ToString();
  EXPECT_FALSE(quorum.forward_to);
  EXPECT_EQ(quorum.others.size(), 2u);
  EXPECT_TRUE(quorum.away.empty());
  EXPECT_EQ(quorum.needed, 1u);
  EXPECT_EQ(quorum.segment, TreeSegmentOf("k"));
  EXPECT_EQ(MakePlan(view, {"k", Consistency::kOne, false, true}, facts).needed, 0u);
  EXPECT_EQ(MakePlan(view, {"k", Consistency::kAll, false, false}, facts).needed, 2u);
}

TEST(Plan, TheSameInputsGiveTheSamePlan) {
  ClusterView view = ViewOf(4);
  FakeFacts facts;
  facts.connected = {101, 102, 103, 104};
  for (int i = 0; i < 50; ++i) {
    std::string key = "key" + std::to_string(i);
    Plan a = MakePlan(view, {key, Consistency::kQuorum, false, true}, facts);
    Plan b = MakePlan(view, {key, Consistency::kQuorum, false, true}, facts);
    EXPECT_EQ(a.forward_to, b.forward_to);
    EXPECT_EQ(a.others, b.others);
    EXPECT_EQ(a.needed, b.needed);
  }
}

TEST(Plan, ANonOwnerForwardsToTheFirstConnectedOwnerUp) {
  ClusterView view = ViewOf(4);
  const std::string key = KeyOwned(view, false);
  std::vector<ReplicaId> owners = view.Owners(key);
  FakeFacts facts;
  Plan none = MakePlan(view, {key, Consistency::kQuorum, false, false}, facts);
  EXPECT_TRUE(none.status.code() == Status::Code::kUnavailable);
  EXPECT_EQ(none.status.message(),
            "none of the 3 owners of the key in region eu is reachable from this node");
  facts.connected = {owners[1], owners[2]};
  Plan plan = MakePlan(view, {key, Consistency::kQuorum, false, false}, facts);
  ASSERT_TRUE(plan.status.ok());
  ASSERT_TRUE(plan.forward_to);
  EXPECT_EQ(*plan.forward_to, owners[1]);
}

TEST(Plan, AForwardedRequestRunsHereAmongTheOwners) {
  ClusterView view = ViewOf(4);
  const std::string key = KeyOwned(view, false);
  FakeFacts facts;
  Plan plan = MakePlan(view, {key, Consistency::kQuorum, true, true}, facts);
  ASSERT_TRUE(plan.status.ok()) << plan.status.ToString();
  EXPECT_FALSE(plan.forward_to);
  // This node counts as a fourth owner: a quorum of 4 is 3.
  EXPECT_EQ(plan.others.size(), 3u);
  EXPECT_EQ(plan.needed, 2u);
}

TEST(Plan, DownOwnersAreHintedAndCountAgainstTheLevel) {
  ClusterView view = ViewOf(2, {MemberState::kDead, MemberState::kSuspect});
  FakeFacts facts;
  Plan quorum = MakePlan(view, {"k", Consistency::kQuorum, false, true}, facts);
  ASSERT_TRUE(quorum.status.ok());
  EXPECT_EQ(quorum.others, std::vector<ReplicaId>{102}) << "suspect is up";
  EXPECT_EQ(quorum.away, std::vector<ReplicaId>{101});
  Plan all = MakePlan(view, {"k", Consistency::kAll, false, true}, facts);
  EXPECT_TRUE(all.status.code() == Status::Code::kUnavailable);
  EXPECT_EQ(all.status.message(), "ALL needs 3 of the key's 3 owners in region eu; 2 are up");
}

TEST(Plan, UntilJoinedOnlyOneIsServed) {
  ClusterView view = ViewOf(2);
  view.set_joined(false);
  FakeFacts facts;
  Plan quorum = MakePlan(view, {"k", Consistency::kQuorum, false, false}, facts);
  EXPECT_TRUE(quorum.status.code() == Status::Code::kUnavailable);
  EXPECT_NE(quorum.status.message().find("QUORUM needs the key's owners"), std::string::npos);
  EXPECT_TRUE(MakePlan(view, {"k", Consistency::kOne, false, false}, facts).status.ok());
}

TEST(Plan, ASyncingOwnerForwardsItsWritesAndRefusesForwardedOnes) {
  ClusterView view = ViewOf(2);
  FakeFacts facts;
  facts.syncing = {TreeSegmentOf("k")};
  facts.connected = {101, 102};
  Plan client = MakePlan(view, {"k", Consistency::kQuorum, false, true}, facts);
  ASSERT_TRUE(client.status.ok());
  EXPECT_TRUE(client.forward_to);
  Plan forwarded = MakePlan(view, {"k", Consistency::kQuorum, true, true}, facts);
  EXPECT_EQ(forwarded.status.message(), "this node is still receiving the key's segment back");
  // Reads are not held back by a hand-over.
  Plan read = MakePlan(view, {"k", Consistency::kQuorum, false, false}, facts);
  ASSERT_TRUE(read.status.ok());
  EXPECT_FALSE(read.forward_to);
}

TEST(Plan, ANodeThatHandedASegmentOverRefusesWritesForwardedThere) {
  ClusterView view = ViewOf(4);
  const std::string key = KeyOwned(view, false);
  FakeFacts facts;
  facts.dropped = {TreeSegmentOf(key)};
  Plan plan = MakePlan(view, {key, Consistency::kOne, true, true}, facts);
  EXPECT_EQ(plan.status.message(), "this node handed the key's segment over to its owners");
  EXPECT_TRUE(MakePlan(view, {key, Consistency::kOne, true, false}, facts).status.ok());
}

TEST(Plan, AQuorumWriteCountsThisNodeOnlyWhereItVouchesForTheSegment) {
  FakeFacts facts;
  facts.arriving = {TreeSegmentOf("k")};
  ClusterView view = ViewOf(2);
  // Written here, but acknowledged by both others: a coordinator that has
  // not heard that this node came to own the segment reads the others.
  Plan quorum = MakePlan(view, {"k", Consistency::kQuorum, false, true}, facts);
  ASSERT_TRUE(quorum.status.ok()) << quorum.status.ToString();
  EXPECT_FALSE(quorum.forward_to);
  EXPECT_EQ(quorum.needed, 2u);
  EXPECT_EQ(MakePlan(view, {"k", Consistency::kOne, false, true}, facts).needed, 0u);
  ClusterView one_down = ViewOf(2, {MemberState::kDead});
  EXPECT_EQ(MakePlan(one_down, {"k", Consistency::kQuorum, false, true}, facts).status.code(),
            Status::Code::kUnavailable);
  facts.arriving.clear();
  EXPECT_EQ(MakePlan(one_down, {"k", Consistency::kQuorum, false, true}, facts).needed, 1u);
}

TEST(Plan, NeededByLevel) {
  EXPECT_EQ(Needed(Consistency::kOne, 3), 1u);
  EXPECT_EQ(Needed(Consistency::kQuorum, 3), 2u);
  EXPECT_EQ(Needed(Consistency::kQuorum, 4), 3u);
  EXPECT_EQ(Needed(Consistency::kDefault, 5), 3u);
  EXPECT_EQ(Needed(Consistency::kAll, 3), 3u);
}

// Two owners answered a read that needed one: the first was compared and
// differed; the second came after and differed too. When the first one's
// state does not arrive, the second was never looked at: the read holds
// no other owner's state and must not answer. (The rule before counted
// every answer but the failed fetches, 2 - 1 >= 1, and answered a state
// that missed an acknowledged write; the nemesis saw it.)
TEST(DigestTally, AnOwnerThatAnsweredButWasNotComparedCountsForNothing) {
  DigestTally t(1, 0xAA);
  t.Answer(2, 0xBB, true);
  t.Answer(3, 0xCC, true);
  EXPECT_TRUE(t.Enough());
  EXPECT_FALSE(t.Agreed());
  EXPECT_EQ(t.differing(), (std::vector<ReplicaId>{2, 3}));
  EXPECT_FALSE(t.HeldAfterJoining(0));
  EXPECT_TRUE(t.HeldAfterJoining(1));
}

TEST(DigestTally, OwnersThatAgreeCountWithoutTheirStates) {
  DigestTally t(2, 0xAA);
  t.Answer(2, 0xAA, true);
  EXPECT_FALSE(t.Enough());
  t.Answer(3, 0xBB, true);
  EXPECT_TRUE(t.Enough());
  EXPECT_FALSE(t.Agreed());
  EXPECT_FALSE(t.HeldAfterJoining(0));
  EXPECT_TRUE(t.HeldAfterJoining(1));
  t.Answer(4, 0xAA, true);  // a late one that agrees counts as well
  EXPECT_TRUE(t.Agreed());
}

TEST(DigestTally, AnOwnerNotSettledOnTheSegmentDoesNotCount) {
  DigestTally t(1, 0xAA);
  t.Answer(2, 0xAA, false);
  EXPECT_FALSE(t.Enough());
  EXPECT_FALSE(t.Agreed());
  EXPECT_EQ(t.unsettled(), 1u);
  EXPECT_TRUE(t.differing().empty());
  t.Answer(3, 0xAA, true);
  EXPECT_TRUE(t.Agreed());
}

}  // namespace
}  // namespace geokv

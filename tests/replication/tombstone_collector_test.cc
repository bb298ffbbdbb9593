// TombstoneCollector alone, on a real store: the bound a tombstone must be
// under is every member's stable stamp, not only its writer's.

#include "replication/tombstone_collector.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <chrono>
#include <vector>

#include "testing/test_dir.h"
#include "tests/replication/replication_fixture.h"

namespace geokv {
namespace {

using std::chrono_literals::operator""s;

constexpr ReplicaId kW = 0x1001;  // a member whose log every node holds
constexpr ReplicaId kX = 0x1002;  // one whose older writes may be on their way

HlcTimestamp Before(HlcTimestamp ts) {
  if (ts.logical > 0) return {ts.wall_ms, ts.logical - 1};
  return {ts.wall_ms - 1, UINT32_MAX};
}

// One node that deleted "k", past the grace by both clocks, its log held
// by every member.
struct Rig {
  Rig() {
    deleted = a.committer->Submit("k", LwwDelete{}).wait(ws).stamp;
    unit.wall.Set(deleted.wall_ms + 60'000);
    unit.timer.Advance(kj::MINUTES);
    collector.Advance(a.store->LastSeq());
  }

  bool Present() { return *a.store->KeyDigest("k") != 0; }
  void Collect(const std::vector<ReplicaId>& members) {
    collector.Collect(members).wait(ws);
    a.committer->Drain().wait(ws);
  }

  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::WaitScope& ws = io.waitScope;
  testing::TestDir dir;
  testing::Node a{dir.Sub("a"), "a", *io.provider};
  testing::UnitEnv unit{a, *io.provider};
  TombstoneCollector collector{unit.env, TombstoneCollectorOptions{1s, 1000}};
  HlcTimestamp deleted;
};

TEST(TombstoneCollector, ADeleteWaitsForTheStableStampOfEveryMemberNotOnlyItsWriters) {
  Rig rig;
  ASSERT_LE(rig.deleted, rig.collector.stable());
  const HlcTimestamp later = rig.a.store->clock()->Now();
  ASSERT_TRUE(rig.collector.PeerStable(kW, later));
  // x's writes stamped below the delete may not have reached every node:
  // one arriving after the tombstone went would bring its value back.
  ASSERT_TRUE(rig.collector.PeerStable(kX, Before(rig.deleted)));
  rig.Collect({kW, kX});
  EXPECT_TRUE(rig.Present());

  ASSERT_TRUE(rig.collector.PeerStable(kX, later));
  rig.Collect({kW, kX});
  EXPECT_FALSE(rig.Present());
}

TEST(TombstoneCollector, AMemberWhoseStableStampIsNotKnownHoldsCollectionBack) {
  Rig rig;
  ASSERT_TRUE(rig.collector.PeerStable(kW, rig.a.store->clock()->Now()));
  rig.Collect({kW, kX});
  EXPECT_TRUE(rig.Present());
  // A member that is gone no longer holds it back.
  rig.Collect({kW});
  EXPECT_FALSE(rig.Present());
}

TEST(TombstoneCollectorBound, IsTheLeastStableStampOfThisNodeAndEveryMember) {
  const std::map<ReplicaId, HlcTimestamp> peers{{kW, {50, 0}}, {kX, {40, 7}}};
  EXPECT_EQ(TombstoneCollector::Bound({60, 0}, peers, {kW, kX}), (HlcTimestamp{40, 7}));
  EXPECT_EQ(TombstoneCollector::Bound({30, 0}, peers, {kW, kX}), (HlcTimestamp{30, 0}));
  EXPECT_EQ(TombstoneCollector::Bound({60, 0}, peers, {kW}), (HlcTimestamp{50, 0}));
  EXPECT_TRUE(TombstoneCollector::Bound({60, 0}, peers, {kW, kX, 0x1003}).IsZero());
  EXPECT_EQ(TombstoneCollector::Bound({60, 0}, peers, {}), (HlcTimestamp{60, 0}));
}

TEST(TombstoneCollectorBound, LeavesEmptiedStatesTheClockOffsetMore) {
  EXPECT_EQ(TombstoneCollector::EmptiedBound({10'500, 3}, 500), (HlcTimestamp{10'000, 0}));
  EXPECT_TRUE(TombstoneCollector::EmptiedBound({500, 3}, 500).IsZero());
  EXPECT_EQ(TombstoneCollector::EmptiedBound({10'500, 3}, 0), (HlcTimestamp{10'500, 0}));
}

}  // namespace
}  // namespace geokv

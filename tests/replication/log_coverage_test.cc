// LogCoverage and the token reads it keeps honest: a position in an
// origin's log covers entries this node was never shipped, and a token
// read of a key in such a segment waits until something covers them.

#include "replication/log_coverage.h"

#include <gtest/gtest.h>
#include <kj/async.h>

#include <chrono>
#include <map>
#include <vector>

#include "replication/token_visibility.h"
#include "tests/replication/replication_fixture.h"

namespace geokv {
namespace {

using testing::ManualTimer;

constexpr ReplicaId kSelf = 0x1;
constexpr ReplicaId kO = 0x2;  // an origin
constexpr uint16_t kS = 7;     // a segment
constexpr uint16_t kT = 8;     // another

struct Held {
  std::map<ReplicaId, uint64_t> positions;
  LogCoverage::HeldThrough Fn() {
    return [this](ReplicaId origin) { return positions[origin]; };
  }
};

TEST(LogCoverage, WithoutGapsCoversWhatItHolds) {
  Held held;
  held.positions[kO] = 10;
  LogCoverage coverage(held.Fn());
  EXPECT_EQ(coverage.Covered(kO, kS), 10u);
  EXPECT_EQ(coverage.Held(kO), 10u);
  EXPECT_FALSE(coverage.HasGap(kS));
}

TEST(LogCoverage, ASkippedSegmentIsCoveredOnlyThroughTheBatchStart) {
  Held held;
  held.positions[kO] = 20;
  LogCoverage coverage(held.Fn());
  coverage.Mark(kO, 10, 20, {kS});
  EXPECT_EQ(coverage.Covered(kO, kS), 10u);
  EXPECT_EQ(coverage.Covered(kO, kT), 20u) << "other segments keep their coverage";
  EXPECT_TRUE(coverage.HasGap(kS));
  // A later skip keeps the gap's start.
  held.positions[kO] = 30;
  coverage.Mark(kO, 20, 30, {kS});
  EXPECT_EQ(coverage.Covered(kO, kS), 10u);
  // In step with a peer that covers through 25: still a gap above.
  coverage.Cleared(kO, kS, 25);
  EXPECT_EQ(coverage.Covered(kO, kS), 25u);
  // ... and through 30: none.
  coverage.Cleared(kO, kS, 30);
  EXPECT_EQ(coverage.Covered(kO, kS), 30u);
  EXPECT_FALSE(coverage.HasGap(kS));
  held.positions[kO] = 40;
  EXPECT_EQ(coverage.Covered(kO, kS), 40u) << "later batches that shipped it count";
}

TEST(LogCoverage, APeersCoverageCountsNoFurtherThanThisNodeHolds) {
  Held held;
  held.positions[kO] = 20;
  LogCoverage coverage(held.Fn());
  coverage.Mark(kO, 0, 20, {kS});
  coverage.Cleared(kO, kS, UINT64_MAX);
  EXPECT_EQ(coverage.Covered(kO, kS), 20u);
  held.positions[kO] = 30;
  coverage.Mark(kO, 20, 30, {kS});
  EXPECT_EQ(coverage.Covered(kO, kS), 20u) << "the claim did not reach past 20";
}

TEST(LogCoverage, ARepairOrAStartMarksEverySegment) {
  Held held;
  held.positions[kO] = 50;
  LogCoverage coverage(held.Fn());
  coverage.MarkAll(kO, 0, 50);
  for (size_t s = 0; s < kTreeSegments; ++s) ASSERT_EQ(coverage.Covered(kO, s), 0u) << s;
  coverage.Cleared(kO, kS, 50);
  EXPECT_EQ(coverage.Covered(kO, kS), 50u);
  EXPECT_EQ(coverage.Covered(kO, kT), 0u);
}

TEST(LogCoverage, AtStartEveryKeptPositionIsAGapAndOwnEntriesOnlyWhereDropped) {
  Held held;
  held.positions[kO] = 30;
  held.positions[kSelf] = 12;
  LogCoverage coverage(held.Fn());
  std::vector<bool> dropped(kTreeSegments, false);
  dropped[kT] = true;
  coverage.Load({{kO, 30}}, kSelf, 12, dropped);
  EXPECT_EQ(coverage.Covered(kO, kS), 0u);
  EXPECT_EQ(coverage.Covered(kO, kT), 0u);
  EXPECT_EQ(coverage.Covered(kSelf, kS), 12u);
  EXPECT_EQ(coverage.Covered(kSelf, kT), 0u);
}

TEST(LogCoverage, DroppingASegmentForgetsWhatWasClearedThere) {
  Held held;
  held.positions[kO] = 10;
  held.positions[kSelf] = 5;
  LogCoverage coverage(held.Fn());
  coverage.Mark(kO, 4, 10, {kS});
  coverage.Cleared(kO, kS, 8);
  coverage.Dropped(kS, {kO, kSelf});
  EXPECT_EQ(coverage.Covered(kO, kS), 0u) << "its keys are gone, the cleared part too";
  EXPECT_EQ(coverage.Covered(kSelf, kS), 0u) << "this node's own writes there too";
  EXPECT_EQ(coverage.Covered(kSelf, kT), 5u);
  const auto report = coverage.Report({kO, kSelf}, kT);
  ASSERT_EQ(report.size(), 2u);
  EXPECT_EQ(report[0], std::make_pair(kO, uint64_t{10}));
  EXPECT_EQ(report[1], std::make_pair(kSelf, uint64_t{5}));
  EXPECT_TRUE(coverage.Report({kO, kSelf}, kS).empty()) << "0 is left out";
}

// Origin kO's log held through 20, its entries of kS only through 10; the
// visibility asks for gaps to be covered in `asked`.
struct GapRig {
  GapRig() { coverage.Mark(kO, 10, 20, {kS}); }

  kj::EventLoop loop;
  kj::WaitScope ws{loop};
  ManualTimer timer;
  Held held{{{kO, 20}}};
  LogCoverage coverage{held.Fn()};
  std::vector<std::pair<ReplicaId, size_t>> asked;
  TokenVisibility visibility{timer, coverage, [this](ReplicaId origin, size_t segment) {
                               asked.emplace_back(origin, segment);
                             }};
};

TEST(TokenVisibilityTest, AReadInAGapWaitsForItToBeCoveredAndAsksForIt) {
  GapRig rig;
  const std::vector<CausalToken> token{CausalToken(kO, 15)};
  EXPECT_TRUE(rig.visibility.Visible(token, std::nullopt)) << "by position, it is held";
  EXPECT_TRUE(rig.visibility.Visible(token, kT)) << "another segment was shipped";
  EXPECT_FALSE(rig.visibility.Visible(token, kS));
  auto wait = rig.visibility.WaitVisible(token, kS, std::chrono::seconds(5));
  EXPECT_FALSE(wait.poll(rig.ws));
  ASSERT_EQ(rig.asked.size(), 1u);
  EXPECT_EQ(rig.asked[0], std::make_pair(kO, size_t{kS}));
  rig.visibility.Committed();  // still a gap: asked again
  EXPECT_EQ(rig.asked.size(), 2u);
  rig.coverage.Cleared(kO, kS, 20);
  rig.visibility.Committed();
  ASSERT_TRUE(wait.poll(rig.ws));
  EXPECT_TRUE(wait.wait(rig.ws).ok());
}

TEST(TokenVisibilityTest, AGapNobodyCoversEndsInATimeoutThatSaysSo) {
  GapRig rig;
  auto wait = rig.visibility.WaitVisible({CausalToken(kO, 15)}, kS, std::chrono::seconds(5));
  rig.timer.Advance(5 * kj::SECONDS);
  Status s = wait.wait(rig.ws);
  EXPECT_EQ(s.code(), Status::Code::kTimeout);
  EXPECT_NE(s.message().find("may miss its entries of segment 7 after 10"), std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace geokv

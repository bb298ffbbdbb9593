// The semantics of each type: HLC, causal contexts, conflict rules.

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <array>
#include <limits>
#include <set>

#include "tests/crdt/simulation.h"

namespace geokv::testing {
namespace {

constexpr ReplicaId kA = 0xa, kB = 0xb, kC = 0xc;

TEST(HybridClock, MonotonicWhenTheWallClockStepsBack) {
  EXPECT_TRUE(rc::check([] {
    ManualClock wall(1'000'000);
    HybridClock clock(&wall);
    HlcTimestamp last = clock.Now();
    int steps = *rc::gen::inRange(1, 200);
    for (int i = 0; i < steps; ++i) {
      switch (*rc::gen::inRange(0, 3)) {
        case 0: wall.Advance(*rc::gen::inRange<int64_t>(-10'000, 10'000)); break;
        case 1: {
          HlcTimestamp received{*rc::gen::inRange<uint64_t>(990'000, 1'010'000),
                                *rc::gen::inRange<uint32_t>(0, 5)};
          RC_ASSERT(clock.Update(received).ok());
          RC_ASSERT(received <= clock.Last());
          HlcTimestamp next = clock.Now();
          RC_ASSERT(received < next);
          RC_ASSERT(last < next);
          last = next;
          break;
        }
        default: {
          HlcTimestamp next = clock.Now();
          RC_ASSERT(last < next);
          last = next;
        }
      }
    }
  }));
}

// Stamps and wall readings drawn from the whole range, the extremes most
// often: the clock issues ever greater stamps, refuses invalid ones without
// moving, and never wraps.
TEST(HybridClock, NeverWrapsAtTheLimits) {
  EXPECT_TRUE(rc::check([] {
    auto wall_value = [] {
      return *rc::gen::oneOf(
          rc::gen::just<uint64_t>(0), rc::gen::just<uint64_t>(1),
          rc::gen::just<uint64_t>(UINT64_MAX), rc::gen::just<uint64_t>(UINT64_MAX - 1),
          rc::gen::just<uint64_t>(kMaxHlcWallMs + 0), rc::gen::just<uint64_t>(kMaxHlcWallMs - 1),
          rc::gen::just<uint64_t>(kMaxHlcWallMs + 1), rc::gen::arbitrary<uint64_t>(),
          rc::gen::inRange<uint64_t>(1'000'000, 1'000'100));
    };
    auto logical_value = [] {
      return *rc::gen::oneOf(rc::gen::just<uint32_t>(0), rc::gen::just<uint32_t>(UINT32_MAX),
                             rc::gen::just<uint32_t>(UINT32_MAX - 1),
                             rc::gen::arbitrary<uint32_t>());
    };
    ManualClock wall(wall_value());
    HybridClock clock(&wall);
    HlcTimestamp greatest;  // of every stamp issued or accepted so far
    bool any = false;
    int steps = *rc::gen::inRange(1, 100);
    for (int i = 0; i < steps; ++i) {
      switch (*rc::gen::inRange(0, 4)) {
        case 0: wall.Set(wall_value()); break;
        case 1: wall.Advance(*rc::gen::inRange<int64_t>(-1000, 1000)); break;
        case 2: {
          HlcTimestamp received{wall_value(), logical_value()};
          HlcTimestamp before = clock.Last();
          if (clock.Update(received).ok()) {
            RC_ASSERT(received.IsValid());
            if (!any || greatest < received) greatest = received;
            any = true;
          } else {
            RC_ASSERT(!received.IsValid());
            RC_ASSERT(clock.Last() == before);
          }
          break;
        }
        default: {
          HlcTimestamp next = clock.Now();
          if (any) RC_ASSERT(greatest < next);
          RC_ASSERT(!next.IsZero());
          // Past the limit only by carries: the wall part stays near it.
          RC_ASSERT(next.wall_ms <= kMaxHlcWallMs + 1);
          greatest = next;
          any = true;
        }
      }
    }
  }));
}

TEST(HybridClock, RefusesAStampAboveTheMaximum) {
  ManualClock wall(1000);
  HybridClock clock(&wall);
  EXPECT_FALSE(clock.Update(HlcTimestamp{UINT64_MAX, UINT32_MAX}).ok());
  EXPECT_FALSE(clock.Update(HlcTimestamp{kMaxHlcWallMs + 1, 0}).ok());
  EXPECT_EQ(clock.Now(), (HlcTimestamp{1000, 0}));
  EXPECT_TRUE(clock.Update(HlcTimestamp{kMaxHlcWallMs, UINT32_MAX}).ok());
  EXPECT_EQ(clock.Now(), (HlcTimestamp{kMaxHlcWallMs + 1, 0}));
}

TEST(HybridClock, FollowsTheWallClockWhenItMovesForward) {
  ManualClock wall(5000);
  HybridClock clock(&wall);
  EXPECT_EQ(clock.Now(), (HlcTimestamp{5000, 0}));
  EXPECT_EQ(clock.Now(), (HlcTimestamp{5000, 1}));
  wall.Advance(-100);
  EXPECT_EQ(clock.Now(), (HlcTimestamp{5000, 2}));
  wall.Set(6000);
  EXPECT_EQ(clock.Now(), (HlcTimestamp{6000, 0}));
}

TEST(HybridClock, CarriesIntoTheWallPartInsteadOfWrapping) {
  ManualClock wall(10);
  HybridClock clock(&wall);
  ASSERT_TRUE(clock.Update(HlcTimestamp{1000, UINT32_MAX}).ok());
  EXPECT_EQ(clock.Now(), (HlcTimestamp{1001, 0}));
}

TEST(CausalContext, CompactsToAVersionVector) {
  EXPECT_TRUE(rc::check([] {
    auto counters = *rc::gen::container<std::vector<uint64_t>>(rc::gen::inRange<uint64_t>(1, 30));
    CausalContext a, b;
    for (uint64_t c : counters) a.Insert(Dot{kA, c});
    for (uint64_t c : Shuffled(counters)) b.Insert(Dot{kA, c});
    RC_ASSERT(a == b);
    std::set<uint64_t> unique(counters.begin(), counters.end());
    uint64_t prefix = 0;
    while (unique.count(prefix + 1)) ++prefix;
    const CausalContext::Parts parts = a.Encoded();
    RC_ASSERT((prefix == 0 ? parts.vv.count(kA) == 0 : parts.vv.at(kA) == prefix));
    RC_ASSERT(parts.cloud.size() == unique.size() - prefix);
    RC_ASSERT(parts.ranges.empty());
    for (uint64_t c = 1; c < 32; ++c) RC_ASSERT(a.Contains(Dot{kA, c}) == (unique.count(c) > 0));
    RC_ASSERT(a.NextDot(kA).counter == (unique.empty() ? 1 : *unique.rbegin() + 1));
  }));
}

TEST(CausalContext, JoinIsTheUnionOfDotsKeptAsRuns) {
  EXPECT_TRUE(rc::check([] {
    // Counters from a few far-apart bases, as objects written again after
    // a collection number them.
    auto counter = rc::gen::apply(
        [](uint64_t base, uint64_t offset) { return base * 1000 + offset + 1; },
        rc::gen::inRange<uint64_t>(0, 3), rc::gen::inRange<uint64_t>(0, 200));
    auto dot = rc::gen::apply([](bool a, uint64_t c) { return Dot{a ? kA : kB, c}; },
                              rc::gen::arbitrary<bool>(), counter);
    auto xs = *rc::gen::container<std::vector<Dot>>(dot);
    auto ys = *rc::gen::container<std::vector<Dot>>(dot);
    CausalContext x, y, all;
    for (const Dot& d : xs) x.Insert(d);
    for (const Dot& d : ys) y.Insert(d);
    DotSet expected(xs.begin(), xs.end());
    expected.insert(ys.begin(), ys.end());
    all.InsertAll(expected);
    CausalContext xy = x, yx = y;
    xy.Join(y);
    yx.Join(x);
    RC_ASSERT(xy == yx);
    RC_ASSERT(xy == all);
    for (const Dot& d : *rc::gen::container<std::vector<Dot>>(dot)) {
      RC_ASSERT(xy.Contains(d) == (expected.count(d) > 0));
    }
    // The parts rebuild the context, and hold each dot once.
    const CausalContext::Parts parts = xy.Encoded();
    StatusOr<CausalContext> back = CausalContext::FromParts(parts.vv, parts.cloud, parts.ranges);
    RC_ASSERT(back.ok());
    RC_ASSERT(*back == xy);
    uint64_t dots = parts.cloud.size();
    for (const auto& [replica, last] : parts.vv) dots += last;
    for (const DotRange& r : parts.ranges) {
      RC_ASSERT(r.last - r.first >= CausalContext::kMaxCloudRun);
      dots += r.last - r.first + 1;
    }
    RC_ASSERT(dots == expected.size());
  }));
}

TEST(CausalContext, NextDotIsAboveTheFloor) {
  CausalContext c;
  c.Insert(Dot{kA, 1});
  c.Insert(Dot{kA, 2});
  EXPECT_EQ(c.NextDot(kA).counter, 3u);
  EXPECT_EQ(c.NextDot(kA, 1).counter, 3u);
  EXPECT_EQ(c.NextDot(kA, 500).counter, 501u);
  EXPECT_EQ(c.NextDot(kB, 500).counter, 501u);
  EXPECT_EQ(c.NextDot(kB).counter, 1u);
}

TEST(CausalContext, ReadsTheFormsOfBuildsBeforeRanges) {
  // Such a build wrote a run of any length beyond the vector as cloud dots.
  DotSet long_run;
  for (uint64_t c = 10; c < 10 + 2 * CausalContext::kMaxCloudRun; ++c) long_run.insert(Dot{kA, c});
  StatusOr<CausalContext> old_form = CausalContext::FromParts({{kA, 3}}, long_run);
  ASSERT_TRUE(old_form.ok()) << old_form.status().ToString();
  EXPECT_TRUE(old_form->Contains(Dot{kA, 10 + CausalContext::kMaxCloudRun}));
  EXPECT_FALSE(old_form->Contains(Dot{kA, 9}));
  const CausalContext::Parts parts = old_form->Encoded();
  EXPECT_TRUE(parts.cloud.empty());
  ASSERT_EQ(parts.ranges.size(), 1u);
  EXPECT_EQ(parts.ranges[0], (DotRange{kA, 10, 9 + 2 * CausalContext::kMaxCloudRun}));
}

TEST(CausalContext, FromPartsRejectsNonCanonicalParts) {
  // A short run as a range, a range touching a cloud dot, ranges out of order.
  EXPECT_FALSE(CausalContext::FromParts({}, {}, {DotRange{kA, 5, 6}}).ok());
  EXPECT_FALSE(CausalContext::FromParts({}, {Dot{kA, 4}}, {DotRange{kA, 5, 500}}).ok());
  EXPECT_FALSE(
      CausalContext::FromParts({}, {}, {DotRange{kA, 600, 700}, DotRange{kA, 5, 500}}).ok());
  EXPECT_FALSE(CausalContext::FromParts({}, {}, {DotRange{kA, 500, 5}}).ok());
  EXPECT_FALSE(CausalContext::FromParts({}, {}, {DotRange{kA, 1, 500}}).ok());
  EXPECT_TRUE(CausalContext::FromParts({}, {}, {DotRange{kA, 5, 500}, DotRange{kA, 600, 700}}).ok());

  EXPECT_FALSE(CausalContext::FromParts({{kA, 0}}, {}).ok());
  EXPECT_FALSE(CausalContext::FromParts({{kA, 3}}, {Dot{kA, 2}}).ok());  // covered
  EXPECT_FALSE(CausalContext::FromParts({{kA, 3}}, {Dot{kA, 4}}).ok());  // contiguous
  EXPECT_FALSE(CausalContext::FromParts({}, {Dot{kA, 1}}).ok());
  EXPECT_FALSE(CausalContext::FromParts({}, {Dot{kA, 0}}).ok());
  EXPECT_TRUE(CausalContext::FromParts({{kA, 3}}, {Dot{kA, 5}, Dot{kB, 2}}).ok());
}

TEST(LwwRegister, NodeIdBreaksTiesOfTheWallClock) {
  ManualClock wall(7000);
  HybridClock ca(&wall), cb(&wall);
  LwwRegister a, b;
  LwwRegister da = a.Set("from a", ca.Now(), kA);
  LwwRegister db = b.Set("from b", cb.Now(), kB);
  ASSERT_EQ(da.timestamp(), db.timestamp());
  a.Join(db);
  b.Join(da);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.value(), std::optional<std::string>("from b"));  // kB > kA
}

TEST(LwwRegister, JoinIsCommutativeEvenOnEqualStamps) {
  HlcTimestamp ts{100, 0};
  LwwRegister x(ts, kA, "x"), y(ts, kA, "y"), gone(ts, kA, std::nullopt);
  for (const auto& [p, q] : {std::pair{x, y}, std::pair{x, gone}, std::pair{y, gone}}) {
    LwwRegister pq = p, qp = q;
    pq.Join(q);
    qp.Join(p);
    EXPECT_EQ(pq, qp);
  }
}

TEST(LwwRegister, ConvergesToTheWriteWithTheGreatestStamp) {
  EXPECT_TRUE(rc::check([] {
    Simulation<LwwRegister> sim;
    sim.RunSteps();
    sim.DeliverAll();
    LwwRegister greatest;
    for (const auto& d : sim.deltas) {
      if (std::make_tuple(greatest.timestamp(), greatest.node()) <
          std::make_tuple(d.timestamp(), d.node())) {
        greatest = d;
      }
    }
    RC_ASSERT(sim.replicas[0] == greatest);
  }));
}

TEST(LwwRegister, LaterLocalWriteWinsAfterReceivingAFutureStamp) {
  ManualClock wall(1000);
  HybridClock clock(&wall);
  LwwRegister reg;
  LwwRegister future(HlcTimestamp{9'000'000, 3}, kB, "future");
  ASSERT_TRUE(clock.Update(future.timestamp()).ok());
  reg.Join(future);
  reg.Set("now", clock.Now(), kA);
  EXPECT_EQ(reg.value(), std::optional<std::string>("now"));
}

TEST(MvRegister, ConcurrentWritesStayAsSiblingsUntilAWriteThatSawThem) {
  MvRegister a, b, c;
  MvRegister da = a.Write("x", a.context(), kA);
  MvRegister db = b.Write("y", b.context(), kB);
  a.Join(db);
  b.Join(da);
  c.Join(da);
  c.Join(db);
  for (const auto* r : {&a, &b, &c}) {
    EXPECT_EQ(r->Values(), (std::vector<std::string>{"x", "y"}));
  }
  MvRegister dc = c.Write("z", c.context(), kC);
  a.Join(dc);
  EXPECT_EQ(a.Values(), (std::vector<std::string>{"z"}));
  // A write that saw only "x" supersedes "x" and keeps "y".
  MvRegister d;
  d.Join(da);
  MvRegister dd = d.Write("w", d.context(), kA);
  b.Join(dd);
  EXPECT_EQ(b.Values(), (std::vector<std::string>{"w", "y"}));
}

TEST(MvRegister, SiblingsAreExactlyTheWritesNoOneSawUnderRandomRuns) {
  EXPECT_TRUE(rc::check([] {
    Simulation<MvRegister> sim;
    sim.RunSteps();
    sim.DeliverAll();
    // Every surviving sibling's dot is in no delta context but its own write.
    const MvRegister& r = sim.replicas[0];
    for (const auto& [dot, value] : r.entries()) {
      for (const auto& d : sim.deltas) {
        if (d.entries().count(dot)) continue;
        RC_ASSERT(!d.context().Contains(dot));
      }
    }
  }));
}

TEST(OrSet, ConcurrentAddWinsOverRemove) {
  OrSet a, b;
  OrSet first = a.Add("e", kA);
  b.Join(first);
  OrSet removal = a.Remove("e");
  OrSet readd = b.Add("e", kB);
  a.Join(readd);
  b.Join(removal);
  EXPECT_TRUE(a.Contains("e"));
  EXPECT_EQ(a, b);
}

TEST(OrSet, ConcurrentAddWinsOverRemoveAfterRandomHistories) {
  EXPECT_TRUE(rc::check([] {
    Simulation<OrSet> sim;
    sim.RunSteps();
    std::string e = SmallString();
    OrSet removal = sim.replicas[0].Remove(e);
    OrSet add = sim.replicas[1].Add(e, kReplicaIds[1]);
    sim.replicas[0].Join(add);
    sim.replicas[1].Join(removal);
    RC_ASSERT(sim.replicas[0].Contains(e));
    RC_ASSERT(sim.replicas[1].Contains(e));
  }));
}

TEST(OrSet, OneReplicaBehavesAsASet) {
  EXPECT_TRUE(rc::check([] {
    OrSet s;
    std::set<std::string> model;
    int steps = *rc::gen::inRange(0, 100);
    for (int i = 0; i < steps; ++i) {
      std::string e = SmallString();
      if (*rc::gen::arbitrary<bool>()) {
        s.Add(e, kA);
        model.insert(e);
      } else {
        s.Remove(e);
        model.erase(e);
      }
    }
    auto elements = s.Elements();
    RC_ASSERT(std::set<std::string>(elements.begin(), elements.end()) == model);
    // No tombstones: one dot per element, and the context is a version vector.
    for (const auto& [element, dots] : s.entries()) RC_ASSERT(dots.size() == 1u);
    RC_ASSERT(s.context().Encoded().cloud.empty());
  }));
}

TEST(OrSet, RemovingAnAbsentElementIsBottom) {
  OrSet s;
  s.Add("x", kA);
  EXPECT_TRUE(s.Remove("y").IsBottom());
}

TEST(PnCounter, AnEntryStartedAtAFloorIsWorthItsIncrementsAboveTheOldTotals) {
  PnCounter forgotten;
  forgotten.Increment(kA, 5);
  forgotten.Increment(kA, -3);
  forgotten.Reset();
  PnCounter fresh;
  fresh.Increment(kA, 2, /*floor=*/5);
  EXPECT_EQ(fresh.Value(), 2);
  PnCounter joined = forgotten;
  joined.Join(fresh);
  EXPECT_EQ(joined.Value(), 2);
  fresh.Join(forgotten);
  EXPECT_EQ(fresh.Value(), 2);
  // An entry that exists continues from its totals.
  fresh.Increment(kA, 1, /*floor=*/100);
  EXPECT_EQ(fresh.Value(), 3);
}

TEST(PnCounter, ConvergesToTheIncrementsBeyondTheFloors) {
  EXPECT_TRUE(rc::check([] {
    Simulation<PnCounter> sim;
    sim.RunSteps();
    sim.DeliverAll();
    // Each delta carries a replica's running totals and floors; the greatest
    // of each counts.
    std::map<ReplicaId, PnCounter::Totals> last;
    for (const auto& d : sim.deltas) {
      for (const auto& [r, t] : d.entries()) {
        PnCounter::Totals& l = last[r];
        l.added = std::max(l.added, t.added);
        l.subtracted = std::max(l.subtracted, t.subtracted);
        l.reset_added = std::max(l.reset_added, t.reset_added);
        l.reset_subtracted = std::max(l.reset_subtracted, t.reset_subtracted);
      }
    }
    int64_t sum = 0;
    for (const auto& [r, t] : last) {
      sum += static_cast<int64_t>((t.added - t.reset_added) - (t.subtracted - t.reset_subtracted));
    }
    RC_ASSERT(sim.replicas[0].Value() == sum);
  }));
}

// A replica's totals, as any node may hold them: small or near the limits.
rc::Gen<uint64_t> AnyTotal() {
  return rc::gen::oneOf(rc::gen::inRange<uint64_t>(0, 1000),
                        rc::gen::inRange<uint64_t>(uint64_t{1} << 62, uint64_t{1} << 63),
                        rc::gen::inRange<uint64_t>(UINT64_MAX - 1000, UINT64_MAX),
                        rc::gen::arbitrary<uint64_t>());
}

__int128 Clamped(__int128 v) {
  const __int128 lo = std::numeric_limits<int64_t>::min();
  const __int128 hi = std::numeric_limits<int64_t>::max();
  return v < lo ? lo : v > hi ? hi : v;
}

TEST(PnCounter, ValueIsTheExactSumSaturatedWhateverTheJoinOrder) {
  EXPECT_TRUE(rc::check([] {
    const int n = *rc::gen::inRange(1, 6);
    std::vector<PnCounter> parts;
    __int128 exact = 0;
    for (int i = 0; i < n; ++i) {
      PnCounter::Totals t;
      t.added = *AnyTotal();
      t.subtracted = *AnyTotal();
      RC_PRE(t.added != 0 || t.subtracted != 0);
      exact += static_cast<__int128>(t.added) - static_cast<__int128>(t.subtracted);
      parts.emplace_back(PnCounter::Entries{{static_cast<ReplicaId>(i + 1), t}});
    }
    // Two replicas receive every part, in their own orders, with duplicates.
    auto deliver = [&parts] {
      PnCounter c;
      for (const PnCounter& p : Shuffled(parts)) {
        c.Join(p);
        if (*rc::gen::inRange(0, 3) == 0) c.Join(p);
      }
      return c;
    };
    PnCounter a = deliver(), b = deliver();
    RC_ASSERT(a == b);
    RC_ASSERT(static_cast<__int128>(a.Value()) == Clamped(exact));
    // The laws, on counters near the limits.
    const PnCounter& x = parts[0];
    const PnCounter& y = parts[static_cast<size_t>(n - 1)];
    PnCounter xy = x, yx = y, xya = x, ya = y, xx = x;
    xy.Join(y);
    yx.Join(x);
    RC_ASSERT(xy == yx);
    xya.Join(y);
    xya.Join(a);
    ya.Join(a);
    PnCounter x_ya = x;
    x_ya.Join(ya);
    RC_ASSERT(xya == x_ya);
    xx.Join(x);
    RC_ASSERT(xx == x);
    RC_ASSERT(static_cast<__int128>(xy.Value()) == Clamped(xy.ExactValue()));
  }));
}

TEST(PnCounter, HandlesTheExtremes) {
  PnCounter c;
  c.Increment(kA, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(c.Value(), std::numeric_limits<int64_t>::min());
  c.Increment(kB, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(c.Value(), -1);
  EXPECT_TRUE(c.Increment(kC, 0).IsBottom());
}

TEST(PnCounter, ConcurrentIncrementsPastTheLimitSaturate) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  PnCounter a, b;
  PnCounter da = a.Increment(kA, kMax);
  PnCounter db = b.Increment(kB, kMax);
  a.Join(db);
  b.Join(da);
  EXPECT_EQ(a.Value(), kMax);  // exactly 2^64 - 2, not -2
  EXPECT_EQ(b.Value(), kMax);
  a.Increment(kA, -kMax);
  EXPECT_EQ(a.Value(), kMax);
  a.Increment(kA, -1);
  EXPECT_EQ(a.Value(), kMax - 1);
}

TEST(PnCounter, DeleteRemovesWhatItSaw) {
  PnCounter c;
  c.Increment(kA, 5);
  c.Increment(kB, -2);
  PnCounter older = c;
  PnCounter reset = c.Reset();
  EXPECT_FALSE(c.IsLive());
  EXPECT_EQ(c.Value(), 0);
  EXPECT_FALSE(c.IsBottom());
  EXPECT_EQ(reset, c);  // every entry it saw, floors equal to totals
  c.Join(older);        // an increment it saw, arriving late, stays deleted
  EXPECT_FALSE(c.IsLive());
  EXPECT_TRUE(c.Reset().IsBottom());  // nothing left to delete
}

TEST(PnCounter, DeleteConcurrentWithAnIncrementKeepsTheIncrement) {
  PnCounter a, b;
  b.Join(a.Increment(kA, 5));
  PnCounter increment = a.Increment(kA, 3);  // not seen by b's delete
  PnCounter reset = b.Reset();
  a.Join(reset);
  b.Join(increment);
  EXPECT_EQ(a, b);
  EXPECT_TRUE(a.IsLive());
  EXPECT_EQ(a.Value(), 3);
}

TEST(PnCounter, IncrementAfterADeleteCountsFromZero) {
  PnCounter a, b;
  b.Join(a.Increment(kA, 5));
  b.Join(a.Increment(kB, 7));
  PnCounter reset = a.Reset();
  PnCounter after = a.Increment(kA, 2);
  EXPECT_EQ(a.Value(), 2);
  EXPECT_TRUE(a.IsLive());
  b.Join(after);  // the later increment carries the floors it was made on
  b.Join(reset);
  EXPECT_EQ(b, a);
  EXPECT_EQ(b.Value(), 2);
}

// Per increment: who made it and whether some delete saw it. The model's
// value is the sum of the increments no delete saw.
TEST(PnCounter, DeletesRemoveExactlyTheIncrementsTheySaw) {
  EXPECT_TRUE(rc::check([] {
    constexpr int kNodes = 3;
    struct Replica {
      PnCounter state;
      std::array<size_t, kNodes> seen{};     // per node: its first increments seen
      std::array<size_t, kNodes> deleted{};  // per node: of those, the deleted
    };
    std::array<Replica, kNodes> replicas;
    std::array<std::vector<int64_t>, kNodes> made;  // each node's increments
    struct Message {
      PnCounter delta;
      std::array<size_t, kNodes> seen, deleted;
    };
    std::vector<std::pair<int, Message>> inbox;
    auto merge = [](Replica& r, const Message& m) {
      r.state.Join(m.delta);
      for (int i = 0; i < kNodes; ++i) {
        r.seen[i] = std::max(r.seen[i], m.seen[i]);
        r.deleted[i] = std::max(r.deleted[i], m.deleted[i]);
      }
    };
    const int steps = *rc::gen::inRange(1, 40);
    for (int s = 0; s < steps; ++s) {
      const int n = *rc::gen::inRange(0, kNodes);
      Replica& r = replicas[n];
      const int kind = *rc::gen::inRange(0, 6);
      // A delta carries only the entries it changed: the model's message
      // says as much.
      if (kind == 0) {
        Message m{r.state.Reset(), {}, {}};
        for (int i = 0; i < kNodes; ++i) {
          if (r.seen[i] == r.deleted[i]) continue;
          m.seen[i] = m.deleted[i] = r.deleted[i] = r.seen[i];
        }
        for (int j = 0; j < kNodes; ++j) inbox.emplace_back(j, m);
      } else if (kind < 3) {
        const int64_t amount = *rc::gen::inRange<int64_t>(-50, 51);
        if (amount == 0) continue;
        made[n].push_back(amount);
        r.seen[n] = made[n].size();
        Message m{r.state.Increment(kReplicaIds[n], amount), {}, {}};
        m.seen[n] = r.seen[n];
        m.deleted[n] = r.deleted[n];
        for (int j = 0; j < kNodes; ++j) inbox.emplace_back(j, m);
      } else if (!inbox.empty()) {
        const size_t i = *rc::gen::inRange<size_t>(0, inbox.size());
        merge(replicas[inbox[i].first], inbox[i].second);
        if (*rc::gen::inRange(0, 4) != 0) inbox.erase(inbox.begin() + static_cast<long>(i));
      }
    }
    for (const auto& [to, m] : Shuffled(inbox)) merge(replicas[to], m);
    for (int j = 0; j < kNodes; ++j) {
      RC_ASSERT(replicas[j].state == replicas[0].state);
      int64_t expected = 0;
      bool live = false;
      for (int i = 0; i < kNodes; ++i) {
        for (size_t k = replicas[j].deleted[i]; k < replicas[j].seen[i]; ++k) {
          expected += made[i][k];
          live = true;
        }
      }
      RC_ASSERT(replicas[j].state.Value() == expected);
      RC_ASSERT(replicas[j].state.IsLive() == live);
    }
  }));
}

TEST(Crdt, JoinRefusesDifferentTypes) {
  Crdt a = OrSet(), b = PnCounter();
  Status s = Join(&a, b);
  EXPECT_EQ(s.code(), Status::Code::kWrongType);
  EXPECT_TRUE(std::holds_alternative<OrSet>(a));
}

}  // namespace
}  // namespace geokv::testing

namespace geokv::testing {
namespace {

TEST(OrSet, AddAllAndRemoveAllEqualOneAtATime) {
  EXPECT_TRUE(rc::check([] {
    Simulation<OrSet> sim;
    sim.RunSteps();
    OrSet one = sim.replicas[0], all = sim.replicas[0];
    std::vector<std::string> elements(*rc::gen::inRange<size_t>(0, 6));
    for (auto& e : elements) e = SmallString();
    OrSet one_delta;
    const bool add = *rc::gen::arbitrary<bool>();
    for (const auto& e : elements) one_delta.Join(add ? one.Add(e, kA) : one.Remove(e));
    OrSet all_delta = add ? all.AddAll(elements, kA) : all.RemoveAll(elements);
    RC_ASSERT(all_delta == one_delta);
    RC_ASSERT(all == one);
  }));
}

}  // namespace
}  // namespace geokv::testing

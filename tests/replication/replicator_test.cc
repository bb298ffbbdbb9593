// The replicator's pure decisions: the peer list, the clock estimator and
// the clock judge; and the waits with a deadline its units share.

#include "replication/replicator.h"

#include <gtest/gtest.h>
#include <kj/timer.h>

#include "replication/deadline_waiters.h"

namespace geokv {
namespace {

TEST(ParsePeersTest, ReadsRegionsAndAddresses) {
  auto peers = ParsePeers("us=10.0.0.1:7401,ap=host.example:7401", "eu");
  ASSERT_TRUE(peers.ok()) << peers.status().ToString();
  ASSERT_EQ(peers->size(), 2u);
  EXPECT_EQ((*peers)[0].region, "us");
  EXPECT_EQ((*peers)[0].address, "10.0.0.1:7401");
  EXPECT_EQ((*peers)[1].region, "ap");
  EXPECT_EQ((*peers)[1].address, "host.example:7401");
  EXPECT_TRUE(ParsePeers("", "eu")->empty());
}

TEST(ParsePeersTest, RefusesWhatCannotBeRight) {
  for (const char* bad : {"us", "us=", "=h:1", "us=host", "us=h:1,", "us=h:1,,ap=h:2"}) {
    auto peers = ParsePeers(bad, "eu");
    EXPECT_FALSE(peers.ok()) << bad;
    if (!peers.ok()) {
      EXPECT_NE(peers.status().message().find("is not REGION=HOST:PORT"), std::string::npos)
          << peers.status().message();
    }
  }
  auto own = ParsePeers("eu=h:1", "eu");
  ASSERT_FALSE(own.ok());
  EXPECT_NE(own.status().message().find("own region"), std::string::npos);
  auto twice = ParsePeers("us=h:1,us=h:2", "eu");
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("named twice"), std::string::npos);
}

TEST(ClockJudgeTest, TheNodeOffTheMedianIsTheOneRefused) {
  ClockJudge judge(std::chrono::milliseconds(500));
  // Without peers there is nothing to be off from.
  EXPECT_TRUE(judge.Judge({}).ok());
  // This node is 2 s ahead of both peers: it is off.
  EXPECT_EQ(ClockJudge::OwnOffset({-2000, -2010}), 2000);
  Status refused = judge.Judge({-2000, -2010});
  EXPECT_EQ(refused.code(), Status::Code::kUnavailable);
  EXPECT_NE(refused.message().find("2000 ms off"), std::string::npos) << refused.message();
  EXPECT_NE(refused.message().find("--max-clock-offset 500 ms"), std::string::npos);
  // One peer is 2 s ahead and the other agrees with this node: the peer is
  // off, not this node.
  EXPECT_EQ(ClockJudge::OwnOffset({2000, 5}), -5);
  EXPECT_TRUE(judge.Judge({2000, 5}).ok());
  // Two nodes: each is off by half their difference.
  EXPECT_EQ(ClockJudge::OwnOffset({-1200}), 600);
  EXPECT_FALSE(judge.Judge({-1200}).ok());
  EXPECT_TRUE(judge.Judge({-1000}).ok());
  EXPECT_TRUE(judge.Judge({400, -400}).ok());
}

TEST(ClockEstimatorTest, TheShortestRoundTripOfTheLastSamplesCounts) {
  ClockEstimator clock;
  EXPECT_EQ(clock.offset_ms(), std::nullopt);
  // Sent at 1000, back after 100 ms with the peer's 1350: the peer read its
  // clock halfway, at our 1050, so it is 300 ms ahead.
  clock.Record(1350, 1000, 100);
  EXPECT_EQ(clock.offset_ms(), std::optional<int64_t>(300));
  // A slower probe (more queueing) does not displace it.
  clock.Record(5000, 2000, 900);
  EXPECT_EQ(clock.offset_ms(), std::optional<int64_t>(300));
  // A faster one does.
  clock.Record(3210, 3000, 20);
  EXPECT_EQ(clock.offset_ms(), std::optional<int64_t>(200));
  // Nonsense is ignored.
  clock.Record(3210, 3000, -5);
  clock.Record(int64_t{1} << 60, 3000, 1);
  EXPECT_EQ(clock.offset_ms(), std::optional<int64_t>(200));
  // Only the last kSamples count: the fast sample ages out.
  for (size_t i = 0; i < ClockEstimator::kSamples; ++i) clock.Record(4000 + 50, 4000, 100);
  EXPECT_EQ(clock.offset_ms(), std::optional<int64_t>(0));
  clock.Reset();
  EXPECT_EQ(clock.offset_ms(), std::nullopt);
}

TEST(DeadlineWaiters, EndReadyAtANotifyOrWithTheExpiryAtTheDeadline) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  kj::TimerImpl timer(kj::origin<kj::TimePoint>());
  DeadlineWaiters<int> waiters(timer);
  int state = 0;
  auto ready_at = [&state](int want) {
    return [&state, want]() -> std::optional<int> {
      if (state >= want) return state;
      return std::nullopt;
    };
  };
  auto now = waiters.Wait(ready_at(0), [] { return -1; }, 10 * kj::SECONDS);
  EXPECT_EQ(now.wait(ws), 0);  // ready at once
  auto two = waiters.Wait(ready_at(2), [] { return -1; }, 10 * kj::SECONDS);
  auto five = waiters.Wait(ready_at(5), [&state] { return -state; }, 10 * kj::SECONDS);
  state = 1;
  waiters.Notify();
  EXPECT_FALSE(two.poll(ws));
  state = 2;
  EXPECT_FALSE(two.poll(ws));  // no Notify yet
  waiters.Notify();
  EXPECT_EQ(two.wait(ws), 2);
  EXPECT_FALSE(five.poll(ws));
  timer.advanceTo(timer.now() + 10 * kj::SECONDS - 1 * kj::MILLISECONDS);
  EXPECT_FALSE(five.poll(ws));
  timer.advanceTo(timer.now() + 1 * kj::MILLISECONDS);
  EXPECT_EQ(five.wait(ws), -2);  // the expiry's answer
}

TEST(DeadlineWaiters, StopEndsEveryWaitWithTheValueOrCancelsIt) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  kj::TimerImpl timer(kj::origin<kj::TimePoint>());
  auto never = []() -> std::optional<int> { return std::nullopt; };
  DeadlineWaiters<int> valued(timer);
  auto a = valued.Wait(never, [] { return -1; }, 10 * kj::SECONDS);
  valued.Stop(7);
  EXPECT_TRUE(valued.Stopped());
  EXPECT_EQ(a.wait(ws), 7);
  DeadlineWaiters<int> cancelled(timer);
  auto b = cancelled.Wait(never, [] { return -1; }, 10 * kj::SECONDS);
  cancelled.Stop(std::nullopt);
  EXPECT_THROW(b.wait(ws), kj::Exception);
}

}  // namespace
}  // namespace geokv

// The node's metric sampling: the once-a-second sample, with the store's
// estimates read on the reader pool, and the event loop's lag.

#include "server/metric_sampler.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <chrono>
#include <memory>
#include <thread>

#include "testing/test_dir.h"

namespace geokv {
namespace {

struct Lag {
  uint64_t count = 0;
  double sum = 0;
};

Lag LagOf(Metrics& metrics) {
  prometheus::ClientMetric m = metrics.event_loop_lag.Collect();
  return {m.histogram.sample_count, m.histogram.sample_sum};
}

// Runs the loop until `done` or `limit` passes; whether `done` came true.
template <typename Done>
bool RunUntil(kj::WaitScope& ws, kj::Timer& timer, Done done, kj::Duration limit) {
  const kj::TimePoint deadline = timer.now() + limit;
  while (!done()) {
    if (timer.now() >= deadline) return false;
    timer.afterDelay(5 * kj::MILLISECONDS).wait(ws);
  }
  return true;
}

TEST(MetricSampler, SamplesTheStoreAndTheLoopsLag) {
  geokv::testing::TestDir dir;
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  kj::Timer& timer = io.provider->getTimer();
  auto opened = Store::Open(dir.Sub("db"), StoreOptions{Durability::kWal});
  ASSERT_TRUE(opened.ok());
  std::unique_ptr<Store> store = std::move(opened).value();
  AsyncStore async(*store, 1);
  Member self;
  self.id = store->node_id();
  self.name = "n1";
  self.region = "eu";
  ClusterView view(self, 3, 16);
  Metrics metrics("eu");
  MetricSampler sampler(async, dir.Sub("db"), nullptr, view, metrics, timer);
  sampler.Start();

  EXPECT_TRUE(RunUntil(ws, timer, [&] { return metrics.disk_total.Value() > 0; },
                       5 * kj::SECONDS))
      << "the first sample sets the disk's size";
  ASSERT_TRUE(RunUntil(ws, timer, [&] { return LagOf(metrics).count >= 5; }, 5 * kj::SECONDS));
  const Lag free = LagOf(metrics);
  EXPECT_LT(free.sum / free.count, 0.04) << "a free loop fires its timer close to on time";

  // A turn that holds the loop for 150 ms makes the next probe that late.
  kj::evalLater([] { std::this_thread::sleep_for(std::chrono::milliseconds(150)); }).wait(ws);
  ASSERT_TRUE(RunUntil(ws, timer, [&] { return LagOf(metrics).count > free.count + 1; },
                       5 * kj::SECONDS));
  const Lag held = LagOf(metrics);
  EXPECT_GE(held.sum - free.sum, 0.09) << "the held turn shows as lag";
  sampler.Stop();
}

}  // namespace
}  // namespace geokv

#include "testing/percentile.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace geokv::testing {
namespace {

TEST(Percentile, NearestRank) {
  std::vector<int> v{10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
  EXPECT_EQ(Percentile(v, 0.0), 10);
  EXPECT_EQ(Percentile(v, 0.1), 10);
  EXPECT_EQ(Percentile(v, 0.11), 20);
  EXPECT_EQ(Percentile(v, 0.5), 50);
  EXPECT_EQ(Percentile(v, 0.9), 90);
  EXPECT_EQ(Percentile(v, 0.99), 100);
  EXPECT_EQ(Percentile(v, 1.0), 100);
  EXPECT_EQ(Percentile(std::vector<uint64_t>{7}, 0.5), 7u);
}

TEST(Percentile, SummarizeLatencySortsAndAverages) {
  std::vector<double> samples;
  for (int i = 1000; i >= 1; --i) samples.push_back(i);
  LatencySummary s = SummarizeLatency(samples);
  EXPECT_EQ(s.samples, 1000u);
  EXPECT_EQ(s.p50, 500);
  EXPECT_EQ(s.p99, 990);
  EXPECT_EQ(s.p999, 999);
  EXPECT_EQ(s.max, 1000);
  EXPECT_DOUBLE_EQ(s.mean, 500.5);
}

TEST(Percentile, SummarizeLatencyOfNothingIsZero) {
  LatencySummary s = SummarizeLatency({});
  EXPECT_EQ(s.samples, 0u);
  EXPECT_EQ(s.p99, 0);
  EXPECT_EQ(s.max, 0);
}

}  // namespace
}  // namespace geokv::testing

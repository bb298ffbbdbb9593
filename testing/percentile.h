// Percentiles of samples, for the numbers benchmarks print.

#ifndef GEOKV_TESTING_PERCENTILE_H_
#define GEOKV_TESTING_PERCENTILE_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace geokv::testing {

// Nearest rank: the smallest sample at or above the fraction q of all.
// REQUIRES: `sorted` is sorted ascending and not empty; 0 <= q <= 1.
template <typename T>
T Percentile(const std::vector<T>& sorted, double q) {
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size(), std::max<size_t>(rank, 1)) - 1];
}

// The usual latency figures of a set of samples, in the samples' unit.
struct LatencySummary {
  size_t samples = 0;
  double p50 = 0, p99 = 0, p999 = 0, mean = 0, max = 0;
};

// All zero for no samples.
LatencySummary SummarizeLatency(std::vector<double> samples);

}  // namespace geokv::testing

#endif  // GEOKV_TESTING_PERCENTILE_H_

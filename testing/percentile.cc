#include "testing/percentile.h"

#include <numeric>

namespace geokv::testing {

LatencySummary SummarizeLatency(std::vector<double> samples) {
  LatencySummary out;
  if (samples.empty()) return out;
  std::sort(samples.begin(), samples.end());
  out.samples = samples.size();
  out.p50 = Percentile(samples, 0.50);
  out.p99 = Percentile(samples, 0.99);
  out.p999 = Percentile(samples, 0.999);
  out.mean = std::accumulate(samples.begin(), samples.end(), 0.0) /
             static_cast<double>(samples.size());
  out.max = samples.back();
  return out;
}

}  // namespace geokv::testing

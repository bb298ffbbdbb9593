// geokv-ring-bench: how well the placement ring (placement/ring.h) spreads
// and moves data, and what a lookup costs.
//
//   1. For k nodes and replication factor n: the fraction of placements that
//      move when a (k+1)th node joins and when one of the k leaves (mean, min
//      and max over random id sets), next to the ideal of a perfectly
//      balanced ring (IdealMovedFraction); the spread of the load, the
//      greatest over the least per-node share of placements, and the worst
//      node's distance from its fair share; and Owners() calls per second.
//   2. The worst distance from the fair share by tokens per node, to choose
//      Ring::kDefaultVnodes.
//
// A benchmark prints numbers and asserts nothing.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "placement/ring.h"
#include "util/cli.h"

namespace geokv {
namespace {

struct BenchOptions {
  size_t sets = 100;  // random id sets per configuration
  size_t min_nodes = 3;
  size_t max_nodes = 8;
  std::vector<size_t> factors = {1, 2, 3};
  size_t vnodes = Ring::kDefaultVnodes;
  std::vector<size_t> sweep_vnodes = {32, 64, 128, 256};
  double seconds = 0.5;  // per Owners() throughput measurement
  uint64_t seed = 42;
};

std::optional<int> ParseFlags(int argc, char** argv, BenchOptions* o) {
  CLI::App app{
      "Measures the placement ring: placements moved on join and leave against the ideal,\n"
      "per-node load spread, Owners() calls per second, and the load spread by tokens per\n"
      "node."};
  app.get_formatter()->column_width(30);
  app.add_option("--sets", o->sets, "Random id sets per configuration")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--min-nodes", o->min_nodes, "Fewest nodes k")
      ->capture_default_str()
      ->check(AtLeast(2));
  app.add_option("--max-nodes", o->max_nodes, "Most nodes k")
      ->capture_default_str()
      ->check(AtLeast(2));
  app.add_option("--factors", o->factors, "Replication factors n (comma-separated)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--vnodes", o->vnodes, "Tokens per node in part 1")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--sweep-vnodes", o->sweep_vnodes, "Tokens per node compared in part 2")
      ->delimiter(',')
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--seconds", o->seconds, "Duration of each Owners() measurement")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--seed", o->seed, "Seed of the random node ids")->capture_default_str();
  if (auto exit_code = ParseCommandLine(app, argc, argv)) return *exit_code;
  if (o->max_nodes < o->min_nodes) {
    std::fprintf(stderr, "--max-nodes must be at least --min-nodes\n");
    return kExitUsage;
  }
  return std::nullopt;
}

std::vector<ReplicaId> RandomIds(size_t count, std::mt19937_64& rng) {
  std::vector<ReplicaId> ids;
  while (ids.size() < count) {
    const ReplicaId id = rng();
    if (id != 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  return ids;
}


// Worst |load - 1| of a ring's nodes.
double WorstDeviation(const std::vector<double>& loads) {
  double worst = 0;
  for (double l : loads) worst = std::max(worst, std::abs(l - 1));
  return worst;
}

struct Summary {
  double sum = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  size_t count = 0;

  void Add(double v) {
    sum += v;
    min = std::min(min, v);
    max = std::max(max, v);
    ++count;
  }
  double mean() const { return count == 0 ? 0 : sum / count; }
};

// Owners() calls per second on `ring` over a pool of random keys.
double OwnersPerSecond(const Ring& ring, size_t n, double seconds, std::mt19937_64& rng) {
  std::vector<std::string> keys(4096);
  for (auto& k : keys) k = "user:" + std::to_string(rng());
  uint64_t sink = 0;
  size_t calls = 0;
  const auto start = BenchClock::now();
  double elapsed = 0;
  do {
    for (const std::string& k : keys) sink += ring.Owners(k, n).front();
    calls += keys.size();
    elapsed = SecondsSince(start);
  } while (elapsed < seconds);
  // Keeps the calls from being optimised away.
  if (sink == 42) std::fprintf(stderr, " ");
  return calls / elapsed;
}

void Run(const BenchOptions& o) {
  std::mt19937_64 rng(o.seed);
  std::printf("geokv-ring-bench: %zu segments, %zu tokens per node, %zu random id sets each\n\n",
              kSegments, o.vnodes, o.sets);
  std::printf("1. Moved placements (fraction of the placements after the change), load spread,\n"
              "   lookups. join: k -> k+1 nodes; leave: k -> k-1. spread: greatest / least\n"
              "   node's placements (mean, max over sets); worst: largest |share / fair - 1|.\n\n");
  std::printf("%3s %2s | %-23s %6s | %-23s %6s | %-11s %6s | %10s\n", "k", "n",
              "join mean/min/max", "ideal", "leave mean/min/max", "ideal", "spread mean/max",
              "worst", "Owners()/s");
  for (size_t k = o.min_nodes; k <= o.max_nodes; ++k) {
    for (size_t n : o.factors) {
      Summary join, leave, spread, worst;
      double ideal_join = 0, ideal_leave = 0;
      for (size_t set = 0; set < o.sets; ++set) {
        std::vector<ReplicaId> ids = RandomIds(k + 1, rng);
        const Ring bigger(ids, o.vnodes);
        ids.pop_back();
        const Ring ring(ids, o.vnodes);
        ids.erase(ids.begin() + static_cast<long>(rng() % ids.size()));
        const Ring smaller(ids, o.vnodes);
        join.Add(MovedFraction(ring, bigger, n));
        leave.Add(MovedFraction(ring, smaller, n));
        ideal_join = IdealMovedFraction(ring, bigger, n);
        ideal_leave = IdealMovedFraction(ring, smaller, n);
        const std::vector<double> loads = RelativeLoads(ring, n);
        spread.Add(*std::max_element(loads.begin(), loads.end()) /
                   *std::min_element(loads.begin(), loads.end()));
        worst.Add(WorstDeviation(loads));
      }
      const Ring ring(RandomIds(k, rng), o.vnodes);
      const double rate = OwnersPerSecond(ring, n, o.seconds, rng);
      std::printf("%3zu %2zu | %.3f / %.3f / %.3f  %6.3f | %.3f / %.3f / %.3f  %6.3f | "
                  "%.2f / %.2f  %5.1f%% | %10.0f\n",
                  k, n, join.mean(), join.min, join.max, ideal_join, leave.mean(), leave.min,
                  leave.max, ideal_leave, spread.mean(), spread.max, 100 * worst.max, rate);
    }
  }

  std::printf(
      "\n2. Worst node's distance from its fair share of placements, by tokens per node:\n"
      "   the largest |share / fair - 1| over %zu id sets (mean over sets in brackets).\n\n",
      o.sets);
  std::printf("%7s %2s |", "vnodes", "n");
  for (size_t k = o.min_nodes; k <= o.max_nodes; ++k) std::printf("      k=%-2zu     ", k);
  std::printf("\n");
  for (size_t vnodes : o.sweep_vnodes) {
    for (size_t n : o.factors) {
      std::printf("%7zu %2zu |", vnodes, n);
      for (size_t k = o.min_nodes; k <= o.max_nodes; ++k) {
        Summary worst;
        for (size_t set = 0; set < o.sets; ++set) {
          worst.Add(WorstDeviation(RelativeLoads(Ring(RandomIds(k, rng), vnodes), n)));
        }
        std::printf(" %5.1f%% (%4.1f%%)", 100 * worst.max, 100 * worst.mean());
      }
      std::printf("\n");
    }
  }
}

}  // namespace
}  // namespace geokv

int main(int argc, char** argv) {
  geokv::BenchOptions options;
  if (auto exit_code = geokv::ParseFlags(argc, argv, &options)) return *exit_code;
  geokv::Run(options);
  return 0;
}

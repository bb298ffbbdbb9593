// geokv-loop-bench: how late the event loop of real geokv-server processes
// runs while they move a lot of data, under a concurrent load of gets.
//
//   repair    two regions of one node; a set of --elements elements is
//             replicated, then one node's data dir is wiped and it comes
//             back empty: anti-entropy repairs the whole set
//   backlog   two regions of one node; the link is cut, --entries writes
//             pile up, the link heals and the backlog ships
//   handover  one region; a node holds the set alone, a second node joins
//             and the set's segment moves to it (--replication-factor 1)
//
// Each prints the loop lag of every node (the p99 and max of
// geokv_event_loop_lag_seconds over the phase, from /metrics), the latency
// of the gets (p50, p99, max), how long the phase took, and whether the set
// is identical on both ends afterwards.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "bench/cluster_runs.h"
#include "placement/ring.h"
#include "schema/kv_text.h"
#include "storage/store.h"
#include "testing/http_get.h"
#include "testing/percentile.h"

namespace geokv {
namespace {

using testing::Client;
using testing::Cluster;
using testing::HttpGet;
using testing::PollUntil;
using testing::SummarizeLatency;

constexpr char kTool[] = "geokv-loop-bench";
constexpr char kSetKey[] = "loop-bench-set";
constexpr char kProbeKey[] = "loop-bench-probe";

// The loop-lag histogram of one node at one moment: cumulative counts by
// upper bound.
struct LagSample {
  std::map<double, double> buckets;  // le -> cumulative count
};

LagSample ScrapeLag(const std::string& metrics_address) {
  LagSample s;
  std::istringstream body(HttpGet(metrics_address, "/metrics"));
  static const std::regex bucket(
      R"re(^geokv_event_loop_lag_seconds_bucket\{.*le="([^"]+)".*\} ([0-9.e+-]+))re");
  std::string line;
  std::smatch m;
  while (std::getline(body, line)) {
    if (std::regex_search(line, m, bucket)) {
      double le = m[1] == "+Inf" ? INFINITY : std::stod(m[1]);
      s.buckets[le] = std::stod(m[2]);
    }
  }
  return s;
}

// From the histogram's buckets: each figure is the upper bound of the
// bucket that holds it (the buckets put bounds at 2 and 20 ms, the goals).
struct LagFigures {
  double samples = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

LagFigures LagBetween(const LagSample& before, const LagSample& after) {
  LagFigures f;
  if (after.buckets.empty()) return f;  // a build without the metric
  double total = after.buckets.rbegin()->second -
                 (before.buckets.empty() ? 0 : before.buckets.rbegin()->second);
  f.samples = total;
  bool p99_found = false;
  double below = 0;  // samples at or below the previous bound
  for (const auto& [le, count] : after.buckets) {
    auto b = before.buckets.find(le);
    double in = count - (b == before.buckets.end() ? 0 : b->second);
    if (!p99_found && in >= 0.99 * total) {
      f.p99_ms = le * 1000;
      p99_found = true;
    }
    if (in > below) f.max_ms = le * 1000;
    below = in;
  }
  return f;
}

// Gets of one small key on one node, one at a time, until stopped.
class GetLoad {
 public:
  explicit GetLoad(std::string address) : thread_([this, address] { Run(address); }) {}
  ~GetLoad() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<double> latencies_ms() {
    Stop();
    return latencies_ms_;
  }
  uint64_t failed() const { return failed_; }

 private:
  void Run(const std::string& address) {
    Client c(address);
    while (!stop_) {
      auto start = BenchClock::now();
      rpc::Outcome::Code code;
      c.Get(kProbeKey, {}, &code);
      latencies_ms_.push_back(SecondsSince(start) * 1000);
      if (code != rpc::Outcome::Code::OK) ++failed_;
    }
  }

  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> failed_{0};
  std::vector<double> latencies_ms_;
  std::thread thread_;
};

// Adds `n` elements to the set `key` on `address`, `per_call` at a time.
void FillSet(const std::string& address, const std::string& key, uint64_t n, uint64_t per_call) {
  Client c(address);
  for (uint64_t done = 0; done < n;) {
    auto req = c.kv().sAddRequest();
    req.setKey(AsData(key));
    uint64_t count = std::min(per_call, n - done);
    auto list = req.initElements(static_cast<unsigned>(count));
    for (uint64_t i = 0; i < count; ++i) {
      char e[24];
      std::snprintf(e, sizeof(e), "e%012llu", static_cast<unsigned long long>(done + i));
      list.set(static_cast<unsigned>(i), AsData(std::string(e)));
    }
    auto reply = req.send().wait(c.ws());
    if (reply.getOutcome().getCode() != rpc::Outcome::Code::OK) {
      Fail("sadd failed: " + std::string(reply.getOutcome().getMessage().cStr()));
    }
    done += count;
  }
}

uint64_t SetSize(const std::string& address, const std::string& key) {
  Client c(address);
  auto req = c.kv().sCardRequest();
  req.setKey(AsData(key));
  return req.send().wait(c.ws()).getCount();
}

struct Phase {
  std::string name;
  double seconds = 0;
  std::vector<LagFigures> lag;  // per node
  std::vector<double> gets_ms;
  uint64_t gets_failed = 0;
  bool identical = false;
  std::string detail;
};

void Print(const Phase& p, const CommonOptions& c) {
  const testing::LatencySummary gets = SummarizeLatency(p.gets_ms);
  const double p50 = gets.p50, p99 = gets.p99, max = gets.max;
  if (c.json) {
    std::string lag;
    for (size_t i = 0; i < p.lag.size(); ++i) {
      lag += (i ? "," : "") + std::string("{\"node\":") + std::to_string(i) +
             ",\"p99_ms\":" + std::to_string(p.lag[i].p99_ms) +
             ",\"max_ms\":" + std::to_string(p.lag[i].max_ms) +
             ",\"samples\":" + std::to_string(p.lag[i].samples) + "}";
    }
    std::printf("{\"phase\":%s,\"seconds\":%.3f,\"identical\":%s,\"loop_lag\":[%s],"
                "\"gets\":{\"count\":%zu,\"failed\":%llu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
                "\"max_ms\":%.3f},\"detail\":%s,\"server_args\":%s}\n",
                JsonString(p.name).c_str(), p.seconds, p.identical ? "true" : "false",
                lag.c_str(), p.gets_ms.size(), static_cast<unsigned long long>(p.gets_failed),
                p50, p99, max, JsonString(p.detail).c_str(), ServerArgsJson(c).c_str());
    return;
  }
  std::printf("%s: %s\n", p.name.c_str(), p.detail.c_str());
  std::printf("  took %.1f s; both ends hold %s data\n", p.seconds,
              p.identical ? "the same" : "DIFFERENT");
  for (size_t i = 0; i < p.lag.size(); ++i) {
    if (p.lag[i].samples == 0) {
      std::printf("  node %zu loop lag: not exported by this build\n", i);
      continue;
    }
    std::printf("  node %zu loop lag: p99 <= %g ms, max <= %g ms (%.0f samples)\n", i,
                p.lag[i].p99_ms, p.lag[i].max_ms, p.lag[i].samples);
  }
  std::printf("  gets: %zu (%llu failed), p50 %.2f ms, p99 %.2f ms, max %.1f ms\n",
              p.gets_ms.size(), static_cast<unsigned long long>(p.gets_failed), p50, p99, max);
}

// Runs `move` with a get load on `load_node` and measures every node's loop
// lag around it.
template <typename Move>
Phase Measure(Cluster& cluster, const std::string& name, int load_node, Move move) {
  Phase p;
  p.name = name;
  std::vector<LagSample> before;
  for (int i = 0; i < cluster.nodes(); ++i) before.push_back(ScrapeLag(cluster.metrics_address(i)));
  GetLoad load(cluster.address(load_node));
  auto start = BenchClock::now();
  move(p);
  p.seconds = SecondsSince(start);
  p.gets_ms = load.latencies_ms();
  p.gets_failed = load.failed();
  // A node the phase added has no sample from before it: all of its lag
  // counts.
  before.resize(cluster.nodes());
  for (int i = 0; i < cluster.nodes(); ++i) {
    p.lag.push_back(LagBetween(before[i], ScrapeLag(cluster.metrics_address(i))));
  }
  return p;
}

struct Flags {
  CommonOptions common;
  uint64_t elements = 1000000;
  uint64_t per_call = 1000;
  uint64_t entries = 250000;
  double timeout_s = 600;
};

std::vector<std::string> ServerFlags(const Flags& f, std::vector<std::string> extra) {
  extra.insert(extra.end(), {"--anti-entropy-interval", "1s"});
  extra.insert(extra.end(), f.common.server_args.begin(), f.common.server_args.end());
  return extra;
}

std::unique_ptr<Cluster> Start(const Flags& f, const std::string& dir, Cluster::Options o) {
  o.metrics = true;
  int starts = 0;
  auto cluster = StartCluster(kTool, dir, o, &starts);
  PrintServerArgs(f.common, starts);
  return cluster;
}

// Two regions of one node each.
std::unique_ptr<Cluster> StartTwoRegions(const Flags& f, const std::string& dir) {
  Cluster::Options o;
  o.regions = 2;
  o.flags = ServerFlags(f, {});
  return Start(f, dir, o);
}

int Repair(const Flags& f) {
  Scratch scratch = MakeScratch(f.common, kTool, "repair");
  auto cluster = StartTwoRegions(f, scratch.dir);
  Client(cluster->address(0)).Set(kProbeKey, "v");
  FillSet(cluster->address(0), kSetKey, f.elements, f.per_call);
  std::string why;
  if (!cluster->WaitConverged(std::chrono::seconds(static_cast<int>(f.timeout_s)), &why)) {
    Fail("the set did not replicate: " + why);
  }
  const uint64_t digest = Client(cluster->address(0)).StateDigest();
  cluster->node(1).Kill();
  std::filesystem::remove_all(cluster->DataDir(1));
  Phase p = Measure(*cluster, "repair", 0, [&](Phase& phase) {
    if (!cluster->StartNode(1, &why)) Fail(why);
    phase.identical = PollUntil([&] { return Client(cluster->address(1)).StateDigest() == digest; },
                                std::chrono::seconds(static_cast<int>(f.timeout_s)));
    phase.detail = "anti-entropy repairs a set of " + std::to_string(f.elements) +
                   " elements on a node whose data dir was wiped; " +
                   std::to_string(SetSize(cluster->address(1), kSetKey)) + " elements there after";
  });
  Print(p, f.common);
  return p.identical ? 0 : 1;
}

int Backlog(const Flags& f) {
  Scratch scratch = MakeScratch(f.common, kTool, "backlog");
  auto cluster = StartTwoRegions(f, scratch.dir);
  Client writer(cluster->address(0));
  writer.Set(kProbeKey, "v");
  cluster->Partition(0);
  for (uint64_t done = 0; done < f.entries;) {
    auto req = writer.kv().batchRequest();
    uint64_t count = std::min<uint64_t>(1000, f.entries - done);
    auto list = req.initRequests(static_cast<unsigned>(count));
    for (uint64_t i = 0; i < count; ++i) {
      auto set = list[static_cast<unsigned>(i)].initSet();
      set.setKey(AsData("backlog-" + std::to_string(done + i)));
      set.setValue(AsData(std::string(100, 'x')));
      set.setConsistency(rpc::Consistency::ONE);
    }
    req.send().wait(writer.ws());
    done += count;
  }
  const uint64_t digest = writer.StateDigest();
  Phase p = Measure(*cluster, "backlog", 0, [&](Phase& phase) {
    cluster->Heal(0);
    phase.identical = PollUntil([&] { return Client(cluster->address(1)).StateDigest() == digest; },
                                std::chrono::seconds(static_cast<int>(f.timeout_s)));
    phase.detail = "a link reconnects with a backlog of " + std::to_string(f.entries) +
                   " log entries";
  });
  Print(p, f.common);
  return p.identical ? 0 : 1;
}

// A key of a segment that `joining` owns once it joins `first`'s region
// (replication factor 1).
std::string KeyMovingTo(ReplicaId first, ReplicaId joining) {
  Ring ring({first, joining});
  for (int i = 0;; ++i) {
    std::string key = std::string(kSetKey) + "-" + std::to_string(i);
    if (ring.Owners(key, 1).front() == joining) return key;
  }
}

int Handover(const Flags& f) {
  Scratch scratch = MakeScratch(f.common, kTool, "handover");
  Cluster::Options o;
  o.regions = 1;
  o.gossip = true;
  o.flags = ServerFlags(f, {"--replication-factor", "1"});
  auto cluster = Start(f, scratch.dir, o);
  Client first(cluster->address(0));
  first.Set(kProbeKey, "v");
  const ReplicaId first_id = first.kv().infoRequest().send().wait(first.ws()).getReplicaId();
  // The joining node's id is made when its store is created: create it now
  // to choose a key that moves to it.
  const std::string joining_dir = cluster->DataDir(1);
  ReplicaId joining_id = 0;
  {
    auto store = Store::Open(joining_dir, StoreOptions{Durability::kWal});
    if (!store.ok()) Fail(store.status().ToString());
    joining_id = (*store)->node_id();
  }
  const std::string key = KeyMovingTo(first_id, joining_id);
  FillSet(cluster->address(0), key, f.elements, f.per_call);
  // The set as the first node holds it, to compare with what arrives.
  std::string why;
  if (cluster->node(0).Stop() != 0) Fail("the first node did not stop cleanly");
  testing::Dump before = testing::DumpDataDir(cluster->DataDir(0), &why);
  if (!why.empty()) Fail(why);
  if (!cluster->StartNode(0, &why)) Fail(why);
  Phase p = Measure(*cluster, "handover", 0, [&](Phase& phase) {
    if (cluster->AddNode(0, &why) != 1) Fail("the second node did not start: " + why);
    // Done once the first node holds none of the keys that move (it drops a
    // key only after its new owner committed it).
    Ring ring({first_id, joining_id});
    const uint64_t staying = ring.Owners(kProbeKey, 1).front() == first_id ? 1 : 0;
    PollUntil([&] {
      Client c(cluster->address(0));
      return c.kv().infoRequest().send().wait(c.ws()).getKeyCount() == staying;
    }, std::chrono::seconds(static_cast<int>(f.timeout_s)));
    phase.detail = "a node hands a segment holding a set of " + std::to_string(f.elements) +
                   " elements to a joining node";
  });
  for (int i = 0; i < 2; ++i) {
    if (cluster->node(i).Stop() != 0) Fail(cluster->Name(i) + " did not stop cleanly");
  }
  testing::Dump first_after = testing::DumpDataDir(cluster->DataDir(0), &why);
  testing::Dump joined = testing::DumpDataDir(cluster->DataDir(1), &why);
  if (!why.empty()) Fail(why);
  p.identical = first_after.count(key) == 0 && joined.count(key) == 1 &&
                joined[key] == before[key];
  Print(p, f.common);
  return p.identical ? 0 : 1;
}

}  // namespace
}  // namespace geokv

int main(int argc, char** argv) {
  using namespace geokv;
  CLI::App app{"Event loop lag of geokv-server while it moves large sets and backlogs"};
  app.require_subcommand(1);
  Flags f;
  auto add = [&](const char* name, const char* help) {
    CLI::App* sub = app.add_subcommand(name, help);
    AddCommonFlags(sub, &f.common);
    sub->add_option("--timeout", f.timeout_s, "Seconds a phase may take")->capture_default_str();
    return sub;
  };
  CLI::App* repair = add("repair", "Anti-entropy repairs a large set on a wiped node");
  repair->add_option("--elements", f.elements, "Elements in the set")->capture_default_str();
  CLI::App* backlog = add("backlog", "A link reconnects with a large backlog");
  backlog->add_option("--entries", f.entries, "Log entries in the backlog")->capture_default_str();
  CLI::App* handover = add("handover", "A segment holding a large set moves to a joining node");
  handover->add_option("--elements", f.elements, "Elements in the set")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return RunMeasurement(kTool, [&] {
    if (repair->parsed()) return Repair(f);
    if (backlog->parsed()) return Backlog(f);
    return Handover(f);
  });
}

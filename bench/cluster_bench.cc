// geokv-cluster-bench: a region of several nodes measured on real processes.
//
// Every subcommand starts geokv-servers on loopback in one region (the
// harness of testing/cluster.h: --durability wal, SWIM gossip
// over UDP when the region has more than one node), drives them over the
// client API and prints what it measured:
//
//   detect           How long after a SIGKILL node 0's cluster() shows the
//                    killed node dead (and first suspect), with the default
//                    gossip period and suspicion timeout, polled every
//                    10 ms. Each trial then restarts the node on its ports
//                    and data dir and waits until every node sees every
//                    member alive again.
//   false-positives  Transitions to suspect and to dead that every node's
//                    cluster() shows, polled every 200 ms, while no node
//                    fails but every node drops a fraction of its gossip
//                    packets (--gossip-drop); and the failureDetections the
//                    nodes report at the end. A correct build sees no dead.
//   throughput       geokv-bench (the built binary, spawned) with workloads W
//                    (sets) and C (gets) at the default consistency, QUORUM,
//                    against a one-node region and then against node 0 of a
//                    three-node region (N = 3); optionally one geokv-bench
//                    per node at once. Prints ops/s and the ratios.
//
// Every reply is checked; the first failure aborts the run with what went
// wrong. Results, and the machine they came from: docs/benchmarks.md.

#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/timer.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench/bench_util.h"
#include "bench/cluster_runs.h"
#include "schema/kv.capnp.h"
#include "schema/kv_text.h"
#include "testing/cluster.h"
#include "testing/percentile.h"
#include "util/cli.h"
#include "util/json.h"

namespace geokv {
namespace {

constexpr char kTool[] = "geokv-cluster-bench";

using Clock = BenchClock;
using testing::ChildProcess;
using testing::Cluster;
using testing::Percentile;

// ---- failing ---------------------------------------------------------------


// ---- talking to the nodes --------------------------------------------------

// A client API connection to one node. Every Node shares the calling
// thread's event loop (EzRpcClient keeps one per thread).
struct Node {
  Node(std::string name, const std::string& address)
      : name(std::move(name)), ez(address), kv(ez.getMain<rpc::GeoKv>()) {}

  kj::WaitScope& ws() { return ez.getWaitScope(); }
  kj::Timer& timer() { return ez.getIoProvider().getTimer(); }

  std::string name;
  capnp::EzRpcClient ez;
  rpc::GeoKv::Client kv;
};

struct MemberView {
  std::string name;
  uint64_t replica_id = 0;
  rpc::MemberState state = rpc::MemberState::ALIVE;
};

// One node's cluster() answer.
struct ClusterView {
  std::vector<MemberView> members;
  uint64_t failure_detections = 0;

  // nullptr when the node does not know `replica_id`.
  const MemberView* Find(uint64_t replica_id) const {
    for (const MemberView& m : members) {
      if (m.replica_id == replica_id) return &m;
    }
    return nullptr;
  }
};

kj::Promise<ClusterView> ClusterAsync(Node& node) {
  const std::string name = node.name;
  return node.kv.clusterRequest()
      .send()
      .then([](capnp::Response<rpc::ClusterInfo>&& reply) {
        ClusterView view;
        view.failure_detections = reply.getFailureDetections();
        for (auto m : reply.getMembers()) {
          view.members.push_back({m.getName().cStr(), m.getReplicaId(), m.getState()});
        }
        return view;
      })
      .catch_([name](kj::Exception&& e) -> ClusterView {
        Fail(fmt::format("cluster() on {} failed: {}", name, e.getDescription().cStr()));
      });
}

ClusterView GetCluster(Node& node) { return ClusterAsync(node).wait(node.ws()); }

// Every node's cluster(), asked at once.
std::vector<ClusterView> GetClusters(std::vector<std::unique_ptr<Node>>& nodes) {
  kj::Vector<kj::Promise<ClusterView>> calls;
  for (auto& node : nodes) calls.add(ClusterAsync(*node));
  auto views = kj::joinPromises(calls.releaseAsArray()).wait(nodes[0]->ws());
  return std::vector<ClusterView>(views.begin(), views.end());
}

struct InfoView {
  uint64_t replica_id = 0;
  uint64_t forwarded = 0;
  uint64_t read_repairs = 0;
};

InfoView GetInfo(Node& node) {
  auto info = node.kv.infoRequest().send().wait(node.ws());
  return {info.getReplicaId(), info.getForwarded(), info.getReadRepairs()};
}

// Runs the event loop (answering whatever is in flight) for `d`.
void Pause(Node& node, std::chrono::milliseconds d) {
  node.timer().afterDelay(d.count() * kj::MILLISECONDS).wait(node.ws());
}

// Connections to every node of `cluster`, node 0 first.
std::vector<std::unique_ptr<Node>> ConnectAll(Cluster& cluster) {
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < cluster.nodes(); ++i) {
    nodes.push_back(std::make_unique<Node>(cluster.Name(i), cluster.address(i)));
  }
  return nodes;
}

// Polls every node's cluster() every 50 ms until each shows `members`
// members, all alive; fails after `timeout`.
void WaitAllAlive(std::vector<std::unique_ptr<Node>>& nodes, size_t members,
                  std::chrono::milliseconds timeout, const std::string& when) {
  const auto start = Clock::now();
  for (;;) {
    std::vector<ClusterView> views = GetClusters(nodes);
    std::string not_yet;
    for (size_t i = 0; i < views.size(); ++i) {
      size_t alive = 0;
      for (const MemberView& m : views[i].members) alive += m.state == rpc::MemberState::ALIVE;
      if (alive != members || views[i].members.size() != members) {
        not_yet += fmt::format("{}{} sees", not_yet.empty() ? "" : "; ", nodes[i]->name);
        for (const MemberView& m : views[i].members) {
          not_yet += fmt::format(" {}={}", m.name, MemberStateName(m.state));
        }
      }
    }
    if (not_yet.empty()) return;
    if (Clock::now() - start > timeout) {
      Fail(fmt::format("{}: not every node saw {} members alive within {} s: {}", when, members,
                       std::chrono::duration_cast<std::chrono::seconds>(timeout).count(),
                       not_yet));
    }
    Pause(*nodes[0], std::chrono::milliseconds(50));
  }
}

// ---- results ---------------------------------------------------------------

double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Spread {
  size_t count = 0;
  double min = 0, median = 0, p90 = 0, max = 0;
};

Spread Summarize(std::vector<double> v) {
  Spread s;
  s.count = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.median = Percentile(v, 0.5);
  s.p90 = Percentile(v, 0.9);
  s.max = v.back();
  return s;
}

std::string SpreadJson(const Spread& s) {
  return fmt::format("{{\"count\":{},\"min\":{:.1f},\"median\":{:.1f},\"p90\":{:.1f},\"max\":{:.1f}}}",
                     s.count, s.min, s.median, s.p90, s.max);
}

// ---- common ----------------------------------------------------------------


// One region of `nodes` nodes, `flags` and then --server-arg for every node.
Cluster::Options RegionOptions(const CommonOptions& c, int nodes,
                               std::vector<std::string> flags) {
  Cluster::Options options;
  options.regions = 1;
  options.nodes_per_region = nodes;
  options.flags = std::move(flags);
  options.flags.insert(options.flags.end(), c.server_args.begin(), c.server_args.end());
  return options;
}


// ---- detect ----------------------------------------------------------------

struct DetectOptions {
  int trials = 20;
  int nodes = 3;
  double timeout_seconds = 60;  // per kill, and per rejoin
};

constexpr auto kDetectPoll = std::chrono::milliseconds(10);

struct Trial {
  std::string victim;
  double suspect_ms = -1;  // -1: never seen suspect before dead
  double dead_ms = 0;
  bool declared_by_node0 = false;  // node 0's failureDetections grew
  double rejoin_ms = 0;            // restart until node 0 shows it alive
  double settle_ms = 0;            // until every node sees every member alive
};

int RunDetect(const CommonOptions& c, const DetectOptions& o) {
  Scratch scratch = MakeScratch(c, kTool, "detect");
  int starts = 0;
  std::unique_ptr<Cluster> started =
      StartCluster(kTool, scratch.dir, RegionOptions(c, o.nodes, {}), &starts);
  Cluster& cluster = *started;
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_seconds * 1000));
  {
    auto all = ConnectAll(cluster);
    WaitAllAlive(all, static_cast<size_t>(o.nodes), timeout, "after the start");
  }
  Node node0(cluster.Name(0), cluster.address(0));

  std::vector<Trial> trials;
  for (int t = 0; t < o.trials; ++t) {
    const int victim = 1 + t % (o.nodes - 1);
    Trial trial;
    trial.victim = cluster.Name(victim);
    uint64_t victim_id;
    {
      Node v(cluster.Name(victim), cluster.address(victim));
      victim_id = GetInfo(v).replica_id;
    }
    const uint64_t detections_before = GetCluster(node0).failure_detections;

    const auto killed = Clock::now();
    cluster.node(victim).Kill();
    for (;;) {
      const ClusterView view = GetCluster(node0);
      const auto now = Clock::now();
      const MemberView* m = view.Find(victim_id);
      if (m == nullptr) {
        Fail(fmt::format("trial {}: {} no longer knows {} (replica {:016x})", t + 1, node0.name,
                         trial.victim, victim_id));
      }
      if (m->state == rpc::MemberState::SUSPECT && trial.suspect_ms < 0) {
        trial.suspect_ms = Millis(now - killed);
      }
      if (m->state == rpc::MemberState::DEAD) {
        trial.dead_ms = Millis(now - killed);
        trial.declared_by_node0 = view.failure_detections > detections_before;
        break;
      }
      if (now - killed > timeout) {
        Fail(fmt::format("trial {}: {} still shows {} {} {:.1f} s after the SIGKILL", t + 1,
                         node0.name, trial.victim, MemberStateName(m->state),
                         Millis(now - killed) / 1000));
      }
      Pause(node0, kDetectPoll);
    }

    const auto restarted = Clock::now();
    std::string why;
    if (!cluster.StartNode(victim, &why)) Fail(fmt::format("trial {}: restart: {}", t + 1, why));
    uint64_t new_id;
    {
      Node v(cluster.Name(victim), cluster.address(victim));
      new_id = GetInfo(v).replica_id;
    }
    for (;;) {
      const ClusterView view = GetCluster(node0);
      const MemberView* m = view.Find(new_id);
      if (m != nullptr && m->state == rpc::MemberState::ALIVE) break;
      if (Clock::now() - restarted > timeout) {
        Fail(fmt::format("trial {}: {} does not show the restarted {} alive after {:.0f} s "
                         "(state {})",
                         t + 1, node0.name, trial.victim, o.timeout_seconds,
                         m ? MemberStateName(m->state) : "unknown"));
      }
      Pause(node0, kDetectPoll);
    }
    trial.rejoin_ms = Millis(Clock::now() - restarted);
    {
      auto all = ConnectAll(cluster);
      WaitAllAlive(all, static_cast<size_t>(o.nodes), timeout,
                   fmt::format("trial {}: after restarting {}", t + 1, trial.victim));
    }
    trial.settle_ms = Millis(Clock::now() - restarted);
    trials.push_back(trial);
    if (!c.json) {
      std::fprintf(stderr, "trial %d/%d: %s dead after %.0f ms\n", t + 1, o.trials,
                   trial.victim.c_str(), trial.dead_ms);
    }
  }

  std::vector<double> dead, suspect, rejoin;
  int by_node0 = 0;
  for (const Trial& t : trials) {
    dead.push_back(t.dead_ms);
    if (t.suspect_ms >= 0) suspect.push_back(t.suspect_ms);
    rejoin.push_back(t.rejoin_ms);
    by_node0 += t.declared_by_node0;
  }
  const Spread d = Summarize(dead), s = Summarize(suspect), r = Summarize(rejoin);

  if (c.json) {
    std::string list;
    for (const Trial& t : trials) {
      list += fmt::format(
          "{}{{\"victim\":{},\"suspect_ms\":{:.1f},\"dead_ms\":{:.1f},\"declared_by_node0\":{},"
          "\"rejoin_ms\":{:.1f},\"settle_ms\":{:.1f}}}",
          list.empty() ? "" : ",", JsonString(t.victim), t.suspect_ms, t.dead_ms,
          t.declared_by_node0 ? "true" : "false", t.rejoin_ms, t.settle_ms);
    }
    std::printf(
        "{\"command\":\"detect\",\"server_args\":%s,\"cluster_starts\":%d,\"regions\":1,"
        "\"nodes\":%d,\"durability\":\"wal\",\"poll_ms\":%lld,\"trials\":%d,"
        "\"dead_ms\":%s,\"suspect_ms\":%s,\"rejoin_ms\":%s,\"declared_by_node0\":%d,"
        "\"per_trial\":[%s]}\n",
        ServerArgsJson(c).c_str(), starts, o.nodes, static_cast<long long>(kDetectPoll.count()),
        o.trials, SpreadJson(d).c_str(), SpreadJson(s).c_str(), SpreadJson(r).c_str(), by_node0,
        list.c_str());
    return 0;
  }
  std::printf("geokv-cluster-bench detect: 1 region of %d nodes, durability wal, gossip flags\n"
              "at the server's defaults; SIGKILL nodes 1..%d in turn, node 0's cluster() polled\n"
              "every %lld ms; each node restarted after it was seen dead\n",
              o.nodes, o.nodes - 1, static_cast<long long>(kDetectPoll.count()));
  PrintServerArgs(c, starts);
  std::printf("\n%-6s %-8s %12s %12s %10s %12s\n", "trial", "victim", "suspect ms", "dead ms",
              "by node 0", "rejoin ms");
  for (size_t i = 0; i < trials.size(); ++i) {
    const Trial& t = trials[i];
    std::printf("%-6zu %-8s %12s %12.0f %10s %12.0f\n", i + 1, t.victim.c_str(),
                t.suspect_ms < 0 ? "not seen" : fmt::format("{:.0f}", t.suspect_ms).c_str(),
                t.dead_ms, t.declared_by_node0 ? "yes" : "no", t.rejoin_ms);
  }
  std::printf("\n%-30s %8s %8s %8s %8s\n", "ms after the SIGKILL", "min", "median", "p90", "max");
  auto row = [](const char* name, const Spread& x) {
    std::printf("%-30s %8.0f %8.0f %8.0f %8.0f\n", name, x.min, x.median, x.p90, x.max);
  };
  row("dead in node 0's cluster()", d);
  row(fmt::format("first suspect ({} of {})", s.count, trials.size()).c_str(), s);
  row("restart -> alive in node 0's", r);
  std::printf("dead declared by node 0's own gossip (its failureDetections grew): %d of %zu\n",
              by_node0, trials.size());
  return 0;
}

// ---- false-positives -------------------------------------------------------

struct FalsePositiveOptions {
  double minutes = 10;
  double drop = 0.05;
  int nodes = 3;
  int poll_ms = 200;
};

// A state change one node showed for a member between two polls.
struct Transition {
  double at_s;
  std::string observer, member, from, to;
};

int RunFalsePositives(const CommonOptions& c, const FalsePositiveOptions& o) {
  Scratch scratch = MakeScratch(c, kTool, "false-positives");
  int starts = 0;
  std::unique_ptr<Cluster> started = StartCluster(kTool,
      scratch.dir, RegionOptions(c, o.nodes, {"--gossip-drop", fmt::format("{}", o.drop)}),
      &starts);
  Cluster& cluster = *started;
  std::vector<std::unique_ptr<Node>> nodes = ConnectAll(cluster);
  WaitAllAlive(nodes, static_cast<size_t>(o.nodes), std::chrono::seconds(60), "after the start");

  // Last state seen, by observer and member replica id.
  std::vector<std::map<uint64_t, rpc::MemberState>> last(nodes.size());
  std::vector<uint64_t> detections_at_start;
  for (const ClusterView& v : GetClusters(nodes)) detections_at_start.push_back(v.failure_detections);

  std::vector<Transition> transitions;
  uint64_t polls = 0;
  double max_poll_gap_ms = 0;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(o.minutes * 60));
  auto previous_poll = start;
  int next_progress_minute = 1;
  std::vector<ClusterView> views;
  for (uint64_t tick = 0;; ++tick) {
    const auto now = Clock::now();
    max_poll_gap_ms = std::max(max_poll_gap_ms, Millis(now - previous_poll));
    previous_poll = now;
    views = GetClusters(nodes);
    ++polls;
    const double at_s = SecondsSince(start);
    for (size_t i = 0; i < views.size(); ++i) {
      for (const MemberView& m : views[i].members) {
        auto it = last[i].find(m.replica_id);
        const rpc::MemberState before =
            it == last[i].end() ? rpc::MemberState::ALIVE : it->second;
        if (it == last[i].end() && m.state != rpc::MemberState::ALIVE && polls > 1) {
          // A member first seen in a state other than alive.
          transitions.push_back(
              {at_s, nodes[i]->name, m.name, "unknown", MemberStateName(m.state)});
        } else if (before != m.state) {
          transitions.push_back({at_s, nodes[i]->name, m.name, MemberStateName(before),
                                 MemberStateName(m.state)});
        }
        last[i][m.replica_id] = m.state;
      }
    }
    if (!c.json && at_s >= next_progress_minute * 60.0) {
      std::fprintf(stderr, "%.1f min: %zu state changes so far\n", at_s / 60,
                   transitions.size());
      ++next_progress_minute;
    }
    if (now >= end) break;
    const auto due = start + (tick + 1) * std::chrono::milliseconds(o.poll_ms);
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(due - Clock::now());
    if (wait.count() > 0) Pause(*nodes[0], wait);
  }
  const double seconds = SecondsSince(start);

  size_t to_suspect = 0, to_dead = 0, to_alive = 0, to_left = 0;
  for (const Transition& t : transitions) {
    to_suspect += t.to == "suspect";
    to_dead += t.to == "dead";
    to_alive += t.to == "alive";
    to_left += t.to == "left";
  }
  uint64_t detections = 0;
  std::vector<uint64_t> detections_by_node;
  for (size_t i = 0; i < views.size(); ++i) {
    detections_by_node.push_back(views[i].failure_detections);
    detections += views[i].failure_detections;
  }
  uint64_t detections_start_sum = 0;
  for (uint64_t d : detections_at_start) detections_start_sum += d;
  // Every node still runs: a node that crashed would have failed a poll.
  for (int i = 0; i < cluster.nodes(); ++i) {
    if (!cluster.node(i).child().Running()) Fail(cluster.Name(i) + " exited during the run");
  }

  if (c.json) {
    std::string list, by_node;
    for (const Transition& t : transitions) {
      list += fmt::format("{}{{\"at_s\":{:.3f},\"observer\":{},\"member\":{},\"from\":{},\"to\":{}}}",
                          list.empty() ? "" : ",", t.at_s, JsonString(t.observer),
                          JsonString(t.member), JsonString(t.from), JsonString(t.to));
    }
    for (size_t i = 0; i < detections_by_node.size(); ++i) {
      by_node += fmt::format("{}{}:{}", by_node.empty() ? "" : ",", JsonString(nodes[i]->name),
                             detections_by_node[i]);
    }
    std::printf(
        "{\"command\":\"false-positives\",\"server_args\":%s,\"cluster_starts\":%d,"
        "\"regions\":1,\"nodes\":%d,\"durability\":\"wal\",\"gossip_drop\":%g,"
        "\"minutes\":%g,\"seconds\":%.3f,\"poll_ms\":%d,\"polls\":%llu,\"max_poll_gap_ms\":%.1f,"
        "\"to_suspect\":%zu,\"to_dead\":%zu,\"to_alive\":%zu,\"to_left\":%zu,"
        "\"failure_detections\":%llu,\"failure_detections_at_start\":%llu,"
        "\"failure_detections_by_node\":{%s},\"transitions\":[%s]}\n",
        ServerArgsJson(c).c_str(), starts, o.nodes, o.drop, o.minutes, seconds, o.poll_ms,
        static_cast<unsigned long long>(polls), max_poll_gap_ms, to_suspect, to_dead, to_alive,
        to_left, static_cast<unsigned long long>(detections),
        static_cast<unsigned long long>(detections_start_sum), by_node.c_str(), list.c_str());
    return 0;
  }
  std::printf("geokv-cluster-bench false-positives: 1 region of %d nodes, durability wal,\n"
              "--gossip-drop %g on every node, other gossip flags at the server's defaults;\n"
              "no node fails; every node's cluster() polled every %d ms\n",
              o.nodes, o.drop, o.poll_ms);
  PrintServerArgs(c, starts);
  std::printf("\n");
  std::printf("ran:                          %.1f s, %llu polls of every node (largest gap "
              "between polls %.0f ms)\n",
              seconds, static_cast<unsigned long long>(polls), max_poll_gap_ms);
  std::printf("transitions to suspect seen:  %zu\n", to_suspect);
  std::printf("transitions to dead seen:     %zu\n", to_dead);
  std::printf("transitions back to alive:    %zu\n", to_alive);
  if (to_left > 0) std::printf("transitions to left seen:     %zu\n", to_left);
  std::printf("failureDetections, summed over the nodes at the end: %llu (at the start: %llu;",
              static_cast<unsigned long long>(detections),
              static_cast<unsigned long long>(detections_start_sum));
  for (size_t i = 0; i < detections_by_node.size(); ++i) {
    std::printf(" %s %llu", nodes[i]->name.c_str(),
                static_cast<unsigned long long>(detections_by_node[i]));
  }
  std::printf(")\n");
  std::printf("(a suspicion refuted within one poll interval can go unseen; failureDetections\n"
              "counts every dead declaration)\n");
  if (!transitions.empty()) {
    std::printf("\n%10s  %-8s %-8s %s\n", "at s", "observer", "member", "change");
    for (const Transition& t : transitions) {
      std::printf("%10.3f  %-8s %-8s %s -> %s\n", t.at_s, t.observer.c_str(), t.member.c_str(),
                  t.from.c_str(), t.to.c_str());
    }
  }
  return 0;
}

// ---- throughput ------------------------------------------------------------

struct ThroughputOptions {
  double duration_seconds = 10;
  size_t inflight = 64;
  uint64_t keys = 100000;
  size_t value_size = 100;
  bool aggregate = true;
  std::string bench_binary = GEOKV_BENCH_BIN;
};

// One geokv-bench run, as its --json output tells it.
struct BenchRun {
  std::string target;  // e.g. "1 node", "3 nodes via r0-0"
  std::string workload;
  std::string connect;
  double load_s = 0;
  double seconds = 0;
  uint64_t ops = 0;
  uint64_t errors = 0;
  std::string first_error;
  double ops_per_s = 0;
  double p50_us = 0, p99_us = 0;
  int exit_status = 0;
  // Node 0's forwarded and readRepairs counters over the run.
  std::optional<uint64_t> forwarded, read_repairs;
};

BenchRun NewRun(std::string target, std::string workload, std::string connect) {
  BenchRun run;
  run.target = std::move(target);
  run.workload = std::move(workload);
  run.connect = std::move(connect);
  return run;
}

double NumberField(const std::string& json, const std::string& field, const std::string& log) {
  std::smatch m;
  const std::regex re("\"" + field + "\":(-?[0-9.eE+]+)");
  if (!std::regex_search(json, m, re)) Fail("geokv-bench's output lacks " + field + ":\n" + log);
  return std::stod(m[1].str());
}

// A started geokv-bench run; Finish() waits for it and reads its output.
class BenchChild {
 public:
  BenchChild(const ThroughputOptions& o, BenchRun run, uint64_t seed, const std::string& log)
      : run_(std::move(run)), log_(log) {
    auto child = ChildProcess::Start(
        {o.bench_binary, "run", "--connect", run_.connect, "--workload", run_.workload,
         "--inflight", std::to_string(o.inflight), "--duration",
         fmt::format("{}", o.duration_seconds), "--keys", std::to_string(o.keys), "--value-size",
         std::to_string(o.value_size), "--seed", std::to_string(seed), "--json"},
        testing::LogTo(log));
    if (!child.ok()) Fail(child.status().ToString());
    child_ = std::move(child).value();
  }

  BenchRun Finish(double timeout_seconds) {
    auto status = child_->Wait(
        std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)));
    const std::string log = child_->Log();
    if (!status) {
      child_->Kill();
      Fail(fmt::format("geokv-bench against {} still running after {:.0f} s:\n{}", run_.connect,
                       timeout_seconds, log));
    }
    run_.exit_status = WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status);
    const size_t at = log.find("{\"command\":\"run\"");
    if (at == std::string::npos) {
      Fail(fmt::format("geokv-bench against {} printed no result (exit {}):\n{}", run_.connect,
                       run_.exit_status, log));
    }
    const std::string json = log.substr(at, log.find('\n', at) - at);
    run_.load_s = NumberField(json, "load_s", log);
    run_.seconds = NumberField(json, "seconds", log);
    run_.ops = static_cast<uint64_t>(NumberField(json, "ops", log));
    run_.errors = static_cast<uint64_t>(NumberField(json, "errors", log));
    run_.ops_per_s = NumberField(json, "ops_per_s", log);
    std::smatch m;
    if (std::regex_search(json, m, std::regex("\"latency_us\":\\{\"p50\":([0-9.]+),\"p99\":([0-9.]+)"))) {
      run_.p50_us = std::stod(m[1].str());
      run_.p99_us = std::stod(m[2].str());
    }
    if (std::regex_search(json, m, std::regex("\"first_error\":\"((?:[^\"\\\\]|\\\\.)*)\""))) {
      run_.first_error = m[1].str();
    }
    return run_;
  }

 private:
  BenchRun run_;
  std::string log_;
  std::unique_ptr<ChildProcess> child_;
};

// The longest a run may take beyond --duration: the load phase (each key
// written once) on a busy machine.
constexpr double kRunSlackSeconds = 300;

BenchRun RunBench(const ThroughputOptions& o, const std::string& dir, const std::string& target,
                  const std::string& workload, const std::string& connect, Node* node0) {
  static int counter = 0;
  std::optional<InfoView> before;
  if (node0 != nullptr) before = GetInfo(*node0);
  BenchChild child(o, NewRun(target, workload, connect), 1,
                   dir + "/bench" + std::to_string(++counter) + ".log");
  BenchRun run = child.Finish(o.duration_seconds + kRunSlackSeconds);
  if (node0 != nullptr) {
    const InfoView after = GetInfo(*node0);
    run.forwarded = after.forwarded - before->forwarded;
    run.read_repairs = after.read_repairs - before->read_repairs;
  }
  return run;
}

// One geokv-bench per node, started together, each with its own seed.
struct Aggregate {
  std::string workload;
  std::vector<BenchRun> runs;
  double ops_per_s = 0;  // the sum of every run's
  double overlap_s = 0;  // how long every run's measured phase overlapped
};

Aggregate RunAggregate(const ThroughputOptions& o, const std::string& dir, Cluster& cluster,
                       const std::string& workload) {
  std::vector<std::unique_ptr<BenchChild>> children;
  for (int i = 0; i < cluster.nodes(); ++i) {
    children.push_back(std::make_unique<BenchChild>(
        o, NewRun("via " + cluster.Name(i), workload, cluster.address(i)),
        static_cast<uint64_t>(i + 1),
        dir + "/aggregate-" + workload + "-" + std::to_string(i) + ".log"));
  }
  Aggregate a;
  a.workload = workload;
  // Every child started at once, so each measured in [load_s, load_s + seconds].
  double latest_start = 0, earliest_end = 1e300;
  for (auto& child : children) {
    a.runs.push_back(child->Finish(o.duration_seconds + kRunSlackSeconds));
    const BenchRun& r = a.runs.back();
    a.ops_per_s += r.ops_per_s;
    latest_start = std::max(latest_start, r.load_s);
    earliest_end = std::min(earliest_end, r.load_s + r.seconds);
  }
  a.overlap_s = std::max(0.0, earliest_end - latest_start);
  return a;
}

std::string RunJson(const BenchRun& r) {
  std::string extra;
  if (r.forwarded) extra += fmt::format(",\"node0_forwarded\":{}", *r.forwarded);
  if (r.read_repairs) extra += fmt::format(",\"node0_read_repairs\":{}", *r.read_repairs);
  return fmt::format(
      "{{\"target\":{},\"workload\":{},\"connect\":{},\"load_s\":{:.3f},\"seconds\":{:.3f},"
      "\"ops\":{},\"ops_per_s\":{:.1f},\"p50_us\":{:.1f},\"p99_us\":{:.1f},\"errors\":{},"
      "\"first_error\":{},\"exit_status\":{}{}}}",
      JsonString(r.target), JsonString(r.workload), JsonString(r.connect), r.load_s, r.seconds,
      r.ops, r.ops_per_s, r.p50_us, r.p99_us, r.errors, JsonString(r.first_error), r.exit_status,
      extra);
}

void PrintRun(const BenchRun& r) {
  std::printf("%-22s %-3s %7.1f %8.1f %10.0f %9.0f %9.0f %7llu", r.target.c_str(),
              r.workload.c_str(), r.load_s, r.seconds, r.ops_per_s, r.p50_us, r.p99_us,
              static_cast<unsigned long long>(r.errors));
  if (r.forwarded) {
    std::printf("  node 0 forwarded %llu, read repairs %llu",
                static_cast<unsigned long long>(*r.forwarded),
                static_cast<unsigned long long>(*r.read_repairs));
  }
  std::printf("\n");
}

int RunThroughput(const CommonOptions& c, const ThroughputOptions& o) {
  if (::access(o.bench_binary.c_str(), X_OK) != 0) {
    Fail(fmt::format("cannot run {}: {} (build geokv-bench or pass --bench-binary)",
                     o.bench_binary, std::strerror(errno)));
  }
  Scratch scratch = MakeScratch(c, kTool, "throughput");
  const std::vector<std::string> workloads = {"W", "C"};
  std::vector<BenchRun> single, region;
  std::vector<Aggregate> aggregates;
  int starts_single = 0, starts_region = 0;
  {
    std::unique_ptr<Cluster> cluster =
        StartCluster(kTool, scratch.dir + "/one-node", RegionOptions(c, 1, {}), &starts_single);
    for (const std::string& w : workloads) {
      single.push_back(
          RunBench(o, scratch.dir, "1 node", w, cluster->address(0), nullptr));
    }
  }
  {
    std::unique_ptr<Cluster> cluster =
        StartCluster(kTool, scratch.dir + "/three-nodes", RegionOptions(c, 3, {}), &starts_region);
    {
      auto all = ConnectAll(*cluster);
      WaitAllAlive(all, 3, std::chrono::seconds(60), "after the start");
    }
    Node node0(cluster->Name(0), cluster->address(0));
    for (const std::string& w : workloads) {
      region.push_back(RunBench(o, scratch.dir, "3 nodes via " + cluster->Name(0), w,
                                cluster->address(0), &node0));
    }
    if (o.aggregate) {
      for (const std::string& w : workloads) {
        aggregates.push_back(RunAggregate(o, scratch.dir, *cluster, w));
      }
    }
  }

  uint64_t errors = 0;
  int bad_exits = 0;
  auto tally = [&](const BenchRun& r) {
    errors += r.errors;
    bad_exits += r.exit_status != 0;
  };
  for (const BenchRun& r : single) tally(r);
  for (const BenchRun& r : region) tally(r);
  for (const Aggregate& a : aggregates) {
    for (const BenchRun& r : a.runs) tally(r);
  }
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };

  if (c.json) {
    std::string single_json, region_json, aggregate_json, ratios_json;
    for (const BenchRun& r : single) single_json += (single_json.empty() ? "" : ",") + RunJson(r);
    for (const BenchRun& r : region) region_json += (region_json.empty() ? "" : ",") + RunJson(r);
    for (const Aggregate& a : aggregates) {
      std::string runs;
      for (const BenchRun& r : a.runs) runs += (runs.empty() ? "" : ",") + RunJson(r);
      aggregate_json += fmt::format("{}{{\"workload\":{},\"ops_per_s\":{:.1f},\"overlap_s\":{:.3f},"
                                    "\"runs\":[{}]}}",
                                    aggregate_json.empty() ? "" : ",", JsonString(a.workload),
                                    a.ops_per_s, a.overlap_s, runs);
    }
    for (size_t i = 0; i < workloads.size(); ++i) {
      ratios_json += fmt::format("{}{}:{{\"three_via_node0_over_one\":{:.3f}",
                                 ratios_json.empty() ? "" : ",", JsonString(workloads[i]),
                                 ratio(region[i].ops_per_s, single[i].ops_per_s));
      if (i < aggregates.size()) {
        ratios_json += fmt::format(",\"three_aggregate_over_one\":{:.3f}",
                                   ratio(aggregates[i].ops_per_s, single[i].ops_per_s));
      }
      ratios_json += "}";
    }
    std::printf(
        "{\"command\":\"throughput\",\"server_args\":%s,\"cluster_starts\":[%d,%d],"
        "\"durability\":\"wal\",\"consistency\":\"quorum (the server's default)\","
        "\"replication_factor\":\"3 (the server's default)\",\"cores\":%u,"
        "\"duration_s\":%g,\"inflight\":%zu,\"keys\":%llu,\"value_size\":%zu,"
        "\"one_node\":[%s],\"three_nodes\":[%s],\"aggregate\":[%s],\"ratios\":{%s},"
        "\"errors\":%llu}\n",
        ServerArgsJson(c).c_str(), starts_single, starts_region,
        std::thread::hardware_concurrency(), o.duration_seconds, o.inflight,
        static_cast<unsigned long long>(o.keys), o.value_size, single_json.c_str(),
        region_json.c_str(), aggregate_json.c_str(), ratios_json.c_str(),
        static_cast<unsigned long long>(errors));
    return errors == 0 && bad_exits == 0 ? 0 : 1;
  }
  std::printf(
      "geokv-cluster-bench throughput: geokv-bench run (spawned, %s)\n"
      "W: sets only, C: gets only; %llu keys (each written once before measuring), %zu-byte\n"
      "values, %zu calls in flight on one connection, %g s; default consistency (QUORUM),\n"
      "default --replication-factor (3), durability wal; a one-node region, then a\n"
      "three-node region; %u cores shared by the servers and the clients\n",
      o.bench_binary.c_str(), static_cast<unsigned long long>(o.keys), o.value_size, o.inflight,
      o.duration_seconds, std::thread::hardware_concurrency());
  PrintServerArgs(c, std::max(starts_single, starts_region));
  std::printf("\n%-22s %-3s %7s %8s %10s %9s %9s %7s\n", "target", "wl", "load s", "seconds",
              "ops/s", "p50 us", "p99 us", "errors");
  for (const BenchRun& r : single) PrintRun(r);
  for (const BenchRun& r : region) PrintRun(r);
  for (const Aggregate& a : aggregates) {
    std::printf("\none geokv-bench per node at once, workload %s (measured phases overlapped "
                "%.1f s):\n",
                a.workload.c_str(), a.overlap_s);
    for (const BenchRun& r : a.runs) PrintRun(r);
    std::printf("%-22s %-3s %7s %8s %10.0f\n", "  sum", a.workload.c_str(), "", "", a.ops_per_s);
  }
  std::printf("\nratios (ops/s)                 W       C\n");
  std::printf("3 nodes via node 0 / 1 node  %5.2f   %5.2f\n",
              ratio(region[0].ops_per_s, single[0].ops_per_s),
              ratio(region[1].ops_per_s, single[1].ops_per_s));
  if (aggregates.size() == 2) {
    std::printf("3 nodes, 3 clients / 1 node  %5.2f   %5.2f\n",
                ratio(aggregates[0].ops_per_s, single[0].ops_per_s),
                ratio(aggregates[1].ops_per_s, single[1].ops_per_s));
  }
  auto print_error = [](const BenchRun& r) {
    if (r.errors == 0 && r.exit_status == 0) return;
    std::printf("%s %s: %llu operations failed, exit status %d; the first: %s\n",
                r.target.c_str(), r.workload.c_str(), static_cast<unsigned long long>(r.errors),
                r.exit_status, r.first_error.c_str());
  };
  for (const BenchRun& r : single) print_error(r);
  for (const BenchRun& r : region) print_error(r);
  for (const Aggregate& a : aggregates) {
    for (const BenchRun& r : a.runs) print_error(r);
  }
  return errors == 0 && bad_exits == 0 ? 0 : 1;
}

// ---- main ------------------------------------------------------------------

int Main(int argc, char** argv) {
  CLI::App app{
      "geokv-cluster-bench: a region of several geokv-servers on loopback (durability\n"
      "wal, SWIM gossip between them), measured on real processes: failure detection,\n"
      "false suspicions under gossip loss, and QUORUM throughput against one node."};
  app.require_subcommand(1);
  app.get_formatter()->column_width(30);

  CommonOptions detect_common, fp_common, tp_common;
  DetectOptions detect;
  CLI::App* detect_cmd = app.add_subcommand(
      "detect",
      "Failure detection: SIGKILL node 1, 2, ... in turn; time until node 0's\n"
      "cluster() (polled every 10 ms) shows it suspect and dead; restart it and wait\n"
      "until every node sees it alive before the next trial.");
  AddCommonFlags(detect_cmd, &detect_common);
  detect_cmd->add_option("--trials", detect.trials, "Kills measured")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  detect_cmd->add_option("--nodes", detect.nodes, "Nodes in the region")
      ->capture_default_str()
      ->check(AtLeast(2));
  detect_cmd->add_option("--timeout", detect.timeout_seconds,
                         "Seconds to wait for a dead or an alive before giving up")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);

  FalsePositiveOptions fp;
  CLI::App* fp_cmd = app.add_subcommand(
      "false-positives",
      "False suspicions: no node fails, every node drops --drop of its gossip packets;\n"
      "polls every node's cluster() and counts transitions to suspect and to dead, then\n"
      "sums failureDetections over the nodes.");
  AddCommonFlags(fp_cmd, &fp_common);
  fp_cmd->add_option("--minutes", fp.minutes, "Minutes to watch (e.g. 0.5 for a quick check)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  fp_cmd->add_option("--drop", fp.drop, "Every node's --gossip-drop")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  fp_cmd->add_option("--nodes", fp.nodes, "Nodes in the region")
      ->capture_default_str()
      ->check(AtLeast(2));
  fp_cmd->add_option("--poll-ms", fp.poll_ms, "Milliseconds between polls")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);

  ThroughputOptions tp;
  CLI::App* tp_cmd = app.add_subcommand(
      "throughput",
      "QUORUM throughput: geokv-bench workloads W (sets) and C (gets) against a one-node\n"
      "region, then against node 0 of a three-node region (N = 3), then (unless\n"
      "--no-aggregate) one geokv-bench per node at once. Prints ops/s and the ratios.");
  AddCommonFlags(tp_cmd, &tp_common);
  tp_cmd->add_option("--duration", tp.duration_seconds, "Seconds measured per run")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  tp_cmd->add_option("--inflight", tp.inflight, "Calls in flight on each connection")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  tp_cmd->add_option("--keys", tp.keys, "geokv-bench's --keys")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  tp_cmd->add_option("--value-size", tp.value_size, "geokv-bench's --value-size")
      ->capture_default_str();
  tp_cmd->add_flag("!--no-aggregate", tp.aggregate,
                   "Skip the runs with one geokv-bench per node");
  tp_cmd->add_option("--bench-binary", tp.bench_binary, "geokv-bench to spawn")
      ->capture_default_str();

  if (auto exit_code = ParseCommandLine(app, argc, argv)) return *exit_code;
  return RunMeasurement(kTool, [&] {
    if (detect_cmd->parsed()) {
      return RunDetect(detect_common, detect);
    } else if (fp_cmd->parsed()) {
      return RunFalsePositives(fp_common, fp);
    } else {
      return RunThroughput(tp_common, tp);
    }
  });
}

}  // namespace
}  // namespace geokv

int main(int argc, char** argv) { return geokv::Main(argc, argv); }

// A Jepsen-style fault test of real geokv-server processes, driven only
// through the client API.
//
// Each run starts three regions of three nodes (N = 3) with a WAN proxy on
// every link between regions (testing/cluster.h). Client threads, spread
// over the regions, write at QUORUM (OR-set adds of unique elements,
// counter increments, LWW sets) and read every acknowledged write back at
// QUORUM through another node of the same region. Meanwhile a nemesis,
// from a seeded random generator, injects one fault at a time: kill -9 and
// restart on the same data dir, SIGSTOP for 2-5 s, a region partitioned
// off and healed, a node joining, a node leaving, a node restarted under
// libfaketime with its clock shifted. At the end every fault is undone,
// the cluster must converge, and tools/nemesis_history.h checks the
// history and every node's final state.
//
// ctest runs a short form (tools/CMakeLists.txt); long runs by hand, e.g.
//   geokv-nemesis --runs 20 --seconds 120 --faults kill,pause,partition,join,leave,skew
// A failing run prints its seed; rerun it with --seed (the faults and the
// clients' choices repeat, their timing does not).

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "schema/kv_text.h"
#include "testing/cluster.h"
#include "tools/nemesis_client.h"
#include "tools/nemesis_history.h"
#include "util/cli.h"

namespace geokv::nemesis {
namespace {

namespace fs = std::filesystem;
using testing::Cluster;
using testing::PollUntil;

constexpr int kExitPassed = 0;
constexpr int kExitViolations = 1;
// The cluster could not be set up (a node did not start at the beginning).
constexpr int kExitHarness = 3;

constexpr int kRegions = 3;
constexpr int kNodesPerRegion = 3;

const std::vector<std::string> kFaultKinds = {"kill", "pause", "partition", "join", "leave",
                                              "skew"};

const std::vector<std::string> kServerFlags = {
    "--replication-factor", "3",    "--anti-entropy-interval", "1s", "--heartbeat", "200ms",
    "--token-wait",         "10s",  "--request-timeout",       "3s", "--leave-timeout",
    "300"};

struct Flags {
  int runs = 1;
  int seconds = 60;
  std::optional<uint64_t> seed;
  std::string faults = "kill,pause,partition,join,leave,skew";
  std::set<std::string> fault_set;
  int clients = 6;
  int skew_ms = 2000;
  int delay_ms = 10;
  int converge_seconds = 180;
  int membership_changes = 1;
  std::string dir;
  bool keep = false;
  bool self_seeded = false;
};

std::optional<int> ParseFlags(int argc, char** argv, Flags* f) {
  CLI::App app{
      "Jepsen-style fault test of geokv: starts three regions of three geokv-server\n"
      "processes (N = 3) with WAN proxies between regions, runs client threads writing\n"
      "OR-set adds, counter increments and LWW sets at QUORUM and reading each acknowledged\n"
      "write back at QUORUM through another node of its region, while a nemesis injects\n"
      "faults from a seeded random generator. At the end it heals everything, waits for\n"
      "convergence and checks every node's state. Exit status: 0 every run passed, 1 a run\n"
      "found violations (its seed is printed), 2 usage error, 3 a cluster could not be\n"
      "started."};
  app.get_formatter()->column_width(30);
  app.add_option("--runs", f->runs, "Runs, each on a fresh cluster")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--seconds", f->seconds, "How long the clients and the nemesis run in each run")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--seed", f->seed,
                 "Seed of the first run (run i uses SEED + i); default: a new random seed for "
                 "every run, printed");
  app.add_option("--faults", f->faults,
                 "Comma-separated fault kinds the nemesis picks from, or 'none': kill (kill -9 "
                 "and restart on the same data dir after 1-8 s), pause (SIGSTOP for 2-5 s, "
                 "then SIGCONT), partition (a region cut off from the others for 2-8 s, then "
                 "healed), join (a fourth node joins a region), leave (a node leaves through "
                 "the admin API, from the region a node joined when join is on), skew (a node restarted under libfaketime, its clock shifted by up to "
                 "--skew-ms either way, for 5-10 s)")
      ->capture_default_str();
  app.add_option("--clients", f->clients, "Client threads, spread round-robin over the regions")
      ->capture_default_str()
      ->check(AtLeast(2));
  app.add_option("--skew-ms", f->skew_ms,
                 "Largest clock shift of the skew fault, in ms (at least 100)")
      ->capture_default_str()
      ->check(AtLeast(100));
  app.add_option("--delay-ms", f->delay_ms, "One-way delay of every link between regions, in ms")
      ->capture_default_str()
      ->check(AtLeast(0));
  app.add_option("--membership-changes", f->membership_changes,
                 "Joins and leaves per run at most, alternating (one of either when the "
                 "other is not among the faults)")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--converge-seconds", f->converge_seconds,
                 "How long the healed cluster may take to converge before the run fails")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--dir", f->dir,
                 "Where each run's data dirs and logs go (a subdirectory per run); default: "
                 "the system's temp dir");
  app.add_flag("--keep", f->keep,
               "Keep the directories of passing runs too (a failing run's is always kept)");
  app.add_flag("--self-seeded-first-nodes", f->self_seeded,
               "Give each region's first node only itself as its gossip seed (the others name "
               "it alone) instead of every node naming the region's first three; restarted, "
               "such a node joins through the members its data dir kept");
  if (auto exit_code = ParseCommandLine(app, argc, argv)) return *exit_code;

  std::stringstream list(f->faults);
  std::string kind;
  while (std::getline(list, kind, ',')) {
    if (kind.empty() || kind == "none") continue;
    if (std::find(kFaultKinds.begin(), kFaultKinds.end(), kind) == kFaultKinds.end()) {
      std::fprintf(stderr,
                   "--faults: unknown fault kind '%s'\nRun with --help for more information.\n",
                   kind.c_str());
      return kExitUsage;
    }
    f->fault_set.insert(kind);
  }
  if (f->fault_set.count("skew") && testing::FaketimeLibrary().empty()) {
    std::fprintf(stderr, "--faults skew needs libfaketime (Debian's faketime package; "
                         "scripts/install-deps.sh installs it)\n");
    return kExitUsage;
  }
  return std::nullopt;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Injects faults one at a time on the thread that started the cluster (its
// children die with the thread that started them), and undoes them at the
// end. Not thread-safe.
class Nemesis {
 public:
  Nemesis(Cluster& cluster, Directory& directory, History& history, const Flags& flags,
          uint64_t seed, Clock::time_point origin)
      : cluster_(cluster),
        directory_(directory),
        history_(history),
        flags_(flags),
        rng_(seed),
        origin_(origin) {
    for (int i = 0; i < cluster_.nodes(); ++i) Publish(i, true);
  }

  // Injects faults until `deadline`. False when a fault could not be undone
  // (a node that does not start again), which ends the run.
  bool Run(Clock::time_point deadline) {
    while (Clock::now() < deadline) {
      Pause(Ms(500, 2000));
      if (Clock::now() >= deadline) break;
      std::vector<std::string> kinds;
      for (const std::string& kind : flags_.fault_set) {
        if (kind == "join" && !MayJoin()) continue;
        if (kind == "leave" && !MayLeave()) continue;
        kinds.push_back(kind);
      }
      if (kinds.empty()) continue;
      const std::string kind = kinds[rng_() % kinds.size()];
      ++injected_[kind];
      bool ok = kind == "kill"        ? Kill()
                : kind == "pause"     ? PauseNode()
                : kind == "partition" ? PartitionRegion()
                : kind == "join"      ? Join()
                : kind == "leave"     ? Leave()
                                      : Skew();
      if (!ok) return false;
    }
    return true;
  }

  // Heals every region, restarts nodes that are down (a node that exited
  // on its own is a violation), and makes the latest joined node leave
  // when its region still has a node more than N, so that every region
  // ends with N nodes each holding every key. False when a node does not
  // start.
  bool Finish() {
    for (int r = 0; r < kRegions; ++r) cluster_.Heal(r);
    for (int i : Members()) {
      if (cluster_.node(i).Running()) continue;
      history_.AddViolation(cluster_.Name(i) + " exited on its own: " +
                            cluster_.node(i).child().LogTail());
      if (!Restart(i)) return false;
    }
    if (grown_ >= 0) {
      Log("the joined node " + cluster_.Name(joined_) + " leaves so that its region has N nodes");
      if (!MakeLeave(joined_)) return false;
    }
    return true;
  }

  // Started, and neither leaving nor left.
  std::vector<int> Members() const {
    std::vector<int> out;
    for (int i = 0; i < cluster_.nodes(); ++i) {
      if (!gone_.count(i)) out.push_back(i);
    }
    return out;
  }

  // What Log printed, a line each.
  const std::vector<std::string>& timeline() const { return timeline_; }

  std::string Injected() const {
    std::string out;
    for (const std::string& kind : kFaultKinds) {
      auto it = injected_.find(kind);
      out += " " + kind + " " + std::to_string(it == injected_.end() ? 0 : it->second);
    }
    return out;
  }

 private:
  std::chrono::milliseconds Ms(int lo, int hi) {
    return std::chrono::milliseconds(lo + static_cast<int>(rng_() % (hi - lo + 1)));
  }
  // The nemesis's own fault durations: timed on purpose.
  static void Pause(std::chrono::milliseconds d) { std::this_thread::sleep_for(d); }

  void Log(const std::string& what) {
    timeline_.push_back(fmt::format("[{:7.1f} s] {}", Seconds(Clock::now() - origin_), what));
    std::printf("%s\n", timeline_.back().c_str());
    std::fflush(stdout);
  }

  void Publish(int i, bool member) {
    directory_.Set(i, Directory::Node{cluster_.RegionOf(i), cluster_.Name(i),
                                      cluster_.address(i), member});
  }

  int RandomMember() {
    std::vector<int> members = Members();
    return members[rng_() % members.size()];
  }

  bool Restart(int i) {
    std::string why;
    if (!cluster_.StartNode(i, &why)) {
      history_.AddViolation(cluster_.Name(i) + " did not start again: " + why);
      return false;
    }
    directory_.SetAddress(i, cluster_.address(i));
    return true;
  }

  bool Kill() {
    const int i = RandomMember();
    const auto down = Ms(1000, 8000);
    Log("kill -9 " + cluster_.Name(i) + ", restart after " + std::to_string(down.count()) + " ms");
    cluster_.node(i).Kill();
    Pause(down);
    return Restart(i);
  }

  bool PauseNode() {
    const int i = RandomMember();
    const auto paused = Ms(2000, 5000);
    Log("SIGSTOP " + cluster_.Name(i) + " for " + std::to_string(paused.count()) + " ms");
    cluster_.node(i).child().Signal(SIGSTOP);
    Pause(paused);
    cluster_.node(i).child().Signal(SIGCONT);
    return true;
  }

  bool PartitionRegion() {
    const int r = static_cast<int>(rng_() % kRegions);
    const auto cut = Ms(2000, 8000);
    Log("partition " + Cluster::Region(r) + " off for " + std::to_string(cut.count()) + " ms");
    cluster_.Partition(r);
    Pause(cut);
    cluster_.Heal(r);
    return true;
  }

  // Joins and leaves alternate, --membership-changes of each at most, so
  // that a region has N or N + 1 nodes; without leaves there is one join,
  // without joins one leave.
  bool MayJoin() const {
    if (!flags_.fault_set.count("leave")) return joins_ == 0;
    return grown_ < 0 && joins_ < flags_.membership_changes;
  }
  bool MayLeave() const {
    if (!flags_.fault_set.count("join")) return leaves_ == 0;
    return grown_ >= 0 && leaves_ < flags_.membership_changes;
  }

  bool Join() {
    const int r = static_cast<int>(rng_() % kRegions);
    std::string why;
    const int j = cluster_.AddNode(r, &why);
    if (j < 0) {
      history_.AddViolation("a node joining " + Cluster::Region(r) + " did not start: " + why);
      return false;
    }
    joined_ = j;
    grown_ = r;
    ++joins_;
    Log(cluster_.Name(j) + " joins " + Cluster::Region(r));
    Publish(j, true);
    return true;
  }

  bool Leave() {
    // The region of the joined node, if any; never a region's first node,
    // which the others name as their seed and peer.
    const int r = grown_ >= 0 ? grown_ : static_cast<int>(rng_() % kRegions);
    std::vector<int> candidates;
    for (int i : Members()) {
      if (cluster_.RegionOf(i) == r && i != r * kNodesPerRegion) candidates.push_back(i);
    }
    const int i = candidates[rng_() % candidates.size()];
    Log(cluster_.Name(i) + " leaves");
    grown_ = -1;
    ++leaves_;
    return MakeLeave(i);
  }

  // Asks node i to leave and waits until it exits. Its leaving failing is a
  // violation; the run goes on without it either way.
  bool MakeLeave(int i) {
    gone_.insert(i);
    directory_.SetMember(i, false);
    const auto start = Clock::now();
    std::string failure;
    try {
      Connections connections;
      auto& c = connections.Get(cluster_.address(i));
      auto req = c.kv.leaveRequest();
      auto code = Call(c, req).getOutcome().getCode();
      if (code != rpc::Outcome::Code::OK) {
        failure = std::string("leave answered ") + OutcomeName(code);
      }
    } catch (const kj::Exception& e) {
      failure = std::string("leave failed: ") + e.getDescription().cStr();
    }
    if (failure.empty()) {
      auto status = cluster_.node(i).child().Wait(std::chrono::seconds(flags_.converge_seconds));
      if (!status) {
        failure = "did not finish leaving within " + std::to_string(flags_.converge_seconds) + " s";
        cluster_.node(i).Kill();
      } else if (*status != 0) {
        failure = "exited with " + testing::WaitStatusText(*status) + " while leaving";
      }
    }
    if (!failure.empty()) {
      history_.AddViolation(cluster_.Name(i) + " " + failure + ": " +
                            cluster_.node(i).child().LogTail());
      if (cluster_.node(i).Running()) cluster_.node(i).Kill();
      return true;
    }
    Log(cluster_.Name(i) + " left after " + std::to_string(Seconds(Clock::now() - start)) + " s");
    return true;
  }

  bool Skew() {
    const int i = RandomMember();
    const int magnitude = 100 + static_cast<int>(rng_() % (flags_.skew_ms - 99));
    const bool ahead = rng_() % 2 == 0;
    char offset[32];
    std::snprintf(offset, sizeof(offset), "%c%d.%03d", ahead ? '+' : '-', magnitude / 1000,
                  magnitude % 1000);
    const auto held = Ms(5000, 10000);
    Log("restart " + cluster_.Name(i) + " with its clock " + offset + " s off for " +
        std::to_string(held.count()) + " ms");
    cluster_.node(i).Stop(std::chrono::seconds(30));
    cluster_.SetNodeWrapper(i, testing::FaketimeWrapper(offset));
    if (!Restart(i)) return false;
    Pause(held);
    cluster_.node(i).Stop(std::chrono::seconds(30));
    cluster_.ClearNodeWrapper(i);
    return Restart(i);
  }

  Cluster& cluster_;
  Directory& directory_;
  History& history_;
  const Flags& flags_;
  std::mt19937_64 rng_;
  const Clock::time_point origin_;
  std::vector<std::string> timeline_;
  std::map<std::string, int> injected_;
  std::set<int> gone_;  // leaving or left
  int joined_ = -1;  // the latest node to join
  int grown_ = -1;   // the region with a joined node more than N, if any
  int joins_ = 0;
  int leaves_ = 0;
};

// One run on a fresh cluster in `dir`. Returns kExitPassed,
// kExitViolations or kExitHarness.
int RunOnce(const Flags& flags, uint64_t seed, const std::string& dir) {
  Cluster::Options options;
  options.regions = kRegions;
  options.nodes_per_region = kNodesPerRegion;
  options.delay = std::chrono::milliseconds(flags.delay_ms);
  options.flags = kServerFlags;
  options.all_seeds = !flags.self_seeded;
  Cluster cluster(dir, options);
  std::string why;
  if (!cluster.Start(&why)) {
    std::printf("geokv-nemesis: the cluster did not start: %s\n", why.c_str());
    return kExitHarness;
  }

  const Clock::time_point origin = Clock::now();
  History history(origin);
  Directory directory;
  Nemesis nemesis(cluster, directory, history, flags, seed, origin);
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < flags.clients; ++c) {
    ClientOptions co;
    co.id = c;
    co.region = c % kRegions;
    co.seed = seed * 1000003 + static_cast<uint64_t>(c) + 1;
    clients.emplace_back([co, &directory, &history, &stop] {
      RunClient(co, directory, history, stop);
    });
  }
  const bool undone = nemesis.Run(origin + std::chrono::seconds(flags.seconds));
  std::string converged;
  stop = true;
  for (std::thread& t : clients) t.join();
  const Clock::time_point clients_done = Clock::now();

  if (undone && nemesis.Finish()) {
    std::vector<int> members = nemesis.Members();
    if (!cluster.WaitConverged(std::chrono::seconds(flags.converge_seconds), &why, members)) {
      history.AddViolation("no convergence within " + std::to_string(flags.converge_seconds) +
                           " s after healing: " + why);
    } else {
      converged = fmt::format("[{:7.1f} s] converged {:.1f} s after the clients stopped\n",
                              Seconds(Clock::now() - origin), Seconds(Clock::now() - clients_done));
      std::printf("%s", converged.c_str());
    }
    std::vector<NodeState> states;
    for (int i : members) {
      NodeState state;
      state.node = cluster.Name(i);
      if (!ReadNodeState(cluster.address(i), history, &state, &why)) {
        history.AddViolation("the final reads of " + state.node + " failed: " + why);
        continue;
      }
      states.push_back(std::move(state));
    }
    history.CheckFinal(states);
  }

  const std::vector<std::string> violations = history.violations();
  std::string summary = "operations:\n" + history.Summary() +
                        "faults injected:" + nemesis.Injected() + "\n" +
                        "violations: " + std::to_string(violations.size()) + "\n";
  for (const std::string& v : violations) summary += "  - " + v + "\n";
  std::printf("%s", summary.c_str());
  // The run's account beside its logs, for a failing run that is kept.
  std::ofstream report(fs::path(dir) / "report.txt");
  for (const std::string& line : nemesis.timeline()) report << line << "\n";
  report << converged << summary;
  return violations.empty() ? kExitPassed : kExitViolations;
}

int Main(const Flags& flags) {
  std::random_device device;
  const fs::path base = flags.dir.empty() ? fs::temp_directory_path() : fs::path(flags.dir);
  int passed = 0;
  std::vector<uint64_t> failed;
  bool violations_found = false;
  for (int run = 0; run < flags.runs; ++run) {
    const uint64_t seed = flags.seed ? *flags.seed + static_cast<uint64_t>(run)
                                     : (uint64_t{device()} << 32) | device();
    const fs::path dir = base / ("geokv-nemesis-" + std::to_string(seed));
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::create_directories(dir, ec);
    if (ec) {
      std::fprintf(stderr, "geokv-nemesis: cannot create %s: %s\n", dir.c_str(),
                   ec.message().c_str());
      return kExitHarness;
    }
    std::printf("geokv-nemesis: run %d of %d, seed %llu, %d s, faults %s, %d clients, in %s\n",
                run + 1, flags.runs, static_cast<unsigned long long>(seed), flags.seconds,
                flags.fault_set.empty() ? "none" : flags.faults.c_str(), flags.clients,
                dir.c_str());
    std::fflush(stdout);
    const auto start = Clock::now();
    const int result = RunOnce(flags, seed, dir.string());
    const double took = Seconds(Clock::now() - start);
    if (result == kExitPassed) {
      ++passed;
      std::printf("geokv-nemesis: run %d PASSED (seed %llu) in %.0f s\n\n", run + 1,
                  static_cast<unsigned long long>(seed), took);
      if (!flags.keep) fs::remove_all(dir, ec);
    } else {
      violations_found = violations_found || result == kExitViolations;
      failed.push_back(seed);
      std::printf("geokv-nemesis: run %d FAILED (seed %llu) in %.0f s; logs and data in %s\n"
                  "rerun: geokv-nemesis --seed %llu --seconds %d --faults %s --clients %d "
                  "--skew-ms %d --delay-ms %d --membership-changes %d%s\n\n",
                  run + 1, static_cast<unsigned long long>(seed), took, dir.c_str(),
                  static_cast<unsigned long long>(seed), flags.seconds,
                  flags.fault_set.empty() ? "none" : flags.faults.c_str(), flags.clients,
                  flags.skew_ms, flags.delay_ms, flags.membership_changes,
                  flags.self_seeded ? " --self-seeded-first-nodes" : "");
    }
    std::fflush(stdout);
  }
  std::printf("geokv-nemesis: %d of %d runs passed", passed, flags.runs);
  if (!failed.empty()) {
    std::printf("; failing seeds:");
    for (uint64_t s : failed) std::printf(" %llu", static_cast<unsigned long long>(s));
  }
  std::printf("\n");
  if (failed.empty()) return kExitPassed;
  return violations_found ? kExitViolations : kExitHarness;
}

}  // namespace
}  // namespace geokv::nemesis

int main(int argc, char** argv) {
  geokv::nemesis::Flags flags;
  if (auto exit_code = geokv::nemesis::ParseFlags(argc, argv, &flags)) return *exit_code;
  // The WAN proxies warn of every refused connection, which the faults
  // cause by the hundred; the nodes' own logs are in their files.
  spdlog::set_level(spdlog::level::err);
  return geokv::nemesis::Main(flags);
}

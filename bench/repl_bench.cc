// geokv-repl-bench: geo-replication measured on real processes.
//
// Every subcommand starts one geokv-server per region on loopback, with a
// WAN proxy on every directed link between regions (the harness of
// testing/cluster.h), drives the nodes over the client API from
// one Cap'n Proto event loop, and prints what it measured:
//
//   lag          How long after region 0 acknowledges a write region 1 can
//                read it: a get carrying the write's token, sent to region 1
//                the moment the write's reply arrives, at half of region 0's
//                peak write rate, with a one-way delay on every link.
//   orset-bytes  The bytes one OR-set add costs on the link region 0 ->
//                region 1, into a large set and into an empty one: a delta
//                must carry the element, not the set.
//   converge     How long three regions take to agree (the same stateDigest)
//                after a partitioned region heals, both sides having taken
//                writes while apart; by the log, or by anti-entropy when the
//                backlog outgrew --max-backlog.
//
// Every node runs with --durability wal (the harness's choice). Every reply
// is checked; the first failure aborts the run with what went wrong.
// Results, and the machine they came from: docs/benchmarks.md.

#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/timer.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <string_view>
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

constexpr char kTool[] = "geokv-repl-bench";

using Clock = BenchClock;
using testing::Cluster;
using testing::Percentile;

// ---- failing ---------------------------------------------------------------


void Check(rpc::Outcome::Reader outcome, std::string_view what) {
  if (outcome.getCode() == rpc::Outcome::Code::OK) return;
  Fail(fmt::format("{}: {}: {}", what, OutcomeName(outcome.getCode()),
                   outcome.getMessage().cStr()));
}

// ---- talking to the nodes --------------------------------------------------

// A client API connection to one region's node, over TLS when the cluster
// has it. Every Node shares the calling thread's event loop.
using Node = testing::Client;

// Resolves with the write's token.
kj::Promise<std::string> SetAsync(rpc::GeoKv::Client& kv, std::string_view key,
                                  std::string_view value) {
  auto req = kv.setRequest();
  req.setKey(AsData(key));
  req.setValue(AsData(value));
  return req.send().then([](capnp::Response<rpc::WriteReply>&& reply) {
    Check(reply.getOutcome(), "set");
    return String(reply.getToken());
  });
}

std::string SAdd(Node& node, std::string_view key, const std::vector<std::string>& elements) {
  auto req = node.kv().sAddRequest();
  req.setKey(AsData(key));
  auto list = req.initElements(static_cast<unsigned>(elements.size()));
  for (size_t i = 0; i < elements.size(); ++i) {
    list.set(static_cast<unsigned>(i), AsData(elements[i]));
  }
  auto reply = req.send().wait(node.ws());
  Check(reply.getOutcome(), "sAdd");
  return String(reply.getToken());
}

void SetTokens(capnp::List<capnp::Data>::Builder list, const std::vector<std::string>& tokens) {
  for (size_t i = 0; i < tokens.size(); ++i) list.set(static_cast<unsigned>(i), AsData(tokens[i]));
}

// Answers once `regions` (empty: every region) hold the tokens' writes, as
// `node` learns through its peer links.
kj::Promise<void> WaitReplicated(Node& node, const std::vector<std::string>& tokens,
                                 const std::vector<std::string>& regions,
                                 std::chrono::milliseconds timeout) {
  auto req = node.kv().waitReplicatedRequest();
  SetTokens(req.initTokens(static_cast<unsigned>(tokens.size())), tokens);
  auto list = req.initRegions(static_cast<unsigned>(regions.size()));
  for (size_t i = 0; i < regions.size(); ++i) list.set(static_cast<unsigned>(i), regions[i]);
  req.setTimeoutMs(static_cast<uint32_t>(timeout.count()));
  return req.send().then([](capnp::Response<rpc::WaitReplicatedReply>&& reply) {
    std::string missing;
    for (auto region : reply.getMissing()) missing += std::string(" ") + region.cStr();
    Check(reply.getOutcome(),
          "waitReplicated" + (missing.empty() ? "" : " (missing:" + missing + ")"));
  });
}

// Runs the event loop (answering whatever is in flight) for `d`.
void Pause(Node& node, std::chrono::milliseconds d) {
  node.io().getTimer().afterDelay(d.count() * kj::MILLISECONDS).wait(node.ws());
}

// ---- load ------------------------------------------------------------------

// Values of `size` random (incompressible) bytes, a few distinct ones reused.
std::vector<std::string> MakeValues(size_t size) {
  constexpr size_t kDistinct = 1024;
  std::mt19937_64 rng(1);
  std::vector<std::string> values(kDistinct, std::string(size, '\0'));
  for (std::string& v : values) {
    for (char& c : v) c = static_cast<char>(rng());
  }
  return values;
}

std::string Key(std::string_view prefix, uint64_t i) { return fmt::format("{}{:010d}", prefix, i); }

// Issues operations at a fixed rate on the event loop: operation i is due
// i / rate seconds after Run() begins, checked every millisecond. At most
// `max_inflight` are outstanding; while that many are, due operations wait
// (the load falls behind schedule rather than piling up). Run() resolves
// once every operation was issued and answered, and fails as soon as one
// does.
class PacedLoad : private kj::TaskSet::ErrorHandler {
 public:
  using Issue = std::function<kj::Promise<void>(uint64_t i)>;

  PacedLoad(kj::Timer& timer, double rate, uint64_t total, size_t max_inflight, Issue issue)
      : timer_(timer), rate_(rate), total_(total), max_inflight_(max_inflight),
        issue_(std::move(issue)) {}

  kj::Promise<void> Run() {
    start_ = Clock::now();
    auto failed = kj::newPromiseAndFulfiller<void>();
    failed_ = kj::mv(failed.fulfiller);
    return Tick()
        .then([this] { return tasks_.onEmpty(); })
        .exclusiveJoin(kj::mv(failed.promise))
        .then([this] { seconds_ = SecondsSince(start_); });
  }

  // From Run() until the last answer.
  double seconds() const { return seconds_; }
  // From Run() until the last operation was issued.
  double issue_seconds() const { return issue_seconds_; }
  // The furthest the issued operations fell behind the schedule.
  double max_behind_seconds() const { return max_behind_; }
  size_t max_inflight_seen() const { return max_inflight_seen_; }

 private:
  kj::Promise<void> Tick() {
    const double elapsed = SecondsSince(start_);
    const uint64_t due =
        std::min<uint64_t>(total_, static_cast<uint64_t>(elapsed * rate_) + 1);
    // How late the oldest due operation is: a busy event loop or the
    // in-flight cap.
    if (issued_ < due) {
      max_behind_ = std::max(max_behind_, elapsed - static_cast<double>(issued_) / rate_);
    }
    while (issued_ < due && inflight_ < max_inflight_) {
      const uint64_t i = issued_++;
      ++inflight_;
      max_inflight_seen_ = std::max(max_inflight_seen_, inflight_);
      tasks_.add(issue_(i).then([this] { --inflight_; }));
    }
    if (issued_ == total_) {
      issue_seconds_ = SecondsSince(start_);
      return kj::READY_NOW;
    }
    return timer_.afterDelay(1 * kj::MILLISECONDS).then([this] { return Tick(); });
  }

  void taskFailed(kj::Exception&& e) override {
    if (failed_->isWaiting()) failed_->reject(kj::mv(e));
  }

  kj::Timer& timer_;
  const double rate_;
  const uint64_t total_;
  const size_t max_inflight_;
  Issue issue_;
  kj::TaskSet tasks_{*this};
  kj::Own<kj::PromiseFulfiller<void>> failed_;
  Clock::time_point start_;
  uint64_t issued_ = 0;
  size_t inflight_ = 0;
  size_t max_inflight_seen_ = 0;
  double seconds_ = 0;
  double issue_seconds_ = 0;
  double max_behind_ = 0;
};

// ---- results ---------------------------------------------------------------

double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

const char* MetText(bool met) { return met ? "met" : "MISSED"; }
const char* JsonBool(bool b) { return b ? "true" : "false"; }

// ---- common ----------------------------------------------------------------

void AddTlsFlag(CLI::App* cmd, CommonOptions* c) {
  cmd->add_flag("--tls", c->tls,
                "Every node with TLS on every port and mutual TLS between nodes (certificates "
                "made in the scratch directory); the benchmark's clients over TLS");
}


// Three regions, `delay` one-way on every link, `flags` and then
// --server-arg for every node.
Cluster::Options ClusterOptions(const CommonOptions& c, std::chrono::milliseconds delay,
                                std::vector<std::string> flags) {
  Cluster::Options options;
  options.regions = 3;
  options.delay = delay;
  options.tls = c.tls;
  options.flags = std::move(flags);
  options.flags.insert(options.flags.end(), c.server_args.begin(), c.server_args.end());
  return options;
}


// ---- lag -------------------------------------------------------------------

struct LagOptions {
  int delay_ms = 50;
  size_t value_size = 100;
  size_t inflight = 64;
  double peak_seconds = 3;
  double duration_seconds = 10;
  double rate = 0;  // 0: half the measured peak
};

// The slack the lag goal allows over the one-way delay.
constexpr double kLagSlackMs = 20;
// Writes in flight in the lag phase before it falls behind schedule; far
// above what the rate needs at the delay, so it never binds unless the
// nodes cannot keep up.
constexpr size_t kLagMaxInflight = 100000;

// Region 0's peak: `inflight` lanes each issuing its next set as soon as its
// last is answered, for `seconds`.
struct Peak {
  uint64_t writes = 0;
  double seconds = 0;
  std::vector<std::string> last_tokens;  // each lane's last write
  double rate() const { return static_cast<double>(writes) / seconds; }
};

kj::Promise<void> PeakLane(Node& node, const std::vector<std::string>& values,
                           Clock::time_point end, uint64_t* next, Peak* peak,
                           std::string last_token) {
  if (Clock::now() >= end) {
    peak->last_tokens.push_back(std::move(last_token));
    return kj::READY_NOW;
  }
  const uint64_t i = (*next)++;
  return SetAsync(node.kv(), Key("peak", i), values[i % values.size()])
      .then([&node, &values, end, next, peak](std::string token) {
        ++peak->writes;
        return PeakLane(node, values, end, next, peak, std::move(token));
      });
}

Peak MeasurePeak(Node& node, const LagOptions& o, const std::vector<std::string>& values) {
  Peak peak;
  uint64_t next = 0;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(o.peak_seconds));
  kj::Vector<kj::Promise<void>> lanes;
  for (size_t i = 0; i < o.inflight; ++i) lanes.add(PeakLane(node, values, end, &next, &peak, ""));
  kj::joinPromises(lanes.releaseAsArray()).wait(node.ws());
  peak.seconds = SecondsSince(start);
  return peak;
}

// Samples region 0's log bytes not yet acknowledged by region 1, every
// 250 ms, until cancelled.
kj::Promise<void> SampleBacklog(Node& node, uint64_t* max_backlog) {
  auto sampled = [&node, max_backlog](capnp::Response<rpc::NodeInfo>&& info) {
    for (auto peer : info.getPeers()) {
      if (peer.getRegion() == Cluster::Region(1)) {
        *max_backlog = std::max(*max_backlog, peer.getBacklogBytes());
      }
    }
    return node.io().getTimer().afterDelay(250 * kj::MILLISECONDS).then([&node, max_backlog] {
      return SampleBacklog(node, max_backlog);
    });
  };
  return node.kv().infoRequest().send().then(kj::mv(sampled));
}

int RunLag(const CommonOptions& c, const LagOptions& o) {
  Scratch scratch = MakeScratch(c, kTool, "lag");
  int starts = 0;
  std::unique_ptr<Cluster> started = StartCluster(kTool,
      scratch.dir,
      ClusterOptions(c, std::chrono::milliseconds(o.delay_ms), {"--token-wait", "30s"}),
      &starts);
  Cluster& cluster = *started;
  Node r0(cluster, 0), r1(cluster, 1);
  const std::vector<std::string> values = MakeValues(o.value_size);

  // 1. Region 0's peak write rate, replicating to both other regions.
  Peak peak = MeasurePeak(r0, o, values);
  // Let the peak's writes reach every region, so the lag phase starts idle.
  WaitReplicated(r0, peak.last_tokens, {}, std::chrono::seconds(120)).wait(r0.ws());
  Pause(r0, std::chrono::seconds(1));

  // 2. Writes at a fixed rate; each acknowledged write is read in region 1
  // with its token at once. lag = read answered - write acknowledged.
  const double rate = o.rate > 0 ? o.rate : peak.rate() / 2;
  const auto total = static_cast<uint64_t>(std::llround(rate * o.duration_seconds));
  if (total == 0) Fail("lag: the rate times --duration is less than one write");
  std::vector<double> lag_ms, ack_ms;
  lag_ms.reserve(total);
  ack_ms.reserve(total);
  PacedLoad load(r0.io().getTimer(), rate, total, kLagMaxInflight, [&](uint64_t i) {
    const std::string key = Key("lag", i);
    const std::string* value = &values[i % values.size()];
    const auto sent = Clock::now();
    return SetAsync(r0.kv(), key, *value).then([&, key, value, sent](std::string token) {
      const auto acked = Clock::now();
      ack_ms.push_back(Millis(acked - sent));
      auto get = r1.kv().getRequest();
      get.setKey(AsData(key));
      SetTokens(get.initTokens(1), {token});
      return get.send().then([&, value, acked](capnp::Response<rpc::ValueReply>&& reply) {
        lag_ms.push_back(Millis(Clock::now() - acked));
        Check(reply.getOutcome(), "get in r1 with the write's token");
        if (View(reply.getValue()) != *value) Fail("get in r1 returned another value");
      });
    });
  });
  uint64_t max_backlog = 0;
  load.Run().exclusiveJoin(SampleBacklog(r0, &max_backlog)).wait(r0.ws());

  std::sort(lag_ms.begin(), lag_ms.end());
  std::sort(ack_ms.begin(), ack_ms.end());
  const double p50 = Percentile(lag_ms, 0.5), p99 = Percentile(lag_ms, 0.99),
               max = lag_ms.back();
  const double goal_ms = o.delay_ms + kLagSlackMs;
  const bool met = p99 <= goal_ms;
  // Over the time the writes were issued: the rate the nodes were offered.
  const double achieved = static_cast<double>(total - 1) / load.issue_seconds();

  if (c.json) {
    std::printf(
        "{\"command\":\"lag\",\"server_args\":%s,\"tls\":%s,\"cluster_starts\":%d,"
        "\"regions\":3,"
        "\"delay_ms\":%d,"
        "\"durability\":\"wal\",\"value_size\":%zu,\"inflight\":%zu,\"peak_seconds\":%.3f,"
        "\"peak_writes\":%llu,"
        "\"peak_rate\":%.1f,\"rate\":%.1f,\"duration_s\":%.3f,\"writes\":%llu,"
        "\"achieved_rate\":%.1f,\"max_behind_s\":%.3f,\"max_inflight\":%zu,"
        "\"ack_ms\":{\"p50\":%.2f,\"p99\":%.2f},"
        "\"lag_ms\":{\"count\":%zu,\"p50\":%.2f,\"p99\":%.2f,\"max\":%.2f},"
        "\"max_backlog_bytes_r1\":%llu,\"goal_p99_ms\":%.1f,\"met\":%s}\n",
        ServerArgsJson(c).c_str(), JsonBool(c.tls), starts,
        o.delay_ms, o.value_size, o.inflight, peak.seconds,
        static_cast<unsigned long long>(peak.writes), peak.rate(), rate, load.seconds(),
        static_cast<unsigned long long>(total), achieved, load.max_behind_seconds(),
        load.max_inflight_seen(), Percentile(ack_ms, 0.5), Percentile(ack_ms, 0.99),
        lag_ms.size(), p50, p99, max, static_cast<unsigned long long>(max_backlog), goal_ms,
        JsonBool(met));
    return 0;
  }
  std::printf("geokv-repl-bench lag: 3 regions, %d ms one-way on every link, durability wal,\n"
              "--token-wait 30s, %zu-byte LWW values, distinct keys\n",
              o.delay_ms, o.value_size);
  PrintServerArgs(c, starts);
  std::printf("\n");
  std::printf("peak write rate into r0:  %.0f sets/s (%zu in flight, %.1f s, %llu writes)\n",
              peak.rate(), o.inflight, peak.seconds, static_cast<unsigned long long>(peak.writes));
  std::printf("rate used:                %.0f sets/s (%s) for %.0f s: %llu writes\n", rate,
              o.rate > 0 ? "--rate" : "half the peak", o.duration_seconds,
              static_cast<unsigned long long>(total));
  std::printf("achieved:                 %.0f sets/s, at most %.3f s behind schedule, "
              "at most %zu writes in flight\n",
              achieved, load.max_behind_seconds(), load.max_inflight_seen());
  std::printf("r0 write ack:             p50 %.2f ms, p99 %.2f ms\n", Percentile(ack_ms, 0.5),
              Percentile(ack_ms, 0.99));
  std::printf("lag r0 ack -> r1 read:    count %zu, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
              lag_ms.size(), p50, p99, max);
  std::printf("r0's log bytes unacknowledged by r1 (info, every 250 ms): at most %llu\n",
              static_cast<unsigned long long>(max_backlog));
  std::printf("goal p99 <= delay + %.0f ms = %.0f ms: %s", kLagSlackMs, goal_ms, MetText(met));
  if (!met) std::printf(" (by %.1f ms)", p99 - goal_ms);
  std::printf("\n");
  return 0;
}

// ---- orset-bytes -----------------------------------------------------------

struct OrSetOptions {
  uint64_t elements = 100000;
  size_t element_size = 16;
  size_t batch = 1000;
  int repeats = 10;
};

// Nodes that send nothing unprompted: a heartbeat a minute (the most
// allowed) and one anti-entropy pass, at connect, against an empty store.
const std::vector<std::string> kQuietFlags = {"--heartbeat", "60s", "--anti-entropy-interval",
                                              "60min"};
// Long enough for every answer of a no-delay link to be delivered.
constexpr auto kSettle = std::chrono::milliseconds(300);
// The goal: bytes r0 -> r1 for one add <= 2 * element size + this.
constexpr uint64_t kAddOverheadGoal = 100;

// One add's bytes through proxy(0, 1): region 0's link to region 1.
struct AddBytes {
  uint64_t to_r1 = 0;    // the delta pushed (r0 -> r1)
  uint64_t from_r1 = 0;  // its answer (r1 -> r0)
  // Then the waitReplicated(r1) that confirms it through the peer link.
  uint64_t wait_to_r1 = 0;
  uint64_t wait_from_r1 = 0;
};

// The `index`th element: its decimal number padded to `size` bytes.
std::string Element(uint64_t index, size_t size) {
  std::string digits = std::to_string(index);
  return std::string(size - digits.size(), 'x') + digits;
}

// Adds `element` to `key` in region 0 and counts the bytes on the link to
// region 1 in two steps: until region 1 has the add (learnt from region 1's
// own client API, a read with the add's token, which crosses no link), and
// then for a waitReplicated(["r1"]) call to region 0, which asks region 1
// over the link.
AddBytes MeasureOneAdd(Cluster& cluster, Node& r0, Node& r1, const std::string& key,
                       const std::string& element) {
  WanProxy& link = cluster.proxy(0, 1);
  const WanProxyStats before = link.Stats();
  const std::string token = SAdd(r0, key, {element});

  auto read = r1.kv().sIsMemberRequest();
  read.setKey(AsData(key));
  read.setElement(AsData(element));
  SetTokens(read.initTokens(1), {token});
  auto member = read.send().wait(r1.ws());
  Check(member.getOutcome(), "sIsMember in r1 with the add's token");
  if (!member.getValue()) Fail("sIsMember in r1: the added element is missing");
  Pause(r0, kSettle);
  const WanProxyStats replicated = link.Stats();

  WaitReplicated(r0, {token}, {Cluster::Region(1)}, std::chrono::seconds(30)).wait(r0.ws());
  Pause(r0, kSettle);
  const WanProxyStats waited = link.Stats();

  AddBytes out;
  out.to_r1 = replicated.bytes_to_target - before.bytes_to_target;
  out.from_r1 = replicated.bytes_to_client - before.bytes_to_client;
  out.wait_to_r1 = waited.bytes_to_target - replicated.bytes_to_target;
  out.wait_from_r1 = waited.bytes_to_client - replicated.bytes_to_client;
  return out;
}

struct MinMedianMax {
  uint64_t min = 0, median = 0, max = 0;
};

MinMedianMax Summarize(std::vector<uint64_t> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), Percentile(v, 0.5), v.back()};
}

struct AddSummary {
  MinMedianMax to_r1, from_r1, total_to_r1, total_from_r1;
};

AddSummary SummarizeAdds(const std::vector<AddBytes>& samples) {
  std::vector<uint64_t> to, from, total_to, total_from;
  for (const AddBytes& s : samples) {
    to.push_back(s.to_r1);
    from.push_back(s.from_r1);
    total_to.push_back(s.to_r1 + s.wait_to_r1);
    total_from.push_back(s.from_r1 + s.wait_from_r1);
  }
  return {Summarize(to), Summarize(from), Summarize(total_to), Summarize(total_from)};
}

std::string MmmJson(const MinMedianMax& m) {
  return fmt::format("{{\"min\":{},\"median\":{},\"max\":{}}}", m.min, m.median, m.max);
}

std::string AddSummaryJson(const AddSummary& s, const std::vector<AddBytes>& samples) {
  std::string list;
  for (const AddBytes& a : samples) {
    list += fmt::format("{}[{},{},{},{}]", list.empty() ? "" : ",", a.to_r1, a.from_r1,
                        a.wait_to_r1, a.wait_from_r1);
  }
  return fmt::format(
      "{{\"replication_to_r1\":{},\"replication_from_r1\":{},\"with_wait_to_r1\":{},"
      "\"with_wait_from_r1\":{},\"samples_to_from_waitto_waitfrom\":[{}]}}",
      MmmJson(s.to_r1), MmmJson(s.from_r1), MmmJson(s.total_to_r1), MmmJson(s.total_from_r1),
      list);
}

void PrintAddSummary(const char* title, const AddSummary& s) {
  auto row = [](const char* name, const MinMedianMax& m) {
    std::printf("  %-44s %6llu %7llu %6llu\n", name, static_cast<unsigned long long>(m.min),
                static_cast<unsigned long long>(m.median), static_cast<unsigned long long>(m.max));
  };
  std::printf("%s\n", title);
  row("replication alone: r0 -> r1 (the delta)", s.to_r1);
  row("                   r1 -> r0 (its answer)", s.from_r1);
  row("with waitReplicated([r1]): r0 -> r1", s.total_to_r1);
  row("                           r1 -> r0", s.total_from_r1);
}

int RunOrSetBytes(const CommonOptions& c, const OrSetOptions& o) {
  const uint64_t last_index = o.elements + 2 * static_cast<uint64_t>(o.repeats);
  if (std::to_string(last_index).size() > o.element_size) {
    Fail(fmt::format("orset-bytes: --element-size {} cannot hold {} distinct elements",
                     o.element_size, last_index));
  }
  Scratch scratch = MakeScratch(c, kTool, "orset-bytes");
  int starts = 0;
  std::unique_ptr<Cluster> started = StartCluster(kTool,
      scratch.dir, ClusterOptions(c, std::chrono::milliseconds(0), kQuietFlags), &starts);
  Cluster& cluster = *started;
  Node r0(cluster, 0), r1(cluster, 1);
  const std::string key = "big-set";

  // The large set, built in region 0 and replicated to region 1.
  const auto build_start = Clock::now();
  std::string token;
  for (uint64_t first = 0; first < o.elements; first += o.batch) {
    std::vector<std::string> elements;
    for (uint64_t i = first; i < std::min<uint64_t>(o.elements, first + o.batch); ++i) {
      elements.push_back(Element(i, o.element_size));
    }
    token = SAdd(r0, key, elements);
  }
  const double build_seconds = SecondsSince(build_start);
  WaitReplicated(r0, {token}, {Cluster::Region(1)}, std::chrono::seconds(300)).wait(r0.ws());
  const double replicated_seconds = SecondsSince(build_start);
  Pause(r0, std::chrono::seconds(1));

  uint64_t next = o.elements;
  std::vector<AddBytes> big, empty;
  for (int i = 0; i < o.repeats; ++i) {
    big.push_back(MeasureOneAdd(cluster, r0, r1, key, Element(next++, o.element_size)));
  }
  // The same add into a set key that holds nothing yet, a new one each time.
  for (int i = 0; i < o.repeats; ++i) {
    empty.push_back(MeasureOneAdd(cluster, r0, r1, "empty-set-" + std::to_string(i),
                                  Element(next++, o.element_size)));
  }
  const AddSummary big_summary = SummarizeAdds(big), empty_summary = SummarizeAdds(empty);
  const uint64_t goal = 2 * o.element_size + kAddOverheadGoal;
  const bool met = big_summary.to_r1.median <= goal;
  const bool met_with_wait = big_summary.total_to_r1.median <= goal;

  if (c.json) {
    std::printf(
        "{\"command\":\"orset-bytes\",\"server_args\":%s,\"cluster_starts\":%d,\"regions\":3,"
        "\"durability\":\"wal\","
        "\"elements\":%llu,"
        "\"element_size\":%zu,\"batch\":%zu,\"repeats\":%d,\"build_s\":%.3f,"
        "\"replicated_s\":%.3f,\"into_big_set\":%s,\"into_empty_set\":%s,\"goal_bytes\":%llu,"
        "\"met\":%s,\"met_with_wait\":%s}\n",
        ServerArgsJson(c).c_str(), starts,
        static_cast<unsigned long long>(o.elements), o.element_size, o.batch, o.repeats,
        build_seconds, replicated_seconds, AddSummaryJson(big_summary, big).c_str(),
        AddSummaryJson(empty_summary, empty).c_str(), static_cast<unsigned long long>(goal),
        JsonBool(met), JsonBool(met_with_wait));
    return 0;
  }
  std::printf("geokv-repl-bench orset-bytes: 3 regions, no delay, durability wal, nodes with\n"
              "--heartbeat 60s --anti-entropy-interval 60min (no background traffic)\n");
  PrintServerArgs(c, starts);
  std::printf("\n");
  std::printf("built a set of %llu %zu-byte elements in r0 (sAdd of %zu elements per call) in "
              "%.1f s; r1 had it %.1f s after the start\n\n",
              static_cast<unsigned long long>(o.elements), o.element_size, o.batch,
              build_seconds, replicated_seconds);
  std::printf("one sAdd of one %zu-byte element in r0; bytes through the proxy r0 -> r1,\n"
              "%d samples each:                                 min  median    max\n",
              o.element_size, o.repeats);
  PrintAddSummary(fmt::format("into the {}-element set", o.elements).c_str(), big_summary);
  PrintAddSummary("into an empty set key", empty_summary);
  std::printf("\ngoal bytes r0 -> r1 <= 2 * %zu + %llu = %llu (median):\n", o.element_size,
              static_cast<unsigned long long>(kAddOverheadGoal),
              static_cast<unsigned long long>(goal));
  std::printf("  replication alone:          %llu: %s\n",
              static_cast<unsigned long long>(big_summary.to_r1.median), MetText(met));
  std::printf("  with waitReplicated's call: %llu: %s\n",
              static_cast<unsigned long long>(big_summary.total_to_r1.median),
              MetText(met_with_wait));
  return 0;
}

// ---- converge --------------------------------------------------------------

struct ConvergeOptions {
  double partition_seconds = 60;
  uint64_t keys = 100000;  // per side
  size_t value_size = 100;
  std::string max_backlog;  // empty: the server's default
  double timeout_seconds = 600;
};

// Writes in flight per side; far above what the paced rate needs.
constexpr size_t kConvergeMaxInflight = 256;
constexpr auto kPollInterval = std::chrono::milliseconds(50);

struct NodeView {
  uint64_t digest = 0;
  bool all_connected = true;
  std::string peers;  // "r1: connected, backlog N bytes; ..."
};

std::vector<NodeView> InfoAll(std::vector<std::unique_ptr<Node>>& nodes) {
  kj::Vector<kj::Promise<NodeView>> calls;
  for (auto& node : nodes) {
    calls.add(node->kv().infoRequest().send().then([](capnp::Response<rpc::NodeInfo>&& info) {
      NodeView v;
      v.digest = info.getStateDigest();
      for (auto p : info.getPeers()) {
        v.all_connected = v.all_connected && p.getConnected();
        v.peers += fmt::format("{}{}: {}{}, backlog {} bytes", v.peers.empty() ? "" : "; ",
                               p.getRegion().cStr(), p.getConnected() ? "up" : "down",
                               p.getRepairing() ? ", repairing" : "", p.getBacklogBytes());
      }
      return v;
    }));
  }
  auto views = kj::joinPromises(calls.releaseAsArray()).wait(nodes[0]->ws());
  return std::vector<NodeView>(views.begin(), views.end());
}

// Bytes delivered so far on every link between regions, both ways.
uint64_t LinkBytes(Cluster& cluster) {
  uint64_t sum = 0;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      if (i == j) continue;
      const WanProxyStats stats = cluster.proxy(i, j).Stats();
      sum += stats.bytes_to_target + stats.bytes_to_client;
    }
  }
  return sum;
}

// The lines of a node's log where it gave up on the log for a peer.
std::vector<std::string> AntiEntropyRepairs(Cluster& cluster, int i) {
  static const std::regex kRepair("peer (r[0-9]+) .*repairing by anti-entropy[^\n]*");
  std::vector<std::string> out;
  const std::string log = cluster.node(i).child().Log();
  for (std::sregex_iterator it(log.begin(), log.end(), kRepair), end; it != end; ++it) {
    out.push_back(Cluster::Region(i) + " -> " + (*it)[1].str());
  }
  return out;
}

int RunConverge(const CommonOptions& c, const ConvergeOptions& o) {
  Scratch scratch = MakeScratch(c, kTool, "converge");
  std::vector<std::string> flags;
  if (!o.max_backlog.empty()) flags = {"--max-backlog", o.max_backlog};
  int starts = 0;
  std::unique_ptr<Cluster> started = StartCluster(kTool,
      scratch.dir, ClusterOptions(c, std::chrono::milliseconds(0), flags), &starts);
  Cluster& cluster = *started;
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(std::make_unique<Node>(cluster, i));
  Node& r0 = *nodes[0];
  Node& r2 = *nodes[2];
  const std::vector<std::string> values = MakeValues(o.value_size);

  // Both sides write distinct keys, spread evenly over the partition; the
  // partition lasts at least --partition-seconds, longer if the writes do.
  cluster.Partition(2);
  const auto partitioned = Clock::now();
  const double rate = static_cast<double>(o.keys) / o.partition_seconds;
  auto writer = [&](Node& node, std::string prefix) {
    return [&node, &values, prefix](uint64_t i) {
      return SetAsync(node.kv(), Key(prefix, i), values[i % values.size()]).ignoreResult();
    };
  };
  PacedLoad load0(r0.io().getTimer(), rate, o.keys, kConvergeMaxInflight, writer(r0, "r0-"));
  PacedLoad load2(r0.io().getTimer(), rate, o.keys, kConvergeMaxInflight, writer(r2, "r2-"));
  kj::Vector<kj::Promise<void>> loads;
  loads.add(load0.Run());
  loads.add(load2.Run());
  kj::joinPromises(loads.releaseAsArray()).wait(r0.ws());
  const double writing_seconds = SecondsSince(partitioned);
  if (writing_seconds < o.partition_seconds) {
    Pause(r0, std::chrono::milliseconds(
                  static_cast<int64_t>((o.partition_seconds - writing_seconds) * 1000)));
  }
  const std::vector<NodeView> before = InfoAll(nodes);
  const double partition_seconds = SecondsSince(partitioned);

  // Heal, then poll every node until all show one digest.
  const uint64_t bytes_at_heal = LinkBytes(cluster);
  cluster.Heal(2);
  const auto healed = Clock::now();
  std::optional<double> connected_seconds;
  std::vector<NodeView> views;
  for (;;) {
    views = InfoAll(nodes);
    const double now = SecondsSince(healed);
    if (!connected_seconds && std::all_of(views.begin(), views.end(), [](const NodeView& v) {
          return v.all_connected;
        })) {
      connected_seconds = now;
    }
    if (std::all_of(views.begin(), views.end(),
                    [&](const NodeView& v) { return v.digest == views[0].digest; })) {
      break;
    }
    if (now > o.timeout_seconds) {
      std::string state;
      for (int i = 0; i < 3; ++i) {
        state += fmt::format("\n  {}: digest {:016x}; {}", Cluster::Region(i), views[i].digest,
                             views[i].peers);
      }
      Fail(fmt::format("converge: digests still differ {:.0f} s after healing:{}", now, state));
    }
    Pause(r0, kPollInterval);
  }
  const double converge_seconds = SecondsSince(healed);
  const uint64_t healing_bytes = LinkBytes(cluster) - bytes_at_heal;

  // Spot check: each side's last write reads back everywhere.
  for (auto& node : nodes) {
    for (const char* prefix : {"r0-", "r2-"}) {
      auto get = node->kv().getRequest();
      const std::string key = Key(prefix, o.keys - 1);
      get.setKey(AsData(key));
      auto reply = get.send().wait(node->ws());
      Check(reply.getOutcome(), "get " + key + " after converging");
      if (View(reply.getValue()) != values[(o.keys - 1) % values.size()]) {
        Fail("get " + key + " after converging returned another value");
      }
    }
  }

  std::vector<std::string> repairs;
  for (int i = 0; i < 3; ++i) {
    for (std::string& r : AntiEntropyRepairs(cluster, i)) repairs.push_back(std::move(r));
  }
  const std::string path = repairs.empty() ? "log" : "anti-entropy";
  const bool met = converge_seconds <= 10;

  if (c.json) {
    std::string repairs_json, before_json;
    for (const std::string& r : repairs) {
      repairs_json += (repairs_json.empty() ? "" : ",") + JsonString(r);
    }
    for (int i = 0; i < 3; ++i) {
      before_json += fmt::format("{}{}", i ? "," : "", JsonString(before[i].peers));
    }
    std::printf(
        "{\"command\":\"converge\",\"server_args\":%s,\"cluster_starts\":%d,\"regions\":3,"
        "\"durability\":\"wal\","
        "\"value_size\":%zu,\"max_backlog\":%s,\"keys_per_side\":%llu,\"rate_per_side\":%.1f,"
        "\"writing_s\":%.3f,\"max_behind_s\":%.3f,\"partition_s\":%.3f,"
        "\"peers_before_heal\":[%s],\"links_up_s\":%.3f,\"converge_s\":%.3f,"
        "\"healing_bytes\":%llu,\"path\":%s,"
        "\"anti_entropy_repairs\":[%s],\"goal_s\":10,\"met\":%s}\n",
        ServerArgsJson(c).c_str(), starts,
        o.value_size, JsonString(o.max_backlog.empty() ? "default" : o.max_backlog).c_str(),
        static_cast<unsigned long long>(o.keys), rate, writing_seconds,
        std::max(load0.max_behind_seconds(), load2.max_behind_seconds()), partition_seconds,
        before_json.c_str(), connected_seconds.value_or(-1), converge_seconds,
        static_cast<unsigned long long>(healing_bytes),
        JsonString(path).c_str(), repairs_json.c_str(), JsonBool(met));
    return 0;
  }
  std::printf("geokv-repl-bench converge: 3 regions, no delay, durability wal, --max-backlog %s\n"
              "r2 partitioned off; r0 and r2 each write distinct keys (%zu-byte LWW values)\n"
              "spread evenly over the partition, then the partition heals\n",
              o.max_backlog.empty() ? "default (256MiB)" : o.max_backlog.c_str(), o.value_size);
  PrintServerArgs(c, starts);
  std::printf("\n");
  std::printf("writes per side:      %llu (paced at %.0f/s each; done after %.1f s, at most "
              "%.2f s behind schedule)\n",
              static_cast<unsigned long long>(o.keys), rate, writing_seconds,
              std::max(load0.max_behind_seconds(), load2.max_behind_seconds()));
  std::printf("partition length:     %.1f s\n", partition_seconds);
  for (int i = 0; i < 3; ++i) {
    std::printf("before healing, %s's peers: %s\n", Cluster::Region(i).c_str(),
                before[i].peers.c_str());
  }
  if (connected_seconds) {
    std::printf("links up again:       %.2f s after healing\n", *connected_seconds);
  } else {
    std::printf("links up again:       not every link was up when the digests agreed\n");
  }
  std::printf("time to converge:     %.2f s after healing (same stateDigest on all three)\n",
              converge_seconds);
  std::printf("bytes between regions from healing to converged: %llu (%.1f MB/s)\n",
              static_cast<unsigned long long>(healing_bytes),
              static_cast<double>(healing_bytes) / 1e6 / converge_seconds);
  std::printf("path:                 %s", path.c_str());
  if (!repairs.empty()) {
    std::printf(" (");
    for (size_t i = 0; i < repairs.size(); ++i) {
      std::printf("%s%s", i ? ", " : "", repairs[i].c_str());
    }
    std::printf(")");
  }
  std::printf("\ngoal <= 10 s: %s", MetText(met));
  if (!met) std::printf(" (by %.1f s)", converge_seconds - 10);
  std::printf("\n");
  return 0;
}

// ---- main ------------------------------------------------------------------

int Main(int argc, char** argv) {
  CLI::App app{
      "geokv-repl-bench: geo-replication on real processes. Each subcommand starts one\n"
      "geokv-server per region on loopback (durability wal) with a WAN proxy on every\n"
      "link between regions, measures, prints numbers and stops the nodes."};
  app.require_subcommand(1);
  app.get_formatter()->column_width(30);

  CommonOptions lag_common, orset_common, converge_common;
  LagOptions lag;
  CLI::App* lag_cmd = app.add_subcommand(
      "lag",
      "Replication lag r0 -> r1: region 0's peak write rate, then writes at half of it,\n"
      "each read in region 1 with its token as soon as it is acknowledged.");
  AddCommonFlags(lag_cmd, &lag_common);
  AddTlsFlag(lag_cmd, &lag_common);
  lag_cmd->add_option("--delay-ms", lag.delay_ms, "One-way delay on every link")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  lag_cmd->add_option("--value-size", lag.value_size, "Bytes of every value")
      ->capture_default_str();
  lag_cmd->add_option("--inflight", lag.inflight, "Writes in flight while measuring the peak")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  lag_cmd->add_option("--peak-seconds", lag.peak_seconds, "Seconds of the peak measurement")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  lag_cmd->add_option("--duration", lag.duration_seconds, "Seconds of paced writes")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  lag_cmd->add_option("--rate", lag.rate, "Writes per second (default: half the peak)")
      ->check(CLI::NonNegativeNumber);

  OrSetOptions orset;
  CLI::App* orset_cmd = app.add_subcommand(
      "orset-bytes",
      "Bytes on the link r0 -> r1 for one OR-set add, into a large set and into an\n"
      "empty one.");
  AddCommonFlags(orset_cmd, &orset_common);
  AddTlsFlag(orset_cmd, &orset_common);
  orset_cmd->add_option("--elements", orset.elements, "Elements of the large set")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  orset_cmd->add_option("--element-size", orset.element_size, "Bytes of every element")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  orset_cmd->add_option("--batch", orset.batch, "Elements per sAdd while building the set")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  orset_cmd->add_option("--repeats", orset.repeats, "Single adds measured, per set")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);

  ConvergeOptions converge;
  CLI::App* converge_cmd = app.add_subcommand(
      "converge",
      "Time to converge after a partition: r2 cut off while r0 and r2 take writes,\n"
      "then healed; polls every node's stateDigest every 50 ms.");
  AddCommonFlags(converge_cmd, &converge_common);
  AddTlsFlag(converge_cmd, &converge_common);
  converge_cmd->add_option("--partition-seconds", converge.partition_seconds,
                           "Shortest partition; writes are spread evenly over it")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  converge_cmd->add_option("--keys", converge.keys, "Distinct keys written on each side")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  converge_cmd->add_option("--value-size", converge.value_size, "Bytes of every value")
      ->capture_default_str();
  converge_cmd->add_option("--max-backlog", converge.max_backlog,
                           "Passed to every node (e.g. 1MiB to measure repair by "
                           "anti-entropy); default: the server's");
  converge_cmd->add_option("--timeout", converge.timeout_seconds,
                           "Seconds after healing before giving up")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);

  if (auto exit_code = ParseCommandLine(app, argc, argv)) return *exit_code;
  return RunMeasurement(kTool, [&] {
    if (lag_cmd->parsed()) {
      return RunLag(lag_common, lag);
    } else if (orset_cmd->parsed()) {
      return RunOrSetBytes(orset_common, orset);
    } else {
      return RunConverge(converge_common, converge);
    }
  });
}

}  // namespace
}  // namespace geokv

int main(int argc, char** argv) { return geokv::Main(argc, argv); }

// geokv-bench: YCSB-style load over the client API (schema/kv.capnp).
//
//   serve-noop  a GeoKv server whose every call answers ok at once without
//               touching storage: the limit of the RPC transport itself.
//   run         one workload against one server, real or no-op.
//   compare     one workload against a no-op server, then against a fresh
//               geokv-server, then (batches only) against plain RocksDB
//               written in-process; prints each rate and their ratios.
//
// Every workload first writes each key once (not measured), then keeps
// --inflight calls outstanding on one connection for --duration seconds,
// issuing the next call as soon as one answers. Keys follow YCSB's
// scrambled zipfian distribution. A benchmark prints numbers: it fails only
// when a call or a reply does, or when a server does not exit cleanly.
// Results, and the machine they came from: docs/benchmarks.md.

#include <capnp/ez-rpc.h>
#include <fmt/format.h>
#include <kj/async-unix.h>
#include <rocksdb/db.h>
#include <rocksdb/version.h>
#include <rocksdb/write_batch.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "bench/bench_util.h"
#include "client/connection.h"
#include "schema/kv.capnp.h"
#include "schema/kv_text.h"
#include "server/rpc_listener.h"
#include "storage/rocks_config.h"
#include "testing/percentile.h"
#include "testing/process.h"
#include "util/cli.h"
#include "util/json.h"
#include "util/status.h"

namespace geokv {
namespace {

namespace fs = std::filesystem;
using Clock = BenchClock;

constexpr size_t kLoadBatch = 1000;
// Load batches in flight at once; the load is not measured.
constexpr size_t kLoadInflight = 4;
constexpr size_t kDistinctValues = 1024;
// As long as a token of geokv-server (replication/causal_token.h), so that a no-op write
// reply costs the transport what a real one does.
constexpr size_t kNoopTokenBytes = 17;
// A server opens its store before it listens; stopping lets calls finish
// (geokv-server's --shutdown-timeout defaults to 30 s) and syncs.
constexpr auto kStartTimeout = std::chrono::seconds(60);
constexpr auto kStopTimeout = std::chrono::seconds(60);

// The goals the ratios are held to (docs/benchmarks.md).
constexpr double kNoopRatioGoal = 0.8;
constexpr double kRocksRatioGoal = 0.7;


// ---- the workload ------------------------------------------------------------

struct WorkloadOptions {
  std::string workload = "A";
  uint64_t keys = 100000;
  size_t value_size = 100;
  size_t inflight = 64;
  double duration_seconds = 10;
  size_t batch = 1;  // operations per call; 1: single get/set calls
  double zipf_theta = 0.99;
  uint64_t seed = 1;
};

// The share of reads; the rest are updates.
double ReadFraction(const std::string& workload) {
  if (workload == "A") return 0.5;
  if (workload == "B") return 0.95;
  if (workload == "C") return 1.0;
  return 0.0;  // W
}

std::string DescribeWorkload(const WorkloadOptions& o) {
  const double reads = ReadFraction(o.workload);
  return fmt::format(
      "workload {} ({:.0f}% get, {:.0f}% set), {} keys, zipfian theta {}, {}-byte values, {} "
      "calls in flight on one connection, {}, {} s, seed {}",
      o.workload, reads * 100, (1 - reads) * 100, o.keys, o.zipf_theta, o.value_size, o.inflight,
      o.batch == 1 ? std::string("single calls") : fmt::format("batches of {}", o.batch),
      o.duration_seconds, o.seed);
}

std::string WorkloadJson(const WorkloadOptions& o) {
  return fmt::format(
      "{{\"workload\":{},\"keys\":{},\"value_size\":{},\"inflight\":{},\"duration_s\":{},"
      "\"batch\":{},\"zipf_theta\":{},\"seed\":{}}}",
      JsonString(o.workload), o.keys, o.value_size, o.inflight, o.duration_seconds, o.batch,
      o.zipf_theta, o.seed);
}

// YCSB's ZipfianGenerator (after Gray et al., "Quickly generating
// billion-record synthetic databases", SIGMOD 1994): rank 0 is the most
// popular, rank i is drawn with probability proportional to 1/(i+1)^theta.
class ZipfianGenerator {
 public:
  // REQUIRES: items >= 1, 0 <= theta < 1.
  ZipfianGenerator(uint64_t items, double theta)
      : items_(items), theta_(theta), alpha_(1.0 / (1.0 - theta)), zetan_(Zeta(items, theta)) {
    const double zeta2 = Zeta(2, theta);
    eta_ = (1 - std::pow(2.0 / static_cast<double>(items), 1 - theta)) / (1 - zeta2 / zetan_);
  }

  // `u` uniform in [0, 1).
  uint64_t Next(double u) const {
    const double uz = u * zetan_;
    if (uz < 1.0) return 0;
    if (uz < 1.0 + std::pow(0.5, theta_)) return std::min<uint64_t>(1, items_ - 1);
    const auto rank = static_cast<uint64_t>(static_cast<double>(items_) *
                                            std::pow(eta_ * u - eta_ + 1, alpha_));
    return std::min(rank, items_ - 1);
  }

 private:
  static double Zeta(uint64_t n, double theta) {
    double sum = 0;
    for (uint64_t i = 1; i <= n; ++i) sum += 1.0 / std::pow(static_cast<double>(i), theta);
    return sum;
  }

  uint64_t items_;
  double theta_;
  double alpha_;
  double zetan_;
  double eta_;
};

// YCSB's fnvhash64 (FNV-1a over the 8 bytes of `v`).
uint64_t FnvHash64(uint64_t v) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (int i = 0; i < 8; ++i) {
    h ^= v & 0xff;
    h *= 1099511628211ULL;
    v >>= 8;
  }
  return h;
}

// A key name, formatted without allocating.
class KeyName {
 public:
  explicit KeyName(uint64_t index) {
    size_ = std::snprintf(buf_, sizeof(buf_), "user%012llu",
                          static_cast<unsigned long long>(index));
  }
  std::string_view view() const { return {buf_, static_cast<size_t>(size_)}; }
  capnp::Data::Reader data() const { return AsData(view()); }

 private:
  char buf_[32];
  int size_;
};

// One operation of the workload.
struct Op {
  bool read;
  uint64_t key;
  const std::string* value;  // updates only
};

// The operations of a workload, the same sequence for the same options.
// Popular keys are spread over the key space by hashing the zipfian rank,
// as YCSB's ScrambledZipfianGenerator does; unlike it, ranks are drawn over
// the key count itself, so that --zipf-theta holds for any --keys.
class OpStream {
 public:
  explicit OpStream(const WorkloadOptions& o)
      : zipf_(o.keys, o.zipf_theta), keys_(o.keys), read_fraction_(ReadFraction(o.workload)),
        rng_(o.seed) {
    std::mt19937_64 value_rng(o.seed ^ 0x5eedULL);
    values_.reserve(kDistinctValues);
    for (size_t i = 0; i < kDistinctValues; ++i) {
      std::string v(o.value_size, '\0');
      for (char& c : v) c = static_cast<char>(value_rng());  // incompressible, as real data
      values_.push_back(std::move(v));
    }
  }

  Op Next() {
    Op op;
    op.read = uniform_(rng_) < read_fraction_;
    op.key = FnvHash64(zipf_.Next(uniform_(rng_))) % keys_;
    op.value = op.read ? nullptr : &NextValue();
    return op;
  }

  const std::string& NextValue() {
    const std::string& v = values_[next_value_];
    next_value_ = (next_value_ + 1) % values_.size();
    return v;
  }

 private:
  ZipfianGenerator zipf_;
  uint64_t keys_;
  double read_fraction_;
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> uniform_{0.0, 1.0};
  std::vector<std::string> values_;
  size_t next_value_ = 0;
};

// ---- results -----------------------------------------------------------------

using Latency = testing::LatencySummary;

// One workload run against one target.
struct RunResult {
  std::string target;  // "no-op", "geokv" or "rocksdb"
  std::string server;  // who answered, from its info()
  double load_seconds = 0;
  double seconds = 0;  // of the measured phase
  uint64_t calls = 0;  // answered calls; a batch is one
  uint64_t ops = 0;    // operations answered ok
  uint64_t reads = 0;  // operations issued
  uint64_t updates = 0;
  uint64_t errors = 0;  // operations failed: not ok, a wrong reply, a failed call
  std::string first_error;
  Latency latency;  // per call, microseconds
  // Of single calls only, by kind.
  std::optional<Latency> get_latency, set_latency;

  double OpsPerSecond() const { return seconds > 0 ? static_cast<double>(ops) / seconds : 0; }
  double CallsPerSecond() const {
    return seconds > 0 ? static_cast<double>(calls) / seconds : 0;
  }

  void Fail(uint64_t n, std::string_view what) {
    errors += n;
    if (first_error.empty()) first_error = std::string(what);
  }
};

void PrintTable(const std::vector<RunResult>& results) {
  std::printf("%-8s %8s %10s %10s %9s %9s %9s %9s %8s\n", "target", "load s", "calls/s", "ops/s",
              "p50 us", "p99 us", "p99.9 us", "mean us", "errors");
  for (const RunResult& r : results) {
    std::printf("%-8s %8.1f %10.0f %10.0f %9.1f %9.1f %9.1f %9.1f %8llu\n", r.target.c_str(),
                r.load_seconds, r.CallsPerSecond(), r.OpsPerSecond(), r.latency.p50,
                r.latency.p99, r.latency.p999, r.latency.mean,
                static_cast<unsigned long long>(r.errors));
  }
  for (const RunResult& r : results) {
    if (!r.get_latency && !r.set_latency) continue;
    for (const auto& [kind, l] : {std::pair("get", &r.get_latency), {"set", &r.set_latency}}) {
      if (!*l) continue;
      std::printf("%-8s %-30s %9.1f %9.1f %9.1f %9.1f\n", r.target.c_str(),
                  fmt::format("  {} calls only", kind).c_str(), (*l)->p50,
                  (*l)->p99, (*l)->p999, (*l)->mean);
    }
  }
  for (const RunResult& r : results) {
    if (!r.server.empty()) std::printf("%s: %s\n", r.target.c_str(), r.server.c_str());
  }
  for (const RunResult& r : results) {
    if (r.errors > 0) {
      std::printf("%s: %llu operations failed; the first: %s\n", r.target.c_str(),
                  static_cast<unsigned long long>(r.errors), r.first_error.c_str());
    }
  }
}

std::string LatencyJson(const Latency& l) {
  return fmt::format(
      "{{\"p50\":{:.1f},\"p99\":{:.1f},\"p999\":{:.1f},\"mean\":{:.1f},\"max\":{:.1f}}}",
      l.p50, l.p99, l.p999, l.mean, l.max);
}

std::string ResultJson(const RunResult& r) {
  std::string by_kind;
  if (r.get_latency) by_kind += ",\"get_latency_us\":" + LatencyJson(*r.get_latency);
  if (r.set_latency) by_kind += ",\"set_latency_us\":" + LatencyJson(*r.set_latency);
  return fmt::format(
      "{{\"target\":{},\"server\":{},\"load_s\":{:.3f},\"seconds\":{:.3f},\"calls\":{},"
      "\"ops\":{},\"reads\":{},\"updates\":{},\"errors\":{},\"first_error\":{},"
      "\"calls_per_s\":{:.1f},\"ops_per_s\":{:.1f},\"latency_us\":{}{}}}",
      JsonString(r.target), JsonString(r.server), r.load_seconds, r.seconds, r.calls, r.ops,
      r.reads, r.updates, r.errors, JsonString(r.first_error), r.CallsPerSecond(),
      r.OpsPerSecond(), LatencyJson(r.latency), by_kind);
}

// ---- the workload over RPC ---------------------------------------------------

// Empty when `outcome` is ok, else what went wrong.
std::string CheckReply(rpc::Outcome::Reader outcome, std::string_view what) {
  if (outcome.getCode() == rpc::Outcome::Code::OK) return {};
  return fmt::format("{}: {}: {}", what, OutcomeName(outcome.getCode()),
                     outcome.getMessage().cStr());
}

// Empty when a get's reply is ok and holds a value of the size every value
// has.
std::string CheckValue(rpc::ValueReply::Reader reply, size_t value_size) {
  std::string error = CheckReply(reply.getOutcome(), "get");
  if (error.empty() && reply.getValue().size() != value_size) {
    error = fmt::format("get: a value of {} bytes, not {}", reply.getValue().size(), value_size);
  }
  return error;
}

// Runs a workload over one connection: --inflight lanes, each issuing its
// next call as soon as its last one is answered. Lives on the thread of the
// connection's event loop.
class RpcRunner {
 public:
  // `result` must outlive the runner.
  RpcRunner(rpc::GeoKv::Client kv, const WorkloadOptions& o, RunResult* result)
      : kv_(kj::mv(kv)), o_(o), ops_(o), result_(result) {}

  // Writes every key once, in batches. Resolves when all are answered;
  // failures land in load_error().
  kj::Promise<void> Load() {
    next_load_key_ = 0;
    kj::Vector<kj::Promise<void>> lanes;
    for (size_t i = 0; i < kLoadInflight; ++i) lanes.add(LoadLane());
    return kj::joinPromises(lanes.releaseAsArray());
  }

  const std::string& load_error() const { return load_error_; }

  // Runs the measured phase and fills the result.
  kj::Promise<void> Measure() {
    start_ = Clock::now();
    deadline_ = start_ + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(o_.duration_seconds));
    latencies_.reserve(std::min<size_t>(static_cast<size_t>(o_.duration_seconds * 100000),
                                        size_t{1} << 22));
    kj::Vector<kj::Promise<void>> lanes;
    for (size_t i = 0; i < o_.inflight; ++i) lanes.add(Lane());
    return kj::joinPromises(lanes.releaseAsArray()).then([this] {
      result_->seconds = SecondsSince(start_);
      result_->latency = testing::SummarizeLatency(std::move(latencies_));
      if (o_.batch == 1) {
        if (!get_latencies_.empty()) result_->get_latency = testing::SummarizeLatency(std::move(get_latencies_));
        if (!set_latencies_.empty()) result_->set_latency = testing::SummarizeLatency(std::move(set_latencies_));
      }
    });
  }

 private:
  kj::Promise<void> LoadLane() {
    if (next_load_key_ >= o_.keys || !load_error_.empty()) return kj::READY_NOW;
    const uint64_t first = next_load_key_;
    const uint64_t n = std::min<uint64_t>(kLoadBatch, o_.keys - first);
    next_load_key_ += n;
    auto request = kv_.batchRequest();
    auto list = request.initRequests(static_cast<unsigned>(n));
    for (uint64_t i = 0; i < n; ++i) {
      auto set = list[static_cast<unsigned>(i)].initSet();
      set.setKey(KeyName(first + i).data());
      set.setValue(AsData(ops_.NextValue()));
    }
    return request.send().then(
        [this, n](capnp::Response<rpc::GeoKv::BatchResults> response) {
          auto replies = response.getReplies();
          if (replies.size() != n) {
            load_error_ = fmt::format("a load batch of {} got {} replies", n, replies.size());
          }
          for (auto reply : replies) {
            if (!load_error_.empty()) break;
            if (!reply.isWrite()) {
              load_error_ = "a load set got a reply of another kind";
            } else {
              load_error_ = CheckReply(reply.getWrite().getOutcome(), "load set");
            }
          }
          return LoadLane();
        },
        [this](kj::Exception&& e) -> kj::Promise<void> {
          load_error_ = fmt::format("load batch failed: {}", e.getDescription().cStr());
          return kj::READY_NOW;
        });
  }

  kj::Promise<void> Lane() {
    if (stopped_ || Clock::now() >= deadline_) return kj::READY_NOW;
    const size_t n = o_.batch;
    return (n == 1 ? CallOne() : CallBatch())
        .then([this] { return Lane(); },
              [this, n](kj::Exception&& e) {
                result_->Fail(n, fmt::format("call failed: {}", e.getDescription().cStr()));
                // A lost connection fails every later call at once.
                if (e.getType() == kj::Exception::Type::DISCONNECTED) stopped_ = true;
                return Lane();
              });
  }

  // Counts an answered call of `n` operations, of which `failed` failed;
  // `kind` also gets its latency.
  void Answered(Clock::time_point start, uint64_t n, uint64_t failed, std::string_view error,
                std::vector<double>* kind = nullptr) {
    const double micros = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
    latencies_.push_back(micros);
    if (kind != nullptr) kind->push_back(micros);
    ++result_->calls;
    result_->ops += n - failed;
    if (failed > 0) result_->Fail(failed, error);
  }

  kj::Promise<void> CallOne() {
    const Clock::time_point start = Clock::now();
    const Op op = ops_.Next();
    if (op.read) {
      ++result_->reads;
      auto request = kv_.getRequest();
      request.setKey(KeyName(op.key).data());
      return request.send().then([this, start](capnp::Response<rpc::ValueReply> reply) {
        std::string error = CheckValue(reply, o_.value_size);
        Answered(start, 1, error.empty() ? 0 : 1, error, &get_latencies_);
      });
    }
    ++result_->updates;
    auto request = kv_.setRequest();
    request.setKey(KeyName(op.key).data());
    request.setValue(AsData(*op.value));
    return request.send().then([this, start](capnp::Response<rpc::WriteReply> reply) {
      std::string error = CheckReply(reply.getOutcome(), "set");
      Answered(start, 1, error.empty() ? 0 : 1, error, &set_latencies_);
    });
  }

  kj::Promise<void> CallBatch() {
    const Clock::time_point start = Clock::now();
    const size_t n = o_.batch;
    auto request = kv_.batchRequest();
    auto list = request.initRequests(static_cast<unsigned>(n));
    auto is_read = kj::heapArray<bool>(n);
    for (unsigned i = 0; i < n; ++i) {
      const Op op = ops_.Next();
      is_read[i] = op.read;
      if (op.read) {
        ++result_->reads;
        list[i].initGet().setKey(KeyName(op.key).data());
      } else {
        ++result_->updates;
        auto set = list[i].initSet();
        set.setKey(KeyName(op.key).data());
        set.setValue(AsData(*op.value));
      }
    }
    return request.send().then(
        [this, start, n, is_read = kj::mv(is_read)](
            capnp::Response<rpc::GeoKv::BatchResults> response) {
          auto replies = response.getReplies();
          if (replies.size() != n) {
            Answered(start, n, n, fmt::format("a batch of {} got {} replies", n, replies.size()));
            return;
          }
          uint64_t failed = 0;
          std::string first;
          for (unsigned i = 0; i < n; ++i) {
            auto reply = replies[i];
            std::string error;
            if (is_read[i]) {
              error = reply.isValue() ? CheckValue(reply.getValue(), o_.value_size)
                                      : "get: a reply of another kind";
            } else {
              error = reply.isWrite() ? CheckReply(reply.getWrite().getOutcome(), "set")
                                      : "set: a reply of another kind";
            }
            if (!error.empty()) {
              ++failed;
              if (first.empty()) first = std::move(error);
            }
          }
          Answered(start, n, failed, first);
        });
  }

  rpc::GeoKv::Client kv_;
  const WorkloadOptions o_;
  OpStream ops_;
  RunResult* result_;
  uint64_t next_load_key_ = 0;
  std::string load_error_;
  Clock::time_point start_;
  Clock::time_point deadline_;
  bool stopped_ = false;
  std::vector<double> latencies_;
  std::vector<double> get_latencies_;
  std::vector<double> set_latencies_;
};

// Loads and runs the workload against the server at `address`
// (HOST:PORT). Errors of operations are counted in the result; a failure to
// connect or to load is the returned status.
// With `tls.ca`, over TLS (client/connection.h).
StatusOr<RunResult> RunRpcWorkload(const WorkloadOptions& o, const std::string& address,
                                   const std::string& target,
                                   const ClientTlsOptions& tls = {}) {
  RunResult result;
  result.target = target;
  std::unique_ptr<ClientConnection> client;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions(
                     [&] { client = std::make_unique<ClientConnection>(address, tls); })) {
    return Status::Unavailable(
        fmt::format("cannot connect to {}: {}", address, e->getDescription().cStr()));
  }
  kj::WaitScope& ws = client->ws();
  rpc::GeoKv::Client kv = client->Main();
  RpcRunner runner(kv, o, &result);

  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto info = kv.infoRequest().send().wait(ws);
    result.server = fmt::format("{} {} (region {}, api {})", info.getName().cStr(),
                                info.getVersion().cStr(), info.getRegion().cStr(),
                                info.getApiVersion());
  })) {
    return Status::Unavailable(
        fmt::format("no answer from {}: {}", address, e->getDescription().cStr()));
  }

  std::fprintf(stderr, "%s: loading %llu keys...\n", target.c_str(),
               static_cast<unsigned long long>(o.keys));
  const Clock::time_point load_start = Clock::now();
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { runner.Load().wait(ws); })) {
    return Status::FailedPrecondition(
        fmt::format("{}: load failed: {}", target, e->getDescription().cStr()));
  }
  result.load_seconds = SecondsSince(load_start);
  if (!runner.load_error().empty()) {
    return Status::FailedPrecondition(target + ": " + runner.load_error());
  }
  std::fprintf(stderr, "%s: loaded in %.1f s; measuring for %g s...\n", target.c_str(),
               result.load_seconds, o.duration_seconds);
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { runner.Measure().wait(ws); })) {
    return Status::FailedPrecondition(
        fmt::format("{}: measuring failed: {}", target, e->getDescription().cStr()));
  }
  return result;
}

// ---- the workload on plain RocksDB -------------------------------------------

// Plain RocksDB configured as the store's "state" family
// (storage/rocks_config.h), written in-process by one thread: each batch's
// updates in one WriteBatch, then its reads, as geokv runs a batch.
StatusOr<RunResult> RunRocksWorkload(const WorkloadOptions& o, const std::string& dir,
                                     bool sync) {
  RunResult result;
  result.target = "rocksdb";
  RocksConfig config = MakeRocksConfig(StoreOptions());
  rocksdb::Options options(config.db, config.families[1].options);
  rocksdb::DB* raw = nullptr;
  GEOKV_RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(options, dir, &raw), "open " + dir));
  std::unique_ptr<rocksdb::DB> db(raw);
  result.server = fmt::format("RocksDB {}.{}.{} in-process, WAL on, sync {}", ROCKSDB_MAJOR,
                              ROCKSDB_MINOR, ROCKSDB_PATCH, sync ? "on" : "off");

  OpStream ops(o);
  std::fprintf(stderr, "rocksdb: loading %llu keys...\n", static_cast<unsigned long long>(o.keys));
  const Clock::time_point load_start = Clock::now();
  rocksdb::WriteBatch batch;
  for (uint64_t i = 0; i < o.keys; ++i) {
    GEOKV_RETURN_IF_ERROR(FromRocks(batch.Put(KeyName(i).view(), ops.NextValue()), "batch"));
    if (batch.Count() == kLoadBatch || i + 1 == o.keys) {
      rocksdb::WriteOptions wo;
      wo.sync = sync;
      GEOKV_RETURN_IF_ERROR(FromRocks(db->Write(wo, &batch), "load"));
      batch.Clear();
    }
  }
  result.load_seconds = SecondsSince(load_start);
  std::fprintf(stderr, "rocksdb: loaded in %.1f s; measuring for %g s...\n", result.load_seconds,
               o.duration_seconds);

  rocksdb::WriteOptions wo;
  wo.sync = sync;
  std::vector<uint64_t> reads;
  std::string value;
  std::vector<double> latencies;
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(o.duration_seconds));
  while (Clock::now() < deadline) {
    const Clock::time_point call_start = Clock::now();
    batch.Clear();
    reads.clear();
    for (size_t i = 0; i < o.batch; ++i) {
      const Op op = ops.Next();
      if (op.read) {
        ++result.reads;
        reads.push_back(op.key);
      } else {
        ++result.updates;
        GEOKV_RETURN_IF_ERROR(FromRocks(batch.Put(KeyName(op.key).view(), *op.value), "batch"));
      }
    }
    uint64_t failed = 0;
    std::string first;
    if (batch.Count() > 0) {
      Status s = FromRocks(db->Write(wo, &batch), "write");
      if (!s.ok()) {
        failed += batch.Count();
        first = s.ToString();
      }
    }
    for (uint64_t key : reads) {
      Status s = FromRocks(db->Get(rocksdb::ReadOptions(), KeyName(key).view(), &value), "get");
      if (s.ok() && value.size() != o.value_size) {
        s = Status::Corruption(fmt::format("get: a value of {} bytes", value.size()));
      }
      if (!s.ok()) {
        ++failed;
        if (first.empty()) first = s.ToString();
      }
    }
    latencies.push_back(
        std::chrono::duration<double, std::micro>(Clock::now() - call_start).count());
    ++result.calls;
    result.ops += o.batch - failed;
    if (failed > 0) result.Fail(failed, first);
  }
  result.seconds = SecondsSince(start);
  result.latency = testing::SummarizeLatency(std::move(latencies));
  return result;
}

// ---- servers in child processes ----------------------------------------------

// A server in a child process, its output in a log file; SIGTERM stops it.
class ChildServer {
 public:
  static StatusOr<std::unique_ptr<ChildServer>> Start(std::string name,
                                                      const std::vector<std::string>& args,
                                                      std::string log_path) {
    testing::ChildOptions options;
    options.log_path = std::move(log_path);
    options.truncate = true;
    GEOKV_ASSIGN_OR_RETURN(std::unique_ptr<testing::ChildProcess> child,
                           testing::ChildProcess::Start(args, options));
    return std::unique_ptr<ChildServer>(new ChildServer(std::move(name), std::move(child)));
  }

  // The port of the "... listening on HOST:PORT port N" line that
  // geokv-server and serve-noop log, once it appears; an error if the server
  // exits first or kStartTimeout passes.
  StatusOr<unsigned> WaitForPort() {
    std::optional<std::string> port =
        child_->WaitForLog(std::regex("listening on [^\\n]* port ([0-9]+)"), kStartTimeout);
    if (port) return static_cast<unsigned>(std::stoul(*port));
    if (std::optional<int> status = child_->Wait(std::chrono::milliseconds(0))) {
      return Status::FailedPrecondition(fmt::format("{} ended ({}) before listening{}", name_,
                                                    testing::WaitStatusText(*status), LogTail()));
    }
    return Status::FailedPrecondition(
        fmt::format("{} did not listen within {} s{}", name_,
                    std::chrono::duration_cast<std::chrono::seconds>(kStartTimeout).count(),
                    LogTail()));
  }

  // Sends SIGTERM and waits for the exit. OK only for exit status 0.
  Status Stop() {
    std::optional<int> status = child_->Stop(kStopTimeout);
    if (!status) {
      return Status::FailedPrecondition(fmt::format("{} did not exit within {} s of SIGTERM{}",
                                                    name_, kStopTimeout.count(), LogTail()));
    }
    if (WIFEXITED(*status) && WEXITSTATUS(*status) == 0) return Status::OK();
    return Status::FailedPrecondition(fmt::format("{} ended with {} after SIGTERM{}", name_,
                                                  testing::WaitStatusText(*status), LogTail()));
  }

 private:
  ChildServer(std::string name, std::unique_ptr<testing::ChildProcess> child)
      : name_(std::move(name)), child_(std::move(child)) {}

  std::string LogTail() const {
    return "; its log (" + child_->log_path() + "):\n" + child_->LogTail();
  }

  std::string name_;
  std::unique_ptr<testing::ChildProcess> child_;
};

StatusOr<std::string> SelfPath() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return Status::IOError("readlink /proc/self/exe: " + ec.message());
  return self.string();
}

// Starts a server, runs the workload against it and stops it.
StatusOr<RunResult> RunAgainstChild(const WorkloadOptions& o, const std::string& target,
                                    std::vector<std::string> args, const std::string& log_path) {
  std::fprintf(stderr, "%s: starting %s...\n", target.c_str(), args[0].c_str());
  GEOKV_ASSIGN_OR_RETURN(std::unique_ptr<ChildServer> server,
                         ChildServer::Start(target, args, log_path));
  GEOKV_ASSIGN_OR_RETURN(unsigned port, server->WaitForPort());
  GEOKV_ASSIGN_OR_RETURN(RunResult result,
                         RunRpcWorkload(o, "127.0.0.1:" + std::to_string(port), target));
  std::fprintf(stderr, "%s: stopping...\n", target.c_str());
  GEOKV_RETURN_IF_ERROR(server->Stop());
  return result;
}

// ---- subcommands -------------------------------------------------------------

// Answers every call at once with an ok outcome, touching no storage: writes
// with a token, get with a value of value_size bytes, a batch with one such
// reply per request.
class NoopService final : public rpc::GeoKv::Server {
 public:
  explicit NoopService(size_t value_size)
      : value_(value_size, 'v'), token_(kNoopTokenBytes, 't') {}

  kj::Promise<void> set(SetContext c) override { return Write(c); }
  kj::Promise<void> get(GetContext c) override {
    Value(c.getResults());
    return kj::READY_NOW;
  }
  kj::Promise<void> del(DelContext c) override { return Write(c); }
  kj::Promise<void> mvSet(MvSetContext c) override { return Write(c); }
  kj::Promise<void> mvGet(MvGetContext c) override {
    Mv(c.getResults());
    return kj::READY_NOW;
  }
  kj::Promise<void> mvDel(MvDelContext c) override { return Write(c); }
  kj::Promise<void> sAdd(SAddContext c) override { return Write(c); }
  kj::Promise<void> sRem(SRemContext c) override { return Write(c); }
  kj::Promise<void> sIsMember(SIsMemberContext c) override { return Ok(c); }
  kj::Promise<void> sMembers(SMembersContext c) override { return Ok(c); }
  kj::Promise<void> sCard(SCardContext c) override { return Ok(c); }
  kj::Promise<void> incrBy(IncrByContext c) override { return Write(c); }
  kj::Promise<void> counterGet(CounterGetContext c) override { return Ok(c); }
  kj::Promise<void> type(TypeContext c) override { return Ok(c); }

  kj::Promise<void> batch(BatchContext c) override {
    auto requests = c.getParams().getRequests();
    auto replies = c.getResults().initReplies(requests.size());
    for (unsigned i = 0; i < requests.size(); ++i) {
      auto reply = replies[i];
      switch (requests[i].which()) {
        case rpc::Request::SET: case rpc::Request::DEL: case rpc::Request::MV_SET:
        case rpc::Request::MV_DEL: case rpc::Request::S_ADD: case rpc::Request::S_REM:
        case rpc::Request::INCR_BY:
          Token(reply.initWrite());
          break;
        case rpc::Request::GET: Value(reply.initValue()); break;
        case rpc::Request::MV_GET: Mv(reply.initMv()); break;
        case rpc::Request::S_IS_MEMBER: SetOk(reply.initBoolean().initOutcome()); break;
        case rpc::Request::S_MEMBERS: SetOk(reply.initMembers().initOutcome()); break;
        case rpc::Request::S_CARD: SetOk(reply.initCount().initOutcome()); break;
        case rpc::Request::COUNTER_GET: SetOk(reply.initCounter().initOutcome()); break;
        case rpc::Request::TYPE: SetOk(reply.initType().initOutcome()); break;
        default: reply.initUnknown().setCode(rpc::Outcome::Code::INVALID); break;
      }
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> info(InfoContext c) override {
    auto out = c.getResults();
    out.setName("no-op");
    out.setRegion("none");
    out.setVersion(GEOKV_VERSION);
    out.setApiVersion(1);
    return kj::READY_NOW;
  }

 private:
  static void SetOk(rpc::Outcome::Builder outcome) { outcome.setCode(rpc::Outcome::Code::OK); }

  template <typename Context>
  kj::Promise<void> Ok(Context& c) {
    SetOk(c.getResults().initOutcome());
    return kj::READY_NOW;
  }

  template <typename Context>
  kj::Promise<void> Write(Context& c) {
    Token(c.getResults());
    return kj::READY_NOW;
  }

  void Token(rpc::WriteReply::Builder reply) const {
    SetOk(reply.initOutcome());
    reply.setToken(AsData(token_));
  }

  void Value(rpc::ValueReply::Builder reply) const {
    SetOk(reply.initOutcome());
    reply.setValue(AsData(value_));
  }

  void Mv(rpc::MvReply::Builder reply) const {
    SetOk(reply.initOutcome());
    reply.initValues(1).set(0, AsData(value_));
    reply.setContext(AsData(token_));
  }

  const std::string value_;
  const std::string token_;
};

struct NoopOptions {
  std::string listen;
  size_t value_size = 100;
};

int ServeNoop(const NoopOptions& o) {
  // Signals are taken by the event loop; capture them before any thread
  // starts so that every thread inherits them blocked.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  std::signal(SIGPIPE, SIG_IGN);

  auto logger = spdlog::stderr_color_mt("geokv-bench");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);

  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  kj::Own<kj::ConnectionReceiver> receiver;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    receiver = io.provider->getNetwork().parseAddress(o.listen).wait(ws)->listen();
  })) {
    spdlog::error("cannot listen on {}: {}", o.listen, e->getDescription().cStr());
    return 1;
  }
  RpcListener listener(kj::mv(receiver), kj::heap<NoopService>(o.value_size),
                       io.provider->getTimer(), RpcListenerOptions());
  spdlog::info("no-op server: client API listening on {} port {}", o.listen, listener.port());

  auto sigterm = io.unixEventPort.onSignal(SIGTERM);
  auto sigint = io.unixEventPort.onSignal(SIGINT);
  siginfo_t signal = sigterm.exclusiveJoin(kj::mv(sigint)).wait(ws);
  spdlog::info("{} received: shutting down", signal.si_signo == SIGTERM ? "SIGTERM" : "SIGINT");
  listener.StopAccepting();
  return 0;
}

int Run(const WorkloadOptions& o, const std::string& address, const ClientTlsOptions& tls,
        bool json) {
  std::signal(SIGPIPE, SIG_IGN);
  StatusOr<RunResult> result = RunRpcWorkload(o, address, "server", tls);
  if (!result.ok()) {
    std::fprintf(stderr, "geokv-bench: %s\n", result.status().ToString().c_str());
    return 1;
  }
  if (json) {
    std::printf("{\"command\":\"run\",\"connect\":%s,\"options\":%s,\"results\":[%s]}\n",
                JsonString(address).c_str(), WorkloadJson(o).c_str(),
                ResultJson(*result).c_str());
  } else {
    std::printf("geokv-bench run against %s\n%s\n\n", address.c_str(),
                DescribeWorkload(o).c_str());
    PrintTable({*result});
  }
  return result->errors == 0 ? 0 : 1;
}

struct CompareOptions {
  std::string durability = "wal";
  std::string server_binary;  // empty: ../server/geokv-server beside this binary
};

// A ratio's line: its value and, when `goal` applies, whether it is met.
struct Ratio {
  std::string name;
  double value = 0;
  double goal = 0;  // 0: no goal for this run
  std::string goal_text;

  bool met() const { return value >= goal; }
};

StatusOr<std::vector<RunResult>> CompareRuns(const WorkloadOptions& o, const CompareOptions& c,
                                             const ScratchDir& scratch) {
  GEOKV_ASSIGN_OR_RETURN(std::string self, SelfPath());
  std::string server_binary = c.server_binary;
  if (server_binary.empty()) {
    server_binary = (fs::path(self).parent_path().parent_path() / "server" / "geokv-server")
                        .lexically_normal()
                        .string();
  }
  if (::access(server_binary.c_str(), X_OK) != 0) {
    return Status::FailedPrecondition(fmt::format(
        "cannot run {}: {} (build geokv-server or pass --server-binary)", server_binary,
        std::strerror(errno)));
  }

  std::vector<RunResult> results;
  GEOKV_ASSIGN_OR_RETURN(
      RunResult noop,
      RunAgainstChild(o, "no-op",
                      {self, "serve-noop", "--listen", "127.0.0.1:0", "--value-size",
                       std::to_string(o.value_size)},
                      scratch.Path("noop.log")));
  results.push_back(std::move(noop));

  GEOKV_ASSIGN_OR_RETURN(
      RunResult geokv,
      RunAgainstChild(o, "geokv",
                      {server_binary, "--listen", "127.0.0.1:0", "--data-dir",
                       scratch.Path("geokv-data"), "--durability", c.durability,
                       "--log-level", "info"},
                      scratch.Path("geokv.log")));
  results.push_back(std::move(geokv));

  if (o.batch > 1) {
    GEOKV_ASSIGN_OR_RETURN(RunResult rocks, RunRocksWorkload(o, scratch.Path("rocksdb"),
                                                             c.durability == "fsync"));
    results.push_back(std::move(rocks));
  }
  return results;
}

int Compare(const WorkloadOptions& o, const CompareOptions& c, bool json) {
  std::signal(SIGPIPE, SIG_IGN);
  StatusOr<std::unique_ptr<ScratchDir>> scratch = ScratchDir::Create("", "geokv-bench");
  StatusOr<std::vector<RunResult>> runs =
      scratch.ok() ? CompareRuns(o, c, **scratch) : StatusOr<std::vector<RunResult>>(
                                                        scratch.status());
  if (!runs.ok()) {
    std::fprintf(stderr, "geokv-bench: %s\n", runs.status().ToString().c_str());
    return 1;
  }
  const std::vector<RunResult>& results = *runs;
  const RunResult& noop = results[0];
  const RunResult& geokv = results[1];

  std::vector<Ratio> ratios;
  Ratio vs_noop{"geokv / no-op", geokv.OpsPerSecond() / noop.OpsPerSecond(), 0, ""};
  if (o.batch == 1) {
    vs_noop.goal = kNoopRatioGoal;
    vs_noop.goal_text = "single operations at the same concurrency";
  }
  ratios.push_back(vs_noop);
  if (results.size() > 2) {
    Ratio vs_rocks{"geokv / rocksdb", geokv.OpsPerSecond() / results[2].OpsPerSecond(), 0, ""};
    if (o.workload == "W" && o.value_size == 100 && c.durability == "wal") {
      vs_rocks.goal = kRocksRatioGoal;
      vs_rocks.goal_text = "batched updates of 100-byte values, wal";
    }
    ratios.push_back(vs_rocks);
  }

  uint64_t errors = 0;
  for (const RunResult& r : results) errors += r.errors;
  const bool tmpfs = (*scratch)->OnTmpfs();
  if (json) {
    std::string results_json, ratios_json;
    for (const RunResult& r : results) {
      results_json += (results_json.empty() ? "" : ",") + ResultJson(r);
    }
    for (const Ratio& r : ratios) {
      ratios_json += fmt::format("{}{{\"name\":{},\"value\":{:.3f}", ratios_json.empty() ? "" : ",",
                                 JsonString(r.name), r.value);
      if (r.goal > 0) {
        ratios_json += fmt::format(",\"goal\":{},\"goal_for\":{},\"met\":{}", r.goal,
                                   JsonString(r.goal_text), r.met() ? "true" : "false");
      }
      ratios_json += "}";
    }
    std::printf(
        "{\"command\":\"compare\",\"durability\":%s,\"data_on_tmpfs\":%s,\"options\":%s,"
        "\"results\":[%s],\"ratios\":[%s]}\n",
        JsonString(c.durability).c_str(), tmpfs ? "true" : "false", WorkloadJson(o).c_str(),
        results_json.c_str(), ratios_json.c_str());
  } else {
    std::printf("geokv-bench compare, durability %s\n%s\n", c.durability.c_str(),
                DescribeWorkload(o).c_str());
    if (tmpfs) std::printf("warning: the data dir is on tmpfs; fsync costs nothing\n");
    if (results.size() > 2) {
      std::printf("rocksdb: plain RocksDB in this process, one thread, the store's options;\n"
                  "a batch's sets in one WriteBatch, then its gets.\n");
    }
    std::printf("\n");
    PrintTable(results);
    std::printf("\n");
    for (const Ratio& r : ratios) {
      std::printf("%-16s %5.2f", (r.name + ":").c_str(), r.value);
      if (r.goal > 0) {
        std::printf("  goal >= %.1f for %s: %s", r.goal, r.goal_text.c_str(),
                    r.met() ? "met" : "MISSED");
      }
      std::printf("\n");
    }
  }
  return errors == 0 ? 0 : 1;
}

void AddWorkloadFlags(CLI::App* app, WorkloadOptions* o) {
  app->add_option("--workload", o->workload,
                  "A: 50% get, 50% set; B: 95% get; C: get only; W: set only")
      ->capture_default_str()
      ->transform(CLI::IsMember({"A", "B", "C", "W"}, CLI::ignore_case));
  app->add_option("--keys", o->keys, "Keys, each written once before measuring")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--value-size", o->value_size, "Bytes of every value")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app->add_option("--inflight", o->inflight, "Calls in flight on the one connection")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--duration", o->duration_seconds, "Seconds measured (after the load)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--batch", o->batch,
                  "Operations per call: 1 makes single get/set calls, more make batch calls")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--zipf-theta", o->zipf_theta,
                  "Skew of the key choice, in [0, 1); 0 is uniform (YCSB: 0.99)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            char* end = nullptr;
            const double theta = std::strtod(s.c_str(), &end);
            if (s.empty() || *end != '\0' || !(theta >= 0 && theta < 1)) {
              return "must be in [0, 1)";
            }
            return {};
          },
          "in [0, 1)"));
  app->add_option("--seed", o->seed, "Seed of the operation sequence")->capture_default_str();
}

int Main(int argc, char** argv) {
  CLI::App app{
      "geokv-bench: YCSB-style load over geokv's client API. Keys are user%012d, drawn\n"
      "from a scrambled zipfian distribution; a load phase writes each once before the\n"
      "measured phase. Prints calls/s, ops/s and per-call latency percentiles; exits 1\n"
      "when any operation failed."};
  app.require_subcommand(1);
  app.get_formatter()->column_width(30);

  NoopOptions noop;
  CLI::App* serve_noop = app.add_subcommand(
      "serve-noop",
      "Serve a GeoKv whose every call answers ok at once, touching no storage: the\n"
      "limit of the RPC transport. Logs 'listening on HOST:PORT port N' to stderr;\n"
      "exits 0 on SIGTERM or SIGINT.");
  serve_noop->add_option("--listen", noop.listen, "HOST:PORT to listen on (port 0: any)")
      ->required();
  serve_noop->add_option("--value-size", noop.value_size, "Bytes of the value every get returns")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);

  WorkloadOptions run_workload;
  std::string connect;
  bool run_json = false;
  CLI::App* run = app.add_subcommand(
      "run", "Run one workload against a running server (geokv-server or serve-noop).");
  run->add_option("--connect", connect, "HOST:PORT of the server")->required();
  ClientTlsOptions run_tls;
  run->add_option("--tls-ca", run_tls.ca,
                  "PEM CA certificates: connect with TLS, trusting a node certificate one signed");
  run->add_option("--tls-cert", run_tls.cert, "PEM client certificate (with --tls-key)");
  run->add_option("--tls-key", run_tls.key, "PEM private key of --tls-cert");
  run->add_option("--tls-name", run_tls.name,
                  "Name the node's certificate must carry (default: the host of --connect)");
  AddWorkloadFlags(run, &run_workload);
  run->add_flag("--json", run_json, "Print one JSON object instead of the table");

  WorkloadOptions compare_workload;
  CompareOptions compare_options;
  bool compare_json = false;
  CLI::App* compare = app.add_subcommand(
      "compare",
      "Run one workload against serve-noop, then against a fresh geokv-server, each\n"
      "started on port 0 in a child process and stopped with SIGTERM; with --batch > 1\n"
      "also against plain RocksDB in this process for the same duration. Prints the\n"
      "rates and their ratios.");
  AddWorkloadFlags(compare, &compare_workload);
  compare->add_option("--durability", compare_options.durability,
                      "geokv-server's --durability; fsync also syncs the RocksDB writes")
      ->capture_default_str()
      ->check(CLI::IsMember({"fsync", "wal"}));
  compare->add_option("--server-binary", compare_options.server_binary,
                      "geokv-server to start (default: ../server/geokv-server from this "
                      "binary's directory)");
  compare->add_flag("--json", compare_json, "Print one JSON object instead of the table");

  if (auto exit_code = ParseCommandLine(app, argc, argv)) return *exit_code;
  if (serve_noop->parsed()) return ServeNoop(noop);
  if (run->parsed()) return Run(run_workload, connect, run_tls, run_json);
  return Compare(compare_workload, compare_options, compare_json);
}

}  // namespace
}  // namespace geokv

int main(int argc, char** argv) { return geokv::Main(argc, argv); }

// geokv-store-bench: what the storage layer costs on this machine.
//
//   1. LWW applies per second through the Store (WriteGroup::Mutate, then
//      Commit), in both durabilities, one apply per commit and grouped, next
//      to plain RocksDB puts of the same keys and values under the same
//      options: the price of the CRDT layer over a bare put. A third database
//      writes what the store's design writes per apply, a state row and a log
//      row, with nothing else: the floor the store could reach.
//   2. OR-set add, remove and membership latency at several set sizes. The
//      store keeps a set one row per element, so none of these should grow
//      with the set. One store holds a set of every size, sampled in turn, so
//      that the sets differ in their size alone; fresh stores of the smaller
//      sizes show what the store's size costs besides.
//
// A benchmark prints numbers and asserts nothing beyond the store's own
// errors. Results, and the machine they came from: docs/benchmarks.md.

#include <fmt/format.h>
#include <rocksdb/db.h>
#include <rocksdb/version.h>
#include <rocksdb/write_batch.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include "bench/bench_util.h"
#include "storage/rocks_config.h"
#include "storage/store.h"
#include "testing/percentile.h"
#include "util/cli.h"
#include "util/coding.h"
#include "util/status.h"

namespace geokv {
namespace {

namespace fs = std::filesystem;
using Clock = BenchClock;

constexpr uint64_t kSeed = 301;
constexpr size_t kDistinctValues = 1024;
constexpr size_t kPreloadGroup = 1000;
// Bytes of a log row in the state + log floor: about what the store's log
// entry of an LWW set of a 100-byte value takes (261 bytes, framed).
constexpr size_t kLogValueSize = 200;

struct BenchOptions {
  std::string data_dir;  // empty: a fresh temporary directory, removed at exit
  double seconds = 2.0;  // per throughput measurement
  size_t rounds = 3;     // of every throughput measurement; the median is shown
  size_t value_size = 100;
  size_t group_size = 100;
  size_t num_keys = 100000;
  std::vector<uint64_t> set_sizes = {10, 10000, 1000000};
  size_t samples = 5000;  // per set and operation
  size_t fill_group = 1000;
  bool lww_only = false;  // skip the OR-set latencies
  bool json = false;      // the LWW part alone, as one JSON object on stdout
};

// Parses the command line into *o. Returns nullopt to run, or the exit code
// after --help or a usage error (printed).
std::optional<int> ParseFlags(int argc, char** argv, BenchOptions* o) {
  CLI::App app{
      "Measures LWW apply throughput against plain RocksDB puts, and OR-set operation\n"
      "latency by set size, all sizes in one store. Progress goes to stderr."};
  app.get_formatter()->column_width(30);
  app.add_option("--data-dir", o->data_dir,
                 "Where the databases go (left in place); default: a fresh temporary "
                 "directory, removed at exit");
  auto* seconds = app.add_option("--seconds", o->seconds,
                                 "Duration of each throughput measurement")
                      ->capture_default_str()
                      ->check(CLI::PositiveNumber);
  auto* rounds = app.add_option("--rounds", o->rounds,
                                "Interleaved rounds of the throughput measurements; the median "
                                "is shown")
                     ->capture_default_str()
                     ->check(AtLeast(1));
  app.add_option("--value-size", o->value_size, "Bytes per LWW value")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--group-size", o->group_size, "Applies per commit in the grouped runs")
      ->capture_default_str()
      ->check(AtLeast(1));
  auto* keys = app.add_option("--keys", o->num_keys, "LWW keyspace")
                   ->capture_default_str()
                   ->check(AtLeast(1));
  auto* set_sizes = app.add_option("--set-sizes", o->set_sizes,
                                   "OR-set sizes, all in one store (comma-separated)")
                        ->delimiter(',')
                        ->capture_default_str()
                        ->check(AtLeast(1));
  auto* samples = app.add_option("--samples", o->samples, "Latency samples per set and operation")
                      ->capture_default_str()
                      ->check(AtLeast(1));
  app.add_option("--fill-group", o->fill_group, "Adds per commit while filling a set")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_flag("--lww-only", o->lww_only, "Measure the LWW applies only, not the OR-sets");
  app.add_flag("--json", o->json,
               "Print the LWW measurements as one JSON object instead of the text (implies "
               "--lww-only)");
  bool quick = false;
  app.add_flag("--quick", quick, "A smoke run: short and small (explicit flags still apply)");
  if (auto exit_code = ParseCommandLine(app, argc, argv)) return *exit_code;
  if (o->json) o->lww_only = true;
  if (quick) {
    if (seconds->count() == 0) o->seconds = 0.2;
    if (rounds->count() == 0) o->rounds = 1;
    if (keys->count() == 0) o->num_keys = 10000;
    if (set_sizes->count() == 0) o->set_sizes = {10, 1000, 20000};
    if (samples->count() == 0) o->samples = 500;
  }
  return std::nullopt;
}

std::string JoinSizes(const std::vector<uint64_t>& sizes) {
  std::string out;
  for (uint64_t s : sizes) out += (out.empty() ? "" : ",") + std::to_string(s);
  return out;
}

double MicrosSince(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

// The keys and values of the LWW runs: uniform random keys, values drawn from
// a pool of random (incompressible) byte strings. Workloads with the same
// seed give the same sequence, so geokv and plain RocksDB write the same
// bytes.
class LwwWorkload {
 public:
  LwwWorkload(size_t num_keys, size_t value_size, uint64_t seed) : rng_(seed) {
    keys_.reserve(num_keys);
    char buf[32];
    for (size_t i = 0; i < num_keys; ++i) {
      std::snprintf(buf, sizeof(buf), "key%013zu", i);
      keys_.emplace_back(buf);
    }
    std::mt19937_64 value_rng(seed ^ 0x5eed);
    for (size_t i = 0; i < kDistinctValues; ++i) {
      std::string value(value_size, '\0');
      for (char& c : value) c = static_cast<char>(value_rng());
      ops_.push_back(LwwSet{std::move(value)});
    }
  }

  size_t num_keys() const { return keys_.size(); }
  const std::string& Key(size_t i) const { return keys_[i]; }
  const std::string& NextKey() { return keys_[rng_() % keys_.size()]; }

  // Prebuilt, so that the timed loop copies no value.
  const Operation& NextOp() {
    const Operation& op = ops_[next_op_];
    next_op_ = (next_op_ + 1) % ops_.size();
    return op;
  }
  static const std::string& ValueOf(const Operation& op) { return std::get<LwwSet>(op).value; }

 private:
  std::mt19937_64 rng_;
  std::vector<std::string> keys_;
  std::vector<Operation> ops_;
  size_t next_op_ = 0;
};

// CPU seconds used so far by the calling thread.
double ThreadCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

// CPU seconds used so far by the process, RocksDB's background threads too.
double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
  };
  return seconds(u.ru_utime) + seconds(u.ru_stime);
}

// One throughput measurement. CPU time does not count the waits of a
// shared machine, so it compares runs better than the rate does.
struct RateSample {
  double ops_per_second = 0;
  double thread_cpu_us = 0;   // per operation, the calling thread's
  double process_cpu_us = 0;  // per operation, the whole process's
};

// Calls `step`, which does some operations and returns how many, until
// `seconds` have passed.
template <typename Step>
StatusOr<RateSample> Rate(double seconds, Step step) {
  const Clock::time_point start = Clock::now();
  const double thread_start = ThreadCpuSeconds();
  const double process_start = ProcessCpuSeconds();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(seconds));
  uint64_t ops = 0;
  do {
    GEOKV_ASSIGN_OR_RETURN(size_t n, step());
    ops += n;
  } while (Clock::now() < deadline);
  const auto n = static_cast<double>(ops);
  RateSample out;
  out.ops_per_second = n / SecondsSince(start);
  out.thread_cpu_us = (ThreadCpuSeconds() - thread_start) * 1e6 / n;
  out.process_cpu_us = (ProcessCpuSeconds() - process_start) * 1e6 / n;
  return out;
}

StatusOr<size_t> ApplyLwwGroup(Store* store, LwwWorkload* w, size_t n) {
  std::unique_ptr<WriteGroup> group = store->BeginGroup();
  for (size_t i = 0; i < n; ++i) {
    const std::string& key = w->NextKey();
    GEOKV_RETURN_IF_ERROR(group->Mutate(key, w->NextOp()).status());
  }
  GEOKV_RETURN_IF_ERROR(group->Commit());
  return n;
}

// A plain RocksDB configured as the store is (storage/rocks_config.h:
// background jobs, WAL, block cache, bloom filter): the baseline cost
// of a put here.
class RawRocks {
 public:
  static StatusOr<std::unique_ptr<RawRocks>> Open(const std::string& dir) {
    // One family, configured as the store's "state" family.
    RocksConfig config = MakeRocksConfig(StoreOptions());
    rocksdb::Options options(config.db, config.families[1].options);
    rocksdb::DB* db = nullptr;
    GEOKV_RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(options, dir, &db), "open " + dir));
    return std::unique_ptr<RawRocks>(new RawRocks(db));
  }

  // One Put per call when n == 1, else a WriteBatch of n puts.
  StatusOr<size_t> Write(bool sync, LwwWorkload* w, size_t n) {
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    if (n == 1) {
      const std::string& key = w->NextKey();
      GEOKV_RETURN_IF_ERROR(
          FromRocks(db_->Put(wo, key, LwwWorkload::ValueOf(w->NextOp())), "put"));
      return n;
    }
    rocksdb::WriteBatch batch;
    for (size_t i = 0; i < n; ++i) {
      const std::string& key = w->NextKey();
      GEOKV_RETURN_IF_ERROR(FromRocks(batch.Put(key, LwwWorkload::ValueOf(w->NextOp())), "batch"));
    }
    GEOKV_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &batch), "write"));
    return n;
  }

  // Writes every key once, so that the measured runs overwrite.
  Status Preload(LwwWorkload* w) {
    rocksdb::WriteBatch batch;
    for (size_t i = 0; i < w->num_keys(); ++i) {
      GEOKV_RETURN_IF_ERROR(
          FromRocks(batch.Put(w->Key(i), LwwWorkload::ValueOf(w->NextOp())), "batch"));
      if (batch.Count() == kPreloadGroup || i + 1 == w->num_keys()) {
        GEOKV_RETURN_IF_ERROR(FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "write"));
        batch.Clear();
      }
    }
    return Status::OK();
  }

 private:
  explicit RawRocks(rocksdb::DB* db) : db_(db) {}

  std::unique_ptr<rocksdb::DB> db_;
};

// What the store writes per apply and no more: a plain RocksDB with the
// store's column families and options, writing for each apply one row to
// "state" (the key and value RawRocks writes) and one to "log" (the next
// 8-byte big-endian sequence, kLogValueSize bytes), both in one WriteBatch
// per group. No read, index, encoding or metadata row: the structural floor
// of the store's design.
class RawStateLog {
 public:
  static StatusOr<std::unique_ptr<RawStateLog>> Open(const std::string& dir) {
    RocksConfig config = MakeRocksConfig(StoreOptions());
    std::unique_ptr<RawStateLog> raw(new RawStateLog);
    rocksdb::DB* db = nullptr;
    GEOKV_RETURN_IF_ERROR(
        FromRocks(rocksdb::DB::Open(config.db, dir, config.families, &raw->handles_, &db),
                  "open " + dir));
    raw->db_.reset(db);
    return raw;
  }

  ~RawStateLog() {
    for (rocksdb::ColumnFamilyHandle* h : handles_) db_->DestroyColumnFamilyHandle(h);
  }

  // A WriteBatch of n applies (2n rows), WAL on, no sync.
  StatusOr<size_t> Write(LwwWorkload* w, size_t n) {
    rocksdb::WriteBatch batch;
    for (size_t i = 0; i < n; ++i) GEOKV_RETURN_IF_ERROR(Add(&batch, w->NextKey(), w));
    GEOKV_RETURN_IF_ERROR(FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "write"));
    return n;
  }

  // Writes every key once, so that the measured runs overwrite.
  Status Preload(LwwWorkload* w) {
    rocksdb::WriteBatch batch;
    for (size_t i = 0; i < w->num_keys(); ++i) {
      GEOKV_RETURN_IF_ERROR(Add(&batch, w->Key(i), w));
      if (i % kPreloadGroup == kPreloadGroup - 1 || i + 1 == w->num_keys()) {
        GEOKV_RETURN_IF_ERROR(FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "write"));
        batch.Clear();
      }
    }
    return Status::OK();
  }

 private:
  RawStateLog() {
    std::mt19937_64 rng(kSeed ^ 0x106);
    for (size_t i = 0; i < kDistinctValues; ++i) {
      std::string value(kLogValueSize, '\0');
      for (char& c : value) c = static_cast<char>(rng());
      log_values_.push_back(std::move(value));
    }
  }

  Status Add(rocksdb::WriteBatch* batch, const std::string& key, LwwWorkload* w) {
    GEOKV_RETURN_IF_ERROR(
        FromRocks(batch->Put(handles_[1], key, LwwWorkload::ValueOf(w->NextOp())), "batch"));
    std::string seq;
    PutBigEndian64(&seq, ++seq_);
    return FromRocks(batch->Put(handles_[2], seq, log_values_[seq_ % log_values_.size()]),
                     "batch");
  }

  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // default, state, log
  std::vector<std::string> log_values_;
  uint64_t seq_ = 0;
};

Status PreloadStore(Store* store, LwwWorkload* w) {
  for (size_t i = 0; i < w->num_keys();) {
    std::unique_ptr<WriteGroup> group = store->BeginGroup();
    for (size_t end = std::min(w->num_keys(), i + kPreloadGroup); i < end; ++i) {
      GEOKV_RETURN_IF_ERROR(group->Mutate(w->Key(i), w->NextOp()).status());
    }
    GEOKV_RETURN_IF_ERROR(group->Commit());
  }
  return Status::OK();
}

StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& dir, Durability durability) {
  StoreOptions options;
  options.durability = durability;
  return Store::Open(dir, options);
}

const char* DurabilityName(Durability d) { return d == Durability::kWal ? "wal" : "fsync"; }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string Range(const std::vector<double>& v, const char* format = "[%.0f, %.0f]") {
  char buf[48];
  std::snprintf(buf, sizeof(buf), format, *std::min_element(v.begin(), v.end()),
                *std::max_element(v.begin(), v.end()));
  return buf;
}

// The rates of one (durability, group size) measurement over all rounds,
// and the CPU microseconds per apply.
struct LwwCell {
  Durability durability;
  size_t group;
  std::vector<double> geokv, rocks;
  std::vector<double> geokv_thread_cpu, geokv_process_cpu, rocks_thread_cpu;
};

// The LWW measurements as one JSON object: every cell's medians and their
// ratio, the structural floor, and the ratio the goal is stated in.
void PrintLwwJson(const BenchOptions& o, const std::vector<LwwCell>& cells, double floor_rate,
                  bool tmpfs) {
  std::string cells_json;
  double grouped_wal = 0, grouped_wal_rocks = 0;
  for (const LwwCell& c : cells) {
    const double geokv = Median(c.geokv), rocks = Median(c.rocks);
    cells_json += fmt::format(
        "{}{{\"durability\":\"{}\",\"per_commit\":{},\"geokv_ops_per_s\":{:.1f},"
        "\"rocksdb_ops_per_s\":{:.1f},\"ratio\":{:.3f},\"geokv_thread_cpu_us\":{:.2f},"
        "\"geokv_process_cpu_us\":{:.2f},\"rocksdb_thread_cpu_us\":{:.2f}}}",
        cells_json.empty() ? "" : ",", DurabilityName(c.durability), c.group, geokv, rocks,
        geokv / rocks, Median(c.geokv_thread_cpu), Median(c.geokv_process_cpu),
        Median(c.rocks_thread_cpu));
    if (c.durability == Durability::kWal && c.group != 1) {
      grouped_wal = geokv;
      grouped_wal_rocks = rocks;
    }
  }
  std::printf(
      "{\"command\":\"lww\",\"rocksdb\":\"%d.%d.%d\",\"data_on_tmpfs\":%s,\"keys\":%zu,"
      "\"value_size\":%zu,\"group_size\":%zu,\"rounds\":%zu,\"seconds\":%.3f,\"cells\":[%s],"
      "\"floor_ops_per_s\":%.1f,\"grouped_wal_ratio\":%.3f,\"grouped_wal_over_floor\":%.3f}\n",
      ROCKSDB_MAJOR, ROCKSDB_MINOR, ROCKSDB_PATCH, tmpfs ? "true" : "false", o.num_keys,
      o.value_size, o.group_size, o.rounds, o.seconds, cells_json.c_str(), floor_rate,
      grouped_wal_rocks > 0 ? grouped_wal / grouped_wal_rocks : 0.0,
      floor_rate > 0 ? grouped_wal / floor_rate : 0.0);
}

Status RunLww(const BenchOptions& o, const ScratchDir& scratch) {
  GEOKV_ASSIGN_OR_RETURN(std::string store_dir, scratch.NewDb("lww-geokv"));
  GEOKV_ASSIGN_OR_RETURN(std::string fsync_store_dir, scratch.NewDb("lww-geokv-fsync"));
  GEOKV_ASSIGN_OR_RETURN(std::string raw_dir, scratch.NewDb("lww-rocksdb"));
  GEOKV_ASSIGN_OR_RETURN(std::string floor_dir, scratch.NewDb("lww-rocksdb-state-log"));
  LwwWorkload store_load(o.num_keys, o.value_size, kSeed);
  LwwWorkload raw_load(o.num_keys, o.value_size, kSeed);
  LwwWorkload floor_load(o.num_keys, o.value_size, kSeed);

  // One store per durability (it is fixed at open), both kept open and
  // warm throughout, as the plain database is: reopening one between cells
  // would measure its cold caches.
  GEOKV_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenStore(store_dir, Durability::kWal));
  GEOKV_ASSIGN_OR_RETURN(std::unique_ptr<Store> fsync_store,
                         OpenStore(fsync_store_dir, Durability::kFsync));
  GEOKV_ASSIGN_OR_RETURN(std::unique_ptr<RawRocks> raw, RawRocks::Open(raw_dir));
  GEOKV_ASSIGN_OR_RETURN(std::unique_ptr<RawStateLog> floor, RawStateLog::Open(floor_dir));
  Clock::time_point start = Clock::now();
  GEOKV_RETURN_IF_ERROR(PreloadStore(store.get(), &store_load));
  const double store_preload = SecondsSince(start);
  GEOKV_RETURN_IF_ERROR(PreloadStore(fsync_store.get(), &store_load));
  start = Clock::now();
  GEOKV_RETURN_IF_ERROR(raw->Preload(&raw_load));
  const double raw_preload = SecondsSince(start);
  start = Clock::now();
  GEOKV_RETURN_IF_ERROR(floor->Preload(&floor_load));
  const double floor_preload = SecondsSince(start);

  // Rounds interleave every measurement, so that background flushes and
  // compactions, which share this machine's cores, fall on all of them alike.
  std::vector<LwwCell> cells;
  for (Durability d : {Durability::kWal, Durability::kFsync}) {
    for (size_t group : {size_t{1}, o.group_size}) cells.push_back(LwwCell{d, group, {}, {}, {}, {}, {}});
  }
  std::vector<double> floor_rates;  // grouped, wal
  for (size_t round = 0; round < o.rounds; ++round) {
    std::fprintf(stderr, "LWW round %zu of %zu...\n", round + 1, o.rounds);
    for (LwwCell& cell : cells) {
      Store* cell_store = cell.durability == Durability::kWal ? store.get() : fsync_store.get();
      GEOKV_ASSIGN_OR_RETURN(RateSample geokv, Rate(o.seconds, [&] {
                               return ApplyLwwGroup(cell_store, &store_load, cell.group);
                             }));
      const bool sync = cell.durability == Durability::kFsync;
      GEOKV_ASSIGN_OR_RETURN(RateSample rocks, Rate(o.seconds, [&] {
                               return raw->Write(sync, &raw_load, cell.group);
                             }));
      cell.geokv.push_back(geokv.ops_per_second);
      cell.rocks.push_back(rocks.ops_per_second);
      cell.geokv_thread_cpu.push_back(geokv.thread_cpu_us);
      cell.geokv_process_cpu.push_back(geokv.process_cpu_us);
      cell.rocks_thread_cpu.push_back(rocks.thread_cpu_us);
    }
    GEOKV_ASSIGN_OR_RETURN(RateSample rate, Rate(o.seconds, [&] {
                             return floor->Write(&floor_load, o.group_size);
                           }));
    floor_rates.push_back(rate.ops_per_second);
  }
  if (o.json) {
    PrintLwwJson(o, cells, Median(floor_rates), scratch.OnTmpfs());
    return Status::OK();
  }

  std::printf("LWW applies: %zu random keys (each written once beforehand), %zu-byte values;\n"
              "rocksdb = plain DB::Put (1 per commit) or WriteBatch, same options.\n"
              "Median of %zu interleaved rounds of %.1f s each; [min, max] beside it.\n",
              o.num_keys, o.value_size, o.rounds, o.seconds);
  std::printf("preload, groups of %zu, wal: geokv %.0f ops/s, rocksdb %.0f ops/s,\n"
              "rocksdb state+log %.0f ops/s\n\n",
              kPreloadGroup, static_cast<double>(o.num_keys) / store_preload,
              static_cast<double>(o.num_keys) / raw_preload,
              static_cast<double>(o.num_keys) / floor_preload);
  std::printf("%-10s %10s %12s %17s %14s %17s %9s\n", "durability", "per commit", "geokv ops/s",
              "[min, max]", "rocksdb ops/s", "[min, max]", "geokv/rdb");
  double ratio[2][2] = {};  // [fsync][grouped]
  double geokv_grouped_wal = 0;
  for (const LwwCell& c : cells) {
    const double geokv = Median(c.geokv);
    const double rocks = Median(c.rocks);
    std::printf("%-10s %10zu %12.0f %17s %14.0f %17s %9.2f\n", DurabilityName(c.durability),
                c.group, geokv, Range(c.geokv).c_str(), rocks, Range(c.rocks).c_str(),
                geokv / rocks);
    ratio[c.durability == Durability::kFsync][c.group != 1] = geokv / rocks;
    if (c.durability == Durability::kWal && c.group != 1) geokv_grouped_wal = geokv;
  }
  std::printf("\nCPU microseconds per apply (median; [min, max]): the applying thread's,\n"
              "the whole process's (RocksDB's flushes and compactions too), and the\n"
              "applying thread's for rocksdb.\n");
  std::printf("%-10s %10s %10s %15s %10s %15s %10s %15s\n", "durability", "per commit",
              "geokv thr", "[min, max]", "geokv proc", "[min, max]", "rdb thr", "[min, max]");
  for (const LwwCell& c : cells) {
    const char* range = "[%.1f, %.1f]";
    std::printf("%-10s %10zu %10.1f %15s %10.1f %15s %10.1f %15s\n", DurabilityName(c.durability),
                c.group, Median(c.geokv_thread_cpu), Range(c.geokv_thread_cpu, range).c_str(),
                Median(c.geokv_process_cpu), Range(c.geokv_process_cpu, range).c_str(),
                Median(c.rocks_thread_cpu), Range(c.rocks_thread_cpu, range).c_str());
  }
  const double floor_rate = Median(floor_rates);
  std::printf("\nstructural floor: rocksdb writing per apply a state row (the key, the\n"
              "%zu-byte value) and a log row (8-byte sequence, %zu-byte value), %zu applies\n"
              "per WriteBatch, wal: %.0f ops/s %s\n",
              o.value_size, kLogValueSize, o.group_size, floor_rate, Range(floor_rates).c_str());
  std::printf("\ngeokv grouped / rocksdb batched (wal):   %.2f (goal >= 0.5)\n", ratio[0][1]);
  std::printf("geokv single / rocksdb single (wal):     %.2f\n", ratio[0][0]);
  std::printf("geokv grouped / structural floor (wal):  %.2f (geokv's cost over the two rows\n"
              "                                         its design writes per apply)\n\n",
              geokv_grouped_wal / floor_rate);
  return Status::OK();
}

using Latency = testing::LatencySummary;

// Distinct for distinct i (SplitMix64's finaliser is a bijection), and
// scattered over the key space as real elements would be.
std::string Element(uint64_t i) {
  uint64_t z = i + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(z));
  return buf;
}

// One operation in its own group and commit, as a client's single write.
StatusOr<double> TimedApply(Store* store, std::string_view key, const Operation& op) {
  const Clock::time_point start = Clock::now();
  {
    std::unique_ptr<WriteGroup> group = store->BeginGroup();
    GEOKV_ASSIGN_OR_RETURN(uint64_t seq, group->Mutate(key, op));
    if (seq == 0) return Status::FailedPrecondition("set operation changed nothing");
    GEOKV_RETURN_IF_ERROR(group->Commit());
  }
  return MicrosSince(start);
}

// One OR-set under measurement: its members, by element index, and the
// samples taken so far.
struct SampledSet {
  std::string key;
  uint64_t size = 0;
  std::vector<uint64_t> members;
  uint64_t next = 0;  // the index of the next new element
  std::vector<double> add, remove, contains;
};

Status FillSet(Store* store, SampledSet* set, size_t fill_group) {
  set->members.reserve(set->size + 1);
  for (uint64_t i = 0; i < set->size;) {
    std::unique_ptr<WriteGroup> group = store->BeginGroup();
    for (uint64_t end = std::min<uint64_t>(set->size, i + fill_group); i < end; ++i) {
      GEOKV_RETURN_IF_ERROR(group->Mutate(set->key, SetAdd{{Element(i)}}).status());
      set->members.push_back(i);
    }
    GEOKV_RETURN_IF_ERROR(group->Commit());
  }
  set->next = set->size;
  return Status::OK();
}

Status CheckSize(Store* store, const SampledSet& set) {
  GEOKV_ASSIGN_OR_RETURN(uint64_t size, store->SetSize(set.key));
  if (size != set.size) {
    return Status::Corruption("set " + set.key + " holds " + std::to_string(size) +
                              " elements, not " + std::to_string(set.size));
  }
  return Status::OK();
}

// Adds a new element, removes a random member and probes a random member,
// timing each: the set holds `size` elements before and after.
Status SampleOnce(Store* store, SampledSet* set, std::mt19937_64* rng) {
  const Operation add = SetAdd{{Element(set->next)}};
  GEOKV_ASSIGN_OR_RETURN(double add_us, TimedApply(store, set->key, add));
  set->add.push_back(add_us);
  set->members.push_back(set->next++);

  const size_t victim = (*rng)() % set->members.size();
  const Operation remove = SetRemove{{Element(set->members[victim])}};
  set->members[victim] = set->members.back();
  set->members.pop_back();
  GEOKV_ASSIGN_OR_RETURN(double remove_us, TimedApply(store, set->key, remove));
  set->remove.push_back(remove_us);

  const std::string probe = Element(set->members[(*rng)() % set->members.size()]);
  const Clock::time_point start = Clock::now();
  GEOKV_ASSIGN_OR_RETURN(bool found, store->SetContains(set->key, probe));
  set->contains.push_back(MicrosSince(start));
  if (!found) return Status::Corruption("member " + probe + " of " + set->key + " not found");
  return Status::OK();
}

struct SetResult {
  uint64_t size = 0;
  uint64_t store_elements = 0;  // of every set in the store
  double fill_seconds = 0;
  Latency add, remove, contains;
};

// Fills a set of each of `sizes` in one fresh store, in turn, then samples
// the sets in turn, each round starting at the next set, so that the sets
// share the store, its background work and their place in the order alike.
StatusOr<std::vector<SetResult>> RunSetStore(const BenchOptions& o, const std::string& dir,
                                             const std::vector<uint64_t>& sizes) {
  GEOKV_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenStore(dir, Durability::kWal));
  std::vector<SampledSet> sets(sizes.size());
  std::vector<double> fill_seconds;
  uint64_t store_elements = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    sets[i].key = "set-" + std::to_string(sizes[i]);
    sets[i].size = sizes[i];
    store_elements += sizes[i];
    const Clock::time_point start = Clock::now();
    GEOKV_RETURN_IF_ERROR(FillSet(store.get(), &sets[i], o.fill_group));
    fill_seconds.push_back(SecondsSince(start));
  }
  for (const SampledSet& set : sets) GEOKV_RETURN_IF_ERROR(CheckSize(store.get(), set));

  std::mt19937_64 rng(kSeed);
  for (size_t i = 0; i < o.samples; ++i) {
    for (size_t j = 0; j < sets.size(); ++j) {
      GEOKV_RETURN_IF_ERROR(SampleOnce(store.get(), &sets[(i + j) % sets.size()], &rng));
    }
  }
  std::vector<SetResult> results;
  for (size_t i = 0; i < sets.size(); ++i) {
    GEOKV_RETURN_IF_ERROR(CheckSize(store.get(), sets[i]));
    SetResult r;
    r.size = sets[i].size;
    r.store_elements = store_elements;
    r.fill_seconds = fill_seconds[i];
    r.add = testing::SummarizeLatency(std::move(sets[i].add));
    r.remove = testing::SummarizeLatency(std::move(sets[i].remove));
    r.contains = testing::SummarizeLatency(std::move(sets[i].contains));
    results.push_back(std::move(r));
  }
  return results;
}

void PrintRatios(const std::string& label, const SetResult& num, const SetResult& den) {
  std::printf("%-34s", label.c_str());
  for (const Latency SetResult::*op : {&SetResult::add, &SetResult::remove, &SetResult::contains}) {
    const Latency& n = num.*op;
    const Latency& d = den.*op;
    std::printf(" %5.2fx %5.2fx %5.2fx", n.p50 / d.p50, n.p99 / d.p99, n.mean / d.mean);
  }
  std::printf("\n");
}

Status RunSets(const BenchOptions& o, const ScratchDir& scratch) {
  std::vector<uint64_t> sizes = o.set_sizes;
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  const uint64_t smallest = sizes.front();
  const uint64_t largest = sizes.back();

  GEOKV_ASSIGN_OR_RETURN(std::string shared_dir, scratch.NewDb("sets"));
  std::fprintf(stderr, "sets of %s in one store: filling and sampling...\n",
               JoinSizes(sizes).c_str());
  GEOKV_ASSIGN_OR_RETURN(std::vector<SetResult> shared, RunSetStore(o, shared_dir, sizes));
  // The largest set's own store would hold nearly what the shared one does.
  std::vector<SetResult> fresh;
  for (uint64_t size : sizes) {
    if (size == largest) continue;
    GEOKV_ASSIGN_OR_RETURN(std::string dir, scratch.NewDb("set-" + std::to_string(size)));
    std::fprintf(stderr, "set of %llu in a fresh store: filling and sampling...\n",
                 static_cast<unsigned long long>(size));
    GEOKV_ASSIGN_OR_RETURN(std::vector<SetResult> r, RunSetStore(o, dir, {size}));
    fresh.push_back(std::move(r.front()));
  }

  std::printf("OR-set latency in microseconds. One store holds a set of each size, filled\n"
              "in turn with distinct elements in groups of %zu (wal); the sets are then\n"
              "sampled in turn, %zu times each: add (new element), remove (random member),\n"
              "contains (random member). Every add and remove is its own group and commit.\n"
              "For comparison, every size but the largest is also measured alone in a\n"
              "fresh store (\"fresh\").\n\n",
              o.fill_group, o.samples);
  std::printf("%10s %-7s %12s %9s %12s\n", "set size", "store", "store holds", "fill s",
              "fill adds/s");
  auto print_fill = [](const char* store, const SetResult& r) {
    std::printf("%10llu %-7s %12llu %9.2f %12.0f\n", static_cast<unsigned long long>(r.size),
                store, static_cast<unsigned long long>(r.store_elements), r.fill_seconds,
                static_cast<double>(r.size) / r.fill_seconds);
  };
  for (const SetResult& r : shared) print_fill("shared", r);
  for (const SetResult& r : fresh) print_fill("fresh", r);

  std::printf("\n%10s %-7s %-9s %8s %8s %8s %8s %8s\n", "set size", "store", "op", "p50", "p99",
              "p99.9", "mean", "max");
  auto print_set = [](const char* store, const SetResult& r) {
    const std::pair<const char*, const Latency*> rows[] = {
        {"add", &r.add}, {"remove", &r.remove}, {"contains", &r.contains}};
    for (const auto& [name, l] : rows) {
      std::printf("%10llu %-7s %-9s %8.1f %8.1f %8.1f %8.1f %8.1f\n",
                  static_cast<unsigned long long>(r.size), store, name, l->p50, l->p99, l->p999,
                  l->mean, l->max);
    }
  };
  for (const SetResult& r : shared) print_set("shared", r);
  for (const SetResult& r : fresh) print_set("fresh", r);

  if (sizes.size() < 2) return Status::OK();
  const std::string big = std::to_string(largest);
  const std::string small = std::to_string(smallest);
  std::printf("\nratios of p50, p99 and mean. The goal: add of %s within 1.5x of %s,\n"
              "in the same store (first row).\n",
              big.c_str(), small.c_str());
  std::printf("%-34s %20s %20s %20s\n", "", "add", "remove", "contains");
  std::printf("%-34s", "");
  for (int i = 0; i < 3; ++i) std::printf(" %6s %6s %6s", "p50", "p99", "mean");
  std::printf("\n");
  PrintRatios(big + " vs " + small + ", same store", shared.back(), shared.front());
  for (size_t i = 1; i + 1 < shared.size(); ++i) {
    PrintRatios(std::to_string(shared[i].size) + " vs " + small + ", same store", shared[i],
                shared.front());
  }
  PrintRatios(big + " shared vs " + small + " fresh", shared.back(), fresh.front());
  for (size_t i = 0; i < fresh.size(); ++i) {
    PrintRatios(std::to_string(fresh[i].size) + " shared vs fresh", shared[i], fresh[i]);
  }
  return Status::OK();
}

Status Run(const BenchOptions& o) {
  GEOKV_ASSIGN_OR_RETURN(std::unique_ptr<ScratchDir> scratch, ScratchDir::Create(o.data_dir, "geokv-store-bench"));
  if (o.json) return RunLww(o, *scratch);
  std::printf("geokv-store-bench, RocksDB %d.%d.%d\n", ROCKSDB_MAJOR, ROCKSDB_MINOR,
              ROCKSDB_PATCH);
  std::printf("data dir: %s%s\n", scratch->path().c_str(),
              scratch->temporary() ? " (removed at exit)" : "");
  if (scratch->OnTmpfs()) std::printf("warning: the data dir is on tmpfs; fsync costs nothing\n");
  std::printf("\n");
  GEOKV_RETURN_IF_ERROR(RunLww(o, *scratch));
  if (o.lww_only) return Status::OK();
  return RunSets(o, *scratch);
}

}  // namespace
}  // namespace geokv

int main(int argc, char** argv) {
  geokv::BenchOptions options;
  if (auto exit_code = geokv::ParseFlags(argc, argv, &options)) return *exit_code;
  geokv::Status s = geokv::Run(options);
  if (!s.ok()) {
    std::fprintf(stderr, "geokv-store-bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

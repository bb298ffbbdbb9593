// Crash-recovery test of the store, after RocksDB's db_stress kill tests.
//
// The parent runs cycles. In each it starts itself as a child on the same
// store, kills the child with SIGKILL at a random moment, then opens the store
// and checks it against a model built from the children's journals:
//   - every group whose Commit() returned is in the store;
//   - the group in flight at the kill is in it entirely or not at all;
//   - the replication log holds exactly one entry per write of those groups,
//     gapless, in order, with increasing timestamps, and nothing more.
//
// The child journals each group before applying it ("intent") and after
// Commit() returns ("commit") with write(2), so the journal holds everything
// written before the kill. It is not fsynced: the test crashes the process,
// not the machine.
//
// ctest runs short runs (tools/CMakeLists.txt). A long run, by hand, from a
// Release build (cmake -DCMAKE_BUILD_TYPE=Release -B build/crash-release):
//   build/crash-release/tools/geokv-crash-test --dir /tmp/geokv-crash --cycles 500 --durability wal
// and the same with --durability fsync. Reading the whole log every cycle
// makes such a run quadratic (200 cycles: about 4 minutes, mostly log reads);
// --full-log-scan-every 10 keeps it near linear. A failure prints its seed;
// rerun it with --seed.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "crdt/crdt.h"
#include "tools/crash_journal.h"
#include "tools/crash_model.h"
#include "storage/store.h"
#include "testing/process.h"
#include "util/cli.h"
#include "util/coding.h"
#include "util/status.h"

namespace geokv {
namespace {

namespace fs = std::filesystem;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
// A child that cannot open the store or whose store call fails.
constexpr int kExitChildError = 3;
// How long a child may take to open the store before the run fails.
constexpr int kOpenTimeoutMs = 60'000;

// ---------------------------------------------------------------------------
// Flags

struct Flags {
  bool child = false;
  std::string dir;
  std::string work_dir;
  std::string journal;  // child mode
  int ready_fd = -1;    // child mode
  uint64_t cycles = 0;
  std::optional<uint64_t> seed;
  Durability durability = Durability::kFsync;
  uint64_t min_run_ms = 30;
  uint64_t max_run_ms = 300;
  uint64_t open_kill_percent = 10;
  uint64_t full_log_scan_every = 1;
};

const char* DurabilityName(Durability d) { return d == Durability::kFsync ? "fsync" : "wal"; }

// Parses the command line into *f. Returns nullopt to run, or the exit
// code after --help or a usage error (printed).
std::optional<int> ParseFlags(int argc, char** argv, Flags* f) {
  CLI::App app{
      "Crash-recovery test of the geokv store. Each cycle starts a child that commits\n"
      "random write groups to the store in DIR, kills it with SIGKILL at a random\n"
      "moment, reopens the store and checks it against the writes the child\n"
      "acknowledged. Exit status: 0 every cycle verified, 1 a check failed, 2 usage error."};
  app.get_formatter()->column_width(32);
  app.add_option("--dir", f->dir,
                 "The store; removed first if it exists (it must then be empty or a RocksDB "
                 "directory)")
      ->required();
  app.add_option("--cycles", f->cycles, "Kill cycles to run, N >= 1")->check(AtLeast(1));
  app.add_option("--seed", f->seed, "Seed of every random choice (default: random, printed)");
  std::string durability = "fsync";
  app.add_option("--durability", durability, "fsync or wal")
      ->capture_default_str()
      ->check(CLI::IsMember({"fsync", "wal"}));
  app.add_option("--min-run-ms", f->min_run_ms,
                 "Shortest run of a child after it opened the store")
      ->capture_default_str();
  app.add_option("--max-run-ms", f->max_run_ms, "Longest run")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{3'600'000}));
  app.add_option("--open-kill-percent", f->open_kill_percent,
                 "Share of cycles whose kill moment is counted from the start of the child, "
                 "so it may land while the store is still being opened")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  app.add_option("--full-log-scan-every", f->full_log_scan_every,
                 "Read the whole log from seq 0 every K cycles and in the last; other cycles "
                 "read the entries written since the previous cycle")
      ->capture_default_str()
      ->check(AtLeast(1));
  app.add_option("--work-dir", f->work_dir, "Where the journal is written (default: DIR's parent)");
  // The child mode the parent starts.
  app.add_flag("--child", f->child)->group("");
  app.add_option("--journal", f->journal)->group("");
  app.add_option("--ready-fd", f->ready_fd)->group("");

  if (auto exit_code = ParseCommandLine(app, argc, argv)) return *exit_code;
  f->durability = durability == "wal" ? Durability::kWal : Durability::kFsync;
  auto usage_error = [](const std::string& message) {
    std::fprintf(stderr, "%s\nRun with --help for more information.\n", message.c_str());
    return kExitUsage;
  };
  if (f->dir.empty()) return usage_error("--dir must not be empty");
  if (f->child) {
    if (f->journal.empty() || !f->seed || f->ready_fd < 0) {
      return usage_error("--child needs --journal, --seed and --ready-fd");
    }
    return std::nullopt;
  }
  if (f->cycles == 0) return usage_error("--cycles N (N >= 1) is required");
  if (f->min_run_ms > f->max_run_ms) return usage_error("--min-run-ms is above --max-run-ms");
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Child mode

std::string RandomAlnum(std::mt19937_64& rng, int min_len, int max_len) {
  static const char kChars[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::uniform_int_distribution<int> len(min_len, max_len);
  std::uniform_int_distribution<size_t> pick(0, sizeof(kChars) - 2);
  std::string out(static_cast<size_t>(len(rng)), ' ');
  for (char& c : out) c = kChars[pick(rng)];
  return out;
}

// 1..kMaxOpsPerGroup operations, at most one multi-value write per key: its
// context is read before the group begins.
std::vector<JournalOp> RandomGroup(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> count(1, kMaxOpsPerGroup);
  std::uniform_int_distribution<int> percent(0, 99);
  std::uniform_int_distribution<int> key_index(0, kKeysPerType - 1);
  std::uniform_int_distribution<int> element_count(1, kMaxElementsPerOp);
  std::uniform_int_distribution<int64_t> delta(-kMaxCounterDelta, kMaxCounterDelta - 1);
  std::set<std::string> mv_keys;
  std::vector<JournalOp> ops(static_cast<size_t>(count(rng)));
  for (JournalOp& op : ops) {
    for (;;) {
      int p = percent(rng);
      if (p < 20) {
        op.kind = OpKind::kLwwSet;
        op.key = PoolKey(kLwwPrefix, key_index(rng));
        op.value = RandomAlnum(rng, 1, kMaxValueLength);
      } else if (p < 28) {
        op.kind = OpKind::kLwwDelete;
        op.key = PoolKey(kLwwPrefix, key_index(rng));
      } else if (p < 43) {
        op.kind = OpKind::kMvWrite;
        op.key = PoolKey(kMvPrefix, key_index(rng));
        if (!mv_keys.insert(op.key).second) continue;
        op.value = RandomAlnum(rng, 1, kMaxValueLength);
      } else if (p < 83) {
        op.kind = p < 63 ? OpKind::kSetAdd : OpKind::kSetRemove;
        op.key = PoolKey(kSetPrefix, key_index(rng));
        std::vector<std::string> pool = kElements;
        std::shuffle(pool.begin(), pool.end(), rng);
        pool.resize(static_cast<size_t>(element_count(rng)));
        op.elements = std::move(pool);
      } else {
        op.kind = OpKind::kCounterAdd;
        op.key = PoolKey(kCounterPrefix, key_index(rng));
        op.delta = delta(rng);
        if (op.delta >= 0) ++op.delta;  // [-1000, 1000] without 0
      }
      break;
    }
  }
  return ops;
}

Operation ToOperation(const JournalOp& op, const std::map<std::string, CausalContext>& seen) {
  switch (op.kind) {
    case OpKind::kLwwSet:
      return LwwSet{op.value};
    case OpKind::kLwwDelete:
      return LwwDelete{};
    case OpKind::kMvWrite:
      return MvWrite{op.value, seen.at(op.key)};
    case OpKind::kSetAdd:
      return SetAdd{op.elements};
    case OpKind::kSetRemove:
      return SetRemove{op.elements};
    case OpKind::kCounterAdd:
      break;
  }
  return CounterAdd{op.delta};
}

int ChildFail(const Status& s) {
  std::fprintf(stderr, "geokv-crash-test child %d: %s\n", static_cast<int>(getpid()),
               s.ToString().c_str());
  return kExitChildError;
}

// Writes random groups until killed. Returns only on error.
int RunChild(const Flags& flags) {
  StoreOptions options;
  options.durability = flags.durability;
  StatusOr<std::unique_ptr<Store>> opened = Store::Open(flags.dir, options);
  if (!opened.ok()) return ChildFail(opened.status());
  std::unique_ptr<Store> store = std::move(opened).value();
  StatusOr<std::unique_ptr<JournalWriter>> journal_or = JournalWriter::Open(flags.journal);
  if (!journal_or.ok()) return ChildFail(journal_or.status());
  std::unique_ptr<JournalWriter> journal = std::move(journal_or).value();

  Status s = journal->Append("S " + std::to_string(store->node_id()) + " " +
                             std::to_string(store->LastSeq()) + "\n");
  if (!s.ok()) return ChildFail(s);
  // The ready pipe stays open: the parent sees it close when this process dies.
  if (::write(flags.ready_fd, "R", 1) != 1) {
    return ChildFail(Status::IOError(std::string("signal ready: ") + std::strerror(errno)));
  }

  std::mt19937_64 rng(*flags.seed);
  for (uint64_t id = 0;; ++id) {
    std::vector<JournalOp> ops = RandomGroup(rng);
    std::map<std::string, CausalContext> seen;
    for (const JournalOp& op : ops) {
      if (op.kind != OpKind::kMvWrite) continue;
      StatusOr<std::optional<Crdt>> got = store->Get(op.key, CrdtType::kMvRegister);
      if (!got.ok()) return ChildFail(got.status().WithContext("read " + op.key));
      seen[op.key] = *got ? std::get<MvRegister>(**got).context() : CausalContext();
    }
    std::string intent = "I " + std::to_string(id) + " " + std::to_string(ops.size());
    for (const JournalOp& op : ops) EncodeOp(op, &intent);
    s = journal->Append(intent + "\n");
    if (!s.ok()) return ChildFail(s);

    std::string commit = "C " + std::to_string(id);
    std::unique_ptr<WriteGroup> group = store->BeginGroup();
    for (const JournalOp& op : ops) {
      StatusOr<uint64_t> seq = group->Mutate(op.key, ToOperation(op, seen));
      if (!seq.ok()) return ChildFail(seq.status().WithContext("Mutate " + DescribeOp(op)));
      commit += " " + std::to_string(*seq);
    }
    s = group->Commit();
    if (!s.ok()) return ChildFail(s.WithContext("Commit of group " + std::to_string(id)));
    group.reset();
    s = journal->Append(commit + "\n");
    if (!s.ok()) return ChildFail(s);
  }
}

// ---------------------------------------------------------------------------
// Parent mode

struct Child {
  std::unique_ptr<testing::ChildProcess> process;
  int ready_fd = -1;  // read end; closes when the child dies
};

// The child shares this process's stderr, so its complaints come first in a
// failure's output.
StatusOr<Child> SpawnChild(const Flags& flags, const std::string& program, uint64_t seed,
                           const std::string& journal) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::IOError(std::string("pipe: ") + std::strerror(errno));
  testing::ChildOptions options;
  options.keep_fds = {fds[1]};
  auto process = testing::ChildProcess::Start(
      {program, "--child", "--dir", flags.dir, "--journal", journal, "--seed",
       std::to_string(seed), "--durability", DurabilityName(flags.durability), "--ready-fd",
       std::to_string(fds[1])},
      options);
  ::close(fds[1]);
  if (!process.ok()) {
    ::close(fds[0]);
    return process.status();
  }
  return Child{std::move(process).value(), fds[0]};
}

// Waits up to `timeout_ms` for the child's ready byte. Returns whether it
// came; false also when the child died first (the pipe closed).
bool WaitReady(int fd, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left < 0) left = 0;
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    char c;
    ssize_t r = ::read(fd, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    return r == 1;
  }
}

// Sleeps `ms`, returning early if the child dies (its pipe end closes).
void SleepWhileAlive(int fd, uint64_t ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return;
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return;
    char buf[16];
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r == 0 || (r < 0 && errno != EINTR)) return;
  }
}

// Kills and reaps the child. Returns an error unless it was our SIGKILL that
// ended it.
Status KillChild(const Child& child) {
  const int status = child.process->Kill();
  ::close(child.ready_fd);
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) return Status::OK();
  const std::string who = "child " + std::to_string(child.process->pid());
  if (WIFEXITED(status)) {
    return Status::FailedPrecondition(who + " ended with " + testing::WaitStatusText(status) +
                                      " before it was killed (its stderr is above)");
  }
  return Status::FailedPrecondition(who + " ended with " + testing::WaitStatusText(status) +
                                    " before it was killed");
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!fs::exists(path)) return std::string();
    return Status::IOError("cannot read " + path);
  }
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) return Status::IOError("cannot read " + path);
  return s.str();
}

// Refuses to remove anything but an empty directory or a RocksDB one.
Status WipeStoreDir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return Status::OK();
  if (!fs::is_directory(dir, ec)) {
    return Status::InvalidArgument(dir.string() + " exists and is not a directory");
  }
  bool empty = fs::is_empty(dir, ec);
  bool rocksdb = fs::exists(dir / "CURRENT", ec) || fs::exists(dir / "IDENTITY", ec) ||
                 fs::exists(dir / "LOCK", ec);
  if (!empty && !rocksdb) {
    return Status::InvalidArgument("refusing to remove " + dir.string() +
                                   ": it is neither empty nor a RocksDB directory");
  }
  fs::remove_all(dir, ec);
  if (ec) return Status::IOError("remove " + dir.string() + ": " + ec.message());
  return Status::OK();
}

enum class InFlight { kNone, kApplied, kNotApplied, kNoChange };

const char* InFlightName(InFlight f) {
  switch (f) {
    case InFlight::kNone:
      return "no group in flight";
    case InFlight::kApplied:
      return "in-flight group applied";
    case InFlight::kNotApplied:
      return "in-flight group not applied";
    case InFlight::kNoChange:
      break;
  }
  return "in-flight group changed nothing";
}

std::string DescribeGroup(const JournalGroup& g) {
  std::string out = "group " + std::to_string(g.id) + " [";
  for (size_t i = 0; i < g.ops.size(); ++i) out += (i ? "; " : "") + DescribeOp(g.ops[i]);
  return out + "]";
}

std::string JoinLines(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) out += "\n    " + l;
  return out;
}

class CrashTest {
 public:
  CrashTest(Flags flags, std::string journal)
      : flags_(std::move(flags)), journal_(std::move(journal)), rng_(*flags_.seed) {}

  // Returns the process exit status.
  int Run() {
    auto start = std::chrono::steady_clock::now();
    std::printf("geokv-crash-test: %" PRIu64 " cycles, seed %" PRIu64
                ", durability %s, store %s, journal %s\n",
                flags_.cycles, *flags_.seed, DurabilityName(flags_.durability), flags_.dir.c_str(),
                journal_.c_str());
    std::fflush(stdout);
    for (uint64_t cycle = 1; cycle <= flags_.cycles; ++cycle) {
      Status s = RunCycle(cycle);
      if (!s.ok()) {
        std::fprintf(stderr,
                     "geokv-crash-test: FAILED in cycle %" PRIu64 " (seed %" PRIu64 "): %s\n"
                     "  store kept in %s, journal of the cycle in %s\n",
                     cycle, *flags_.seed, s.message().c_str(), flags_.dir.c_str(),
                     journal_.c_str());
        return kExitFailed;
      }
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (acknowledged_ops_ == 0) {
      std::fprintf(stderr,
                   "geokv-crash-test: FAILED: no child acknowledged an operation in %" PRIu64
                   " cycles, so nothing was tested (raise --max-run-ms)\n",
                   flags_.cycles);
      return kExitFailed;
    }
    std::printf("geokv-crash-test: PASSED %" PRIu64 " cycles in %.1f s: %" PRIu64
                " groups (%" PRIu64 " ops) acknowledged, %" PRIu64
                " log entries; in-flight groups: %" PRIu64 " applied, %" PRIu64
                " not applied, %" PRIu64 " changed nothing, %" PRIu64
                " kills between groups, %" PRIu64 " kills before the store opened; "
                "%.1f s reading the log\n",
                flags_.cycles, secs, acknowledged_groups_, acknowledged_ops_,
                static_cast<uint64_t>(log_.size()), applied_, not_applied_, no_change_,
                between_groups_, before_open_, log_scan_secs_);
    return kExitOk;
  }

 private:
  uint64_t Uniform(uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }

  Status RunCycle(uint64_t cycle) {
    const uint64_t child_seed = rng_();
    const bool open_kill = Uniform(0, 99) < flags_.open_kill_percent;
    std::error_code ec;
    fs::remove(journal_, ec);
    if (ec) return Status::IOError("remove " + journal_ + ": " + ec.message());

    GEOKV_ASSIGN_OR_RETURN(Child child,
                           SpawnChild(flags_, program_, child_seed, journal_));
    auto spawned = std::chrono::steady_clock::now();
    uint64_t run_ms;
    if (open_kill) {
      // Counted from the start, so the kill may land in RocksDB's recovery.
      run_ms = Uniform(0, flags_.min_run_ms);
      SleepWhileAlive(child.ready_fd, run_ms);
    } else {
      if (!WaitReady(child.ready_fd, kOpenTimeoutMs)) {
        Status killed = KillChild(child);
        if (!killed.ok()) return killed.WithContext("child did not open the store");
        return Status::FailedPrecondition("child did not open the store within " +
                                          std::to_string(kOpenTimeoutMs) + " ms");
      }
      run_ms = Uniform(flags_.min_run_ms, flags_.max_run_ms);
      SleepWhileAlive(child.ready_fd, run_ms);
    }
    GEOKV_RETURN_IF_ERROR(KillChild(child));
    auto lived_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - spawned).count();

    GEOKV_ASSIGN_OR_RETURN(std::string text, ReadFile(journal_));
    Journal journal;
    GEOKV_RETURN_IF_ERROR(ParseJournal(text, &journal));
    if (!journal.started && !open_kill) {
      return Status::Corruption("the child signalled ready but journaled no start record");
    }

    StoreOptions options;
    options.durability = flags_.durability;
    StatusOr<std::unique_ptr<Store>> opened = Store::Open(flags_.dir, options);
    if (!opened.ok()) return opened.status().WithContext("reopen after the kill");
    std::unique_ptr<Store> store = std::move(opened).value();

    if (!node_) node_ = store->node_id();
    if (store->node_id() != *node_) {
      return Status::Corruption("node id changed from " + std::to_string(*node_) + " to " +
                                std::to_string(store->node_id()));
    }
    if (journal.started) {
      if (journal.node != *node_) {
        return Status::Corruption("the child opened node " + std::to_string(journal.node) +
                                  ", the store is node " + std::to_string(*node_));
      }
      if (journal.start_seq != log_.size()) {
        return Status::Corruption("the child opened the store at LastSeq " +
                                  std::to_string(journal.start_seq) + ", expected " +
                                  std::to_string(log_.size()));
      }
    }

    // Acknowledged groups.
    const uint64_t cycle_start_seq = log_.size();
    const JournalGroup* pending = nullptr;
    uint64_t cycle_groups = 0;
    uint64_t cycle_ops = 0;
    for (const JournalGroup& g : journal.groups) {
      if (!g.committed) {
        pending = &g;
        break;
      }
      std::vector<uint64_t> want = ApplyGroup(g, &state_, &log_);
      if (g.seqs_known) {
        for (size_t i = 0; i < want.size(); ++i) {
          if (g.seqs[i] != want[i]) {
            return Status::Corruption(DescribeGroup(g) + ": Mutate of op " + std::to_string(i) +
                                      " (" + DescribeOp(g.ops[i]) + ") returned seq " +
                                      std::to_string(g.seqs[i]) + ", expected " +
                                      std::to_string(want[i]));
          }
        }
      }
      ++cycle_groups;
      cycle_ops += g.ops.size();
    }
    acknowledged_groups_ += cycle_groups;
    acknowledged_ops_ += cycle_ops;

    std::vector<std::string> diffs;
    GEOKV_RETURN_IF_ERROR(CompareState(store.get(), state_, &diffs));
    const uint64_t last_seq = store->LastSeq();
    const bool without_ok = diffs.empty() && last_seq == log_.size();
    auto seq_line = [last_seq](size_t want) {
      return "LastSeq: expected " + std::to_string(want) + ", found " + std::to_string(last_seq);
    };

    InFlight in_flight = InFlight::kNone;
    if (pending == nullptr) {
      if (!without_ok) {
        if (last_seq != log_.size()) diffs.push_back(seq_line(log_.size()));
        return Status::Corruption("the store differs from the acknowledged writes:" +
                                  JoinLines(diffs));
      }
      ++(journal.started ? between_groups_ : before_open_);
    } else {
      ModelState with = state_;
      std::vector<LogExpectation> extra;
      ApplyGroup(*pending, &with, &extra);
      std::vector<std::string> with_diffs;
      GEOKV_RETURN_IF_ERROR(CompareState(store.get(), with, &with_diffs));
      const uint64_t with_count = log_.size() + extra.size();
      const bool with_ok = with_diffs.empty() && last_seq == with_count;
      if (without_ok && with_ok) {
        in_flight = InFlight::kNoChange;
        ++no_change_;
      } else if (without_ok) {
        in_flight = InFlight::kNotApplied;
        ++not_applied_;
      } else if (with_ok) {
        in_flight = InFlight::kApplied;
        ++applied_;
        state_ = std::move(with);
        log_.insert(log_.end(), extra.begin(), extra.end());
      } else {
        if (last_seq != log_.size()) diffs.push_back(seq_line(log_.size()));
        if (last_seq != with_count) with_diffs.push_back(seq_line(with_count));
        return Status::Corruption(
            "the store differs from the acknowledged writes both without and with the "
            "in-flight " + DescribeGroup(*pending) + ".\n  Without it:" + JoinLines(diffs) +
            "\n  With it:" + JoinLines(with_diffs));
      }
    }
    // Reading the whole log every cycle costs time quadratic in the run;
    // the other cycles read what this one wrote.
    const bool full_scan = cycle % flags_.full_log_scan_every == 0 || cycle == flags_.cycles;
    auto scan_start = std::chrono::steady_clock::now();
    GEOKV_RETURN_IF_ERROR(
        CheckLog(store.get(), *node_, log_, full_scan ? 0 : cycle_start_seq, &last_log_ts_));
    log_scan_secs_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - scan_start).count();
    store.reset();

    std::string ran = open_kill ? "killed " + std::to_string(lived_ms) + " ms after start" +
                                      (journal.started ? "" : ", before the store opened")
                                : "ran " + std::to_string(run_ms) + " ms";
    std::printf("cycle %" PRIu64 "/%" PRIu64 ": %s, %" PRIu64 " groups (%" PRIu64
                " ops) acknowledged, %s; %" PRIu64 " ops acknowledged so far, log at %zu\n",
                cycle, flags_.cycles, ran.c_str(), cycle_groups, cycle_ops,
                pending ? InFlightName(in_flight) : InFlightName(InFlight::kNone),
                acknowledged_ops_, log_.size());
    std::fflush(stdout);
    return Status::OK();
  }

  const Flags flags_;
  const std::string journal_;
  const std::string program_ = "/proc/self/exe";
  std::mt19937_64 rng_;

  std::optional<ReplicaId> node_;
  ModelState state_;
  std::vector<LogExpectation> log_;  // the expected log; its size is LastSeq()
  HlcTimestamp last_log_ts_;          // of the last entry of the log
  double log_scan_secs_ = 0;

  uint64_t acknowledged_groups_ = 0;
  uint64_t acknowledged_ops_ = 0;
  uint64_t applied_ = 0;
  uint64_t not_applied_ = 0;
  uint64_t no_change_ = 0;
  uint64_t between_groups_ = 0;
  uint64_t before_open_ = 0;
};

int Usage(const std::string& error) {
  std::fprintf(stderr, "geokv-crash-test: %s\nRun with --help for more information.\n",
               error.c_str());
  return kExitUsage;
}

int RunParent(Flags flags) {
  fs::path dir = fs::absolute(fs::path(flags.dir)).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();
  if (dir == dir.root_path()) return Usage("--dir must not be the root directory");
  flags.dir = dir.string();
  fs::path work = flags.work_dir.empty() ? dir.parent_path()
                                         : fs::absolute(fs::path(flags.work_dir)).lexically_normal();
  const std::string journal = (work / (dir.filename().string() + ".journal")).string();
  if (!flags.seed) flags.seed = std::random_device()();

  Status s = WipeStoreDir(dir);
  if (s.code() == Status::Code::kInvalidArgument) return Usage(s.message());
  std::error_code ec;
  if (s.ok()) {
    fs::create_directories(dir.parent_path(), ec);
    if (!ec) fs::create_directories(work, ec);
    if (ec) s = Status::IOError("create " + work.string() + ": " + ec.message());
  }
  if (!s.ok()) {
    std::fprintf(stderr, "geokv-crash-test: %s\n", s.ToString().c_str());
    return kExitFailed;
  }
  return CrashTest(std::move(flags), journal).Run();
}

}  // namespace
}  // namespace geokv

int main(int argc, char** argv) {
  geokv::Flags flags;
  if (auto exit_code = geokv::ParseFlags(argc, argv, &flags)) return *exit_code;
  if (flags.child) return geokv::RunChild(flags);
  return geokv::RunParent(std::move(flags));
}

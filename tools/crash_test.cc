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

// Small pools, so that groups often touch one key several times and set
// removes often hit. One prefix per type: no operation meets WRONG_TYPE.
constexpr int kKeysPerType = 4;
constexpr const char* kLwwPrefix = "lww";
constexpr const char* kMvPrefix = "mv";
constexpr const char* kSetPrefix = "set";
constexpr const char* kCounterPrefix = "ctr";
// Some elements are prefixes of others, as element rows are prefix-scanned.
const std::vector<std::string> kElements = {"a", "ab", "abc", "b", "k9", "Zz", "q0x", "m7"};
constexpr int kMaxOpsPerGroup = 8;
constexpr int kMaxElementsPerOp = 3;
constexpr int kMaxValueLength = 10;
constexpr int64_t kMaxCounterDelta = 1000;
// Small, so that reading a set back crosses several pages.
constexpr size_t kSetPageSize = 3;
// How long a child may take to open the store before the run fails.
constexpr int kOpenTimeoutMs = 60'000;

std::string PoolKey(const char* prefix, int i) { return std::string(prefix) + ":" + std::to_string(i); }

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
// Operations and the journal
//
// One record a line, fields separated by spaces (keys, values and elements
// are alphanumeric or ':'):
//   S <node id> <last seq>          the child opened the store
//   I <group> <n> <op>...           intent: the group's n operations, written
//                                   before the first Mutate
//   C <group> <seq>...              commit: Commit() returned OK; the seq
//                                   each Mutate returned
// where <op> is one of
//   ls <key> <value> | ld <key> | mw <key> <value> |
//   sa <key> <k> <element>... | sr <key> <k> <element>... | ca <key> <delta>
// The bytes after the last newline are a record the kill cut short.

enum class OpKind { kLwwSet, kLwwDelete, kMvWrite, kSetAdd, kSetRemove, kCounterAdd };

struct JournalOp {
  OpKind kind = OpKind::kLwwSet;
  std::string key;
  std::string value;                  // kLwwSet, kMvWrite
  std::vector<std::string> elements;  // kSetAdd, kSetRemove
  int64_t delta = 0;                  // kCounterAdd
};

CrdtType TypeOfOp(OpKind kind) {
  switch (kind) {
    case OpKind::kLwwSet:
    case OpKind::kLwwDelete:
      return CrdtType::kLww;
    case OpKind::kMvWrite:
      return CrdtType::kMvRegister;
    case OpKind::kSetAdd:
    case OpKind::kSetRemove:
      return CrdtType::kOrSet;
    case OpKind::kCounterAdd:
      break;
  }
  return CrdtType::kCounter;
}

void EncodeOp(const JournalOp& op, std::string* out) {
  auto elements = [&]() {
    *out += " " + std::to_string(op.elements.size());
    for (const std::string& e : op.elements) *out += " " + e;
  };
  switch (op.kind) {
    case OpKind::kLwwSet:
      *out += " ls " + op.key + " " + op.value;
      break;
    case OpKind::kLwwDelete:
      *out += " ld " + op.key;
      break;
    case OpKind::kMvWrite:
      *out += " mw " + op.key + " " + op.value;
      break;
    case OpKind::kSetAdd:
      *out += " sa " + op.key;
      elements();
      break;
    case OpKind::kSetRemove:
      *out += " sr " + op.key;
      elements();
      break;
    case OpKind::kCounterAdd:
      *out += " ca " + op.key + " " + std::to_string(op.delta);
      break;
  }
}

std::string DescribeOp(const JournalOp& op) {
  std::string out;
  EncodeOp(op, &out);
  return out.substr(1);
}

bool ParseUint(const std::string& s, uint64_t* out) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

// Reads whitespace-separated fields of one record.
class FieldReader {
 public:
  explicit FieldReader(const std::string& line) : in_(line) {}

  bool Word(std::string* out) { return static_cast<bool>(in_ >> *out); }
  bool Uint(uint64_t* out) {
    std::string w;
    return Word(&w) && ParseUint(w, out);
  }
  bool Int(int64_t* out) {
    std::string w;
    if (!Word(&w)) return false;
    bool negative = !w.empty() && w[0] == '-';
    uint64_t magnitude = 0;
    if (!ParseUint(negative ? w.substr(1) : w, &magnitude) || magnitude > (uint64_t{1} << 62)) {
      return false;
    }
    *out = negative ? -static_cast<int64_t>(magnitude) : static_cast<int64_t>(magnitude);
    return true;
  }
  bool AtEnd() {
    std::string w;
    return !(in_ >> w);
  }

 private:
  std::istringstream in_;
};

bool ParseOp(FieldReader* r, JournalOp* op) {
  std::string tag;
  if (!r->Word(&tag) || !r->Word(&op->key)) return false;
  auto elements = [&]() {
    uint64_t n = 0;
    if (!r->Uint(&n) || n == 0 || n > kElements.size()) return false;
    op->elements.resize(n);
    for (std::string& e : op->elements) {
      if (!r->Word(&e)) return false;
    }
    return true;
  };
  if (tag == "ls") {
    op->kind = OpKind::kLwwSet;
    return r->Word(&op->value);
  }
  if (tag == "ld") {
    op->kind = OpKind::kLwwDelete;
    return true;
  }
  if (tag == "mw") {
    op->kind = OpKind::kMvWrite;
    return r->Word(&op->value);
  }
  if (tag == "sa") {
    op->kind = OpKind::kSetAdd;
    return elements();
  }
  if (tag == "sr") {
    op->kind = OpKind::kSetRemove;
    return elements();
  }
  if (tag == "ca") {
    op->kind = OpKind::kCounterAdd;
    return r->Int(&op->delta);
  }
  return false;
}

struct JournalGroup {
  uint64_t id = 0;
  std::vector<JournalOp> ops;
  bool committed = false;
  // The commit record was complete: `seqs` holds what each Mutate returned.
  bool seqs_known = false;
  std::vector<uint64_t> seqs;
};

struct Journal {
  bool started = false;  // the child opened the store
  ReplicaId node = 0;
  uint64_t start_seq = 0;  // LastSeq() when the child opened the store
  std::vector<JournalGroup> groups;  // only the last may be uncommitted
};

Status ParseJournal(const std::string& text, Journal* out) {
  *out = Journal();
  size_t pos = 0;
  int line_no = 0;
  auto bad = [&](const std::string& line, const char* why) {
    return Status::Corruption("journal line " + std::to_string(line_no) + " (" +
                              PrintableBytes(line, 200) + "): " + why);
  };
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) {
      // Cut short by the kill. Only a commit record matters: its first byte
      // was written after Commit() returned, so the group is acknowledged.
      if (text[pos] == 'C') {
        if (out->groups.empty() || out->groups.back().committed) {
          return bad(text.substr(pos), "commit record without an intent");
        }
        out->groups.back().committed = true;
      }
      break;
    }
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    FieldReader r(line);
    std::string tag;
    if (!r.Word(&tag)) return bad(line, "empty record");
    if (tag == "S") {
      if (line_no != 1) return bad(line, "start record after the first line");
      if (!r.Uint(&out->node) || !r.Uint(&out->start_seq) || !r.AtEnd()) {
        return bad(line, "malformed start record");
      }
      out->started = true;
    } else if (tag == "I") {
      if (!out->started) return bad(line, "intent before the start record");
      if (!out->groups.empty() && !out->groups.back().committed) {
        return bad(line, "intent while the previous group is uncommitted");
      }
      JournalGroup g;
      uint64_t n = 0;
      if (!r.Uint(&g.id) || !r.Uint(&n) || n == 0 || n > kMaxOpsPerGroup) {
        return bad(line, "malformed intent record");
      }
      g.ops.resize(n);
      for (JournalOp& op : g.ops) {
        if (!ParseOp(&r, &op)) return bad(line, "malformed operation");
      }
      if (!r.AtEnd()) return bad(line, "trailing fields");
      out->groups.push_back(std::move(g));
    } else if (tag == "C") {
      uint64_t id = 0;
      if (!r.Uint(&id)) return bad(line, "malformed commit record");
      if (out->groups.empty() || out->groups.back().committed || out->groups.back().id != id) {
        return bad(line, "commit record of a group without an intent");
      }
      JournalGroup& g = out->groups.back();
      g.seqs.resize(g.ops.size());
      for (uint64_t& s : g.seqs) {
        if (!r.Uint(&s)) return bad(line, "malformed commit record");
      }
      if (!r.AtEnd()) return bad(line, "trailing fields");
      g.committed = true;
      g.seqs_known = true;
    } else {
      return bad(line, "unknown record");
    }
  }
  return Status::OK();
}

// Appends records with write(2): once it returns, a kill of this process
// cannot lose them.
class JournalWriter {
 public:
  static StatusOr<std::unique_ptr<JournalWriter>> Open(const std::string& path) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return Status::IOError("open " + path + ": " + std::strerror(errno));
    return std::unique_ptr<JournalWriter>(new JournalWriter(fd, path));
  }
  ~JournalWriter() { ::close(fd_); }

  Status Append(const std::string& record) {
    size_t done = 0;
    while (done < record.size()) {
      ssize_t n = ::write(fd_, record.data() + done, record.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::IOError("write " + path_ + ": " + std::strerror(errno));
      done += static_cast<size_t>(n);
    }
    return Status::OK();
  }

 private:
  JournalWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  const int fd_;
  const std::string path_;
};

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
// The model

struct ModelState {
  // Absent: never written; nullopt: deleted.
  std::map<std::string, std::optional<std::string>> lww;
  std::map<std::string, std::string> mv;  // the single sibling
  // Present once an element was ever added.
  std::map<std::string, std::set<std::string>> sets;
  // Present once ever changed.
  std::map<std::string, int64_t> counters;
};

struct LogExpectation {
  std::string key;
  CrdtType type;
};

// Applies `op` to `m`. Returns whether Mutate logs it, that is returns a
// nonzero sequence: every operation but a set remove that hits no element.
bool ApplyOp(const JournalOp& op, ModelState* m) {
  switch (op.kind) {
    case OpKind::kLwwSet:
      m->lww[op.key] = op.value;
      return true;
    case OpKind::kLwwDelete:
      m->lww[op.key] = std::nullopt;
      return true;
    case OpKind::kMvWrite:
      m->mv[op.key] = op.value;
      return true;
    case OpKind::kSetAdd:
      m->sets[op.key].insert(op.elements.begin(), op.elements.end());
      return true;
    case OpKind::kSetRemove: {
      auto it = m->sets.find(op.key);
      bool hit = false;
      if (it != m->sets.end()) {
        for (const std::string& e : op.elements) hit |= it->second.erase(e) > 0;
      }
      return hit;
    }
    case OpKind::kCounterAdd:
      m->counters[op.key] += op.delta;
      return op.delta != 0;
  }
  return false;
}

// Applies `g`; appends the log entries it makes to `log`, whose size is the
// last sequence. Returns the sequence each Mutate must have returned.
std::vector<uint64_t> ApplyGroup(const JournalGroup& g, ModelState* m,
                                 std::vector<LogExpectation>* log) {
  std::vector<uint64_t> seqs;
  for (const JournalOp& op : g.ops) {
    if (ApplyOp(op, m)) {
      log->push_back(LogExpectation{op.key, TypeOfOp(op.kind)});
      seqs.push_back(log->size());
    } else {
      seqs.push_back(0);
    }
  }
  return seqs;
}

// ---------------------------------------------------------------------------
// Checking the store

std::string Quote(const std::string& s) { return "'" + PrintableBytes(s) + "'"; }

std::string DescribeList(const std::vector<std::string>& v) {
  std::string out = "{";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + Quote(v[i]);
  return out + "}";
}

std::string DescribeLive(const std::vector<CrdtType>& types) {
  std::string out = "[";
  for (size_t i = 0; i < types.size(); ++i) out += (i ? ", " : "") + std::string(TypeName(types[i]));
  return out + "]";
}

// Compares every pool key of the store with `m`; appends one line per
// difference to `diffs`. An error is a read that failed.
Status CompareState(Store* store, const ModelState& m, std::vector<std::string>* diffs) {
  auto check = [diffs](const std::string& key, const char* read, const std::string& expected,
                       const std::string& found) {
    if (expected != found) {
      diffs->push_back("key '" + key + "' (" + read + "): expected " + expected + ", found " +
                       found);
    }
  };
  auto check_live = [&](const std::string& key, CrdtType type, bool live) -> Status {
    GEOKV_ASSIGN_OR_RETURN(std::vector<CrdtType> types, store->LiveTypes(key));
    check(key, "LiveTypes", DescribeLive(live ? std::vector<CrdtType>{type} : std::vector<CrdtType>{}),
          DescribeLive(types));
    return Status::OK();
  };
  auto get = [store](const std::string& key, CrdtType type) -> StatusOr<std::optional<Crdt>> {
    StatusOr<std::optional<Crdt>> got = store->Get(key, type);
    if (!got.ok()) return got.status().WithContext("Get " + key);
    if (*got && TypeOf(**got) != type) {
      return Status::Corruption("Get " + key + " returned a " + std::string(TypeName(TypeOf(**got))));
    }
    return got;
  };

  for (int i = 0; i < kKeysPerType; ++i) {
    const std::string key = PoolKey(kLwwPrefix, i);
    auto it = m.lww.find(key);
    std::string expected = it == m.lww.end() ? "absent" : it->second ? Quote(*it->second) : "deleted";
    GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> got, get(key, CrdtType::kLww));
    std::string found = "absent";
    if (got) {
      const auto& value = std::get<LwwRegister>(*got).value();
      found = value ? Quote(*value) : "deleted";
    }
    check(key, "Get", expected, found);
    GEOKV_RETURN_IF_ERROR(check_live(key, CrdtType::kLww, it != m.lww.end() && it->second));
  }

  for (int i = 0; i < kKeysPerType; ++i) {
    const std::string key = PoolKey(kMvPrefix, i);
    auto it = m.mv.find(key);
    std::string expected = it == m.mv.end() ? "absent" : DescribeList({it->second});
    GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> got, get(key, CrdtType::kMvRegister));
    std::string found = got ? DescribeList(std::get<MvRegister>(*got).Values()) : "absent";
    check(key, "Get", expected, found);
    GEOKV_RETURN_IF_ERROR(check_live(key, CrdtType::kMvRegister, it != m.mv.end()));
  }

  for (int i = 0; i < kKeysPerType; ++i) {
    const std::string key = PoolKey(kSetPrefix, i);
    auto it = m.sets.find(key);
    std::vector<std::string> model;
    if (it != m.sets.end()) model.assign(it->second.begin(), it->second.end());
    const std::string expected = DescribeList(model);

    std::vector<std::string> paged;
    std::optional<std::string> after;
    for (size_t pages = 0;; ++pages) {
      if (pages > kElements.size() + 1) {
        diffs->push_back("key '" + key + "' (SetMembers): paging does not end");
        break;
      }
      StatusOr<SetPage> page =
          store->SetMembers(key, after ? std::optional<std::string_view>(*after) : std::nullopt,
                            kSetPageSize);
      if (!page.ok()) return page.status().WithContext("SetMembers " + key);
      paged.insert(paged.end(), page->elements.begin(), page->elements.end());
      if (!page->more) break;
      if (page->elements.empty()) {
        diffs->push_back("key '" + key + "' (SetMembers): an empty page says more follow");
        break;
      }
      after = page->elements.back();
    }
    check(key, "SetMembers", expected, DescribeList(paged));

    StatusOr<uint64_t> size = store->SetSize(key);
    if (!size.ok()) return size.status().WithContext("SetSize " + key);
    check(key, "SetSize", std::to_string(model.size()), std::to_string(*size));

    GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> got, get(key, CrdtType::kOrSet));
    // A set never added to is bottom; one emptied by removes keeps its context.
    check(key, "Get", it == m.sets.end() ? "absent" : expected,
          got ? DescribeList(std::get<OrSet>(*got).Elements()) : "absent");

    for (const std::string& e : kElements) {
      StatusOr<bool> contains = store->SetContains(key, e);
      if (!contains.ok()) return contains.status().WithContext("SetContains " + key);
      bool want = std::binary_search(model.begin(), model.end(), e);
      if (*contains != want) {
        check(key, "SetContains", Quote(e) + (want ? " present" : " absent"),
              *contains ? "present" : "absent");
      }
    }
    GEOKV_RETURN_IF_ERROR(check_live(key, CrdtType::kOrSet, !model.empty()));
  }

  for (int i = 0; i < kKeysPerType; ++i) {
    const std::string key = PoolKey(kCounterPrefix, i);
    auto it = m.counters.find(key);
    std::string expected = it == m.counters.end() ? "absent" : std::to_string(it->second);
    GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> got, get(key, CrdtType::kCounter));
    std::string found = got ? std::to_string(std::get<PnCounter>(*got).Value()) : "absent";
    check(key, "Get", expected, found);
    GEOKV_RETURN_IF_ERROR(check_live(key, CrdtType::kCounter, it != m.counters.end()));
  }
  return Status::OK();
}

// Reads the log after entry `from` (0: all of it): one entry per expected
// write, gapless, by `node`, with timestamps increasing from `*last_ts` (the
// timestamp of entry `from`), and nothing beyond. Sets *last_ts to the
// timestamp of the last entry.
Status CheckLog(Store* store, ReplicaId node, const std::vector<LogExpectation>& expected,
                uint64_t from, HlcTimestamp* last_ts) {
  if (store->TrimmedThrough() != 0) {
    return Status::Corruption("the log is trimmed through " +
                              std::to_string(store->TrimmedThrough()) + "; nothing trims it");
  }
  uint64_t after = from;
  HlcTimestamp previous = from == 0 ? HlcTimestamp() : *last_ts;
  for (;;) {
    StatusOr<std::vector<LogEntry>> entries = store->ReadLog(after, 4096, size_t{8} << 20);
    if (!entries.ok()) return entries.status().WithContext("ReadLog after " + std::to_string(after));
    if (entries->empty()) break;
    for (const LogEntry& e : *entries) {
      const std::string where = "log entry " + std::to_string(e.seq);
      if (e.seq != after + 1) {
        return Status::Corruption(where + " follows entry " + std::to_string(after) +
                                  ": the log has a gap or is out of order");
      }
      if (e.seq > expected.size()) {
        return Status::Corruption(where + " (key '" + PrintableBytes(e.key) + "', " +
                                  std::string(TypeName(TypeOf(e.delta))) + ") is beyond the " +
                                  std::to_string(expected.size()) +
                                  " writes of the groups found in the store");
      }
      const LogExpectation& want = expected[e.seq - 1];
      if (e.key != want.key || TypeOf(e.delta) != want.type) {
        return Status::Corruption(where + ": expected key '" + want.key + "' (" +
                                  std::string(TypeName(want.type)) + "), found key '" +
                                  PrintableBytes(e.key) + "' (" +
                                  std::string(TypeName(TypeOf(e.delta))) + ")");
      }
      if (e.origin != node) {
        return Status::Corruption(where + ": origin " + std::to_string(e.origin) +
                                  ", expected this node " + std::to_string(node));
      }
      if (!(previous < e.timestamp)) {
        return Status::Corruption(where + ": timestamp " + std::to_string(e.timestamp.wall_ms) +
                                  "." + std::to_string(e.timestamp.logical) +
                                  " is not above the previous entry's " +
                                  std::to_string(previous.wall_ms) + "." +
                                  std::to_string(previous.logical));
      }
      previous = e.timestamp;
      after = e.seq;
    }
  }
  if (after != expected.size()) {
    return Status::Corruption("the log holds " + std::to_string(after) + " entries, expected " +
                              std::to_string(expected.size()));
  }
  *last_ts = previous;
  return Status::OK();
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

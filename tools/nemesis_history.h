// The history of a nemesis run (tools/nemesis.cc) and the checks made on
// it: what clients attempted and what the cluster acknowledged, the QUORUM
// reads that must see acknowledged QUORUM writes, and the final state of
// every node.
//
// Writes come in three kinds on three groups of keys: OR-set adds of
// unique elements (keys shared by every client), counter increments (keys
// shared by every client) and LWW sets (keys of one client each, so that a
// client's own writes are totally ordered). A write ends acknowledged, failed
// (an outcome that says nothing was applied) or unknown (a timeout, a lost
// connection: it may or may not have been applied).

#ifndef GEOKV_TOOLS_NEMESIS_HISTORY_H_
#define GEOKV_TOOLS_NEMESIS_HISTORY_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace geokv::nemesis {

using Clock = std::chrono::steady_clock;

enum class OpType { kSetAdd, kIncrement, kRegisterSet };
inline constexpr int kOpTypes = 3;
const char* OpName(OpType type);

enum class WriteResult { kAcked, kFailed, kUnknown };

struct Write {
  OpType type = OpType::kSetAdd;
  int client = 0;
  int region = 0;
  std::string key;
  std::string value;  // the element or the register's value
  int64_t delta = 0;  // increments
  std::string node;   // the node the client sent it to
  Clock::time_point start, end;
  WriteResult result = WriteResult::kUnknown;
};

// A QUORUM read made right after an acknowledged write of the same key,
// through another node of the writer's region.
struct Read {
  OpType type = OpType::kSetAdd;
  int client = 0;
  int region = 0;
  std::string key;
  std::string node;
  Clock::time_point start, end;
  // kSetAdd: the element asked about (the one just added) and whether the
  // read found it.
  std::string element;
  bool present = false;
  int64_t count = 0;                  // kIncrement: the counter's value
  std::optional<std::string> value;   // kRegisterSet: the value, if any
  // The acknowledged write the read follows (its node), for reports.
  std::string written_through;
};

// One node's state at the end of a run, as reads at ONE through it saw it.
struct NodeState {
  std::string node;
  uint64_t digest = 0;
  std::map<std::string, int64_t> counters;
  std::map<std::string, std::set<std::string>> sets;
  std::map<std::string, std::optional<std::string>> registers;
};

// Thread-safe.
class History {
 public:
  explicit History(Clock::time_point origin) : origin_(origin) {}

  void AddWrite(const Write& w);

  // Checks `r` against every write of its key acknowledged in its region
  // before it began; records a violation when it misses one.
  void CheckRead(const Read& r);

  // A read that did not answer (refused, timed out, disconnected).
  void ReadFailed(OpType type);

  // Checks the nodes' final states: equal digests; every acknowledged add
  // on every node and no element nobody added; every counter between its
  // acknowledged and attempted increments; every register equal everywhere,
  // one of the values written, and not an acknowledged value its client
  // overwrote with a later acknowledged one.
  void CheckFinal(const std::vector<NodeState>& nodes);

  // Records a violation found outside the history (a node exiting on its
  // own, a leave that does not finish, no convergence).
  void AddViolation(const std::string& what);

  // Every key written (attempted) of `type`.
  std::vector<std::string> Keys(OpType type) const;

  std::vector<std::string> violations() const;
  // Operations by kind and outcome, reads checked and failed.
  std::string Summary() const;

  // Milliseconds since the run started, for reports.
  long long Ms(Clock::time_point t) const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t - origin_).count();
  }

 private:
  struct Counts {
    uint64_t attempted = 0, acked = 0, failed = 0, unknown = 0;
    uint64_t reads_checked = 0, reads_failed = 0, read_misses = 0;
  };

  void CheckSetRead(const Read& r);
  void CheckCounterRead(const Read& r);
  void CheckRegisterRead(const Read& r);
  void Violation(std::string what);

  const Clock::time_point origin_;
  mutable std::mutex mu_;
  Counts counts_[kOpTypes];
  // Every write, by type and key, in the order recorded.
  std::map<std::string, std::vector<Write>> writes_[kOpTypes];
  std::vector<std::string> violations_;
};

}  // namespace geokv::nemesis

#endif  // GEOKV_TOOLS_NEMESIS_HISTORY_H_

// The crash test's model of the store (tools/crash_test.cc): what the
// children's committed groups must have left, and the checks of a reopened
// store against it.

#ifndef GEOKV_TOOLS_CRASH_MODEL_H_
#define GEOKV_TOOLS_CRASH_MODEL_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "crdt/hlc.h"
#include "storage/store.h"
#include "tools/crash_journal.h"
#include "util/status.h"

namespace geokv {

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
bool ApplyOp(const JournalOp& op, ModelState* m);

// Applies `g`; appends the log entries it makes to `log`, whose size is the
// last sequence. Returns the sequence each Mutate must have returned.
std::vector<uint64_t> ApplyGroup(const JournalGroup& g, ModelState* m,
                                 std::vector<LogExpectation>* log);

// Compares every pool key of the store with `m`; appends one line per
// difference to `diffs`. An error is a read that failed.
Status CompareState(Store* store, const ModelState& m, std::vector<std::string>* diffs);

// Reads the log after entry `from` (0: all of it): one entry per expected
// write, gapless, by `node`, with timestamps increasing from `*last_ts` (the
// timestamp of entry `from`), and nothing beyond. Sets *last_ts to the
// timestamp of the last entry.
Status CheckLog(Store* store, ReplicaId node, const std::vector<LogExpectation>& expected,
                uint64_t from, HlcTimestamp* last_ts);

}  // namespace geokv

#endif  // GEOKV_TOOLS_CRASH_MODEL_H_

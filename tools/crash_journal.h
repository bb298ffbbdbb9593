// The crash test's journal (tools/crash_test.cc): the key pools and the
// operations a child applies, and the records it appends before and after
// each group.
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

#ifndef GEOKV_TOOLS_CRASH_JOURNAL_H_
#define GEOKV_TOOLS_CRASH_JOURNAL_H_

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "crdt/crdt.h"
#include "util/status.h"

namespace geokv {

// Small pools, so that groups often touch one key several times and set
// removes often hit. One prefix per type: no operation meets WRONG_TYPE.
inline constexpr int kKeysPerType = 4;
inline constexpr const char* kLwwPrefix = "lww";
inline constexpr const char* kMvPrefix = "mv";
inline constexpr const char* kSetPrefix = "set";
inline constexpr const char* kCounterPrefix = "ctr";
// Some elements are prefixes of others, as element rows are prefix-scanned.
inline const std::vector<std::string> kElements = {"a", "ab", "abc", "b", "k9", "Zz", "q0x", "m7"};
inline constexpr int kMaxOpsPerGroup = 8;
inline constexpr int kMaxElementsPerOp = 3;
inline constexpr int kMaxValueLength = 10;
inline constexpr int64_t kMaxCounterDelta = 1000;

inline std::string PoolKey(const char* prefix, int i) {
  return std::string(prefix) + ":" + std::to_string(i);
}

enum class OpKind { kLwwSet, kLwwDelete, kMvWrite, kSetAdd, kSetRemove, kCounterAdd };

struct JournalOp {
  OpKind kind = OpKind::kLwwSet;
  std::string key;
  std::string value;                  // kLwwSet, kMvWrite
  std::vector<std::string> elements;  // kSetAdd, kSetRemove
  int64_t delta = 0;                  // kCounterAdd
};

CrdtType TypeOfOp(OpKind kind);
// Appends " <op>" (the record form above) to *out.
void EncodeOp(const JournalOp& op, std::string* out);
std::string DescribeOp(const JournalOp& op);

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

// Parses a journal; the bytes after the last newline (a record the kill cut
// short) are ignored.
Status ParseJournal(const std::string& text, Journal* out);

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

}  // namespace geokv

#endif  // GEOKV_TOOLS_CRASH_JOURNAL_H_

// Child processes for tests, benchmarks and tools: the one launcher they
// share. Start a binary with its output in a log file (or the parent's),
// signal it, wait for it, poll its log; run a command to completion and
// capture what it printed.

#ifndef GEOKV_TESTING_PROCESS_H_
#define GEOKV_TESTING_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "util/status.h"

namespace geokv::testing {

// The libfaketime library Debian's faketime package installs; empty when
// it is missing.
std::string FaketimeLibrary();

// A wrapper (Cluster::Options::wrappers, SetNodeWrapper) under which a
// process sees the real clock shifted by `offset` (libfaketime's FAKETIME
// syntax: "+3s", "-0.250"). env execs the server, so signals still reach
// the server itself; the sanitizer runtime is told not to insist on being
// loaded first. REQUIRES: FaketimeLibrary() is not empty.
std::vector<std::string> FaketimeWrapper(const std::string& offset);

// Polls `condition` every 10 ms until it holds or `timeout` passes. Returns
// whether it held.
template <typename Condition>
bool PollUntil(Condition condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// "exit status N", "signal N (Killed)" and the like, for messages.
std::string WaitStatusText(int status);

// Where a child's output goes and what it inherits.
struct ChildOptions {
  // The file stdout goes to, and stderr too unless `err_path` is set.
  // Default: empty, the parent's stdout and stderr.
  std::string log_path;
  // The file stderr goes to. Default: empty, as stdout.
  std::string err_path;
  // Whether the files are truncated at the start. Default: appended to, so
  // that one log holds every run of a restarted process.
  bool truncate = false;
  // Descriptors of the parent the child keeps under the same numbers (the
  // launcher clears their close-on-exec flag in the child only).
  std::vector<int> keep_fds;
};

// Options with stdout and stderr appended to `log_path`.
inline ChildOptions LogTo(std::string log_path) {
  ChildOptions options;
  options.log_path = std::move(log_path);
  return options;
}

// A child process. stdin is /dev/null; the signal mask is empty and SIGPIPE
// at its default; the child gets SIGKILL when the thread that started it
// ends, so an interrupted run leaves nothing behind. Killed with SIGKILL and
// reaped on destruction if still running. Not thread-safe.
class ChildProcess {
 public:
  // Starts the program at the path argv[0] (no PATH search) with `argv`.
  // REQUIRES: argv is not empty; the calling thread outlives the child.
  static StatusOr<std::unique_ptr<ChildProcess>> Start(const std::vector<std::string>& argv,
                                                       const ChildOptions& options = {});

  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // The log's contents; empty without a log.
  std::string Log() const;
  // At most the last `max` bytes of the log, "..." marking a cut.
  std::string LogTail(size_t max = 2000) const;

  // Sends `signum` unless the process has been reaped.
  void Signal(int signum);

  bool Running() { return !Reap(false); }

  // The wait status once the process exits, or nullopt after `timeout`.
  std::optional<int> Wait(std::chrono::milliseconds timeout);

  // SIGKILL, and waits for the end. Returns the wait status (the earlier one
  // if it had already exited).
  int Kill();

  // SIGTERM; the wait status, or nullopt if it still runs after `timeout`
  // (it is then killed).
  std::optional<int> Stop(std::chrono::milliseconds timeout);

  // The first group of the first match of `pattern` in the log (the whole
  // match without a group), polling until `timeout`; nullopt if it never
  // appears or the process exits first.
  std::optional<std::string> WaitForLog(const std::regex& pattern,
                                        std::chrono::milliseconds timeout);

 private:
  ChildProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}

  // Whether the process has been reaped; waits for it when `block`.
  bool Reap(bool block);

  pid_t pid_;
  std::string log_path_;
  std::optional<int> exit_status_;
};

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs `argv` to completion (killed after `timeout`), capturing its output
// in files under `scratch_dir`. Not thread-safe.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& scratch_dir,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace geokv::testing

#endif  // GEOKV_TESTING_PROCESS_H_

// Real processes for tests: start a binary with its output in a log file,
// signal it, wait for it, poll its log; run a command to completion and
// capture what it printed.

#ifndef GEOKV_TESTS_PROCESS_H_
#define GEOKV_TESTS_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "util/file.h"

extern char** environ;

namespace geokv::testing {

// Polls `condition` every 10 ms until it holds or `timeout` passes.
template <typename Condition>
bool PollUntil(Condition condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// A child process; its stdout and stderr are appended to `log_path`. Killed
// with SIGKILL and reaped on destruction if still running.
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const std::string& log_path)
      : log_path_(log_path) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0] + " failed");
  }
  ~ChildProcess() {
    if (!exit_status_) {
      kill(pid_, SIGKILL);
      int status;
      waitpid(pid_, &status, 0);
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  std::string Log() const { return ReadFile(log_path_); }

  void Signal(int signum) {
    if (!exit_status_) kill(pid_, signum);
  }

  bool Running() { return !Reap(false); }

  // The wait status once the process exits, or nullopt after `timeout`.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    if (!PollUntil([&] { return Reap(false); }, timeout)) return std::nullopt;
    return exit_status_;
  }

  // The first group of the first match of `pattern` in the log, polling
  // until `timeout`; nullopt if it never appears or the process exits.
  std::optional<std::string> WaitForLog(const std::regex& pattern,
                                        std::chrono::milliseconds timeout) {
    std::optional<std::string> found;
    PollUntil(
        [&] {
          std::smatch m;
          std::string log = Log();
          if (std::regex_search(log, m, pattern)) {
            found = m.size() > 1 ? m[1].str() : m[0].str();
            return true;
          }
          return !Running();
        },
        timeout);
    return found;
  }

 private:
  bool Reap(bool block) {
    if (exit_status_) return true;
    int status;
    pid_t r = waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (r == pid_) exit_status_ = status;
    return exit_status_.has_value();
  }

  pid_t pid_ = -1;
  std::string log_path_;
  std::optional<int> exit_status_;
};

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs `argv` to completion (killed after `timeout`), capturing its output
// in files under `scratch_dir`.
inline CommandResult RunCommand(const std::vector<std::string>& argv,
                                const std::string& scratch_dir,
                                std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  static int counter = 0;
  std::string base = scratch_dir + "/cmd" + std::to_string(++counter);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, (base + ".out").c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, (base + ".err").c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0] + " failed");
  int status = 0;
  bool exited = PollUntil([&] { return waitpid(pid, &status, WNOHANG) == pid; }, timeout);
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  CommandResult result;
  result.exit_code = exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = ReadFile(base + ".out");
  result.err = ReadFile(base + ".err");
  return result;
}

}  // namespace geokv::testing

#endif  // GEOKV_TESTS_PROCESS_H_

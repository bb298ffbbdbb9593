#include "testing/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "util/file.h"

namespace geokv::testing {

namespace {

// An open descriptor, closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

Status OpenFor(const std::string& path, int flags, Fd* out) {
  if (path.empty()) return Status::OK();
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError("open " + path + ": " + std::strerror(errno));
  out->Reset(fd);
  return Status::OK();
}

}  // namespace

std::string WaitStatusText(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  }
  return "wait status " + std::to_string(status);
}

StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(const std::vector<std::string>& argv,
                                                            const ChildOptions& options) {
  if (argv.empty()) return Status::InvalidArgument("no program to start");
  const int mode = O_WRONLY | O_CREAT | (options.truncate ? O_TRUNC : O_APPEND);
  Fd in, out, err;
  GEOKV_RETURN_IF_ERROR(OpenFor("/dev/null", O_RDONLY, &in));
  GEOKV_RETURN_IF_ERROR(OpenFor(options.log_path, mode, &out));
  GEOKV_RETURN_IF_ERROR(OpenFor(options.err_path, mode, &err));
  const int err_fd = err.get() >= 0 ? err.get() : out.get();

  // Built before the fork: the child may only make async-signal-safe calls.
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (std::string& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return Status::IOError(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(in.get(), STDIN_FILENO);
    if (out.get() >= 0) ::dup2(out.get(), STDOUT_FILENO);
    if (err_fd >= 0) ::dup2(err_fd, STDERR_FILENO);
    for (int fd : options.keep_fds) ::fcntl(fd, F_SETFD, 0);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, options.log_path));
}

ChildProcess::~ChildProcess() {
  if (!exit_status_) Kill();
}

std::string ChildProcess::Log() const { return log_path_.empty() ? "" : ReadFile(log_path_); }

std::string ChildProcess::LogTail(size_t max) const {
  std::string log = Log();
  if (log.size() > max) log = "..." + log.substr(log.size() - max);
  return log;
}

void ChildProcess::Signal(int signum) {
  if (!exit_status_) ::kill(pid_, signum);
}

std::optional<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (!PollUntil([&] { return Reap(false); }, timeout)) return std::nullopt;
  return exit_status_;
}

int ChildProcess::Kill() {
  Signal(SIGKILL);
  Reap(true);
  return *exit_status_;
}

std::optional<int> ChildProcess::Stop(std::chrono::milliseconds timeout) {
  Signal(SIGTERM);
  std::optional<int> status = Wait(timeout);
  if (!status) Kill();
  return status;
}

std::optional<std::string> ChildProcess::WaitForLog(const std::regex& pattern,
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

bool ChildProcess::Reap(bool block) {
  if (exit_status_) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    exit_status_ = status;
  } else if (r < 0) {
    exit_status_ = -1;  // not our child any more (reaped elsewhere)
  }
  return exit_status_.has_value();
}

CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& scratch_dir,
                         std::chrono::milliseconds timeout) {
  static int counter = 0;
  const std::string base = scratch_dir + "/cmd" + std::to_string(++counter);
  ChildOptions options;
  options.log_path = base + ".out";
  options.err_path = base + ".err";
  options.truncate = true;
  CommandResult result;
  auto child = ChildProcess::Start(argv, options);
  if (!child.ok()) {
    result.err = child.status().ToString();
    return result;
  }
  std::optional<int> status = (*child)->Wait(timeout);
  if (!status) (*child)->Kill();
  if (status && WIFEXITED(*status)) result.exit_code = WEXITSTATUS(*status);
  result.out = ReadFile(options.log_path);
  result.err = ReadFile(options.err_path);
  return result;
}

std::string FaketimeLibrary() {
  for (const char* dir : {"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"}) {
    std::string path = std::string(dir) + "/faketime/libfaketime.so.1";
    if (std::filesystem::exists(path)) return path;
  }
  return "";
}

std::vector<std::string> FaketimeWrapper(const std::string& offset) {
  return {"/usr/bin/env", "LD_PRELOAD=" + FaketimeLibrary(), "FAKETIME=" + offset,
          "ASAN_OPTIONS=verify_asan_link_order=0"};
}

}  // namespace geokv::testing

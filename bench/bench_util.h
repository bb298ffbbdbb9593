// What the benchmark programs share: a scratch directory for their databases
// and servers, and elapsed-time helpers.

#ifndef GEOKV_BENCH_BENCH_UTIL_H_
#define GEOKV_BENCH_BENCH_UTIL_H_

#include <sys/vfs.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "util/status.h"

namespace geokv {

using BenchClock = std::chrono::steady_clock;

inline double SecondsSince(BenchClock::time_point start) {
  return std::chrono::duration<double>(BenchClock::now() - start).count();
}

// Where a benchmark's databases and logs live. A temporary directory is
// removed, with everything in it, on destruction; one the user named is left
// alone.
class ScratchDir {
 public:
  // `requested` empty: a fresh temporary directory named after `prefix`.
  static StatusOr<std::unique_ptr<ScratchDir>> Create(const std::string& requested,
                                                      const std::string& prefix) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!requested.empty()) {
      fs::create_directories(requested, ec);
      if (ec) return Status::IOError("create " + requested + ": " + ec.message());
      return std::unique_ptr<ScratchDir>(new ScratchDir(requested, false));
    }
    std::string pattern = (fs::temp_directory_path(ec) / (prefix + ".XXXXXX")).string();
    if (ec) return Status::IOError("temporary directory: " + ec.message());
    if (mkdtemp(pattern.data()) == nullptr) {
      return Status::IOError("mkdtemp " + pattern + ": " + std::strerror(errno));
    }
    return std::unique_ptr<ScratchDir>(new ScratchDir(pattern, true));
  }

  ~ScratchDir() {
    std::error_code ec;
    if (temporary_) std::filesystem::remove_all(path_, ec);
  }

  // A path inside the directory.
  std::string Path(const std::string& name) const {
    return (std::filesystem::path(path_) / name).string();
  }

  // A path for one new database; refuses one that exists so that a run never
  // measures a database left by an earlier one.
  StatusOr<std::string> NewDb(const std::string& name) const {
    std::string path = Path(name);
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
      return Status::FailedPrecondition(path + " exists; give an empty --data-dir");
    }
    return path;
  }

  const std::string& path() const { return path_; }
  bool temporary() const { return temporary_; }

  // Fsync timings mean nothing on a RAM disk.
  bool OnTmpfs() const {
    struct statfs st;
    constexpr long kTmpfsMagic = 0x01021994;
    return statfs(path_.c_str(), &st) == 0 && static_cast<long>(st.f_type) == kTmpfsMagic;
  }

 private:
  ScratchDir(std::string path, bool temporary) : path_(std::move(path)), temporary_(temporary) {}

  std::string path_;
  bool temporary_;
};

}  // namespace geokv

#endif  // GEOKV_BENCH_BENCH_UTIL_H_

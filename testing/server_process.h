// A geokv-server process on a free loopback port with its own data dir,
// for tests and benchmarks that drive the real binary.

#ifndef GEOKV_TESTING_SERVER_PROCESS_H_
#define GEOKV_TESTING_SERVER_PROCESS_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "testing/process.h"

namespace geokv::testing {

// Not thread-safe.
class ServerProcess {
 public:
  // `binary` is geokv-server; each start logs to `log_prefix`.N. A
  // non-empty `wrapper` runs the server under it (e.g. faketime and its
  // arguments).
  ServerProcess(std::string binary, std::string data_dir, std::string log_prefix,
                std::vector<std::string> flags = {}, std::vector<std::string> wrapper = {});

  // Starts the server on port 0 and waits until it listens. False (with the
  // log in *why) if it does not within 30 s.
  bool Start(std::string* why);

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  // REQUIRES: Start was called and launched the process.
  ChildProcess& child() { return *child_; }
  // Whether the process was launched and has not ended.
  bool Running() { return child_ && child_->Running(); }
  // The latest start's log; empty before the first.
  std::string Log() const { return child_ ? child_->Log() : ""; }

  // kill -9, and reap. REQUIRES: the process was launched.
  void Kill();

  // SIGTERM; the wait status, or nullopt if it is still running after
  // `timeout` (it is then killed). REQUIRES: the process was launched.
  std::optional<int> Stop(std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  std::string binary_, data_dir_, log_prefix_;
  std::vector<std::string> flags_;
  std::vector<std::string> wrapper_;
  std::unique_ptr<ChildProcess> child_;
  int starts_ = 0;
  int port_ = 0;
};

}  // namespace geokv::testing

#endif  // GEOKV_TESTING_SERVER_PROCESS_H_

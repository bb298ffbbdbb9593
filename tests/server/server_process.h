// A geokv-server process on a free loopback port with its own data dir,
// for tests that drive the real binary.

#ifndef GEOKV_TESTS_SERVER_SERVER_PROCESS_H_
#define GEOKV_TESTS_SERVER_SERVER_PROCESS_H_

#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "tests/process.h"

namespace geokv::testing {

class ServerProcess {
 public:
  // `binary` is geokv-server; each start logs to `log_prefix`.N. A
  // non-empty `wrapper` runs the server under it (e.g. faketime and its
  // arguments).
  ServerProcess(std::string binary, std::string data_dir, std::string log_prefix,
                std::vector<std::string> flags = {}, std::vector<std::string> wrapper = {})
      : binary_(std::move(binary)),
        data_dir_(std::move(data_dir)),
        log_prefix_(std::move(log_prefix)),
        flags_(std::move(flags)),
        wrapper_(std::move(wrapper)) {}

  // Starts the server on port 0 and waits until it listens. False (with the
  // log in *why) if it does not within 30 s.
  bool Start(std::string* why) {
    std::vector<std::string> argv = wrapper_;
    argv.insert(argv.end(), {binary_, "--listen", "127.0.0.1:0", "--data-dir", data_dir_});
    argv.insert(argv.end(), flags_.begin(), flags_.end());
    child_ = std::make_unique<ChildProcess>(argv,
                                            log_prefix_ + "." + std::to_string(++starts_));
    auto port = child_->WaitForLog(std::regex("client API listening on .* port ([0-9]+)"),
                                   std::chrono::seconds(30));
    if (!port) {
      *why = "geokv-server did not start:\n" + child_->Log();
      return false;
    }
    port_ = std::stoi(*port);
    return true;
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  ChildProcess& child() { return *child_; }

  // kill -9, and reap.
  void Kill() {
    child_->Signal(SIGKILL);
    child_->Wait(std::chrono::seconds(30));
  }

  // SIGTERM; the wait status, or nullopt if it is still running after
  // `timeout`.
  std::optional<int> Stop(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    child_->Signal(SIGTERM);
    return child_->Wait(timeout);
  }

 private:
  std::string binary_, data_dir_, log_prefix_;
  std::vector<std::string> flags_;
  std::vector<std::string> wrapper_;
  std::unique_ptr<ChildProcess> child_;
  int starts_ = 0;
  int port_ = 0;
};

}  // namespace geokv::testing

#endif  // GEOKV_TESTS_SERVER_SERVER_PROCESS_H_

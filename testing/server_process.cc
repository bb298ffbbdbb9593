#include "testing/server_process.h"

#include <regex>

namespace geokv::testing {

ServerProcess::ServerProcess(std::string binary, std::string data_dir, std::string log_prefix,
                             std::vector<std::string> flags, std::vector<std::string> wrapper)
    : binary_(std::move(binary)),
      data_dir_(std::move(data_dir)),
      log_prefix_(std::move(log_prefix)),
      flags_(std::move(flags)),
      wrapper_(std::move(wrapper)) {}

bool ServerProcess::Start(std::string* why) {
  std::vector<std::string> argv = wrapper_;
  argv.insert(argv.end(), {binary_, "--listen", "127.0.0.1:0", "--data-dir", data_dir_});
  argv.insert(argv.end(), flags_.begin(), flags_.end());
  ChildOptions options;
  options.log_path = log_prefix_ + "." + std::to_string(++starts_);
  auto child = ChildProcess::Start(argv, options);
  if (!child.ok()) {
    *why = "geokv-server did not start: " + child.status().ToString();
    return false;
  }
  child_ = std::move(child).value();
  auto port = child_->WaitForLog(std::regex("client API listening on .* port ([0-9]+)"),
                                 std::chrono::seconds(30));
  if (!port) {
    *why = "geokv-server did not start:\n" + child_->Log();
    return false;
  }
  port_ = std::stoi(*port);
  return true;
}

void ServerProcess::Kill() { child_->Kill(); }

std::optional<int> ServerProcess::Stop(std::chrono::milliseconds timeout) {
  return child_->Stop(timeout);
}

}  // namespace geokv::testing

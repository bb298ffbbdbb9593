// geokv-server: one node of geokv. See --help and docs/configuration.md.

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "server/node.h"
#include "server/options.h"

int main(int argc, char** argv) {
  geokv::ParsedServerOptions parsed = geokv::ParseServerOptions(argc, argv);
  if (const int* exit_code = std::get_if<int>(&parsed)) return *exit_code;
  const auto& options = std::get<geokv::ServerOptions>(parsed);

  auto logger = spdlog::stderr_color_mt("geokv");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(options.log_level));
  spdlog::set_default_logger(logger);
  geokv::Node node(options);
  return node.Run();
}

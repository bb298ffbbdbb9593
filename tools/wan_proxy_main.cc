// geokv-wan-proxy: a TCP proxy that emulates a WAN link (delay, jitter,
// bandwidth, partitions) between geokv regions. See --help and
// docs/wan-proxy.md.

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <memory>

#include "tools/wan_proxy.h"
#include "util/cli.h"

namespace {

CLI::Validator HostPort() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        std::string host, port;
        geokv::Status s = geokv::ParseHostPort(value, &host, &port);
        return s.ok() ? std::string() : s.message();
      },
      "HOST:PORT");
}

}  // namespace

int main(int argc, char** argv) {
  geokv::WanProxyOptions options;
  int64_t delay_ms = 0;
  int64_t jitter_ms = 0;
  std::string control;
  std::string log_level = "info";

  CLI::App app{"geokv-wan-proxy: a TCP proxy that emulates a WAN link between geokv regions"};
  app.get_formatter()->column_width(34);
  app.add_option("--listen", options.listen, "HOST:PORT to accept on; port 0 picks a free one")
      ->required()
      ->check(HostPort());
  app.add_option("--target", options.target, "HOST:PORT each connection is forwarded to")
      ->required()
      ->check(HostPort());
  app.add_option("--delay-ms", delay_ms, "One-way delay added in each direction")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{3600 * 1000}));
  app.add_option("--jitter-ms", jitter_ms,
                 "Extra delay per chunk, uniform in [0, J]; never reorders bytes")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{3600 * 1000}));
  app.add_option("--bandwidth", options.bandwidth,
                 "Bytes per second per direction per connection, 0 unlimited (accepts KiB, MiB)")
      ->transform(CLI::AsSizeValue(false))
      ->default_str(std::to_string(options.bandwidth));
  app.add_option("--max-queued-bytes", options.max_queued_bytes,
                 "Bytes one direction may hold before its side is not read (accepts KiB, MiB)")
      ->transform(CLI::AsSizeValue(false))
      ->default_str(std::to_string(options.max_queued_bytes))
      ->check(geokv::AtLeast(1));
  app.add_option("--control", control,
                 "HOST:PORT of the control line protocol (partition, heal, delay D J, "
                 "bandwidth B, status); none by default")
      ->check(HostPort());
  app.add_option("--seed", options.seed, "Seed of the jitter; 0 picks one at random")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  if (auto exit_code = geokv::ParseCommandLine(app, argc, argv)) return *exit_code;
  options.delay = std::chrono::milliseconds(delay_ms);
  options.jitter = std::chrono::milliseconds(jitter_ms);

  auto logger = spdlog::stderr_color_mt("geokv-wan-proxy");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(log_level));
  spdlog::set_default_logger(logger);

  std::signal(SIGPIPE, SIG_IGN);
  boost::asio::io_context io(1);
  geokv::WanProxy proxy(io, options);
  if (geokv::Status s = proxy.Start(); !s.ok()) {
    spdlog::error("{}", s.ToString());
    return 1;
  }
  std::unique_ptr<geokv::WanProxyControl> control_server;
  if (!control.empty()) {
    control_server = std::make_unique<geokv::WanProxyControl>(io, proxy);
    if (geokv::Status s = control_server->Start(control); !s.ok()) {
      spdlog::error("{}", s.ToString());
      return 1;
    }
  }
  // Printed whatever the log level: scripts and tests read the ports here.
  std::fprintf(stderr, "listening on %s\n", proxy.listen_address().c_str());
  if (control_server) {
    std::fprintf(stderr, "control on %s\n", control_server->listen_address().c_str());
  }
  std::fflush(stderr);
  spdlog::info("forwarding to {} with delay {} ms, jitter {} ms, bandwidth {} bytes/s",
               options.target, delay_ms, jitter_ms, options.bandwidth);

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signal_number) {
    if (ec) return;
    spdlog::info("{} received: shutting down", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
    proxy.Stop();
    if (control_server) control_server->Stop();
  });
  io.run();
  return 0;
}

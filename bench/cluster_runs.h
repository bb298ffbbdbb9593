// What the benchmarks that run real geokv-server processes through the test
// harness (testing/cluster.h) share: failing a run, the options
// every subcommand takes, scratch directories and starting a cluster.

#ifndef GEOKV_BENCH_CLUSTER_RUNS_H_
#define GEOKV_BENCH_CLUSTER_RUNS_H_

#include <kj/exception.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <functional>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "bench/bench_util.h"
#include "testing/cluster.h"
#include "util/json.h"

namespace geokv {

// Aborts the run: thrown as a kj::Exception so that it also rejects the
// promise it is raised in; main prints `what`.
[[noreturn]] inline void Fail(const std::string& what) {
  kj::throwFatalException(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                                        kj::heapString(what.data(), what.size())));
}

struct CommonOptions {
  std::string data_dir;  // empty: a temporary directory, removed at the end
  bool json = false;
  std::vector<std::string> server_args;  // appended to every node's flags
  // Every node with TLS on every port and between nodes, clients over TLS
  // (the benchmarks that offer --tls).
  bool tls = false;
};

// The --server-arg list, for the text and JSON outputs.
inline std::string ServerArgsText(const CommonOptions& c) {
  std::string out;
  for (const std::string& a : c.server_args) out += (out.empty() ? "" : " ") + a;
  return out;
}

inline std::string ServerArgsJson(const CommonOptions& c) {
  std::string out;
  for (const std::string& a : c.server_args) out += (out.empty() ? "" : ",") + JsonString(a);
  return "[" + out + "]";
}

inline void AddCommonFlags(CLI::App* app, CommonOptions* c) {
  app->add_option("--data-dir", c->data_dir,
                  "Scratch root for the nodes' data and logs, left in place (default: a "
                  "temporary directory, removed at the end)");
  app->add_flag("--json", c->json, "Print one JSON object instead of the text");
  app->add_option("--server-arg", c->server_args,
                  "An argument appended to every geokv-server's command line (repeat it: "
                  "--server-arg=--heartbeat --server-arg=200ms)")
      ->allow_extra_args(false);
}

// Runs the chosen subcommand: stdout keeps the results (the harness's
// in-process WAN proxies log through spdlog, to stderr), and a failure
// prints what went wrong. Returns the process's exit code.
inline int RunMeasurement(const std::string& tool, const std::function<int()>& run) {
  std::signal(SIGPIPE, SIG_IGN);
  spdlog::set_default_logger(spdlog::stderr_color_mt(tool));
  spdlog::set_level(spdlog::level::err);
  int code = 1;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { code = run(); })) {
    std::fprintf(stderr, "%s: %s\n", tool.c_str(), e->getDescription().cStr());
    std::fprintf(stderr, "(run with --data-dir DIR to keep the nodes' logs)\n");
    return 1;
  }
  return code;
}

// Printed under a text header: extra node arguments, and retried starts.
inline void PrintServerArgs(const CommonOptions& c, int starts) {
  if (!c.server_args.empty()) {
    std::printf("extra server arguments: %s\n", ServerArgsText(c).c_str());
  }
  if (c.tls) std::printf("TLS on every port, mutual TLS between nodes\n");
  if (starts > 1) std::printf("the cluster started at attempt %d (see stderr)\n", starts);
}

// A scratch root and a fresh directory in it for one cluster.
struct Scratch {
  std::unique_ptr<ScratchDir> root;
  std::string dir;
};

inline Scratch MakeScratch(const CommonOptions& c, const std::string& tool,
                           const std::string& name) {
  auto root = ScratchDir::Create(c.data_dir, tool);
  if (!root.ok()) Fail(root.status().ToString());
  auto dir = (*root)->NewDb(name);
  if (!dir.ok()) Fail(dir.status().ToString());
  std::error_code ec;
  std::filesystem::create_directories(*dir, ec);
  if (ec) Fail("create " + *dir + ": " + ec.message());
  return Scratch{std::move(root).value(), *dir};
}

// Cluster starts tried before giving up. A node whose first hello goes
// unanswered waits 3 heartbeats before it tries again, and a port can be
// taken between FreePort() and the server's bind, so a start that fails is
// retried with fresh nodes and proxies.
inline constexpr int kStartAttempts = 3;

// A started cluster in a fresh subdirectory of `dir`; *starts counts the
// attempts it took. `tool` names the program in messages.
inline std::unique_ptr<testing::Cluster> StartCluster(const std::string& tool,
                                                      const std::string& dir,
                                                      const testing::Cluster::Options& options,
                                                      int* starts) {
  std::string why;
  for (*starts = 1; *starts <= kStartAttempts; ++*starts) {
    const std::string attempt = dir + "/start" + std::to_string(*starts);
    std::error_code ec;
    std::filesystem::create_directories(attempt, ec);
    if (ec) Fail("create " + attempt + ": " + ec.message());
    auto cluster = std::make_unique<testing::Cluster>(attempt, options);
    why.clear();
    if (cluster->Start(&why)) return cluster;
    std::fprintf(stderr, "%s: cluster start %d of %d failed: %s\n", tool.c_str(), *starts,
                 kStartAttempts, why.substr(0, why.find('\n')).c_str());
  }
  Fail("cluster did not start: " + why);
}

}  // namespace geokv

#endif  // GEOKV_BENCH_CLUSTER_RUNS_H_

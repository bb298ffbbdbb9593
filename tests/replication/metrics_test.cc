// The metrics endpoint of real nodes: three regions of one node each serve
// /metrics. Every node must export exactly the families that
// monitoring/metric_names.txt lists, with their types (the list the
// dashboard and alerts are checked against in tests/monitoring). And a real
// Prometheus server (Debian's package) scrapes them: its HTTP API must show
// request, replication lag and membership series with values; that part is
// skipped, saying why, where no prometheus binary is installed.

#include <gtest/gtest.h>


#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "testing/cluster.h"
#include "testing/http_get.h"
#include "testing/test_dir.h"

namespace geokv {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::Client;
using testing::Cluster;
using testing::FreePort;
using testing::PollUntil;
using testing::TestDir;

constexpr char kPrometheus[] = "/usr/bin/prometheus";

std::string HttpGet(int port, const std::string& path) {
  return testing::HttpGet("127.0.0.1:" + std::to_string(port), path);
}

std::string Escape(const std::string& query) {
  std::string out;
  for (unsigned char c : query) {
    if (std::isalnum(c) || c == '_' || c == '.' || c == '-') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

// The values of an instant query's result vector, as Prometheus prints them.
std::vector<double> Query(int port, const std::string& query) {
  std::string body = HttpGet(port, "/api/v1/query?query=" + Escape(query));
  std::vector<double> out;
  static const std::regex kValue(R"re("value":\[[0-9.e+]+,"([^"]+)"\])re");
  for (auto it = std::sregex_iterator(body.begin(), body.end(), kValue);
       it != std::sregex_iterator(); ++it) {
    out.push_back(std::stod((*it)[1].str()));
  }
  return out;
}

// monitoring/metric_names.txt: family name -> type.
std::map<std::string, std::string> ListedFamilies() {
  std::map<std::string, std::string> out;
  std::ifstream in(GEOKV_METRIC_NAMES);
  std::string line;
  while (std::getline(in, line)) {
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    std::string name, type;
    if (words >> name >> type) out[name] = type;
  }
  return out;
}

// One scrape in the text format: the families its # TYPE lines declare, and
// the names of the samples it holds.
struct Exposition {
  std::map<std::string, std::string> types;
  std::set<std::string> samples;
};

Exposition Parse(const std::string& text) {
  Exposition out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream words(line.substr(7));
      std::string name, type;
      if (words >> name >> type) out.types[name] = type;
    } else if (!line.empty() && line[0] != '#') {
      out.samples.insert(line.substr(0, line.find_first_of("{ ")));
    }
  }
  return out;
}

// What is wrong with one node's scrape against the list; empty when nothing.
std::vector<std::string> Mismatches(const Exposition& got,
                                    const std::map<std::string, std::string>& listed) {
  std::vector<std::string> out;
  for (const auto& [name, type] : listed) {
    auto it = got.types.find(name);
    if (it == got.types.end()) {
      out.push_back(name + " is not exported");
      continue;
    }
    if (it->second != type) out.push_back(name + " is a " + it->second + ", listed as " + type);
    // A family without children has no samples: its series never appeared.
    bool has = type == "histogram"
                   ? got.samples.count(name + "_bucket") && got.samples.count(name + "_count") &&
                         got.samples.count(name + "_sum")
                   : got.samples.count(name) > 0;
    if (!has) out.push_back(name + " has no samples");
  }
  for (const auto& [name, type] : got.types) {
    // prometheus-cpp's own families about serving /metrics (scrapes, bytes,
    // latency): the library names them, so they are not geokv's to list.
    if (name.rfind("exposer_", 0) == 0) continue;
    if (listed.count(name) == 0) out.push_back(name + " is exported but not listed");
  }
  return out;
}

// Three regions of one node each with metrics; `writes` keys written in r0
// that the others receive (their lag series get observations), and a read
// answered by every node. Null, after a failed expectation, if that fails.
std::unique_ptr<Cluster> StartWithTraffic(const TestDir& dir, int writes) {
  Cluster::Options options;
  options.regions = 3;
  options.flags = {"--heartbeat", "200ms", "--anti-entropy-interval", "1s"};
  options.metrics = true;
  options.tls = true;
  auto cluster = std::make_unique<Cluster>(dir.path(), options);
  std::string why;
  if (!cluster->Start(&why)) {
    ADD_FAILURE() << why;
    return nullptr;
  }
  Client a(*cluster, 0);
  for (int i = 0; i < writes; ++i) {
    if (a.Set("k" + std::to_string(i), "v").empty()) {
      ADD_FAILURE() << "write " << i << " failed";
      return nullptr;
    }
  }
  if (!cluster->WaitConverged(30s, &why)) {
    ADD_FAILURE() << why;
    return nullptr;
  }
  for (int n = 0; n < cluster->nodes(); ++n) {
    Client c(*cluster, n);
    EXPECT_EQ(c.Get("k0"), "v");
  }
  return cluster;
}

std::string Join(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) out += "\n  " + l;
  return out;
}

TEST(MetricsTest, EveryNodeExportsExactlyTheListedFamilies) {
  const std::map<std::string, std::string> listed = ListedFamilies();
  ASSERT_GE(listed.size(), 30u) << "cannot read " << GEOKV_METRIC_NAMES;
  TestDir dir;
  // Families that need an event (peer links, lag, members) are created when
  // a node first links a peer or samples its view, so every node has every
  // family once the writes converged.
  std::unique_ptr<Cluster> started = StartWithTraffic(dir, 20);
  ASSERT_NE(started, nullptr);
  Cluster& cluster = *started;

  for (int n = 0; n < cluster.nodes(); ++n) {
    const int port = std::stoi(cluster.metrics_address(n).substr(
        cluster.metrics_address(n).rfind(':') + 1));
    std::vector<std::string> wrong;
    // Members are sampled once a second: allow a few scrapes.
    PollUntil(
        [&] {
          wrong = Mismatches(Parse(HttpGet(port, "/metrics")), listed);
          return wrong.empty();
        },
        10s);
    EXPECT_TRUE(wrong.empty()) << "node " << n << " (" << cluster.metrics_address(n)
                               << ") against " << GEOKV_METRIC_NAMES << ":" << Join(wrong);
  }
}

TEST(MetricsTest, PrometheusScrapesRequestLagAndMembershipSeries) {
  if (access(kPrometheus, X_OK) != 0) {
    GTEST_SKIP() << kPrometheus << " is not installed (Debian package prometheus)";
  }
  TestDir dir;
  std::unique_ptr<Cluster> started = StartWithTraffic(dir, 50);
  ASSERT_NE(started, nullptr);
  Cluster& cluster = *started;

  const int port = FreePort();
  const std::string config = dir.path() + "/prometheus.yml";
  {
    std::ofstream out(config);
    out << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "scrape_configs:\n  - job_name: geokv\n    static_configs:\n      - targets: [";
    for (int n = 0; n < cluster.nodes(); ++n) {
      out << (n ? ", " : "") << "'" << cluster.metrics_address(n) << "'";
    }
    out << "]\n";
  }
  auto launched = ChildProcess::Start({kPrometheus, "--config.file=" + config,
                                       "--storage.tsdb.path=" + dir.path() + "/tsdb",
                                       "--web.listen-address=127.0.0.1:" + std::to_string(port)},
                                      testing::LogTo(dir.path() + "/prometheus.log"));
  ASSERT_TRUE(launched.ok()) << launched.status().ToString();
  ChildProcess& prometheus = **launched;

  // Whether at least `series` of the query's series have a positive value.
  auto has = [&](const std::string& query, size_t series) {
    std::vector<double> values = Query(port, query);
    return static_cast<size_t>(std::count_if(values.begin(), values.end(),
                                             [](double v) { return v > 0; })) >= series;
  };
  // Every node is scraped.
  ASSERT_TRUE(PollUntil([&] { return has("up == 1", 3); }, 60s)) << prometheus.Log();
  // Requests by operation and outcome: the sets in r0, a get in each region.
  EXPECT_TRUE(PollUntil([&] { return has(R"(geokv_requests_total{op="set",outcome="ok"})", 1); },
                        30s));
  EXPECT_TRUE(PollUntil(
      [&] { return has(R"(sum by (region) (geokv_requests_total{op="get",outcome="ok"}))", 3); },
      30s));
  // Replication lag, observed in r1 and r2 for writes from r0.
  EXPECT_TRUE(PollUntil(
      [&] {
        return has(R"(geokv_replication_lag_seconds_count{source_region="r0"})", 2);
      },
      30s));
  // Membership: every node sees three members alive.
  EXPECT_TRUE(PollUntil(
      [&] { return has(R"(sum by (instance) (geokv_members{state="alive"}) == 3)", 3); }, 30s));
  // Process metrics come along.
  EXPECT_TRUE(PollUntil([&] { return has("process_resident_memory_bytes", 3); }, 30s));
  prometheus.Signal(SIGTERM);
  prometheus.Wait(10s);
}

}  // namespace
}  // namespace geokv

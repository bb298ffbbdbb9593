// The metrics endpoint checked by a real Prometheus server: three regions of
// one node each serve /metrics, Prometheus (Debian's package) scrapes them,
// and its HTTP API must show request, replication lag and membership series
// with values. Skipped, saying why, where no prometheus binary is installed.

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "tests/replication/cluster.h"
#include "tests/storage/test_dir.h"

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

// GET http://127.0.0.1:port/path; the body, or "" when the request failed.
std::string HttpGet(int port, const std::string& path) {
  try {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket socket(io);
    socket.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)});
    std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    boost::asio::write(socket, boost::asio::buffer(request));
    std::string response;
    boost::system::error_code ec;
    boost::asio::read(socket, boost::asio::dynamic_buffer(response), ec);
    size_t body = response.find("\r\n\r\n");
    return body == std::string::npos ? "" : response.substr(body + 4);
  } catch (const std::exception&) {
    return "";
  }
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

TEST(MetricsTest, PrometheusScrapesRequestLagAndMembershipSeries) {
  if (access(kPrometheus, X_OK) != 0) {
    GTEST_SKIP() << kPrometheus << " is not installed (Debian package prometheus)";
  }
  TestDir dir;
  Cluster::Options options;
  options.regions = 3;
  options.flags = {"--heartbeat", "200ms", "--anti-entropy-interval", "1s"};
  options.metrics = true;
  Cluster cluster(dir.path(), options);
  std::string why;
  ASSERT_TRUE(cluster.Start(&why)) << why;

  // Traffic: writes in r0 that the others receive, and reads everywhere.
  Client a(cluster.address(0));
  for (int i = 0; i < 50; ++i) ASSERT_NE(a.Set("k" + std::to_string(i), "v"), "");
  ASSERT_TRUE(cluster.WaitConverged(30s, &why)) << why;
  for (int n = 0; n < cluster.nodes(); ++n) {
    Client c(cluster.address(n));
    EXPECT_EQ(c.Get("k0"), "v");
  }

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
  ChildProcess prometheus({kPrometheus, "--config.file=" + config,
                           "--storage.tsdb.path=" + dir.path() + "/tsdb",
                           "--web.listen-address=127.0.0.1:" + std::to_string(port)},
                          dir.path() + "/prometheus.log");

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

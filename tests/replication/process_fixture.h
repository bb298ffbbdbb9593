// What the tests of real geokv-server processes share: short intervals and
// the assertions that start and check a testing::Cluster.

#ifndef GEOKV_TESTS_REPLICATION_PROCESS_FIXTURE_H_
#define GEOKV_TESTS_REPLICATION_PROCESS_FIXTURE_H_

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "testing/cluster.h"

namespace geokv::testing {

// Short intervals, so that tests do not wait for routine passes.
inline const std::vector<std::string> kFastFlags = {"--anti-entropy-interval", "1s",
                                                    "--heartbeat",             "200ms",
                                                    "--token-wait",            "10s"};

// `regions` regions of one node each, `delay` one way on every link, with
// TLS on every port as a secured deployment runs (Cluster::Options::tls).
inline Cluster::Options TlsRegions(int regions,
                                   std::chrono::milliseconds delay = std::chrono::milliseconds(0),
                                   std::vector<std::string> flags = kFastFlags) {
  Cluster::Options o;
  o.regions = regions;
  o.delay = delay;
  o.flags = std::move(flags);
  o.tls = true;
  return o;
}

#define START_CLUSTER(cluster)                 \
  do {                                         \
    std::string why;                           \
    ASSERT_TRUE((cluster).Start(&why)) << why; \
  } while (0)

#define EXPECT_CONVERGED(cluster, timeout)                          \
  do {                                                              \
    std::string why;                                                \
    EXPECT_TRUE((cluster).WaitConverged(timeout, &why)) << why;     \
  } while (0)

#define EXPECT_SAME_DUMPS(cluster)                               \
  do {                                                           \
    std::string why;                                             \
    EXPECT_TRUE((cluster).StopAndCompareDumps(&why)) << why;     \
  } while (0)

}  // namespace geokv::testing

#endif  // GEOKV_TESTS_REPLICATION_PROCESS_FIXTURE_H_

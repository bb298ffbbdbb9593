// What the node samples into its metrics: once a second what the store, the
// disk and gossip report (the store's space estimates read on the reader
// pool), and every 50 ms how late a loop timer fires (the event loop's lag).

#ifndef GEOKV_SERVER_METRIC_SAMPLER_H_
#define GEOKV_SERVER_METRIC_SAMPLER_H_

#include <kj/async.h>
#include <kj/timer.h>

#include <array>
#include <cstdint>
#include <string>

#include "cluster/gossip.h"
#include "monitoring/metrics.h"
#include "server/cluster_view.h"
#include "storage/async_store.h"

namespace geokv {

// Lives on the event loop's thread.
class MetricSampler {
 public:
  // `gossip` may be null. Every reference must outlive the sampler.
  MetricSampler(AsyncStore& store, std::string data_dir, Gossip* gossip,
                const ClusterView& view, Metrics& metrics, kj::Timer& timer);

  // Samples now and then every second; probes the loop every period.
  void Start();
  void Stop();

  // How often the loop's lag is probed.
  static constexpr auto kLagPeriod = 50 * kj::MILLISECONDS;

 private:
  kj::Promise<void> Sample();
  void Record(const Store::SpaceEstimates& space);
  kj::Promise<void> ProbeLag();

  AsyncStore& store_;
  const std::string data_dir_;
  Gossip* gossip_;
  const ClusterView& view_;
  Metrics& metrics_;
  kj::Timer& timer_;
  uint64_t lww_counted_ = 0;
  uint64_t detections_counted_ = 0;
  // Every reason's series exists from the start, at 0, with gossip or not.
  std::array<prometheus::Counter*, kGossipRefusals> refused_{};
  std::array<uint64_t, kGossipRefusals> refused_counted_{};
  kj::Promise<void> sampling_ = nullptr;
  kj::Promise<void> probing_ = nullptr;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_METRIC_SAMPLER_H_

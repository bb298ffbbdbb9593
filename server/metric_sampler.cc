#include "server/metric_sampler.h"

#include <spdlog/spdlog.h>
#include <sys/statvfs.h>

#include <map>
#include <utility>

namespace geokv {

MetricSampler::MetricSampler(AsyncStore& store, std::string data_dir, Gossip* gossip,
                             const ClusterView& view, Metrics& metrics, kj::Timer& timer)
    : store_(store),
      data_dir_(std::move(data_dir)),
      gossip_(gossip),
      view_(view),
      metrics_(metrics),
      timer_(timer) {
  for (size_t i = 0; i < kGossipRefusals; ++i) {
    refused_[i] = &metrics_.GossipRefused(std::string(GossipRefusalName(GossipRefusal(i))));
  }
}

void MetricSampler::Start() {
  sampling_ = Sample().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("sampling metrics stopped: {}", e.getDescription().cStr());
  });
  probing_ = ProbeLag().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("probing the event loop's lag stopped: {}", e.getDescription().cStr());
  });
}

void MetricSampler::Stop() {
  sampling_ = nullptr;
  probing_ = nullptr;
}

kj::Promise<void> MetricSampler::Sample() {
  return store_.Space()
      .then([this](Store::SpaceEstimates space) {
        Record(space);
        return timer_.afterDelay(1 * kj::SECONDS);
      })
      .then([this] { return Sample(); });
}

void MetricSampler::Record(const Store::SpaceEstimates& space) {
  metrics_.rocksdb_live_data.Set(static_cast<double>(space.live_data_bytes));
  metrics_.rocksdb_memtable.Set(static_cast<double>(space.memtable_bytes));
  metrics_.rocksdb_pending_compaction.Set(static_cast<double>(space.pending_compaction_bytes));
  struct statvfs fs {};
  if (statvfs(data_dir_.c_str(), &fs) == 0) {
    metrics_.disk_free.Set(static_cast<double>(fs.f_bavail) * fs.f_frsize);
    metrics_.disk_total.Set(static_cast<double>(fs.f_blocks) * fs.f_frsize);
  }
  uint64_t lww = store_.store().LwwOverwritten();
  metrics_.lww_overwritten.Increment(static_cast<double>(lww - lww_counted_));
  lww_counted_ = lww;
  if (gossip_ != nullptr) {
    uint64_t detections = gossip_->failure_detections();
    metrics_.failure_detections.Increment(static_cast<double>(detections - detections_counted_));
    detections_counted_ = detections;
    const auto refused = gossip_->refused();
    for (size_t i = 0; i < kGossipRefusals; ++i) {
      refused_[i]->Increment(static_cast<double>(refused[i] - refused_counted_[i]));
      refused_counted_[i] = refused[i];
    }
  }
  std::map<std::pair<std::string, std::string>, int> members;
  for (const Member* m : view_.Members()) {
    ++members[{m->region, std::string(MemberStateName(m->state))}];
  }
  metrics_.SetMembers(members);
}

kj::Promise<void> MetricSampler::ProbeLag() {
  // The timer's clock is read once per loop turn; the precise clock says
  // when the callback really runs.
  const kj::TimePoint due = timer_.now() + kLagPeriod;
  return timer_.afterDelay(kLagPeriod).then([this, due] {
    const kj::TimePoint now = kj::systemPreciseMonotonicClock().now();
    const double late = now > due ? static_cast<double>((now - due) / kj::NANOSECONDS) / 1e9 : 0;
    metrics_.event_loop_lag.Observe(late);
    return ProbeLag();
  });
}

}  // namespace geokv

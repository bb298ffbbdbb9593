#include "replication/tombstone_collector.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "replication/group_commit.h"

namespace geokv {

TombstoneCollector::TombstoneCollector(ReplicationEnv& env, TombstoneCollectorOptions options)
    : env_(env), options_(options), started_(env.timer.now()) {}

void TombstoneCollector::Advance(uint64_t held_by_all) {
  LogCheckpoint now = env_.store.LastCheckpoint();
  // With no write in flight, every later entry is stamped above the clock
  // now: a node that writes nothing still moves its stable stamp on.
  if (env_.committer.pending() == 0) now.stamp = std::max(now.stamp, env_.store.clock()->Now());
  if (!checkpoints_.empty() && checkpoints_.back().seq == now.seq) {
    checkpoints_.back().stamp = std::max(checkpoints_.back().stamp, now.stamp);
  } else if (checkpoints_.empty() || checkpoints_.back().seq < now.seq) {
    checkpoints_.push_back(now);
  }
  if (checkpoints_.size() > kMaxCheckpoints) {
    // Keeps the first and the last, and every other one between.
    std::deque<LogCheckpoint> thinned;
    for (size_t i = 0; i < checkpoints_.size(); ++i) {
      if (i % 2 == 0 || i + 1 == checkpoints_.size()) thinned.push_back(checkpoints_[i]);
    }
    checkpoints_ = std::move(thinned);
  }
  if (env_.timer.now() - started_ < options_.grace.count() * kj::MILLISECONDS) held_by_all = 0;
  while (checkpoints_.size() >= 2 && checkpoints_[1].seq <= held_by_all) checkpoints_.pop_front();
  if (!checkpoints_.empty() && checkpoints_.front().seq <= held_by_all) {
    stable_ = std::max(stable_, checkpoints_.front().stamp);
  }
  const double lag_ms =
      stable_.IsZero() ? 0.0
                       : static_cast<double>(env_.NowMillis()) - static_cast<double>(stable_.wall_ms);
  env_.metrics.tombstone_stability_lag.Set(std::max(lag_ms, 0.0) / 1000);
}

bool TombstoneCollector::PeerStable(ReplicaId origin, HlcTimestamp stamp) {
  if (stamp.IsZero()) return true;
  const uint64_t limit =
      env_.NowMillis() + static_cast<uint64_t>(env_.options.max_clock_offset.count());
  if (!stamp.IsValid() || stamp.wall_ms > limit) {
    spdlog::warn("peer {:016x} says its log is stable through {}, ahead of this node's clock "
                 "by more than --max-clock-offset: ignored",
                 origin, DescribeStamp(stamp));
    return false;
  }
  HlcTimestamp& known = peers_[origin];
  known = std::max(known, stamp);
  return true;
}

HlcTimestamp TombstoneCollector::Bound(HlcTimestamp own,
                                       const std::map<ReplicaId, HlcTimestamp>& peers,
                                       const std::vector<ReplicaId>& members) {
  HlcTimestamp bound = own;
  for (ReplicaId m : members) {
    auto it = peers.find(m);
    if (it == peers.end()) return {};
    bound = std::min(bound, it->second);
  }
  return bound;
}

HlcTimestamp TombstoneCollector::EmptiedBound(HlcTimestamp bound, uint64_t max_clock_offset_ms) {
  if (bound.wall_ms <= max_clock_offset_ms) return {};
  return HlcTimestamp{bound.wall_ms - max_clock_offset_ms, 0};
}

kj::Promise<void> TombstoneCollector::Collect(const std::vector<ReplicaId>& members) {
  for (auto it = peers_.begin(); it != peers_.end();) {
    const bool member = std::find(members.begin(), members.end(), it->first) != members.end();
    it = member ? std::next(it) : peers_.erase(it);
  }
  const uint64_t now = env_.NowMillis();
  const auto grace = static_cast<uint64_t>(options_.grace.count());
  if (collecting_ || now <= grace) return kj::READY_NOW;
  const HlcTimestamp bound = std::min(Bound(stable_, peers_, members), HlcTimestamp{now - grace, 0});
  if (bound.IsZero()) return kj::READY_NOW;
  const HlcTimestamp emptied_bound = EmptiedBound(
      bound, static_cast<uint64_t>(env_.options.max_clock_offset.count()));
  collecting_ = true;
  return env_.committer.SubmitCollect(bound, emptied_bound, options_.batch)
      .then([this](StatusOr<size_t> removed) {
        collecting_ = false;
        if (!removed.ok()) {
          spdlog::error("cannot collect tombstones: {}", removed.status().ToString());
          return;
        }
        env_.metrics.tombstones_collected.Increment(static_cast<double>(*removed));
      });
}

}  // namespace geokv

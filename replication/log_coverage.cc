#include "replication/log_coverage.h"

#include <algorithm>

namespace geokv {

uint64_t LogCoverage::Covered(ReplicaId origin, size_t segment) const {
  const uint64_t held = held_(origin);
  auto it = gaps_.find(origin);
  if (it == gaps_.end() || segment >= kTreeSegments) return held;
  const Gaps& g = it->second;
  if (g.marked[segment] <= g.cleared[segment]) return held;
  return std::min(held, g.cleared[segment]);
}

LogCoverage::Positions LogCoverage::Report(const std::vector<ReplicaId>& origins,
                                           size_t segment) const {
  Positions out;
  for (ReplicaId origin : origins) {
    if (uint64_t covered = Covered(origin, segment); covered > 0) out.emplace_back(origin, covered);
  }
  return out;
}

LogCoverage::Positions LogCoverage::Least(const std::vector<ReplicaId>& origins,
                                          const std::vector<bool>& segments) const {
  Positions out;
  for (ReplicaId origin : origins) {
    uint64_t least = held_(origin);
    auto it = gaps_.find(origin);
    if (it != gaps_.end()) {
      const Gaps& g = it->second;
      for (size_t s = 0; s < kTreeSegments && s < segments.size() && least > 0; ++s) {
        if (segments[s] && g.marked[s] > g.cleared[s]) least = std::min(least, g.cleared[s]);
      }
    }
    if (least > 0) out.emplace_back(origin, least);
  }
  return out;
}

void LogCoverage::MarkOne(Gaps& g, size_t segment, uint64_t from, uint64_t through) {
  // With no gap open, every entry through `from` was joined (or is being
  // committed: Covered never says more than Held).
  if (g.marked[segment] <= g.cleared[segment]) g.cleared[segment] = std::max(g.cleared[segment], from);
  g.marked[segment] = std::max(g.marked[segment], through);
}

void LogCoverage::Mark(ReplicaId origin, uint64_t from, uint64_t through,
                       const std::vector<uint16_t>& segments) {
  if (segments.empty() || through <= from) return;
  Gaps& g = gaps_[origin];
  for (uint16_t s : segments) {
    if (s < kTreeSegments) MarkOne(g, s, from, through);
  }
}

void LogCoverage::MarkAll(ReplicaId origin, uint64_t from, uint64_t through) {
  if (through <= from) return;
  Gaps& g = gaps_[origin];
  for (size_t s = 0; s < kTreeSegments; ++s) MarkOne(g, s, from, through);
}

void LogCoverage::Load(const std::map<ReplicaId, uint64_t>& applied, ReplicaId self,
                       uint64_t last, const std::vector<bool>& dropped) {
  for (const auto& [origin, position] : applied) MarkAll(origin, 0, position);
  std::vector<uint16_t> segments;
  for (size_t s = 0; s < dropped.size() && s < kTreeSegments; ++s) {
    if (dropped[s]) segments.push_back(static_cast<uint16_t>(s));
  }
  Mark(self, 0, last, segments);
}

void LogCoverage::Dropped(size_t segment, const std::vector<ReplicaId>& origins) {
  if (segment >= kTreeSegments) return;
  auto drop = [&](ReplicaId origin) {
    const uint64_t held = held_(origin);
    if (held == 0) return;
    Gaps& g = gaps_[origin];
    g.marked[segment] = std::max(g.marked[segment], held);
    g.cleared[segment] = 0;
  };
  for (ReplicaId origin : origins) drop(origin);
}

void LogCoverage::Cleared(ReplicaId origin, size_t segment, uint64_t through) {
  auto it = gaps_.find(origin);
  if (it == gaps_.end() || segment >= kTreeSegments) return;
  uint64_t& c = it->second.cleared[segment];
  c = std::max(c, std::min(through, held_(origin)));
}

bool LogCoverage::HasGap(size_t segment) const {
  if (segment >= kTreeSegments) return false;
  return std::any_of(gaps_.begin(), gaps_.end(), [segment](const auto& entry) {
    return entry.second.marked[segment] > entry.second.cleared[segment];
  });
}

}  // namespace geokv

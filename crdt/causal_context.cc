#include "crdt/causal_context.h"

#include <algorithm>
#include <iterator>

namespace geokv {

StatusOr<CausalContext> CausalContext::FromParts(std::map<ReplicaId, uint64_t> vv, DotSet cloud,
                                                 const std::vector<DotRange>& ranges) {
  auto in_range = [](uint64_t counter) { return counter != 0 && counter != kMaxDotCounter; };
  CausalContext c;
  for (const auto& [replica, counter] : vv) {
    if (!in_range(counter)) {
      return Status::Corruption("causal context: version vector entry out of range");
    }
    c.runs_[replica].emplace(1, counter);
  }
  for (const Dot& d : cloud) {
    if (!in_range(d.counter)) return Status::Corruption("causal context: dot counter out of range");
    c.AddRun(d.replica, d.counter, d.counter);
  }
  for (const DotRange& r : ranges) {
    if (!in_range(r.first) || !in_range(r.last) || r.first > r.last) {
      return Status::Corruption("causal context: dot range out of range");
    }
    c.AddRun(r.replica, r.first, r.last);
  }
  // Canonical form. Builds before ranges wrote every run beyond the vector
  // as cloud dots, whatever its length: such a form is taken as it is.
  const Parts canonical = c.Encoded();
  if (canonical.vv != vv) return Status::Corruption("causal context: dot cloud not compacted");
  if (ranges.empty()) {
    uint64_t dots = canonical.cloud.size();
    for (const DotRange& r : canonical.ranges) dots += r.last - r.first + 1;
    if (dots != cloud.size()) return Status::Corruption("causal context: dot cloud not compacted");
  } else if (canonical.cloud != cloud || canonical.ranges != ranges) {
    return Status::Corruption("causal context: dot ranges not canonical");
  }
  return c;
}

CausalContext::Parts CausalContext::Encoded() const {
  Parts p;
  ForEachRun([&p](ReplicaId replica, uint64_t first, uint64_t last) {
    if (first == 1) {
      p.vv.emplace_hint(p.vv.end(), replica, last);
    } else if (last - first < kMaxCloudRun) {
      for (uint64_t c = first;; ++c) {
        p.cloud.insert(p.cloud.end(), Dot{replica, c});
        if (c == last) break;
      }
    } else {
      p.ranges.push_back(DotRange{replica, first, last});
    }
  });
  return p;
}

bool CausalContext::Contains(const Dot& d) const {
  auto r = runs_.find(d.replica);
  if (r == runs_.end()) return false;
  auto it = r->second.upper_bound(d.counter);
  return it != r->second.begin() && std::prev(it)->second >= d.counter;
}

uint64_t CausalContext::MaxCounter(ReplicaId replica) const {
  auto r = runs_.find(replica);
  return r == runs_.end() ? 0 : r->second.rbegin()->second;
}

Dot CausalContext::NextDot(ReplicaId replica, uint64_t floor) const {
  return Dot{replica, std::max(MaxCounter(replica), floor) + 1};
}

void CausalContext::Insert(const Dot& d) { AddRun(d.replica, d.counter, d.counter); }

void CausalContext::InsertAll(const DotSet& dots) {
  for (const Dot& d : dots) AddRun(d.replica, d.counter, d.counter);
}

void CausalContext::Join(const CausalContext& other) {
  other.ForEachRun(
      [this](ReplicaId replica, uint64_t first, uint64_t last) { AddRun(replica, first, last); });
}

void CausalContext::AddRun(ReplicaId replica, uint64_t first, uint64_t last) {
  // Counters stay below kMaxDotCounter, so last + 1 does not wrap.
  auto& runs = runs_[replica];
  auto it = runs.upper_bound(first);
  if (it != runs.begin()) {
    auto prev = std::prev(it);
    if (prev->second + 1 >= first) {
      if (prev->second >= last) return;
      first = prev->first;
      runs.erase(prev);
    }
  }
  while (it != runs.end() && it->first <= last + 1) {
    last = std::max(last, it->second);
    it = runs.erase(it);
  }
  runs.emplace_hint(it, first, last);
}

}  // namespace geokv

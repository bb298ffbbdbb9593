#include "crdt/causal_context.h"

#include <limits>

namespace geokv {

StatusOr<CausalContext> CausalContext::FromParts(std::map<ReplicaId, uint64_t> vv,
                                                 DotSet cloud) {
  for (const auto& [replica, counter] : vv) {
    if (counter == 0 || counter == kMaxDotCounter) {
      return Status::Corruption("causal context: version vector entry out of range");
    }
  }
  for (const Dot& d : cloud) {
    if (d.counter == 0 || d.counter == kMaxDotCounter) {
      return Status::Corruption("causal context: dot counter out of range");
    }
    auto it = vv.find(d.replica);
    uint64_t base = it == vv.end() ? 0 : it->second;
    if (d.counter <= base || d.counter - 1 == base) {
      return Status::Corruption("causal context: dot cloud not compacted");
    }
  }
  CausalContext c;
  c.vv_ = std::move(vv);
  c.cloud_ = std::move(cloud);
  return c;
}

bool CausalContext::Contains(const Dot& d) const {
  auto it = vv_.find(d.replica);
  if (it != vv_.end() && d.counter <= it->second) return true;
  return cloud_.count(d) > 0;
}

Dot CausalContext::NextDot(ReplicaId replica) const {
  uint64_t max = 0;
  auto it = vv_.find(replica);
  if (it != vv_.end()) max = it->second;
  auto c = cloud_.upper_bound(Dot{replica, std::numeric_limits<uint64_t>::max()});
  if (c != cloud_.begin()) {
    --c;
    if (c->replica == replica && c->counter > max) max = c->counter;
  }
  return Dot{replica, max + 1};
}

void CausalContext::Insert(const Dot& d) {
  if (Contains(d)) return;
  cloud_.insert(d);
  Compact();
}

void CausalContext::InsertAll(const DotSet& dots) {
  for (const Dot& d : dots) {
    if (!Contains(d)) cloud_.insert(d);
  }
  Compact();
}

void CausalContext::Join(const CausalContext& other) {
  for (const auto& [replica, counter] : other.vv_) {
    uint64_t& mine = vv_[replica];
    if (counter > mine) mine = counter;
  }
  cloud_.insert(other.cloud_.begin(), other.cloud_.end());
  Compact();
}

void CausalContext::Compact() {
  // The cloud is ordered by (replica, counter), so one pass folds every run
  // that continues a vector entry.
  for (auto it = cloud_.begin(); it != cloud_.end();) {
    auto v = vv_.find(it->replica);
    uint64_t base = v == vv_.end() ? 0 : v->second;
    if (it->counter <= base) {
      it = cloud_.erase(it);
    } else if (it->counter == base + 1) {
      vv_[it->replica] = it->counter;
      it = cloud_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace geokv

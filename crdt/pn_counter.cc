#include "crdt/pn_counter.h"

#include <algorithm>

namespace geokv {

PnCounter PnCounter::Increment(ReplicaId replica, int64_t delta) {
  if (delta == 0) return PnCounter();
  Totals& t = entries_[replica];
  // Unsigned arithmetic: well defined for INT64_MIN and on wrap-around.
  if (delta >= 0) {
    t.added += static_cast<uint64_t>(delta);
  } else {
    t.subtracted += 0 - static_cast<uint64_t>(delta);
  }
  return PnCounter(Entries{{replica, t}});
}

void PnCounter::Join(const PnCounter& other) {
  for (const auto& [replica, theirs] : other.entries_) {
    Totals& mine = entries_[replica];
    mine.added = std::max(mine.added, theirs.added);
    mine.subtracted = std::max(mine.subtracted, theirs.subtracted);
  }
}

int64_t PnCounter::Value() const {
  uint64_t sum = 0;
  for (const auto& [replica, t] : entries_) sum += t.added - t.subtracted;
  return static_cast<int64_t>(sum);
}

}  // namespace geokv

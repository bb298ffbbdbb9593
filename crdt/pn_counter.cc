#include "crdt/pn_counter.h"

#include <algorithm>
#include <limits>

namespace geokv {

PnCounter PnCounter::Increment(ReplicaId replica, int64_t delta, uint64_t floor) {
  if (delta == 0) return PnCounter();
  auto [it, fresh] = entries_.try_emplace(replica);
  Totals& t = it->second;
  if (fresh) t = Totals{floor, floor, floor, floor};
  // Unsigned arithmetic: well defined for INT64_MIN and on wrap-around.
  if (delta >= 0) {
    t.added += static_cast<uint64_t>(delta);
  } else {
    t.subtracted += 0 - static_cast<uint64_t>(delta);
  }
  return PnCounter(Entries{{replica, t}});
}

PnCounter PnCounter::Reset() {
  Entries delta;
  for (auto& [replica, t] : entries_) {
    if (!t.IsLive()) continue;
    t.reset_added = t.added;
    t.reset_subtracted = t.subtracted;
    delta.emplace_hint(delta.end(), replica, t);
  }
  return PnCounter(std::move(delta));
}

void PnCounter::Join(const PnCounter& other) {
  for (const auto& [replica, theirs] : other.entries_) {
    Totals& mine = entries_[replica];
    mine.added = std::max(mine.added, theirs.added);
    mine.subtracted = std::max(mine.subtracted, theirs.subtracted);
    mine.reset_added = std::max(mine.reset_added, theirs.reset_added);
    mine.reset_subtracted = std::max(mine.reset_subtracted, theirs.reset_subtracted);
  }
}

bool PnCounter::IsLive() const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [](const auto& e) { return e.second.IsLive(); });
}

__int128 PnCounter::ExactValue() const {
  // Each term is within (-2^64, 2^64): a sum of fewer than 2^63 of them fits.
  __int128 sum = 0;
  for (const auto& [replica, t] : entries_) {
    sum += static_cast<__int128>(t.added - t.reset_added);
    sum -= static_cast<__int128>(t.subtracted - t.reset_subtracted);
  }
  return sum;
}

int64_t PnCounter::Value() const {
  const __int128 sum = ExactValue();
  if (sum > std::numeric_limits<int64_t>::max()) return std::numeric_limits<int64_t>::max();
  if (sum < std::numeric_limits<int64_t>::min()) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(sum);
}

}  // namespace geokv

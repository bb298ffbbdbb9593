// Positive-negative counter.
//
// State: per replica, the total it has added and the total it has
// subtracted, both grow-only. Bottom: no entries. Join: per replica, the
// greater of each total. Value: the sum of additions minus the sum of
// subtractions, wrapping modulo 2^64 into a signed 64-bit integer.
// Conflict rule: none; concurrent increments all count.

#ifndef GEOKV_CRDT_PN_COUNTER_H_
#define GEOKV_CRDT_PN_COUNTER_H_

#include <cstdint>
#include <map>

#include "crdt/causal_context.h"

namespace geokv {

class PnCounter {
 public:
  struct Totals {
    uint64_t added = 0;
    uint64_t subtracted = 0;
    friend bool operator==(const Totals& a, const Totals& b) {
      return a.added == b.added && a.subtracted == b.subtracted;
    }
  };
  using Entries = std::map<ReplicaId, Totals>;

  PnCounter() = default;
  explicit PnCounter(Entries entries) : entries_(std::move(entries)) {}

  // Adds `delta` (may be negative) on behalf of `replica`. Returns the delta:
  // the replica's new totals.
  PnCounter Increment(ReplicaId replica, int64_t delta);

  void Join(const PnCounter& other);

  bool IsBottom() const { return entries_.empty(); }
  int64_t Value() const;
  const Entries& entries() const { return entries_; }

  friend bool operator==(const PnCounter& a, const PnCounter& b) {
    return a.entries_ == b.entries_;
  }
  friend bool operator!=(const PnCounter& a, const PnCounter& b) { return !(a == b); }

 private:
  Entries entries_;
};

}  // namespace geokv

#endif  // GEOKV_CRDT_PN_COUNTER_H_

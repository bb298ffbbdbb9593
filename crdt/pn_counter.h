// Positive-negative counter with observed-reset deletes.
//
// State: per replica, the total it has added and the total it has
// subtracted, and two reset floors: the added and subtracted totals of that
// replica that the latest delete which saw it observed. All four are
// grow-only, and a floor never exceeds its total. Bottom: no entries. Join:
// per replica, the greater of each of the four.
//
// Value: the exact sum over replicas of (added - reset added) - (subtracted
// - reset subtracted), computed without wrapping and saturated at INT64_MIN
// and INT64_MAX. It is a function of the state alone, so replicas holding
// the same state read the same value, whatever joins made it. Only joins of
// concurrent increments from several replicas can carry the exact sum past
// a limit: a local increment that would is refused by the store.
//
// Reset (a delete): raises every floor to its total, removing the
// increments it has seen; increments concurrent with it (not seen) survive
// the join. A counter whose floors all equal their totals is not live: it
// holds no value, and a later increment counts from 0.
//
// Conflict rule: none; concurrent increments all count, a delete removes
// only what it saw.

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
    // The reset floors: what the latest delete that saw this replica saw.
    uint64_t reset_added = 0;
    uint64_t reset_subtracted = 0;

    bool HasFloors() const { return reset_added != 0 || reset_subtracted != 0; }
    // Whether increments beyond the floors remain.
    bool IsLive() const { return added != reset_added || subtracted != reset_subtracted; }
    friend bool operator==(const Totals& a, const Totals& b) {
      return a.added == b.added && a.subtracted == b.subtracted &&
             a.reset_added == b.reset_added && a.reset_subtracted == b.reset_subtracted;
    }
  };
  using Entries = std::map<ReplicaId, Totals>;

  PnCounter() = default;
  // REQUIRES: every floor at most its total.
  explicit PnCounter(Entries entries) : entries_(std::move(entries)) {}

  // Adds `delta` (may be negative) on behalf of `replica`. Returns the delta:
  // the replica's new entry. When this state holds no entry of `replica`,
  // the entry starts with its totals and floors at `floor` (worth 0), so
  // that it is above the totals of an entry the replica had in an earlier
  // state of the counter and has since forgotten. The totals wrap modulo
  // 2^64; the store refuses an increment that would wrap them.
  PnCounter Increment(ReplicaId replica, int64_t delta, uint64_t floor = 0);

  // Deletes the counter as observed here: raises every floor to its total.
  // Returns the delta: the entries it changed, with floors equal to their
  // totals; bottom when the counter was not live.
  PnCounter Reset();

  void Join(const PnCounter& other);

  bool IsBottom() const { return entries_.empty(); }
  // Whether some replica has increments beyond its floors.
  bool IsLive() const;
  // The value, saturated (see above).
  int64_t Value() const;
  // The exact value, without saturation.
  __int128 ExactValue() const;
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

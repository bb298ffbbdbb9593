// Dots and causal contexts, the bookkeeping of the dotted CRDTs
// (Almeida, Shoker and Baquero, "Delta state replicated data types", 2018).
//
// A dot (replica, n) names the n-th event replica `replica` generated in one
// object. A causal context is a set of dots, kept per replica as maximal
// runs of consecutive counters. A replica numbers its events in an object
// from 1, or, when the object was collected where it lives and written
// again, from above every counter it used there before (NextDot's floor),
// so a context holds one run per replica, or a few.
//
// Encoded parts (Parts): a version vector (the runs from 1), a dot cloud
// (the dots of the other runs of at most kMaxCloudRun dots) and ranges (the
// longer runs). Builds before ranges read a context as its vector and
// cloud; the forms they wrote are exactly the contexts without ranges.
// Two contexts holding the same dots are equal and encode to the same
// bytes.
//
// Bottom: the empty context. Join: set union.

#ifndef GEOKV_CRDT_CAUSAL_CONTEXT_H_
#define GEOKV_CRDT_CAUSAL_CONTEXT_H_

#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <type_traits>
#include <vector>

#include "domain/replica_id.h"
#include "util/status.h"

namespace geokv {

struct Dot {
  ReplicaId replica = 0;
  uint64_t counter = 0;  // >= 1

  friend bool operator<(const Dot& a, const Dot& b) {
    return std::tie(a.replica, a.counter) < std::tie(b.replica, b.counter);
  }
  friend bool operator==(const Dot& a, const Dot& b) {
    return a.replica == b.replica && a.counter == b.counter;
  }
  friend bool operator!=(const Dot& a, const Dot& b) { return !(a == b); }
};

using DotSet = std::set<Dot>;

// Counters are below this, so that a next dot always exists; decoders refuse
// it.
inline constexpr uint64_t kMaxDotCounter = UINT64_MAX;

// Consecutive dots first..last (first <= last) of one replica.
struct DotRange {
  ReplicaId replica = 0;
  uint64_t first = 0;
  uint64_t last = 0;

  friend bool operator==(const DotRange& a, const DotRange& b) {
    return a.replica == b.replica && a.first == b.first && a.last == b.last;
  }
};

class CausalContext {
 public:
  // Runs of up to this many dots not starting at 1 are encoded as cloud
  // dots, as builds before ranges wrote them.
  static constexpr uint64_t kMaxCloudRun = 64;

  struct Parts {
    std::map<ReplicaId, uint64_t> vv;  // runs from 1: replica -> last counter
    DotSet cloud;                      // dots of the short runs beyond
    std::vector<DotRange> ranges;      // the long runs beyond, sorted
  };

  CausalContext() = default;

  // Builds a context from decoded parts. Returns Corruption unless the parts
  // are the ones Encoded() gives for some context: counters in range, no
  // dot twice, no run split over two parts or two entries.
  static StatusOr<CausalContext> FromParts(std::map<ReplicaId, uint64_t> vv, DotSet cloud,
                                           const std::vector<DotRange>& ranges = {});
  Parts Encoded() const;

  bool Contains(const Dot& d) const;

  // A dot of `replica` greater than every dot of `replica` in this context
  // and than `floor`.
  Dot NextDot(ReplicaId replica, uint64_t floor = 0) const;
  // The greatest counter of `replica` here; 0 when it has none.
  uint64_t MaxCounter(ReplicaId replica) const;

  void Insert(const Dot& d);
  void InsertAll(const DotSet& dots);
  void Join(const CausalContext& other);

  bool empty() const { return runs_.empty(); }
  // Calls fn(replica, first, last) for every run, in order.
  template <typename Fn>
  void ForEachRun(Fn&& fn) const {
    for (const auto& [replica, runs] : runs_) {
      for (const auto& [first, last] : runs) fn(replica, first, last);
    }
  }

  friend bool operator==(const CausalContext& a, const CausalContext& b) {
    return a.runs_ == b.runs_;
  }
  friend bool operator!=(const CausalContext& a, const CausalContext& b) { return !(a == b); }

 private:
  // Adds first..last, merging it with the runs it overlaps or touches.
  void AddRun(ReplicaId replica, uint64_t first, uint64_t last);

  // replica -> (first -> last): disjoint runs, none touching the next.
  std::map<ReplicaId, std::map<uint64_t, uint64_t>> runs_;
};

// The join of two dot-keyed stores (a DotSet, or a std::map<Dot, V> as the
// multi-value register's dot function) each with its context: an entry
// survives if both sides have it, or if one side has it and the other side's
// context has not seen it (the other side's absence is then not a removal).
template <typename DotStore>
DotStore JoinDotStores(const DotStore& a, const CausalContext& a_ctx, const DotStore& b,
                       const CausalContext& b_ctx) {
  auto dot_of = [](const auto& entry) -> const Dot& {
    if constexpr (std::is_same_v<std::decay_t<decltype(entry)>, Dot>) {
      return entry;
    } else {
      return entry.first;
    }
  };
  DotStore out;
  auto ia = a.begin();
  auto ib = b.begin();
  while (ia != a.end() || ib != b.end()) {
    if (ib == b.end() || (ia != a.end() && dot_of(*ia) < dot_of(*ib))) {
      if (!b_ctx.Contains(dot_of(*ia))) out.insert(out.end(), *ia);
      ++ia;
    } else if (ia == a.end() || dot_of(*ib) < dot_of(*ia)) {
      if (!a_ctx.Contains(dot_of(*ib))) out.insert(out.end(), *ib);
      ++ib;
    } else {
      out.insert(out.end(), *ia);
      ++ia;
      ++ib;
    }
  }
  return out;
}

}  // namespace geokv

#endif  // GEOKV_CRDT_CAUSAL_CONTEXT_H_

// Dots and causal contexts, the bookkeeping of the dotted CRDTs
// (Almeida, Shoker and Baquero, "Delta state replicated data types", 2018).
//
// A dot (replica, n) names the n-th event replica `replica` generated in one
// object. A causal context is a set of dots, kept as a version vector (every
// dot (r, 1..vv[r])) plus a dot cloud of the dots beyond it.
//
// Canonical form, which every public operation leaves behind: no cloud dot is
// covered by the vector and no cloud dot extends it contiguously, and no
// vector entry is 0. Two contexts holding the same dots are therefore equal
// field by field and encode to the same bytes.
//
// Bottom: the empty context. Join: set union.

#ifndef GEOKV_CRDT_CAUSAL_CONTEXT_H_
#define GEOKV_CRDT_CAUSAL_CONTEXT_H_

#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <type_traits>

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

class CausalContext {
 public:
  CausalContext() = default;

  // Builds a context from decoded parts. Returns Corruption unless the parts
  // are in canonical form (see above).
  static StatusOr<CausalContext> FromParts(std::map<ReplicaId, uint64_t> vv, DotSet cloud);

  bool Contains(const Dot& d) const;

  // A dot of `replica` greater than every dot of `replica` in this context.
  Dot NextDot(ReplicaId replica) const;

  void Insert(const Dot& d);
  void InsertAll(const DotSet& dots);
  void Join(const CausalContext& other);

  bool empty() const { return vv_.empty() && cloud_.empty(); }
  const std::map<ReplicaId, uint64_t>& vv() const { return vv_; }
  const DotSet& cloud() const { return cloud_; }

  friend bool operator==(const CausalContext& a, const CausalContext& b) {
    return a.vv_ == b.vv_ && a.cloud_ == b.cloud_;
  }
  friend bool operator!=(const CausalContext& a, const CausalContext& b) { return !(a == b); }

 private:
  // Restores canonical form after inserts.
  void Compact();

  std::map<ReplicaId, uint64_t> vv_;
  DotSet cloud_;
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

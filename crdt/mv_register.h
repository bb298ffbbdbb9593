// Multi-value register with dotted version vectors.
//
// State: a map from dot to value (the siblings) and a causal context of every
// write seen. Bottom: no siblings, empty context. Join: a sibling survives if
// both sides hold it or the other side has not seen its dot (JoinDotStores);
// contexts unite.
// Conflict rule: concurrent writes are all kept as siblings; a write made with
// a context supersedes exactly the siblings whose dots that context holds.

#ifndef GEOKV_CRDT_MV_REGISTER_H_
#define GEOKV_CRDT_MV_REGISTER_H_

#include <map>
#include <string>
#include <vector>

#include "crdt/causal_context.h"

namespace geokv {

class MvRegister {
 public:
  using Entries = std::map<Dot, std::string>;

  MvRegister() = default;
  MvRegister(Entries entries, CausalContext ctx)
      : entries_(std::move(entries)), ctx_(std::move(ctx)) {}

  // Writes `value` as a new sibling under a fresh dot of `replica`,
  // superseding the siblings `seen` holds. Pass context() to supersede every
  // sibling of this state, an empty context to add a sibling. When this
  // state holds no dot of `replica`, the new dot is above `floor` (dots a
  // replica made in an earlier state of the object that it has since
  // forgotten stay below it). Applies the write and returns it as a delta.
  MvRegister Write(std::string value, const CausalContext& seen, ReplicaId replica,
                   uint64_t floor = 0);

  // Removes the siblings `seen` holds. Returns the delta.
  MvRegister Clear(const CausalContext& seen);

  void Join(const MvRegister& other);

  bool IsBottom() const { return entries_.empty() && ctx_.empty(); }
  // Sibling values in dot order.
  std::vector<std::string> Values() const;
  size_t sibling_count() const { return entries_.size(); }
  const Entries& entries() const { return entries_; }
  const CausalContext& context() const { return ctx_; }

  friend bool operator==(const MvRegister& a, const MvRegister& b) {
    return a.entries_ == b.entries_ && a.ctx_ == b.ctx_;
  }
  friend bool operator!=(const MvRegister& a, const MvRegister& b) { return !(a == b); }

 private:
  Entries entries_;
  CausalContext ctx_;
};

}  // namespace geokv

#endif  // GEOKV_CRDT_MV_REGISTER_H_

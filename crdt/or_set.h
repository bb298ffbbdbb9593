// Add-wins observed-remove set, without tombstones.
//
// State: a map from element to the dots of the adds that put it there, and a
// causal context of every add seen. Bottom: no elements, empty context.
// Join: per element, a dot survives if both sides hold it or the other side
// has not seen it (JoinDotStores); an element with no surviving dot is gone;
// contexts unite.
// Conflict rule: a remove deletes only the adds it observed, so an add
// concurrent with a remove of the same element survives (add wins). Removed
// elements leave nothing behind but their dots in the compact context.
//
// Mutators need only the element's own entry and the context, so they work
// on a projection of a large set (see storage/).

#ifndef GEOKV_CRDT_OR_SET_H_
#define GEOKV_CRDT_OR_SET_H_

#include <map>
#include <string>
#include <vector>

#include "crdt/causal_context.h"

namespace geokv {

class OrSet {
 public:
  using Entries = std::map<std::string, DotSet>;

  OrSet() = default;
  OrSet(Entries entries, CausalContext ctx) : entries_(std::move(entries)), ctx_(std::move(ctx)) {}

  // Adds `element` under a fresh dot of `replica`, replacing the element's
  // earlier dots. Returns the delta.
  OrSet Add(std::string element, ReplicaId replica);
  // Removes the adds of `element` this state has seen. Returns the delta
  // (bottom when the element is absent).
  OrSet Remove(const std::string& element);
  // Removes every element this state holds. Returns the delta.
  OrSet Clear();

  // The same as calling Add (or Remove) for each element in turn and joining
  // the deltas; the deltas cost time proportional to the elements, not the
  // set.
  OrSet AddAll(const std::vector<std::string>& elements, ReplicaId replica);
  OrSet RemoveAll(const std::vector<std::string>& elements);

  void Join(const OrSet& other);

  bool IsBottom() const { return entries_.empty() && ctx_.empty(); }
  bool Contains(const std::string& element) const { return entries_.count(element) > 0; }
  size_t size() const { return entries_.size(); }
  std::vector<std::string> Elements() const;
  const Entries& entries() const { return entries_; }
  const CausalContext& context() const { return ctx_; }

  friend bool operator==(const OrSet& a, const OrSet& b) {
    return a.entries_ == b.entries_ && a.ctx_ == b.ctx_;
  }
  friend bool operator!=(const OrSet& a, const OrSet& b) { return !(a == b); }

 private:
  Entries entries_;
  CausalContext ctx_;
};

}  // namespace geokv

#endif  // GEOKV_CRDT_OR_SET_H_

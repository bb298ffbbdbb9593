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
//
// Paged transfer: a large set moves as pages (OrSetPage), each holding the
// sender's elements of one byte range and its whole context. JoinPage
// decides only the elements of the page's range and adds to the context
// only the dots of the page's elements, so each page is a delta of the
// sender's state on its own: pages may come in any order, repeat, or stop
// after any one, and nothing is lost or brought back. The rest of the
// sender's context (the dots of elements it removed, whose names it no
// longer knows) joins last, with JoinPagedContext.

#ifndef GEOKV_CRDT_OR_SET_H_
#define GEOKV_CRDT_OR_SET_H_

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "crdt/causal_context.h"

namespace geokv {

struct OrSetPage;

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
  // set. When this state holds no dot of `replica`, the new dots are above
  // `floor`, as MvRegister::Write.
  OrSet AddAll(const std::vector<std::string>& elements, ReplicaId replica,
               uint64_t floor = 0);
  OrSet RemoveAll(const std::vector<std::string>& elements);

  void Join(const OrSet& other);

  // The page of up to `max_elements` (at least 1) elements after `after`
  // (from the first when nullopt), with this state's context.
  OrSetPage PageAfter(const std::optional<std::string>& after, size_t max_elements) const;

  // Joins one page of another replica's state: each element of the page's
  // range ends as Join of that replica's whole state would leave it; every
  // other element is left as it is; the context gains the dots of the
  // page's elements only. The result is the join with a state below the
  // sender's (a delta), whatever pages came before. Entries of the page
  // outside its range are ignored.
  void JoinPage(const OrSetPage& page);

  // Adds `ctx` to the context without removing any element: the last step
  // of a paged transfer, which brings the dots of the sender's removed
  // elements. REQUIRES: since `ctx` was read from the sender, pages of the
  // sender covering every element (the whole byte range) were joined, each
  // read at or after `ctx` (in a transfer that reads its pages in order,
  // the context of its first page). A context read later could hold adds
  // whose pages came earlier, and would mark them as removed here.
  void JoinPagedContext(const CausalContext& ctx);

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

// One page of an OR-set's state: its elements in the byte range
// (after, through], with their dots, and the set's whole causal context at
// the read that made the page.
struct OrSetPage {
  std::optional<std::string> after;    // exclusive bound; nullopt: from the first element
  std::optional<std::string> through;  // inclusive bound; nullopt: through the last
  OrSet::Entries entries;              // every element of the range, none outside it
  CausalContext context;               // holds every dot of `entries`

  // Whether elements follow the range: the next page starts after `through`.
  bool more() const { return through.has_value(); }
  bool InRange(const std::string& element) const {
    return (!after || *after < element) && (!through || element <= *through);
  }

  friend bool operator==(const OrSetPage& a, const OrSetPage& b) {
    return a.after == b.after && a.through == b.through && a.entries == b.entries &&
           a.context == b.context;
  }
};

}  // namespace geokv

#endif  // GEOKV_CRDT_OR_SET_H_

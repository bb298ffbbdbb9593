#include "crdt/or_set.h"

namespace geokv {

OrSet OrSet::Add(std::string element, ReplicaId replica) {
  return AddAll({std::move(element)}, replica);
}

OrSet OrSet::Remove(const std::string& element) { return RemoveAll({element}); }

OrSet OrSet::Clear() {
  OrSet delta;
  for (const auto& [element, dots] : entries_) delta.ctx_.InsertAll(dots);
  Join(delta);
  return delta;
}

OrSet OrSet::AddAll(const std::vector<std::string>& elements, ReplicaId replica,
                    uint64_t floor) {
  OrSet delta;
  DotSet covered;
  Dot next = ctx_.NextDot(replica, ctx_.MaxCounter(replica) == 0 ? floor : 0);
  for (const std::string& e : elements) {
    if (auto it = entries_.find(e); it != entries_.end()) {
      covered.insert(it->second.begin(), it->second.end());
    }
    DotSet& dots = delta.entries_[e];  // a repeated element supersedes its earlier dot
    dots = DotSet{next};
    covered.insert(next);
    ++next.counter;
  }
  delta.ctx_.InsertAll(covered);
  Join(delta);
  return delta;
}

OrSet OrSet::RemoveAll(const std::vector<std::string>& elements) {
  OrSet delta;
  DotSet covered;
  for (const std::string& e : elements) {
    if (auto it = entries_.find(e); it != entries_.end()) {
      covered.insert(it->second.begin(), it->second.end());
    }
  }
  if (covered.empty()) return delta;
  delta.ctx_.InsertAll(covered);
  Join(delta);
  return delta;
}

namespace {

// Appends to `out` the join of the entries [ia, a_end) of a state with
// context `a_ctx` and [ib, b_end) of one with context `b_ctx`: per element,
// the dot-store join; elements left without dots are gone.
void JoinEntries(OrSet::Entries::const_iterator ia, OrSet::Entries::const_iterator a_end,
                 const CausalContext& a_ctx, OrSet::Entries::const_iterator ib,
                 OrSet::Entries::const_iterator b_end, const CausalContext& b_ctx,
                 OrSet::Entries* out) {
  auto keep = [out](const std::string& element, DotSet dots) {
    if (!dots.empty()) out->emplace_hint(out->end(), element, std::move(dots));
  };
  static const DotSet kNone;
  while (ia != a_end || ib != b_end) {
    if (ib == b_end || (ia != a_end && ia->first < ib->first)) {
      keep(ia->first, JoinDotStores(ia->second, a_ctx, kNone, b_ctx));
      ++ia;
    } else if (ia == a_end || ib->first < ia->first) {
      keep(ib->first, JoinDotStores(kNone, a_ctx, ib->second, b_ctx));
      ++ib;
    } else {
      keep(ia->first, JoinDotStores(ia->second, a_ctx, ib->second, b_ctx));
      ++ia;
      ++ib;
    }
  }
}

// The entries of `entries` in the range of `page`: [first, last).
std::pair<OrSet::Entries::const_iterator, OrSet::Entries::const_iterator> RangeOf(
    const OrSet::Entries& entries, const OrSetPage& page) {
  auto first = page.after ? entries.upper_bound(*page.after) : entries.begin();
  auto last = page.through ? entries.upper_bound(*page.through) : entries.end();
  if (page.after && page.through && *page.through <= *page.after) last = first;
  return {first, last};
}

}  // namespace

void OrSet::Join(const OrSet& other) {
  Entries out;
  JoinEntries(entries_.begin(), entries_.end(), ctx_, other.entries_.begin(),
              other.entries_.end(), other.ctx_, &out);
  entries_ = std::move(out);
  ctx_.Join(other.ctx_);
}

OrSetPage OrSet::PageAfter(const std::optional<std::string>& after, size_t max_elements) const {
  OrSetPage page;
  page.after = after;
  page.context = ctx_;
  for (auto it = after ? entries_.upper_bound(*after) : entries_.begin(); it != entries_.end();
       ++it) {
    if (!page.entries.empty() && page.entries.size() >= max_elements) {
      page.through = page.entries.rbegin()->first;
      break;
    }
    page.entries.emplace_hint(page.entries.end(), *it);
  }
  return page;
}

void OrSet::JoinPage(const OrSetPage& page) {
  const auto [first, last] = RangeOf(entries_, page);
  const auto [page_first, page_last] = RangeOf(page.entries, page);
  Entries joined;
  JoinEntries(first, last, ctx_, page_first, page_last, page.context, &joined);
  DotSet seen;
  for (auto it = page_first; it != page_last; ++it) {
    seen.insert(it->second.begin(), it->second.end());
  }
  entries_.erase(first, last);
  entries_.merge(joined);
  ctx_.InsertAll(seen);
}

void OrSet::JoinPagedContext(const CausalContext& ctx) { ctx_.Join(ctx); }

std::vector<std::string> OrSet::Elements() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [element, dots] : entries_) out.push_back(element);
  return out;
}

}  // namespace geokv

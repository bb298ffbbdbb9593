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

OrSet OrSet::AddAll(const std::vector<std::string>& elements, ReplicaId replica) {
  OrSet delta;
  DotSet covered;
  Dot next = ctx_.NextDot(replica);
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

void OrSet::Join(const OrSet& other) {
  Entries out;
  auto ia = entries_.begin();
  auto ib = other.entries_.begin();
  auto keep = [&out](const std::string& element, DotSet dots) {
    if (!dots.empty()) out.emplace_hint(out.end(), element, std::move(dots));
  };
  static const DotSet kNone;
  while (ia != entries_.end() || ib != other.entries_.end()) {
    if (ib == other.entries_.end() || (ia != entries_.end() && ia->first < ib->first)) {
      keep(ia->first, JoinDotStores(ia->second, ctx_, kNone, other.ctx_));
      ++ia;
    } else if (ia == entries_.end() || ib->first < ia->first) {
      keep(ib->first, JoinDotStores(kNone, ctx_, ib->second, other.ctx_));
      ++ib;
    } else {
      keep(ia->first, JoinDotStores(ia->second, ctx_, ib->second, other.ctx_));
      ++ia;
      ++ib;
    }
  }
  entries_ = std::move(out);
  ctx_.Join(other.ctx_);
}

std::vector<std::string> OrSet::Elements() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [element, dots] : entries_) out.push_back(element);
  return out;
}

}  // namespace geokv

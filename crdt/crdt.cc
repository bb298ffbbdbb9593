#include "crdt/crdt.h"

#include <string>

namespace geokv {

std::string_view TypeName(CrdtType type) {
  switch (type) {
    case CrdtType::kLww: return "lww";
    case CrdtType::kMvRegister: return "mvregister";
    case CrdtType::kOrSet: return "orset";
    case CrdtType::kCounter: return "counter";
  }
  return "unknown";
}

Crdt Bottom(CrdtType type) {
  switch (type) {
    case CrdtType::kLww: return LwwRegister();
    case CrdtType::kMvRegister: return MvRegister();
    case CrdtType::kOrSet: return OrSet();
    case CrdtType::kCounter: return PnCounter();
  }
  return LwwRegister();
}

bool IsBottom(const Crdt& c) {
  return std::visit([](const auto& v) { return v.IsBottom(); }, c);
}

Status Join(Crdt* into, const Crdt& other) {
  if (into->index() != other.index()) {
    return Status::WrongType(std::string("cannot join ") + std::string(TypeName(TypeOf(other))) +
                             " into " + std::string(TypeName(TypeOf(*into))));
  }
  std::visit(
      [&other](auto& mine) {
        using T = std::decay_t<decltype(mine)>;
        mine.Join(std::get<T>(other));
      },
      *into);
  return Status::OK();
}

bool IsEmptied(const Crdt& c) {
  if (const auto* reg = std::get_if<MvRegister>(&c)) {
    return reg->sibling_count() == 0 && !reg->IsBottom();
  }
  if (const auto* set = std::get_if<OrSet>(&c)) return set->size() == 0 && !set->IsBottom();
  if (const auto* counter = std::get_if<PnCounter>(&c)) {
    return !counter->IsLive() && !counter->IsBottom();
  }
  return false;
}

bool OnlyRemovals(const std::vector<Crdt>& states) {
  bool emptied = false;
  for (const Crdt& c : states) {
    const auto* reg = std::get_if<LwwRegister>(&c);
    if (reg != nullptr && !reg->value() && !reg->IsBottom()) continue;
    if (!IsEmptied(c)) return false;
    emptied = true;
  }
  return emptied;
}

}  // namespace geokv

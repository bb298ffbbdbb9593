// The closed set of CRDT types a key can hold, as one variant.
//
// Each (key, type) pair is an independent CRDT object; a value of the variant
// is either an object's state or a delta to it (the same type: deltas are
// states). Code that must handle every type visits the variant, so adding a
// type is a compile error everywhere it is not handled.

#ifndef GEOKV_CRDT_CRDT_H_
#define GEOKV_CRDT_CRDT_H_

#include <cstdint>
#include <optional>
#include <string_view>
#include <variant>
#include <vector>

#include "crdt/lww_register.h"
#include "crdt/mv_register.h"
#include "crdt/or_set.h"
#include "crdt/pn_counter.h"
#include "util/status.h"

namespace geokv {

// Persisted and sent on the wire: values never change meaning.
enum class CrdtType : uint8_t {
  kLww = 1,
  kMvRegister = 2,
  kOrSet = 3,
  kCounter = 4,
};
inline constexpr CrdtType kAllCrdtTypes[] = {CrdtType::kLww, CrdtType::kMvRegister,
                                             CrdtType::kOrSet, CrdtType::kCounter};

// Alternatives are in CrdtType order: index i holds type i + 1.
using Crdt = std::variant<LwwRegister, MvRegister, OrSet, PnCounter>;

inline CrdtType TypeOf(const Crdt& c) { return static_cast<CrdtType>(c.index() + 1); }

// "lww", "mvregister", "orset", "counter".
std::string_view TypeName(CrdtType type);

// The bottom state of `type`.
Crdt Bottom(CrdtType type);

bool IsBottom(const Crdt& c);

// Whether `c` is a multi-value register, OR-set or counter that has seen
// writes but holds no value: what is left of one whose values were all
// removed (a counter: deleted, with no increment since).
bool IsEmptied(const Crdt& c);

// Whether the states of one key are nothing but what removals left: some
// emptied (IsEmptied), the rest LWW tombstones (a deleted counter's key).
bool OnlyRemovals(const std::vector<Crdt>& states);

// Joins `other` into `*into`. Returns WrongType when the types differ.
Status Join(Crdt* into, const Crdt& other);

}  // namespace geokv

#endif  // GEOKV_CRDT_CRDT_H_

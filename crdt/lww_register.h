// Last-writer-wins register.
//
// State: a write stamp (HLC timestamp, writing node) and either a value or
// "deleted". Bottom: the zero stamp, deleted. Join: keep the greater stamp.
// Conflict rule: the greatest (timestamp, node) wins. Two writes never share a
// stamp (a node's HLC never repeats and node ids differ), but should two
// states ever carry the same stamp, the join still picks one deterministically
// (deleted before a value, then the greater value) so that it stays
// commutative.
//
// A register's delta is a register: the write itself.

#ifndef GEOKV_CRDT_LWW_REGISTER_H_
#define GEOKV_CRDT_LWW_REGISTER_H_

#include <optional>
#include <string>

#include "crdt/causal_context.h"
#include "crdt/hlc.h"

namespace geokv {

class LwwRegister {
 public:
  LwwRegister() = default;
  LwwRegister(HlcTimestamp ts, ReplicaId node, std::optional<std::string> value)
      : ts_(ts), node_(node), value_(std::move(value)) {}

  // Mutators: apply the write to this state and return it as a delta.
  // REQUIRES: (ts, node) is greater than this state's stamp; a HybridClock
  // that has seen every stamp joined here guarantees it.
  LwwRegister Set(std::string value, HlcTimestamp ts, ReplicaId node);
  LwwRegister Delete(HlcTimestamp ts, ReplicaId node);

  void Join(const LwwRegister& other);

  bool IsBottom() const { return ts_.IsZero() && node_ == 0 && !value_; }
  // The value, or nullopt when deleted or never written.
  const std::optional<std::string>& value() const { return value_; }
  HlcTimestamp timestamp() const { return ts_; }
  ReplicaId node() const { return node_; }

  friend bool operator==(const LwwRegister& a, const LwwRegister& b) {
    return a.ts_ == b.ts_ && a.node_ == b.node_ && a.value_ == b.value_;
  }
  friend bool operator!=(const LwwRegister& a, const LwwRegister& b) { return !(a == b); }

 private:
  HlcTimestamp ts_;
  ReplicaId node_ = 0;
  std::optional<std::string> value_;
};

}  // namespace geokv

#endif  // GEOKV_CRDT_LWW_REGISTER_H_

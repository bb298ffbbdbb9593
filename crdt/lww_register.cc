#include "crdt/lww_register.h"

#include <tuple>

namespace geokv {

LwwRegister LwwRegister::Set(std::string value, HlcTimestamp ts, ReplicaId node) {
  LwwRegister delta(ts, node, std::move(value));
  Join(delta);
  return delta;
}

LwwRegister LwwRegister::Delete(HlcTimestamp ts, ReplicaId node) {
  LwwRegister delta(ts, node, std::nullopt);
  Join(delta);
  return delta;
}

void LwwRegister::Join(const LwwRegister& other) {
  auto key = [](const LwwRegister& r) { return std::tie(r.ts_, r.node_, r.value_); };
  // std::optional orders nullopt (deleted) before any value.
  if (key(*this) < key(other)) *this = other;
}

}  // namespace geokv

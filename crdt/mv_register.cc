#include "crdt/mv_register.h"

namespace geokv {

MvRegister MvRegister::Write(std::string value, const CausalContext& seen, ReplicaId replica,
                             uint64_t floor) {
  // The dot must be new to this state and to `seen`.
  CausalContext known = ctx_;
  known.Join(seen);
  Dot dot = known.NextDot(replica, ctx_.MaxCounter(replica) == 0 ? floor : 0);
  CausalContext delta_ctx = seen;
  delta_ctx.Insert(dot);
  MvRegister delta(Entries{{dot, std::move(value)}}, std::move(delta_ctx));
  Join(delta);
  return delta;
}

MvRegister MvRegister::Clear(const CausalContext& seen) {
  MvRegister delta(Entries{}, seen);
  Join(delta);
  return delta;
}

void MvRegister::Join(const MvRegister& other) {
  entries_ = JoinDotStores(entries_, ctx_, other.entries_, other.ctx_);
  ctx_.Join(other.ctx_);
}

std::vector<std::string> MvRegister::Values() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [dot, value] : entries_) out.push_back(value);
  return out;
}

}  // namespace geokv

#include "replication/quorum_acks.h"

#include "replication/peer_wire.h"

namespace geokv {

size_t QuorumAcks::Count(const std::vector<ReplicaId>& nodes, uint64_t position,
                         size_t segment) const {
  size_t n = 0;
  for (ReplicaId id : nodes) {
    if (holds_(id, position, segment)) ++n;
  }
  return n;
}

kj::Promise<size_t> QuorumAcks::WaitAcked(std::vector<ReplicaId> nodes, uint64_t position,
                                          size_t segment, size_t needed,
                                          std::chrono::milliseconds timeout) {
  auto shared = std::make_shared<std::vector<ReplicaId>>(std::move(nodes));
  if (waiters_.Stopped()) return Count(*shared, position, segment);
  return waiters_.Wait(
      [this, shared, position, segment, needed]() -> std::optional<size_t> {
        size_t n = Count(*shared, position, segment);
        if (n >= needed) return n;
        return std::nullopt;
      },
      [this, shared, position, segment] { return Count(*shared, position, segment); },
      ToKj(timeout));
}

void QuorumAcks::AckAdvanced() { waiters_.Notify(); }

void QuorumAcks::Stop() { waiters_.Stop(std::nullopt); }

}  // namespace geokv

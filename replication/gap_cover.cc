#include "replication/gap_cover.h"

#include <kj/vector.h>
#include <spdlog/spdlog.h>

#include "replication/peer_wire.h"

namespace geokv {

void GapCover::Cover(ReplicaId origin, size_t segment) {
  Round& round = rounds_[segment];
  if (round.running || timer_.now() < round.next) return;
  const std::vector<ReplicaId> peers = hooks_.peers(origin, segment);
  round.running = true;
  kj::Vector<kj::Promise<void>> syncs;
  for (ReplicaId id : peers) {
    // Each that ends may have covered enough: the waits look at once.
    syncs.add(kj::evalNow([&] { return hooks_.sync(id, static_cast<uint32_t>(segment)); })
                  .then([this] { hooks_.wake(); },
                        [id, segment](kj::Exception&& e) {
                          spdlog::debug("segment {}: cannot cover a gap from {}: {}", segment,
                                        Hex(id), e.getDescription().cStr());
                        }));
  }
  if (!peers.empty()) metrics_.token_gap_syncs.Increment();
  tasks_.add(kj::joinPromises(syncs.releaseAsArray())
                 .then([this, segment] {
                   Round& done = rounds_[segment];
                   done.running = false;
                   done.next = timer_.now() + kRetry;
                   hooks_.wake();
                   // Waits still kept out ask again once the next round may run.
                   return timer_.afterDelay(kRetry);
                 })
                 .then([this] { hooks_.wake(); }));
}

void GapCover::taskFailed(kj::Exception&& e) {
  spdlog::error("covering a gap failed: {}", e.getDescription().cStr());
}

}  // namespace geokv

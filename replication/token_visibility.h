// Token visibility: whether the writes that causal tokens name are visible
// on this node (it holds each token's origin's log through the token's
// position, and for a read of a key, holds every entry of that log in the
// key's segment through it: replication/log_coverage.h), waits for them,
// and waitReplicated's wait on other nodes.
//
// Thread safety: loop thread only.

#ifndef GEOKV_REPLICATION_TOKEN_VISIBILITY_H_
#define GEOKV_REPLICATION_TOKEN_VISIBILITY_H_

#include <kj/async.h>
#include <kj/timer.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "replication/causal_token.h"
#include "replication/deadline_waiters.h"
#include "replication/log_coverage.h"
#include "schema/replication.capnp.h"
#include "storage/store.h"

namespace geokv {

class TokenVisibility {
 public:
  // Asks for `segment` to be brought in step with nodes that may hold more
  // of `origin`'s entries there (a gap in this node's coverage); called
  // again while a wait still finds the gap.
  using Cover = std::function<void(ReplicaId origin, size_t segment)>;

  // `timer` and `coverage` must outlive this.
  TokenVisibility(kj::Timer& timer, const LogCoverage& coverage, Cover cover)
      : coverage_(coverage), cover_(std::move(cover)), waiters_(timer) {}

  // Whether every token's write is visible on this node: with `segment`,
  // for a read of a key of that segment (coverage); without, by position
  // alone.
  bool Visible(const std::vector<CausalToken>& tokens, std::optional<size_t> segment) const;
  // Resolves OK once Visible(tokens, segment), Timeout (naming the first
  // token missing) after `timeout`, Unavailable after Stop(). Asks for a
  // gap to be covered whenever one keeps a token out.
  kj::Promise<Status> WaitVisible(std::vector<CausalToken> tokens, std::optional<size_t> segment,
                                  std::chrono::milliseconds timeout);
  // After each committed group or cleared gap: wakes the waits now visible.
  void Committed();
  // Ends every wait with Unavailable; later waits end at once.
  void Stop();

 private:
  uint64_t Through(ReplicaId origin, std::optional<size_t> segment) const {
    return segment ? coverage_.Covered(origin, *segment) : coverage_.Held(origin);
  }
  // Asks for the gaps that keep any of `tokens` out to be covered.
  void CoverGaps(const std::vector<CausalToken>& tokens, size_t segment) const;

  const LogCoverage& coverage_;
  Cover cover_;
  DeadlineWaiters<Status> waiters_;
};

// Resolves true once the node behind `session` says it holds every token's
// write, false at `deadline`. A call that fails (the node is away: no
// session, or the connection dropped) is tried again every 50 ms, through
// whatever session there is then. `session` must stay callable while the
// promise lives.
kj::Promise<bool> WaitRemoteVisible(kj::Timer& timer,
                                    std::function<kj::Maybe<peer::PeerSession::Client>()> session,
                                    std::vector<CausalToken> tokens, kj::TimePoint deadline);

// The regions of `regions` whose waits in `done` (one each, in order) ended
// false.
std::vector<std::string> MissingRegions(const std::vector<std::string>& regions,
                                        const kj::Array<bool>& done);

}  // namespace geokv

#endif  // GEOKV_REPLICATION_TOKEN_VISIBILITY_H_

// Token visibility: whether the writes that causal tokens name are visible
// on this node (it holds each token's origin's log through the token's
// position), waits for them, and waitReplicated's wait on other nodes.
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
#include <string>
#include <vector>

#include "replication/causal_token.h"
#include "replication/deadline_waiters.h"
#include "schema/replication.capnp.h"
#include "storage/store.h"

namespace geokv {

class TokenVisibility {
 public:
  // How far this node holds `origin`'s log: its own through its last
  // committed entry, another's through the committed position.
  using HeldThrough = std::function<uint64_t(ReplicaId origin)>;

  // `timer` must outlive this.
  TokenVisibility(kj::Timer& timer, HeldThrough held) : held_(std::move(held)), waiters_(timer) {}

  // Whether every token's write is visible on this node.
  bool Visible(const std::vector<CausalToken>& tokens) const;
  // Resolves OK once Visible(tokens), Timeout (naming the first token
  // missing) after `timeout`, Unavailable after Stop().
  kj::Promise<Status> WaitVisible(std::vector<CausalToken> tokens,
                                  std::chrono::milliseconds timeout);
  // After each committed group: wakes the waits now visible.
  void Committed();
  // Ends every wait with Unavailable; later waits end at once.
  void Stop();

 private:
  HeldThrough held_;
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

// Paged transfer of large OR-sets over the peer API: a set whose state does
// not fit in one message moves as element-range pages (crdt/or_set.h,
// OrSetPage), each within the batch size, joined page by page through the
// committer, and ends by joining the context of the FIRST page read (a
// later page's context may hold adds into ranges already sent, which would
// read as removals). Each page is a delta on its own, so a transfer cut off
// after any page loses nothing and brings nothing back; the next transfer
// starts again from the first element.
//
// Thread safety: loop thread only, except where a function says it reads
// the store (reader pool).

#ifndef GEOKV_REPLICATION_SET_PAGING_H_
#define GEOKV_REPLICATION_SET_PAGING_H_

#include <kj/async.h>

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "crdt/or_set.h"
#include "replication/replication_env.h"
#include "schema/replication.capnp.h"

namespace geokv {

// The most elements a page holds; a received page with more is refused.
constexpr size_t kSetPageMaxElements = 4096;

// The bytes of element names and dots a sent page holds at most: the batch
// size, and a quarter of the largest message.
size_t SetPageBytes(const ReplicatorOptions& options);

// Writes `page` of the OR-set at `key`.
void EncodeSetPage(std::string_view key, const OrSetPage& page, peer::SetPage::Builder out);

// A page as received, with its key. Returns InvalidArgument (the peer's
// fault) for a state larger than `max_bytes` or that is not an OR-set, more
// than kSetPageMaxElements elements, bounds out of order, or an element
// outside the page's range; Corruption for a state that does not decode
// (which also refuses unsorted elements and dots outside the context).
struct ReceivedSetPage {
  std::string key;
  OrSetPage page;
};
StatusOr<ReceivedSetPage> DecodeSetPage(peer::SetPage::Reader in, size_t max_bytes);

// Reads the page of the set at `key` after `after`, within the limits
// above, on the reader pool. Fails (KJ_REQUIRE) when the store cannot.
kj::Promise<OrSetPage> ReadSetPage(ReplicationEnv& env, std::string key,
                                   std::optional<std::string> after);

// Waits as a byte budget requires: called with the bytes of each page moved.
using PageThrottle = std::function<kj::Promise<void>(size_t)>;

// Pulls the whole OR-set at `key` from `session` page by page, joining each
// here, then the first page's context. Fails on a refused page or a
// failed join. Resolves with the pages joined.
kj::Promise<size_t> PullSet(ReplicationEnv& env, peer::PeerSession::Client session,
                            std::string key, PageThrottle throttle);

// Pushes this node's OR-set at `key` to every one of `sessions` page by
// page (each page committed by all before the next is read), then the first
// page's context. Resolves with the pages sent.
kj::Promise<size_t> PushSet(ReplicationEnv& env, std::vector<peer::PeerSession::Client> sessions,
                            std::string key, PageThrottle throttle);

// Pushes or pulls the sets of `keys` in turn.
kj::Promise<void> PushSets(ReplicationEnv& env, std::vector<peer::PeerSession::Client> sessions,
                           std::vector<std::string> keys, PageThrottle throttle);
kj::Promise<void> PullSets(ReplicationEnv& env, peer::PeerSession::Client session,
                           std::vector<std::string> keys, PageThrottle throttle);

}  // namespace geokv

#endif  // GEOKV_REPLICATION_SET_PAGING_H_

// What the replication units share about the peer API's wire: the client
// end of a connection, the framing of key states, the placement check of a
// hello, and small helpers of the event loop.

#ifndef GEOKV_REPLICATION_PEER_WIRE_H_
#define GEOKV_REPLICATION_PEER_WIRE_H_

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <prometheus/counter.h>

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "replication/encoded_joins.h"
#include "replication/log_coverage.h"
#include "replication/peer_types.h"
#include "schema/replication.capnp.h"
#include "storage/store.h"
#include "schema/kv_text.h"
#include "util/coding.h"
#include "util/packed_stream.h"
#include "util/stream_wrapper.h"

namespace geokv {

inline kj::Duration ToKj(std::chrono::milliseconds ms) {
  return static_cast<int64_t>(ms.count()) * kj::MILLISECONDS;
}

// The most entries a peer may send in one list, whatever their size: the
// entries of a DeltaBatch, the keys of getStates and keyDigests, the keys
// of putStates. An entry of a list can cost no
// bytes on the wire but costs an allocation here; a longer list fails the
// call before anything of it is read. Every sender stays below it.
inline constexpr size_t kMaxPeerListEntries = 10000;

// Fails the call (KJ_FAIL_REQUIRE) when `size` entries of `what` are over
// kMaxPeerListEntries.
void CheckPeerList(size_t size, const char* what);

// A node id as logs print it.
std::string Hex(uint64_t v);

// Log positions by origin on the wire (coverage: log_coverage.h). Reading
// fails the call (CheckPeerList) on a list over kMaxPeerListEntries.
LogCoverage::Positions ReadPositions(capnp::List<peer::LogPosition>::Reader list);
void SetPositions(capnp::List<peer::LogPosition>::Builder out,
                  const LogCoverage::Positions& positions);

// A wakeup for loops waiting for "something changed". Loop thread only.
class Signal {
 public:
  kj::Promise<void> Wait();
  void Notify();

 private:
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiting_;
};

// A stream that counts the bytes through it into two counters, which must
// outlive it.
class CountingStream final : public StreamWrapper {
 public:
  CountingStream(kj::Own<kj::AsyncIoStream> inner, prometheus::Counter& sent,
                 prometheus::Counter& received)
      : StreamWrapper(kj::mv(inner)), sent_(sent), received_(received) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;

 private:
  prometheus::Counter& sent_;
  prometheus::Counter& received_;
};

// How a connection to a peer carries its messages, from the oldest builds'
// way to the newest: as they are, packed (util/packed_stream.h), or packed
// and compressed (util/zstd_stream.h).
enum class PeerFraming { kPlain, kPacked, kCompressed };

// The name of a framing in logs: "plain", "packed" or "compressed".
const char* FramingName(PeerFraming framing);

// The client end of a connection to a peer: Cap'n Proto RPC over `stream`
// (buffered, util/buffered_stream.h, bounding the delay of a write by
// `timer`, which must outlive it; framed as `framing` says), accepting
// messages up to `max_message_bytes`.
struct PeerConnection {
  PeerConnection(kj::Own<kj::AsyncIoStream> s, size_t max_message_bytes, kj::Timer& timer,
                 PeerFraming framing);

  peer::Peer::Client Bootstrap();

  PackedStream* packing = nullptr;  // under `stream` unless plain, else none
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

// Keys with their states, each state encoded (crdt/codec.h).
using EncodedStatesList = std::vector<std::pair<std::string, std::vector<std::string>>>;

// The states of a peer's message, each under its key, for the writer
// thread to decode and join (a state that does not decode fails the write).
EncodedJoins ReceivedStates(capnp::List<peer::KeyStates>::Reader list);

template <typename Builder>
void SetStates(Builder out, const EncodedStatesList& found) {
  for (size_t i = 0; i < found.size(); ++i) {
    out[i].setKey(AsData(found[i].first));
    auto list = out[i].initStates(found[i].second.size());
    for (size_t j = 0; j < found[i].second.size(); ++j) list.set(j, AsData(found[i].second[j]));
  }
}

// The full states of a key, encoded for the peer API. When they would not
// fit in one message (over half of `max_message_bytes`), the key's OR-set
// is left out and `paged_set` set: it travels in pages (set_paging.h). The
// other types are bounded by --max-value-bytes; should they alone still
// not fit, they are left out too (and logged).
struct EncodedKeyStates {
  std::vector<std::string> encoded;
  size_t bytes = 0;
  bool paged_set = false;
};
// With `leave_out_emptied`, a key whose states are only what removals left
// (OnlyRemovals) gets none. Reads the store: call it on a reader
// thread (AsyncStore::Run), never on the loop. Throws (KJ_REQUIRE) when
// the store cannot read the key.
EncodedKeyStates EncodeKeyStates(Store& store, std::string_view key, size_t max_message_bytes,
                                 bool leave_out_emptied = false);

// Fails (KJ_FAIL_REQUIRE, and logs) when a peer's hello names other
// placement settings than `mine`.
void CheckPlacementSettings(const ReplicatorOptions& mine, peer::NodeHello::Reader theirs);

// Fills this node's half of a hello.
void FillHello(const ReplicatorOptions& mine, ReplicaId self, int64_t wall_clock_ms,
               peer::NodeHello::Builder hello);

}  // namespace geokv

#endif  // GEOKV_REPLICATION_PEER_WIRE_H_

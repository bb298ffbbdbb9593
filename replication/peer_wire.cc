#include "replication/peer_wire.h"

#include <algorithm>

#include <capnp/message.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include "crdt/codec.h"
#include "util/buffered_stream.h"

namespace geokv {

std::string Hex(uint64_t v) {
  std::string bytes = EncodeBigEndian64(v);
  return ToHex(bytes);
}

LogCoverage::Positions ReadPositions(capnp::List<peer::LogPosition>::Reader list) {
  CheckPeerList(list.size(), "log positions");
  LogCoverage::Positions out;
  out.reserve(list.size());
  for (auto p : list) out.emplace_back(p.getOrigin(), p.getThrough());
  return out;
}

void SetPositions(capnp::List<peer::LogPosition>::Builder out,
                  const LogCoverage::Positions& positions) {
  for (size_t i = 0; i < positions.size(); ++i) {
    out[i].setOrigin(positions[i].first);
    out[i].setThrough(positions[i].second);
  }
}

kj::Promise<void> Signal::Wait() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  waiting_.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void Signal::Notify() {
  auto waiting = kj::mv(waiting_);
  waiting_.clear();
  for (auto& f : waiting) f->fulfill();
}

kj::Promise<size_t> CountingStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  return inner_->tryRead(buffer, min_bytes, max_bytes).then([this](size_t n) {
    received_.Increment(static_cast<double>(n));
    return n;
  });
}

kj::Promise<void> CountingStream::write(const void* buffer, size_t size) {
  sent_.Increment(static_cast<double>(size));
  return inner_->write(buffer, size);
}

kj::Promise<void> CountingStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  size_t n = 0;
  for (auto piece : pieces) n += piece.size();
  sent_.Increment(static_cast<double>(n));
  return inner_->write(pieces);
}

const char* FramingName(PeerFraming framing) {
  switch (framing) {
    case PeerFraming::kPlain:
      return "plain";
    case PeerFraming::kPacked:
      return "packed";
    case PeerFraming::kCompressed:
      return "compressed";
  }
  return "?";
}

namespace {

// `s`, or a connector's PackedStream over it (then also in *packing).
kj::Own<kj::AsyncIoStream> PackedIf(PeerFraming framing, kj::Own<kj::AsyncIoStream> s,
                                    PackedStream** packing) {
  if (framing == PeerFraming::kPlain) return s;
  auto stream = kj::heap<PackedStream>(kj::mv(s), framing == PeerFraming::kCompressed
                                                      ? PackedStream::Side::kCompressedConnector
                                                      : PackedStream::Side::kConnector);
  *packing = stream.get();
  return stream;
}

}  // namespace

PeerConnection::PeerConnection(kj::Own<kj::AsyncIoStream> s, size_t max_message_bytes,
                               kj::Timer& timer, PeerFraming framing)
    : stream(kj::heap<BufferedStream>(PackedIf(framing, kj::mv(s), &packing), &timer)),
      network(*stream, capnp::rpc::twoparty::Side::CLIENT,
              capnp::ReaderOptions{max_message_bytes / sizeof(capnp::word), 64}),
      rpc(capnp::makeRpcClient(network)) {}

peer::Peer::Client PeerConnection::Bootstrap() {
  capnp::word scratch[4] = {};
  capnp::MallocMessageBuilder message(scratch);
  auto host = message.getRoot<capnp::rpc::twoparty::VatId>();
  host.setSide(capnp::rpc::twoparty::Side::SERVER);
  return rpc.bootstrap(host).castAs<peer::Peer>();
}

void CheckPeerList(size_t size, const char* what) {
  KJ_REQUIRE(size <= kMaxPeerListEntries, "too many entries in one call", what, size,
             kMaxPeerListEntries);
}

EncodedJoins ReceivedStates(capnp::List<peer::KeyStates>::Reader list) {
  CheckPeerList(list.size(), "keys with states");
  size_t count = 0, bytes = 0;
  for (auto ks : list) {
    KJ_REQUIRE(ks.getStates().size() <= std::size(kAllCrdtTypes),
               "more states for one key than types", ks.getStates().size());
    for (auto state : ks.getStates()) {
      ++count;
      bytes += ks.getKey().size() + state.size();
    }
  }
  EncodedJoins out;
  out.Reserve(count, bytes);
  for (auto ks : list) {
    for (auto state : ks.getStates()) out.Add(View(ks.getKey()), View(state));
  }
  return out;
}

EncodedKeyStates EncodeKeyStates(Store& store, std::string_view key, size_t max_message_bytes,
                                 bool leave_out_emptied) {
  EncodedKeyStates out;
  auto states = store.GetStates(key);
  KJ_REQUIRE(states.ok(), "cannot read states", states.status().ToString());
  if (leave_out_emptied && OnlyRemovals(*states)) return out;
  std::vector<bool> is_set;
  for (const Crdt& c : *states) {
    out.encoded.push_back(EncodeCrdt(c));
    out.bytes += out.encoded.back().size();
    is_set.push_back(std::holds_alternative<OrSet>(c));
  }
  if (out.bytes + key.size() <= max_message_bytes / 2) return out;
  std::vector<std::string> whole;
  out.bytes = 0;
  for (size_t i = 0; i < out.encoded.size(); ++i) {
    if (is_set[i]) {
      out.paged_set = true;
    } else {
      out.bytes += out.encoded[i].size();
      whole.push_back(std::move(out.encoded[i]));
    }
  }
  out.encoded = std::move(whole);
  if (out.bytes + key.size() > max_message_bytes / 2) {
    spdlog::error("key '{}': its states other than an OR-set ({} bytes) exceed half of "
                  "--max-message-bytes; anti-entropy cannot repair them",
                  PrintableBytes(key), out.bytes);
    out.encoded.clear();
    out.bytes = 0;
  }
  return out;
}

void CheckPlacementSettings(const ReplicatorOptions& mine, peer::NodeHello::Reader theirs) {
  auto differs = [](uint32_t a, uint32_t b) { return a != 0 && b != 0 && a != b; };
  if (differs(mine.replication_factor, theirs.getReplicationFactor()) ||
      differs(mine.vnodes, theirs.getVnodes())) {
    std::string why = fmt::format(
        "placement settings differ: this node ({}) has --replication-factor {} --vnodes {}, "
        "node {} of region {} has {} and {}; every node must use the same",
        mine.name, mine.replication_factor, mine.vnodes, theirs.getName().cStr(),
        theirs.getRegion().cStr(), theirs.getReplicationFactor(), theirs.getVnodes());
    spdlog::error("{}", why);
    KJ_FAIL_REQUIRE(why);
  }
}

void FillHello(const ReplicatorOptions& mine, ReplicaId self, int64_t wall_clock_ms,
               peer::NodeHello::Builder hello) {
  hello.setReplicaId(self);
  hello.setName(mine.name);
  hello.setRegion(mine.region);
  hello.setSchemaVersion(peer::SCHEMA_VERSION);
  hello.setReplicationFactor(mine.replication_factor);
  hello.setVnodes(mine.vnodes);
  hello.setWallClockMs(wall_clock_ms);
  hello.setPackedStreams(mine.packed_port);
  hello.setCompressedStreams(mine.packed_port && mine.compressed_port);
}

}  // namespace geokv

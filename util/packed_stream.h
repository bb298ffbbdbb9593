// A stream that carries Cap'n Proto's packed encoding over another: what is
// written is packed (capnp/serialize-packed.h's format: each word becomes a
// tag byte naming its nonzero bytes, then those bytes; a run of zero words
// or of dense words is counted after its first), and what is read is
// unpacked. Cap'n Proto messages are mostly zero bytes of pointers, small
// integers and padding, so the peer API's messages shrink to about half on
// the wire (docs/formats.md, "Packed peer connections").
//
// A connector sends kPreamble first, then packed bytes. An acceptor reads
// the first word: kPreamble starts packed bytes; any other word is the
// start of a plain stream (an older build's connection), delivered as it
// came. A plain message never starts with kPreamble: its first word is its
// segment count and first segment's size, and kPreamble read so would be
// over a billion segments.
//
// Every write must be whole words (a Cap'n Proto message always is); one
// that is not fails. Unpacking never reads past what it was given: a
// truncated or malformed stream ends in a short read at the end of the
// stream below, which the message reader reports. Not thread-safe; one
// event loop's.

#ifndef GEOKV_UTIL_PACKED_STREAM_H_
#define GEOKV_UTIL_PACKED_STREAM_H_

#include <kj/async-io.h>
#include <kj/vector.h>

#include <cstddef>
#include <cstdint>

#include "util/stream_wrapper.h"

namespace geokv {

class PackedStream final : public StreamWrapper {
 public:
  // The first word of a packed connection.
  static constexpr kj::byte kPreamble[8] = {'G', 'K', 'V', 'P', 'A', 'C', 'K', 1};
  static constexpr size_t kReadBufferBytes = 64 << 10;

  enum class Side {
    kConnector,  // sends kPreamble, then packs
    kAcceptor,   // packs and unpacks when the first word is kPreamble, else passes through
  };

  PackedStream(kj::Own<kj::AsyncIoStream> inner, Side side);

  // On an acceptor: whether the first word said packed (false before it
  // came). On a connector: true.
  bool packed() const { return mode_ == Mode::kPacked; }
  // Bytes read from the stream below so far.
  uint64_t received() const { return received_; }

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;

 private:
  // kUndecided: an acceptor before the first word; it writes plain then.
  enum class Mode { kUndecided, kPlain, kPacked };

  // Reads until the first word is in the buffer (or the stream ended),
  // then decides the mode.
  kj::Promise<void> Decide();
  // Delivers into `out` what the buffered input yields: unpacked in
  // kPacked, as it is in kPlain. Returns the bytes delivered.
  size_t Deliver(kj::byte* out, size_t max_bytes);
  size_t Unpack(kj::byte* out, size_t max_bytes);
  // Delivers until `min_bytes` (of `max_bytes`) are in `out`, reading the
  // stream below as needed; fewer only when it ended.
  kj::Promise<size_t> ReadMore(kj::byte* out, size_t min_bytes, size_t max_bytes, size_t done);
  // Room for one more read below: moves what is left to the front.
  void Compact();
  size_t Available() const { return in_end_ - in_begin_; }

  Mode mode_;
  bool preamble_due_;
  uint64_t received_ = 0;

  // Input read from below and not yet delivered: [in_begin_, in_end_).
  kj::Array<kj::byte> in_;
  size_t in_begin_ = 0;
  size_t in_end_ = 0;
  // Unpacking state between reads: the rest of a decoded word, zero bytes
  // of a run still to deliver, and bytes of a run of verbatim words.
  kj::byte word_[8] = {};
  size_t word_at_ = 8;
  size_t zeros_ = 0;
  size_t verbatim_ = 0;
};

// Packs `in` (whole words) onto the end of `out`.
void PackWords(kj::ArrayPtr<const kj::byte> in, kj::Vector<kj::byte>& out);

}  // namespace geokv

#endif  // GEOKV_UTIL_PACKED_STREAM_H_

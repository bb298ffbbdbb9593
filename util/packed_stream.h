// A stream that carries Cap'n Proto's packed encoding over another: what is
// written is packed (capnp/serialize-packed.h's format: each word becomes a
// tag byte naming its nonzero bytes, then those bytes; a run of zero words
// or of dense words is counted after its first), and what is read is
// unpacked. Cap'n Proto messages are mostly zero bytes of pointers, small
// integers and padding, so the peer API's messages shrink to about half on
// the wire (docs/formats.md, "Packed peer connections").
//
// A connector sends kPreamble first, then packed bytes; or, compressing,
// kCompressedPreamble, then the packed bytes compressed (util/zstd_stream.h).
// An acceptor reads the first word: either preamble starts packed bytes
// (compressed after the second, and then it compresses what it writes too);
// any other word is the start of a plain stream (an older build's
// connection), delivered as it came. A plain message never starts with kPreamble: its first word is its
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

#include "util/read_buffer.h"
#include "util/stream_wrapper.h"

namespace geokv {

class ZstdStream;

class PackedStream final : public StreamWrapper {
 public:
  // The first word of a packed connection.
  static constexpr kj::byte kPreamble[8] = {'G', 'K', 'V', 'P', 'A', 'C', 'K', 1};
  static constexpr kj::byte kCompressedPreamble[8] = {'G', 'K', 'V', 'P', 'A', 'C', 'K', 2};
  static constexpr size_t kReadBufferBytes = 64 << 10;

  enum class Side {
    kConnector,            // sends kPreamble, then packs
    kCompressedConnector,  // sends kCompressedPreamble, then packs and compresses
    kAcceptor,  // packs and unpacks (and compresses) as the first word says, or passes through
    // As kAcceptor, but takes kCompressedPreamble for a plain stream's
    // first word, as builds before compressed connections do.
    kUncompressedAcceptor,
  };

  PackedStream(kj::Own<kj::AsyncIoStream> inner, Side side);

  // On an acceptor: whether the first word said packed (false before it
  // came). On a connector: true.
  bool packed() const { return mode_ == Mode::kPacked; }
  // Whether what goes below is compressed (on an acceptor, once the first
  // word said so).
  bool compressed() const { return compressed_; }
  // Bytes read from the connection below so far (when compressed, after
  // the preamble).
  uint64_t received() const;

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

  Mode mode_;
  bool takes_compressed_;
  bool preamble_due_;
  bool compressed_;
  ZstdStream* zstd_ = nullptr;  // inner_, when compressed
  uint64_t received_ = 0;

  ReadBuffer in_;  // input read from below and not yet delivered
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

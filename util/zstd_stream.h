// A stream that compresses what is written with Zstandard and decompresses
// what is read, as one endless frame each way: every write is compressed
// and flushed (ZSTD_e_flush) before it goes down, so the other end can
// decode all of it at once, while the frame's history (the last
// kWindowBytes) lets a message that repeats an earlier one's bytes (the
// same interface, replica ids, keys, element prefixes) cost only references.
//
// What comes in is bounded: the decoder refuses a frame asking for a window
// larger than kWindowBytes, and decodes only into the reader's buffer, so a
// small input cannot make it allocate or deliver more than asked. Corrupt
// input fails the read (kj::Exception FAILED).
//
// A preamble given to the constructor goes down uncompressed before the
// first compressed byte; input given to it is read before the stream below.
// Not thread-safe; one event loop's.

#ifndef GEOKV_UTIL_ZSTD_STREAM_H_
#define GEOKV_UTIL_ZSTD_STREAM_H_

#include <kj/array.h>
#include <kj/async-io.h>

#include <cstddef>
#include <memory>

#include "util/read_buffer.h"
#include "util/stream_wrapper.h"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace geokv {

class ZstdStream final : public StreamWrapper {
 public:
  // Bytes of history either end keeps (and the most the decoder accepts).
  static constexpr int kWindowLog = 17;
  static constexpr size_t kWindowBytes = size_t{1} << kWindowLog;
  // The compression level: the fastest; messages are small, and what they
  // share with earlier ones is found at any level.
  static constexpr int kLevel = 1;

  ZstdStream(kj::Own<kj::AsyncIoStream> inner, kj::ArrayPtr<const kj::byte> preamble = nullptr,
             kj::ArrayPtr<const kj::byte> input = nullptr);
  ~ZstdStream() noexcept;

  // Bytes handed to write() so far, and what they went down as.
  uint64_t written() const { return written_; }
  uint64_t compressed() const { return compressed_; }
  // Bytes of input so far: given to the constructor and read from below.
  uint64_t received() const { return received_; }

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;

 private:
  struct FreeCCtx {
    void operator()(ZSTD_CCtx_s* c) const;
  };
  struct FreeDCtx {
    void operator()(ZSTD_DCtx_s* d) const;
  };

  // Decodes buffered input into out[0, max_bytes); returns the bytes made.
  size_t Decode(kj::byte* out, size_t max_bytes);
  kj::Promise<size_t> ReadMore(kj::byte* out, size_t min_bytes, size_t max_bytes, size_t done);

  std::unique_ptr<ZSTD_CCtx_s, FreeCCtx> cctx_;
  std::unique_ptr<ZSTD_DCtx_s, FreeDCtx> dctx_;
  kj::Array<kj::byte> preamble_;  // still to send, uncompressed
  uint64_t written_ = 0;
  uint64_t compressed_ = 0;

  ReadBuffer in_;  // compressed input read from below and not yet decoded
  uint64_t received_ = 0;
  // The decoder may hold decoded bytes it could not deliver yet.
  bool pending_ = false;
};

}  // namespace geokv

#endif  // GEOKV_UTIL_ZSTD_STREAM_H_

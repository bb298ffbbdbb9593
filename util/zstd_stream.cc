#include "util/zstd_stream.h"

#include <kj/debug.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

namespace geokv {

namespace {

// Compressed input read from below at once.
constexpr size_t kReadBufferBytes = 64 << 10;

void Check(size_t result, const char* what) {
  KJ_REQUIRE(!ZSTD_isError(result), "compressed stream", what, ZSTD_getErrorName(result));
}

}  // namespace

void ZstdStream::FreeCCtx::operator()(ZSTD_CCtx_s* c) const { ZSTD_freeCCtx(c); }
void ZstdStream::FreeDCtx::operator()(ZSTD_DCtx_s* d) const { ZSTD_freeDCtx(d); }

ZstdStream::ZstdStream(kj::Own<kj::AsyncIoStream> inner, kj::ArrayPtr<const kj::byte> preamble,
                       kj::ArrayPtr<const kj::byte> input)
    : StreamWrapper(kj::mv(inner)),
      cctx_(ZSTD_createCCtx()),
      dctx_(ZSTD_createDCtx()),
      preamble_(kj::heapArray(preamble)),
      in_(kReadBufferBytes, input),
      received_(input.size()) {
  KJ_REQUIRE(cctx_ != nullptr && dctx_ != nullptr, "out of memory for a compressed stream");
  Check(ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_compressionLevel, kLevel), "level");
  Check(ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_windowLog, kWindowLog), "window");
  Check(ZSTD_DCtx_setParameter(dctx_.get(), ZSTD_d_windowLogMax, kWindowLog), "window limit");
}

ZstdStream::~ZstdStream() noexcept = default;

kj::Promise<void> ZstdStream::write(const void* buffer, size_t size) {
  kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
  return write(kj::arrayPtr(&piece, 1));
}

kj::Promise<void> ZstdStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  size_t total = 0;
  for (auto& p : pieces) total += p.size();
  written_ += total;
  const size_t bound = ZSTD_compressBound(total) + preamble_.size() + 64;
  auto out = kj::heapArray<kj::byte>(bound);
  size_t used = preamble_.size();
  if (used > 0) {
    std::memcpy(out.begin(), preamble_.begin(), used);
    preamble_ = nullptr;
  }
  ZSTD_outBuffer o{out.begin(), out.size(), used};
  for (size_t i = 0; i < pieces.size(); ++i) {
    ZSTD_inBuffer in{pieces[i].begin(), pieces[i].size(), 0};
    const ZSTD_EndDirective end = i + 1 == pieces.size() ? ZSTD_e_flush : ZSTD_e_continue;
    for (;;) {
      const size_t left = ZSTD_compressStream2(cctx_.get(), &o, &in, end);
      Check(left, "compressing");
      // The output has room for all of it: every byte is consumed, and a
      // flush completes in one call.
      KJ_ASSERT(end != ZSTD_e_flush || left == 0 || o.pos < o.size, "compressed output full");
      if (in.pos == in.size && (end != ZSTD_e_flush || left == 0)) break;
    }
  }
  compressed_ += o.pos - used;
  auto promise = inner_->write(out.begin(), o.pos);
  return promise.attach(kj::mv(out));
}

kj::Promise<size_t> ZstdStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  return ReadMore(static_cast<kj::byte*>(buffer), min_bytes, max_bytes, 0);
}

size_t ZstdStream::Decode(kj::byte* out, size_t max_bytes) {
  ZSTD_outBuffer o{out, max_bytes, 0};
  while (o.pos < o.size && (in_.available() > 0 || pending_)) {
    ZSTD_inBuffer in{in_.data(), in_.available(), 0};
    const size_t before = o.pos;
    Check(ZSTD_decompressStream(dctx_.get(), &o, &in), "corrupt input");
    const bool progressed = in.pos > 0 || o.pos > before;
    in_.Consume(in.pos);
    // A full output may leave decoded bytes behind; anything short of full
    // means the decoder gave all it had for the input consumed.
    pending_ = o.pos == o.size;
    if (!progressed) break;
  }
  return o.pos;
}

kj::Promise<size_t> ZstdStream::ReadMore(kj::byte* out, size_t min_bytes, size_t max_bytes,
                                         size_t done) {
  done += Decode(out + done, max_bytes - done);
  if (done >= min_bytes || done == max_bytes) return done;
  return in_.Fill(*inner_).then(
      [this, out, min_bytes, max_bytes, done](size_t got) -> kj::Promise<size_t> {
        if (got == 0) return done;  // the stream ended
        received_ += got;
        return ReadMore(out, min_bytes, max_bytes, done);
      });
}

}  // namespace geokv

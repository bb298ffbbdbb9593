#include "util/packed_stream.h"

#include <kj/debug.h>

#include "util/zstd_stream.h"

#include <algorithm>
#include <cstring>

namespace geokv {

namespace {

constexpr size_t kWord = 8;
constexpr size_t kMaxRun = 255;

bool IsZero(const kj::byte* w) {
  uint64_t v;
  std::memcpy(&v, w, kWord);
  return v == 0;
}

// A dense word (at most one zero byte) gains nothing from a tag: a run of
// them after a word with no zero byte goes verbatim, as Cap'n Proto does.
bool IsDense(const kj::byte* w) {
  int zeros = 0;
  for (size_t i = 0; i < kWord; ++i) zeros += w[i] == 0;
  return zeros < 2;
}

}  // namespace

void PackWords(kj::ArrayPtr<const kj::byte> in, kj::Vector<kj::byte>& out) {
  KJ_REQUIRE(in.size() % kWord == 0, "a packed stream carries whole words", in.size());
  const kj::byte* p = in.begin();
  const kj::byte* end = in.end();
  while (p < end) {
    kj::byte tag = 0;
    for (size_t i = 0; i < kWord; ++i) tag |= static_cast<kj::byte>((p[i] != 0) << i);
    out.add(tag);
    for (size_t i = 0; i < kWord; ++i) {
      if (p[i] != 0) out.add(p[i]);
    }
    p += kWord;
    if (tag == 0) {
      size_t run = 0;
      while (p < end && run < kMaxRun && IsZero(p)) p += kWord, ++run;
      out.add(static_cast<kj::byte>(run));
    } else if (tag == 0xff) {
      const kj::byte* start = p;
      size_t run = 0;
      while (p < end && run < kMaxRun && IsDense(p)) p += kWord, ++run;
      out.add(static_cast<kj::byte>(run));
      out.addAll(start, p);
    }
  }
}

PackedStream::PackedStream(kj::Own<kj::AsyncIoStream> inner, Side side)
    : StreamWrapper(kj::mv(inner)),
      mode_(side == Side::kAcceptor || side == Side::kUncompressedAcceptor ? Mode::kUndecided
                                                                           : Mode::kPacked),
      takes_compressed_(side == Side::kAcceptor),
      preamble_due_(side == Side::kConnector),
      compressed_(side == Side::kCompressedConnector),
      in_(kReadBufferBytes) {
  if (compressed_) {
    // The preamble goes down uncompressed, ahead of the first write.
    auto zstd = kj::heap<ZstdStream>(kj::mv(inner_), kj::arrayPtr(kCompressedPreamble, kWord));
    zstd_ = zstd.get();
    inner_ = kj::mv(zstd);
  }
}

uint64_t PackedStream::received() const {
  return zstd_ != nullptr ? zstd_->received() : received_;
}

kj::Promise<void> PackedStream::write(const void* buffer, size_t size) {
  kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
  return write(kj::arrayPtr(&piece, 1));
}

kj::Promise<void> PackedStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  if (mode_ != Mode::kPacked) return inner_->write(pieces);
  size_t total = 0;
  for (auto& p : pieces) total += p.size();
  kj::Vector<kj::byte> out(total + total / 8 + 2 * kWord);
  if (preamble_due_) {
    out.addAll(kPreamble, kPreamble + kWord);
    preamble_due_ = false;
  }
  if (pieces.size() == 1) {
    PackWords(pieces[0], out);
  } else {
    kj::Vector<kj::byte> joined(total);
    for (auto& p : pieces) joined.addAll(p);
    PackWords(joined.asPtr(), out);
  }
  auto bytes = out.releaseAsArray();
  auto promise = inner_->write(bytes.begin(), bytes.size());
  return promise.attach(kj::mv(bytes));
}

kj::Promise<size_t> PackedStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  auto* out = static_cast<kj::byte*>(buffer);
  if (mode_ == Mode::kUndecided) {
    return Decide().then([this, out, min_bytes, max_bytes] {
      return ReadMore(out, min_bytes, max_bytes, 0);
    });
  }
  return ReadMore(out, min_bytes, max_bytes, 0);
}

kj::Promise<void> PackedStream::Decide() {
  if (in_.available() >= kWord) {
    const kj::byte* first = in_.data();
    if (std::memcmp(first, kPreamble, kWord) == 0) {
      in_.Consume(kWord);
      mode_ = Mode::kPacked;
    } else if (takes_compressed_ && std::memcmp(first, kCompressedPreamble, kWord) == 0) {
      // What followed the preamble in the buffer is the first compressed
      // input; everything from here on goes through the decompressor.
      auto zstd = kj::heap<ZstdStream>(kj::mv(inner_), nullptr,
                                       kj::arrayPtr(first + kWord, in_.available() - kWord));
      zstd_ = zstd.get();
      inner_ = kj::mv(zstd);
      in_.Consume(in_.available());
      mode_ = Mode::kPacked;
      compressed_ = true;
    } else {
      mode_ = Mode::kPlain;
    }
    return kj::READY_NOW;
  }
  return in_.Fill(*inner_).then([this](size_t got) -> kj::Promise<void> {
    if (got == 0) {
      // Ended within the first word: whatever came is a plain stream's.
      mode_ = Mode::kPlain;
      return kj::READY_NOW;
    }
    received_ += got;
    return Decide();
  });
}

kj::Promise<size_t> PackedStream::ReadMore(kj::byte* out, size_t min_bytes, size_t max_bytes,
                                           size_t done) {
  done += Deliver(out + done, max_bytes - done);
  if (done >= min_bytes || done == max_bytes) return done;
  if (mode_ == Mode::kPlain && in_.available() == 0) {
    // Nothing buffered: straight from below into the caller's memory.
    return inner_->tryRead(out + done, min_bytes - done, max_bytes - done)
        .then([this, done](size_t got) {
          received_ += got;
          return done + got;
        });
  }
  return in_.Fill(*inner_).then(
      [this, out, min_bytes, max_bytes, done](size_t got) -> kj::Promise<size_t> {
        if (got == 0) return done;  // the stream ended
        received_ += got;
        return ReadMore(out, min_bytes, max_bytes, done);
      });
}

size_t PackedStream::Deliver(kj::byte* out, size_t max_bytes) {
  if (mode_ == Mode::kPacked) return Unpack(out, max_bytes);
  size_t n = std::min(in_.available(), max_bytes);
  std::memcpy(out, in_.data(), n);
  in_.Consume(n);
  return n;
}

size_t PackedStream::Unpack(kj::byte* out, size_t max_bytes) {
  size_t done = 0;
  while (done < max_bytes) {
    if (word_at_ < kWord) {
      size_t n = std::min(kWord - word_at_, max_bytes - done);
      std::memcpy(out + done, word_ + word_at_, n);
      word_at_ += n;
      done += n;
    } else if (zeros_ > 0) {
      size_t n = std::min(zeros_, max_bytes - done);
      std::memset(out + done, 0, n);
      zeros_ -= n;
      done += n;
    } else if (verbatim_ > 0) {
      size_t n = std::min({verbatim_, max_bytes - done, in_.available()});
      if (n == 0) break;
      std::memcpy(out + done, in_.data(), n);
      in_.Consume(n);
      verbatim_ -= n;
      done += n;
    } else {
      if (in_.available() == 0) break;
      const kj::byte* in = in_.data();
      const kj::byte tag = in[0];
      const size_t present = static_cast<size_t>(__builtin_popcount(tag));
      const bool counted = tag == 0 || tag == 0xff;
      const size_t need = 1 + present + (counted ? 1 : 0);
      if (in_.available() < need) break;
      size_t at = 1;
      for (size_t i = 0; i < kWord; ++i) word_[i] = (tag >> i) & 1 ? in[at++] : 0;
      word_at_ = 0;
      if (tag == 0) zeros_ = size_t{in[at]} * kWord;
      if (tag == 0xff) verbatim_ = size_t{in[at]} * kWord;
      in_.Consume(need);
    }
  }
  return done;
}

}  // namespace geokv

// Bytes read from a stream and not yet taken by the stream wrapper that
// reads them (util/packed_stream.h, util/zstd_stream.h): the part
// [begin, end) of a fixed buffer. Not thread-safe.

#ifndef GEOKV_UTIL_READ_BUFFER_H_
#define GEOKV_UTIL_READ_BUFFER_H_

#include <kj/array.h>
#include <kj/async-io.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace geokv {

class ReadBuffer {
 public:
  // Room for `capacity` bytes, or for `initial` when it is larger, which
  // it holds to begin with.
  explicit ReadBuffer(size_t capacity, kj::ArrayPtr<const kj::byte> initial = nullptr)
      : bytes_(kj::heapArray<kj::byte>(std::max(capacity, initial.size()))),
        end_(initial.size()) {
    if (initial.size() > 0) std::memcpy(bytes_.begin(), initial.begin(), initial.size());
  }

  size_t available() const { return end_ - begin_; }
  // The bytes not yet taken.
  const kj::byte* data() const { return bytes_.begin() + begin_; }
  // Takes the first `n` bytes (at most available()).
  void Consume(size_t n) { begin_ += n; }

  // Reads at least one byte more from `from`, into the room after what is
  // left (moved to the front first); resolves with the bytes read, 0 when
  // the stream ended.
  kj::Promise<size_t> Fill(kj::AsyncInputStream& from) {
    if (begin_ > 0) {
      std::memmove(bytes_.begin(), bytes_.begin() + begin_, available());
      end_ -= begin_;
      begin_ = 0;
    }
    return from.tryRead(bytes_.begin() + end_, 1, bytes_.size() - end_).then([this](size_t got) {
      end_ += got;
      return got;
    });
  }

 private:
  kj::Array<kj::byte> bytes_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace geokv

#endif  // GEOKV_UTIL_READ_BUFFER_H_

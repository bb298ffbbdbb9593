#include "util/buffered_stream.h"

#include <kj/debug.h>

#include <algorithm>
#include <cstring>

namespace geokv {

BufferedStream::BufferedStream(kj::Own<kj::AsyncIoStream> inner, size_t max_buffered)
    : StreamWrapper(kj::mv(inner)), max_buffered_(max_buffered), read_buffer_(kReadBufferBytes) {}

kj::Promise<size_t> BufferedStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  return ReadBuffered(static_cast<kj::byte*>(buffer), min_bytes, max_bytes, 0);
}

kj::Promise<size_t> BufferedStream::ReadBuffered(kj::byte* out, size_t min_bytes,
                                                 size_t max_bytes, size_t done) {
  const size_t n = std::min(max_bytes - done, read_end_ - read_begin_);
  if (n > 0) memcpy(out + done, read_buffer_.data() + read_begin_, n);
  read_begin_ += n;
  done += n;
  if (done >= min_bytes) return done;
  read_begin_ = read_end_ = 0;
  if (max_bytes - done >= kReadBufferBytes) {
    return inner_->tryRead(out + done, min_bytes - done, max_bytes - done)
        .then([done](size_t got) { return done + got; });
  }
  return inner_->tryRead(read_buffer_.data(), 1, read_buffer_.size())
      .then([this, out, min_bytes, max_bytes, done](size_t got) -> kj::Promise<size_t> {
        if (got == 0) return done;  // end of stream
        read_end_ = got;
        return ReadBuffered(out, min_bytes, max_bytes, done);
      });
}

kj::Promise<void> BufferedStream::write(const void* buffer, size_t size) {
  const kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
  return Append(kj::arrayPtr(&piece, 1));
}

kj::Promise<void> BufferedStream::write(
    kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  return Append(pieces);
}

kj::Promise<void> BufferedStream::Append(
    kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  KJ_IF_MAYBE(e, failure_) { return kj::cp(*e); }
  KJ_REQUIRE(!shutdown_, "write after shutdownWrite()");
  for (auto piece : pieces) pending_.insert(pending_.end(), piece.begin(), piece.end());
  if (!running_ && !pending_.empty()) {
    running_ = true;
    flush_ = Flush().eagerlyEvaluate(nullptr);
  }
  if (pending_.size() <= max_buffered_) return kj::READY_NOW;
  auto room = kj::newPromiseAndFulfiller<void>();
  waiting_.add(kj::mv(room.fulfiller));
  return kj::mv(room.promise);
}

kj::Promise<void> BufferedStream::Flush() {
  return kj::evalLast([this]() -> kj::Promise<void> {
           if (pending_.empty()) {
             running_ = false;
             if (shutdown_) inner_->shutdownWrite();
             return kj::READY_NOW;
           }
           writing_.swap(pending_);
           pending_.clear();
           Release();
           return inner_->write(writing_.data(), writing_.size()).then([this] {
             writing_.clear();
             return Flush();
           });
         })
      .catch_([this](kj::Exception&& e) { Failed(e); });
}

void BufferedStream::Failed(const kj::Exception& e) {
  running_ = false;
  pending_.clear();
  writing_.clear();
  failure_ = kj::cp(e);
  for (auto& w : waiting_) w->reject(kj::cp(e));
  waiting_.clear();
}

void BufferedStream::Release() {
  for (auto& w : waiting_) w->fulfill();
  waiting_.clear();
}

void BufferedStream::shutdownWrite() {
  shutdown_ = true;
  if (!running_ && failure_ == nullptr) inner_->shutdownWrite();
}

}  // namespace geokv

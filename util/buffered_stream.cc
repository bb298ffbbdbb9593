#include "util/buffered_stream.h"

#include <kj/debug.h>

#include <algorithm>
#include <cstring>

namespace geokv {

namespace {

void FulfillAll(kj::Vector<kj::Own<kj::PromiseFulfiller<void>>>& waiting) {
  for (auto& w : waiting) w->fulfill();
  waiting.clear();
}

}  // namespace

BufferedStream::BufferedStream(kj::Own<kj::AsyncIoStream> inner, kj::Timer* timer,
                               size_t max_buffered)
    : StreamWrapper(kj::mv(inner)),
      timer_(timer),
      max_buffered_(max_buffered),
      read_buffer_(kReadBufferBytes) {}

kj::Promise<size_t> BufferedStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  KJ_IF_MAYBE(e, failure_) { return kj::cp(*e); }
  return ReadBuffered(static_cast<kj::byte*>(buffer), min_bytes, max_bytes, 0);
}

kj::Promise<size_t> BufferedStream::ReadBuffered(kj::byte* out, size_t min_bytes,
                                                 size_t max_bytes, size_t done) {
  const size_t n = std::min(max_bytes - done, read_buffer_.available());
  if (n > 0) memcpy(out + done, read_buffer_.data(), n);
  read_buffer_.Consume(n);
  done += n;
  if (done >= min_bytes) return done;
  if (max_bytes - done >= kReadBufferBytes) {
    return reads_.wrap(inner_->tryRead(out + done, min_bytes - done, max_bytes - done))
        .then([done](size_t got) { return done + got; });
  }
  return reads_.wrap(read_buffer_.Fill(*inner_))
      .then([this, out, min_bytes, max_bytes, done](size_t got) -> kj::Promise<size_t> {
        if (got == 0) return done;  // end of stream
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
    flush_ = Flush().eagerlyEvaluate([this](kj::Exception&& e) { Failed(e); });
  }
  if (pending_.size() <= max_buffered_) return kj::READY_NOW;
  auto room = kj::newPromiseAndFulfiller<void>();
  waiting_.add(kj::mv(room.fulfiller));
  return kj::mv(room.promise);
}

kj::Promise<void> BufferedStream::Flush() {
  // When the loop is about to wait for I/O, so that all the writes of a
  // turn go down together; with a timer, no later than kMaxFlushDelay. Each
  // round chains the next without a handler of its own, so a long run of
  // rounds does not pile up promise nodes.
  kj::Promise<void> idle = kj::evalLast([] {});
  if (timer_ != nullptr) idle = idle.exclusiveJoin(timer_->afterDelay(kMaxFlushDelay));
  return idle.then([this] { return WriteWaiting(); });
}

kj::Promise<void> BufferedStream::WriteWaiting() {
  if (pending_.empty()) {
    Ended();
    if (shutdown_) inner_->shutdownWrite();
    return kj::READY_NOW;
  }
  writing_.swap(pending_);  // pending_ takes the emptied buffer of the last write
  FulfillAll(waiting_);
  return inner_->write(writing_.data(), writing_.size()).then([this] {
    // A burst's buffer is not kept for the connection's life.
    if (writing_.capacity() > 2 * max_buffered_) {
      std::vector<kj::byte>().swap(writing_);
    } else {
      writing_.clear();
    }
    return Flush();
  });
}

kj::Promise<void> BufferedStream::Drained() {
  if (Flushed()) return kj::READY_NOW;
  auto done = kj::newPromiseAndFulfiller<void>();
  drained_.add(kj::mv(done.fulfiller));
  return kj::mv(done.promise);
}

void BufferedStream::Ended() {
  running_ = false;
  FulfillAll(drained_);
}

void BufferedStream::Failed(const kj::Exception& e) {
  pending_.clear();
  std::vector<kj::byte>().swap(writing_);
  failure_ = kj::cp(e);
  for (auto& w : waiting_) w->reject(kj::cp(e));
  waiting_.clear();
  // A stream that cannot be written is done: its reader must not wait for
  // answers to what was lost.
  reads_.cancel(e);
  Ended();
}

void BufferedStream::shutdownWrite() {
  if (shutdown_) return;
  shutdown_ = true;
  if (!running_ && failure_ == nullptr) inner_->shutdownWrite();
}

}  // namespace geokv

// A stream with a buffer each way over another, for Cap'n Proto
// connections (plain or TLS), which read and write in many small pieces.
//
// Writes: what is written while the event loop runs is gathered and
// written to the stream under it at once, when the loop is about to wait
// for I/O (kj::evalLast), or, given a timer, kMaxFlushDelay after the first
// of them on a loop too busy to get there (a busy node polls for I/O
// between turns, and what it finds can keep the queue from running dry for
// as long as the traffic lasts). The RPC layer writes each message on its
// own, in two or more pieces, so without it every reply costs a write()
// system call, and under TLS two records, each encrypted and framed on its
// own;
// with it, the replies of one turn go out in one write. A write is done
// once its bytes are copied; while more than `max_buffered` bytes wait (the
// stream under it is slower than the writers), writes wait until those
// bytes are handed down, so memory stays bounded and the writer's own flow
// control (the RPC layer's queue) sees the backpressure. A failed write
// below fails every write after it and every read, under way or later (the
// RPC layer ends a connection whose writes fail through its reads).
//
// Reads: served from a 64 KiB buffer that one read of the stream under it
// fills, where the RPC layer reads each message's header, segment table
// and body separately; a read of 64 KiB or more goes straight to the
// caller's memory.
//
// Not thread-safe; one event loop's.

#ifndef GEOKV_UTIL_BUFFERED_STREAM_H_
#define GEOKV_UTIL_BUFFERED_STREAM_H_

#include <kj/async-io.h>
#include <kj/vector.h>

#include <cstddef>
#include <vector>

#include "util/read_buffer.h"
#include "util/stream_wrapper.h"

namespace geokv {

class BufferedStream final : public StreamWrapper {
 public:
  static constexpr size_t kReadBufferBytes = 64 << 10;
  static constexpr size_t kDefaultMaxBuffered = 256 << 10;
  static constexpr kj::Duration kMaxFlushDelay = 2 * kj::MILLISECONDS;

  // `timer`, when given, must outlive this.
  explicit BufferedStream(kj::Own<kj::AsyncIoStream> inner, kj::Timer* timer = nullptr,
                          size_t max_buffered = kDefaultMaxBuffered);

  // Whether every byte written so far has been handed to the stream under
  // it and that stream's write has completed.
  bool Flushed() const { return !running_ && pending_.empty(); }
  // Resolves once Flushed() (or the writes failed). The owner of a
  // connection that ends waits for it, with a deadline, before it drops the
  // stream, so the last messages (an abort saying why) go out.
  kj::Promise<void> Drained();
  // Bytes read from the stream under it and not yet delivered.
  size_t Buffered() const { return read_buffer_.available(); }

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  // Ends the stream under it once what is gathered has been written.
  void shutdownWrite() override;

 private:
  // Copies what the read buffer holds, then refills it until `min_bytes`
  // are delivered (or the stream ends).
  kj::Promise<size_t> ReadBuffered(kj::byte* out, size_t min_bytes, size_t max_bytes,
                                   size_t done);
  // Copies `pieces` behind what waits; starts the flush when none runs.
  kj::Promise<void> Append(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces);
  // Once the loop is otherwise idle, writes what waits, then again while
  // more arrived meanwhile.
  kj::Promise<void> Flush();
  // Hands what waits down, then flushes again; with nothing waiting, ends.
  kj::Promise<void> WriteWaiting();
  // The flush is over: nothing waits, or the writes failed.
  void Ended();
  void Failed(const kj::Exception& e);

  kj::Timer* const timer_;
  const size_t max_buffered_;

  ReadBuffer read_buffer_;  // read from below, not yet taken

  std::vector<kj::byte> pending_;  // written, not yet handed down
  std::vector<kj::byte> writing_;  // handed down, its write under way
  bool running_ = false;           // a Flush is scheduled or writing
  bool shutdown_ = false;          // shutdownWrite once flushed
  kj::Maybe<kj::Exception> failure_;
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> waiting_;  // writers over the bound
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> drained_;  // Drained() callers
  kj::Canceler reads_;  // reads of the stream under it, cancelled when writes fail
  kj::Promise<void> flush_ = nullptr;
};

}  // namespace geokv

#endif  // GEOKV_UTIL_BUFFERED_STREAM_H_

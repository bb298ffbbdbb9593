// When the next read of a Cap'n Proto connection must deliver, so that a
// peer that sends nothing, or sends a message a byte at a time, cannot hold
// a connection slot for ever.
//
// It follows the stream's framing (Cap'n Proto's: a word with the segment
// count less one and the first segment's size, the other sizes, padding to
// a word, then the segments) over the bytes as they arrive, and gives:
//   - between messages, the first byte of the next one within `idle` of
//     the end of the last (or of the connection's start);
//   - within a message, all of it within `read` of its first byte, plus
//     one second for every kMinBytesPerSecond of its size once the size is
//     known (a large message over a slow link is not cut off).
// A zero duration means no limit of that kind.
//
// Not thread-safe; one per connection.

#ifndef GEOKV_SERVER_READ_DEADLINES_H_
#define GEOKV_SERVER_READ_DEADLINES_H_

#include <kj/array.h>
#include <kj/time.h>

#include <cstdint>

namespace geokv {

class ReadDeadlines {
 public:
  static constexpr uint64_t kMinBytesPerSecond = 64 << 10;

  ReadDeadlines(kj::Duration idle, kj::Duration read, kj::TimePoint start)
      : idle_(idle), read_(read), last_end_(start) {}

  // `bytes` arrived at `now`, in stream order.
  void Arrived(kj::ArrayPtr<const kj::byte> bytes, kj::TimePoint now);

  // When a socket read started now must have delivered; none when there is
  // no limit.
  kj::Maybe<kj::TimePoint> Next() const;

  // The connection was busy at `now` (its calls under way, so silence is
  // not idleness): between messages, its idle time starts again.
  void Active(kj::TimePoint now) {
    if (between_messages()) last_end_ = now;
  }

  // Whether every byte so far belongs to a whole message.
  bool between_messages() const { return part_ == Part::kCount && have_ == 0; }

 private:
  enum class Part { kCount, kSizes, kPadding, kBody };

  // Ends the running message at `now`.
  void Finish(kj::TimePoint now);

  const kj::Duration idle_;
  const kj::Duration read_;
  kj::TimePoint last_end_;         // when the last message ended
  kj::TimePoint message_deadline_ = last_end_;
  Part part_ = Part::kCount;
  uint32_t value_ = 0;             // the little-endian word being read
  int have_ = 0;                   // its bytes so far
  uint64_t sizes_left_ = 0;        // segment sizes still to read
  uint64_t padding_ = 0;           // padding bytes after the sizes
  uint64_t skip_ = 0;              // padding or body bytes still to come
  uint64_t body_ = 0;              // the message's body bytes
};

}  // namespace geokv

#endif  // GEOKV_SERVER_READ_DEADLINES_H_

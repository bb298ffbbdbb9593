#include "server/read_deadlines.h"

#include <algorithm>

namespace geokv {

namespace {

// The most time a message's size adds to its deadline: a size from the
// wire can be anything, and a message that large is refused by the
// message limit long before.
constexpr uint64_t kMaxExtraSeconds = 24 * 3600;

}  // namespace

void ReadDeadlines::Arrived(kj::ArrayPtr<const kj::byte> bytes, kj::TimePoint now) {
  size_t i = 0;
  // Skips padding or body bytes; returns whether the part is done.
  auto skip = [&] {
    const uint64_t n = std::min<uint64_t>(skip_, bytes.size() - i);
    skip_ -= n;
    i += static_cast<size_t>(n);
    return skip_ == 0;
  };
  // Reads a byte of the little-endian word under way; returns whether it is
  // whole (in value_).
  auto word = [&] {
    if (have_ == 0) value_ = 0;
    value_ |= static_cast<uint32_t>(bytes[i++]) << (8 * have_);
    if (++have_ < 4) return false;
    have_ = 0;
    return true;
  };
  auto start_body = [&] {
    part_ = Part::kBody;
    skip_ = body_;
    if (skip_ == 0) Finish(now);
  };
  while (i < bytes.size()) {
    switch (part_) {
      case Part::kCount:
        if (have_ == 0) {
          message_deadline_ = now + read_;
          body_ = 0;
        }
        if (word()) {
          sizes_left_ = uint64_t{value_} + 1;
          // The count and the sizes fill whole words: half a word of
          // padding follows them when the segment count is even.
          padding_ = sizes_left_ % 2 == 0 ? 4 : 0;
          part_ = Part::kSizes;
        }
        break;
      case Part::kSizes:
        if (!word()) break;
        body_ = std::min<uint64_t>(body_ + uint64_t{value_} * 8, UINT64_MAX / 2);
        if (--sizes_left_ > 0) break;
        message_deadline_ +=
            std::min(body_ / kMinBytesPerSecond, kMaxExtraSeconds) * kj::SECONDS;
        part_ = Part::kPadding;
        skip_ = padding_;
        if (skip_ == 0) start_body();
        break;
      case Part::kPadding:
        if (skip()) start_body();
        break;
      case Part::kBody:
        if (skip()) Finish(now);
        break;
    }
  }
}

void ReadDeadlines::Finish(kj::TimePoint now) {
  part_ = Part::kCount;
  have_ = 0;
  last_end_ = now;
}

kj::Maybe<kj::TimePoint> ReadDeadlines::Next() const {
  if (between_messages()) {
    if (idle_ == 0 * kj::SECONDS) return nullptr;
    return last_end_ + idle_;
  }
  if (read_ == 0 * kj::SECONDS) return nullptr;
  return message_deadline_;
}

}  // namespace geokv

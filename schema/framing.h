// Frames Cap'n Proto messages as self-checking byte strings.
//
// Layout: [format version, 1 byte][flat message: segment table and words]
// [CRC-32C of everything before, 4 bytes little-endian]. The version byte
// names the encoding of what follows (today only kFormatVersion); the
// checksum makes any flipped bit a detected error rather than a different
// value.

#ifndef GEOKV_SCHEMA_FRAMING_H_
#define GEOKV_SCHEMA_FRAMING_H_

#include <capnp/message.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "util/status.h"

namespace geokv {

inline constexpr uint8_t kFormatVersion = 1;

// The first segment of a message builder: a small value fits in it, and a
// large one grows more segments, so small encodings do not allocate (and
// zero) Cap'n Proto's default 8 KiB.
inline constexpr unsigned kFirstSegmentWords = 64;

// Returns the framed bytes of `message`.
std::string FrameMessage(capnp::MessageBuilder& message);

// Checks and opens framed bytes, then calls `read` with the message. Any
// failure, in the frame or while `read` walks the message (Cap'n Proto throws
// on malformed pointers), returns Corruption. Never crashes on any input.
Status ReadFramed(std::string_view bytes,
                  const std::function<Status(capnp::MessageReader&)>& read);

}  // namespace geokv

#endif  // GEOKV_SCHEMA_FRAMING_H_

#include "schema/framing.h"

#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>

#include "util/crc32c.h"

namespace geokv {
namespace {

constexpr size_t kTrailerBytes = 4;

}  // namespace

std::string FrameMessage(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  kj::ArrayPtr<const char> body = words.asChars();
  std::string out;
  out.reserve(1 + body.size() + kTrailerBytes);
  out.push_back(static_cast<char>(kFormatVersion));
  out.append(body.begin(), body.size());
  uint32_t crc = crc32c::Value(out);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(crc >> (8 * i)));
  return out;
}

Status ReadFramed(std::string_view bytes,
                  const std::function<Status(capnp::MessageReader&)>& read) {
  if (bytes.size() < 1 + sizeof(capnp::word) + kTrailerBytes) {
    return Status::Corruption("framed value too short (" + std::to_string(bytes.size()) +
                              " bytes)");
  }
  size_t body_len = bytes.size() - 1 - kTrailerBytes;
  const char* trailer = bytes.data() + bytes.size() - kTrailerBytes;
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= uint32_t{static_cast<unsigned char>(trailer[i])} << (8 * i);
  if (crc32c::Value(bytes.substr(0, 1 + body_len)) != stored) {
    return Status::Corruption("checksum mismatch");
  }
  if (static_cast<uint8_t>(bytes[0]) != kFormatVersion) {
    return Status::Corruption("unknown format version " +
                              std::to_string(static_cast<uint8_t>(bytes[0])));
  }
  if (body_len % sizeof(capnp::word) != 0) {
    return Status::Corruption("message length " + std::to_string(body_len) +
                              " is not a whole number of words");
  }
  // Cap'n Proto reads words in place, so the body must be word-aligned.
  auto words = kj::heapArray<capnp::word>(body_len / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data() + 1, body_len);
  capnp::ReaderOptions options;
  // Bounds the work a hostile message can cause to a few passes over it.
  options.traversalLimitInWords = 4 * words.size() + 64;
  Status result;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&]() {
                capnp::FlatArrayMessageReader reader(words, options);
                if (reader.getEnd() != words.end()) {
                  result = Status::Corruption("trailing bytes after message");
                  return;
                }
                result = read(reader);
              })) {
    return Status::Corruption("malformed message: " + std::string(e->getDescription().cStr()));
  }
  return result;
}

}  // namespace geokv

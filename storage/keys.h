// The key layout of the RocksDB store (docs/formats.md describes it for
// operators). Internal to storage/ and its tests.
//
// Column family "state":
//   K(key) 0x00                          -> one byte: bit (1 << type) per live type
//   K(key) type 0x00                     -> framed Value (LWW, MV, counter) or
//                                           framed SetHeader (OR-set)
//   K(key) 0x03 0x01 element             -> framed ElementDots
//   K(key) 0x03 0x02 replica:8 counter:8 -> element (the dot index)
// where K(key) is the key's length as 4 big-endian bytes, then the key.
// Column family "log":  seq:8           -> framed LogEntry
// Column family "default" (metadata): see kMeta* below.

#ifndef GEOKV_STORAGE_KEYS_H_
#define GEOKV_STORAGE_KEYS_H_

#include <string>
#include <string_view>

#include "crdt/crdt.h"
#include "util/coding.h"

namespace geokv::storage_keys {

inline constexpr char kStateFamily[] = "state";
inline constexpr char kLogFamily[] = "log";

inline constexpr char kMetaFormat[] = "format";          // one byte: kDiskFormat
inline constexpr char kMetaNodeId[] = "node_id";         // 8 bytes big-endian
inline constexpr char kMetaWriter[] = "writer";          // framed WriterState
inline constexpr char kMetaLogTrimmed[] = "log_trimmed";  // 8 bytes: trimmed through
inline constexpr char kMetaWatermarkPrefix[] = "applied/";  // + origin:8 -> seq:8

inline constexpr uint8_t kDiskFormat = 1;

inline constexpr char kObjectRow = 0x00;
inline constexpr char kElementRow = 0x01;
inline constexpr char kDotIndexRow = 0x02;

inline std::string KeyPrefix(std::string_view key) {
  std::string out;
  out.reserve(4 + key.size() + 2 + 16);
  PutBigEndian32(&out, static_cast<uint32_t>(key.size()));
  out.append(key);
  return out;
}

inline std::string LiveTypesRow(std::string_view key) {
  std::string out = KeyPrefix(key);
  out.push_back(0x00);
  return out;
}

inline std::string ObjectRow(std::string_view key, CrdtType type) {
  std::string out = KeyPrefix(key);
  out.push_back(static_cast<char>(type));
  out.push_back(kObjectRow);
  return out;
}

// The prefix of every element row of the set at `key`.
inline std::string ElementPrefix(std::string_view key) {
  std::string out = KeyPrefix(key);
  out.push_back(static_cast<char>(CrdtType::kOrSet));
  out.push_back(kElementRow);
  return out;
}

inline std::string ElementRow(std::string_view key, std::string_view element) {
  std::string out = ElementPrefix(key);
  out.append(element);
  return out;
}

// The prefix of the dot index rows of `replica` in the set at `key`.
inline std::string DotIndexPrefix(std::string_view key, ReplicaId replica) {
  std::string out = KeyPrefix(key);
  out.push_back(static_cast<char>(CrdtType::kOrSet));
  out.push_back(kDotIndexRow);
  PutBigEndian64(&out, replica);
  return out;
}

inline std::string DotIndexRow(std::string_view key, const Dot& dot) {
  std::string out = DotIndexPrefix(key, dot.replica);
  PutBigEndian64(&out, dot.counter);
  return out;
}

inline std::string LogRow(uint64_t seq) { return EncodeBigEndian64(seq); }

inline std::string WatermarkRow(ReplicaId origin) {
  std::string out = kMetaWatermarkPrefix;
  PutBigEndian64(&out, origin);
  return out;
}

}  // namespace geokv::storage_keys

#endif  // GEOKV_STORAGE_KEYS_H_

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
// Column family "tree" (the anti-entropy hash tree, storage/store.h):
//   'k' segment:2 key                    -> digest:8, of the key's element
//                                           rows (the keys with state, by
//                                           segment)
//   'd'                                  -> TreeDigests: the segments' digests
//   'n'                                  -> count:8, the keys with state
// with segment, digest and count big-endian. All three are written as
// merge operands (rocks_config.cc), never read to be written. A state row
// counts in the tree when it is an object or element row: StateRowHash
// below; the live-types and dot index rows are derived from those and do
// not count.
// Column family "default" (metadata): see kMeta* below. Among them:
//   "dropped_segments"                   -> kTreeSegments / 8 bytes, bit
//                                           (s % 8) of byte s / 8 set when a
//                                           drop removed a key of segment s
//                                           (Store::DroppedSegments); absent:
//                                           none
//   "peer_members"                       -> replication's bytes, kept as
//                                           given (Store::PeerMembers)
//   "vouched_segments"                   -> kTreeSegments / 8 bytes, the
//                                           same bitmap: the segments this
//                                           node vouched for
//                                           (Store::VouchedSegments);
//                                           absent: never written

#ifndef GEOKV_STORAGE_KEYS_H_
#define GEOKV_STORAGE_KEYS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "crdt/crdt.h"
#include "util/coding.h"
#include "util/hash.h"

namespace geokv::storage_keys {

inline constexpr char kStateFamily[] = "state";
inline constexpr char kLogFamily[] = "log";
inline constexpr char kTreeFamily[] = "tree";

inline constexpr char kMetaFormat[] = "format";          // one byte: kDiskFormat
inline constexpr char kMetaNodeId[] = "node_id";         // 8 bytes big-endian
inline constexpr char kMetaWriter[] = "writer";          // framed WriterState
inline constexpr char kMetaLogTrimmed[] = "log_trimmed";  // 8 bytes: trimmed through
inline constexpr char kMetaWatermarkPrefix[] = "applied/";  // + origin:8 -> seq:8
inline constexpr char kMetaDroppedSegments[] = "dropped_segments";  // bitmap, see above
inline constexpr char kMetaPeerMembers[] = "peer_members";  // Store::PeerMembers
inline constexpr char kMetaVouchedSegments[] = "vouched_segments";  // bitmap, see above
// This node's identity (storage/rocks_identity.cc): the replica ids it
// used before taking a new one, the run under way, the data dir's marker.
inline constexpr char kMetaRetiredPrefix[] = "retired/";  // + id:8 -> last_seq:8, reason
inline constexpr char kMetaOpenRun[] = "open_run";  // durability:1, boot id; gone at a clean close
inline constexpr char kMetaDirMarker[] = "dir_marker";  // kDirMarkerFile's inode, birth time
inline constexpr char kMetaRetireAtOpen[] = "retire_at_open";  // why the next open takes a new id
// The tombstone index (WriteGroup::CollectTombstones): a row for each LWW
// tombstone written, "tombstone/" writer:8 wall:8 logical:4 key -> "", in
// (writer, stamp) order. A row outlives its tombstone when the key is
// written again or dropped; collection checks the key before removing it.
inline constexpr char kMetaTombstonePrefix[] = "tombstone/";
// The emptied index (WriteGroup::CollectTombstones): for each key whose
// multi-value register, OR-set or counter a write here left without
// siblings, elements or increments beyond its reset floors, "emptied/"
// wall:8 logical:4 key -> "", stamped with this node's clock then, in
// stamp order; and "emptied_at/" key -> wall:8 logical:4, the stamp of
// the key's one current index row. A later write that
// leaves the key empty again replaces both; rows of keys written since are
// removed when collection visits them.
inline constexpr char kMetaEmptiedPrefix[] = "emptied/";
inline constexpr char kMetaEmptiedAtPrefix[] = "emptied_at/";
// Floors: "floor/" segment:2 -> 8 bytes, at least every counter of a dot
// this node made in a key of the segment whose rows it removed (collected
// or dropped), and every total of its own in a counter there it collected. A register or set holding no dot
// of this node numbers its next dot above its segment's floor
// (CausalContext::NextDot), and a counter holding no entry of this node
// starts it at the floor (PnCounter::Increment), so no dot is made twice
// and no total goes back.
inline constexpr char kMetaFloorPrefix[] = "floor/";
// A file in the data dir beside RocksDB's: its inode number and birth time
// tell the directory a node created from a copy of it.
inline constexpr char kDirMarkerFile[] = "GEOKV-DIR";

inline constexpr uint8_t kDiskFormat = 5;
// Format 4 lacks the emptied index; format 3 also the tombstone index;
// format 2 also the key index digests and the key count row. A store of
// any of them is migrated at open; older ones are refused.
inline constexpr uint8_t kTombstoneIndexedDiskFormat = 4;
inline constexpr uint8_t kIndexedDiskFormat = 3;
inline constexpr uint8_t kMigratedDiskFormat = 2;

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

// The prefix of every key index row.
inline constexpr char kTreeKeyIndex[] = "k";

// The prefix of the key index rows of `segment`.
inline std::string TreeKeyPrefix(size_t segment) {
  std::string out = kTreeKeyIndex;
  out.push_back(static_cast<char>(segment >> 8));
  out.push_back(static_cast<char>(segment));
  return out;
}

inline std::string TreeKeyRow(size_t segment, std::string_view key) {
  std::string out = TreeKeyPrefix(segment);
  out.append(key);
  return out;
}

// A key index row's value, and each merge operand written to it, is 8 bytes
// big-endian: the XOR of the hashes of the key's OR-set element rows (0 for
// a key without a set), or the XOR a commit applies to it. The key's digest
// is that XOR the hashes of its object rows, read with it: so only a commit
// that changes element rows writes the row, not a register or counter write.
// Present exactly while the key has an object row: a commit that first
// writes one merges the row into being, and Drop deletes it.
inline constexpr size_t kTreeKeyDigestSize = 8;

// The one row of the number of keys with state: 8 bytes big-endian. Each
// merge operand written to it is a change of the count, 8 bytes big-endian
// in two's complement, added modulo 2^64.
inline constexpr char kTreeKeyCountRow[] = "n";

// The one row of the segments' digests. Its value, and each merge operand
// written to it, is TreeDigests: entries (segment:2, digest:8), big-endian,
// in increasing segment order, none 0; an absent segment has digest 0. A
// commit merges in the XOR of its changes; merging XORs entry by entry
// (rocks_config.cc), so the row never needs reading to be written.
inline constexpr char kTreeDigestsRow[] = "d";
inline constexpr size_t kTreeDigestsEntry = 10;

// TreeDigests of the nonzero digests of `by_segment` (segment -> digest).
// REQUIRES: every segment < kTreeSegments.
template <typename Map>
std::string EncodeTreeDigests(const Map& by_segment) {
  std::string out;
  for (const auto& [segment, digest] : by_segment) {
    if (digest == 0) continue;
    out.push_back(static_cast<char>(segment >> 8));
    out.push_back(static_cast<char>(segment));
    PutBigEndian64(&out, digest);
  }
  return out;
}

// XORs the TreeDigests `bytes` into `digests` (kTreeSegments of them).
// Returns false, leaving `digests` partly changed, when `bytes` is malformed.
inline bool XorTreeDigests(std::string_view bytes, std::vector<uint64_t>* digests) {
  if (bytes.size() % kTreeDigestsEntry != 0) return false;
  for (size_t at = 0; at < bytes.size(); at += kTreeDigestsEntry) {
    const size_t segment = size_t{static_cast<uint8_t>(bytes[at])} << 8 |
                           static_cast<uint8_t>(bytes[at + 1]);
    if (segment >= digests->size()) return false;
    (*digests)[segment] ^= DecodeBigEndian64(bytes.data() + at + 2);
  }
  return true;
}

// The hash of a counted state row: its value's, seeded with its key's.
inline uint64_t StateRowHash(std::string_view row, std::string_view value) {
  return Hash64(value, Hash64(row));
}

// The prefix of the tombstone index rows of `writer`.
inline std::string TombstonePrefix(ReplicaId writer) {
  std::string out = kMetaTombstonePrefix;
  PutBigEndian64(&out, writer);
  return out;
}

// A stamp as index rows hold it: wall ms (8 bytes), logical (4), so that
// rows sort by stamp.
inline constexpr size_t kStampSize = 12;
inline void PutStamp(std::string* out, HlcTimestamp ts) {
  PutBigEndian64(out, ts.wall_ms);
  PutBigEndian32(out, ts.logical);
}
// REQUIRES: p points at kStampSize readable bytes.
inline HlcTimestamp DecodeStamp(const char* p) {
  return HlcTimestamp{DecodeBigEndian64(p), DecodeBigEndian32(p + 8)};
}

inline std::string TombstoneRow(ReplicaId writer, HlcTimestamp ts, std::string_view key) {
  std::string out = TombstonePrefix(writer);
  PutStamp(&out, ts);
  out.append(key);
  return out;
}

// The index row's parts, or false when `row` is not one.
struct TombstoneRef {
  ReplicaId writer = 0;
  HlcTimestamp stamp;
  std::string key;
};
inline bool DecodeTombstoneRow(std::string_view row, TombstoneRef* out) {
  const size_t prefix = sizeof(kMetaTombstonePrefix) - 1;
  if (row.size() < prefix + 8 + kStampSize || row.substr(0, prefix) != kMetaTombstonePrefix) {
    return false;
  }
  const char* p = row.data() + prefix;
  out->writer = DecodeBigEndian64(p);
  out->stamp = DecodeStamp(p + 8);
  out->key.assign(p + 8 + kStampSize, row.size() - prefix - 8 - kStampSize);
  return true;
}

inline std::string EmptiedRow(HlcTimestamp ts, std::string_view key) {
  std::string out = kMetaEmptiedPrefix;
  PutStamp(&out, ts);
  out.append(key);
  return out;
}

// The emptied index row's parts, or false when `row` is not one.
struct EmptiedRef {
  HlcTimestamp stamp;
  std::string key;
};
inline bool DecodeEmptiedRow(std::string_view row, EmptiedRef* out) {
  const size_t prefix = sizeof(kMetaEmptiedPrefix) - 1;
  if (row.size() < prefix + kStampSize || row.substr(0, prefix) != kMetaEmptiedPrefix) {
    return false;
  }
  out->stamp = DecodeStamp(row.data() + prefix);
  out->key.assign(row.data() + prefix + kStampSize, row.size() - prefix - kStampSize);
  return true;
}

inline std::string EmptiedAtRow(std::string_view key) {
  return std::string(kMetaEmptiedAtPrefix).append(key);
}

// An emptied_at row's value: the stamp of the key's current index row.
inline std::string EncodeEmptiedAt(HlcTimestamp ts) {
  std::string out;
  PutStamp(&out, ts);
  return out;
}

inline bool DecodeEmptiedAt(std::string_view value, HlcTimestamp* ts) {
  if (value.size() != kStampSize) return false;
  *ts = DecodeStamp(value.data());
  return true;
}

inline std::string FloorRow(size_t segment) {
  std::string out = kMetaFloorPrefix;
  out.push_back(static_cast<char>(segment >> 8));
  out.push_back(static_cast<char>(segment & 0xff));
  return out;
}

inline std::string WatermarkRow(ReplicaId origin) {
  std::string out = kMetaWatermarkPrefix;
  PutBigEndian64(&out, origin);
  return out;
}

inline std::string RetiredRow(ReplicaId id) {
  std::string out = kMetaRetiredPrefix;
  PutBigEndian64(&out, id);
  return out;
}

}  // namespace geokv::storage_keys

#endif  // GEOKV_STORAGE_KEYS_H_

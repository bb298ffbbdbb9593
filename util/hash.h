// A 64-bit hash of bytes, and the key segments built on it, that are part of
// geokv's persisted and wire formats: anti-entropy tree segments and digests,
// and the placement ring, depend on their exact outputs. They must never
// change; tests/storage/tree_test.cc pins known outputs.

#ifndef GEOKV_UTIL_HASH_H_
#define GEOKV_UTIL_HASH_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace geokv {

// MurmurHash64A (Austin Appleby, public domain), with the input read as
// little-endian 64-bit words on every platform, so that every node computes
// the same value. Not cryptographic: do not use where an adversary picks the
// input to collide.
inline uint64_t Hash64(std::string_view data, uint64_t seed = 0) {
  constexpr uint64_t kMul = 0xc6a4a7935bd1e995ULL;
  constexpr int kShift = 47;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t n = data.size();
  auto load = [p](size_t at, size_t len) {
    uint64_t v = 0;
    for (size_t i = len; i > 0; --i) v = (v << 8) | p[at + i - 1];
    return v;
  };

  uint64_t h = seed ^ (static_cast<uint64_t>(n) * kMul);
  const size_t whole = n & ~size_t{7};
  for (size_t at = 0; at < whole; at += 8) {
    uint64_t k = load(at, 8);
    k *= kMul;
    k ^= k >> kShift;
    k *= kMul;
    h ^= k;
    h *= kMul;
  }
  if (n != whole) {
    h ^= load(whole, n - whole);
    h *= kMul;
  }
  h ^= h >> kShift;
  h *= kMul;
  h ^= h >> kShift;
  return h;
}

// Keys are grouped in kSegments segments: the unit of the anti-entropy hash
// tree (storage/) and of placement (placement/), so that all keys of a tree
// segment have the same owners.
inline constexpr int kSegmentBits = 10;
inline constexpr size_t kSegments = size_t{1} << kSegmentBits;

// The segment of a key: the top kSegmentBits of Hash64(key). Part of the disk
// and wire formats.
inline size_t SegmentOf(std::string_view key) {
  return static_cast<size_t>(Hash64(key) >> (64 - kSegmentBits));
}

}  // namespace geokv

#endif  // GEOKV_UTIL_HASH_H_

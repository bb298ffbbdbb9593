// Keys with encoded CRDT values (crdt/codec.h) as they arrive from a peer,
// packed in one buffer. The loop copies a batch's bytes once and hands them
// to the writer thread, which decodes them (GroupCommitter): a batch of ten
// thousand deltas costs the loop no allocation or decode per entry.
//
// Thread safety: a plain value; one thread at a time.

#ifndef GEOKV_REPLICATION_ENCODED_JOINS_H_
#define GEOKV_REPLICATION_ENCODED_JOINS_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "crdt/crdt.h"
#include "util/status.h"

namespace geokv {

class EncodedJoins {
 public:
  // Makes room for `joins` joins of `bytes` key and value bytes in all.
  void Reserve(size_t joins, size_t bytes);
  // Appends one join; `encoded` is not checked until Decode.
  void Add(std::string_view key, std::string_view encoded);

  size_t size() const { return ends_.size(); }
  bool empty() const { return ends_.empty(); }
  // REQUIRES: i < size().
  std::string_view key(size_t i) const;
  std::string_view encoded(size_t i) const;

  // Joins i.. of this one. REQUIRES: i <= size().
  EncodedJoins From(size_t i) const;

  // Decodes every value, in order. InvalidArgument, naming the join, when
  // one does not decode.
  StatusOr<std::vector<Crdt>> Decode() const;

 private:
  // Where join i's key ends and its value ends in bytes_; its key starts
  // where join i-1's value ends.
  struct Ends {
    size_t key = 0;
    size_t value = 0;
  };
  size_t Begin(size_t i) const { return i == 0 ? 0 : ends_[i - 1].value; }

  std::string bytes_;
  std::vector<Ends> ends_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_ENCODED_JOINS_H_

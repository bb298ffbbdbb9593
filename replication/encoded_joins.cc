#include "replication/encoded_joins.h"

#include "crdt/codec.h"
#include "util/coding.h"

namespace geokv {

void EncodedJoins::Reserve(size_t joins, size_t bytes) {
  ends_.reserve(joins);
  bytes_.reserve(bytes);
}

void EncodedJoins::Add(std::string_view key, std::string_view encoded) {
  bytes_.append(key);
  const size_t key_end = bytes_.size();
  bytes_.append(encoded);
  ends_.push_back(Ends{key_end, bytes_.size()});
}

std::string_view EncodedJoins::key(size_t i) const {
  return std::string_view(bytes_).substr(Begin(i), ends_[i].key - Begin(i));
}

std::string_view EncodedJoins::encoded(size_t i) const {
  return std::string_view(bytes_).substr(ends_[i].key, ends_[i].value - ends_[i].key);
}

EncodedJoins EncodedJoins::From(size_t i) const {
  EncodedJoins out;
  out.Reserve(size() - i, bytes_.size() - Begin(i));
  for (; i < size(); ++i) out.Add(key(i), encoded(i));
  return out;
}

StatusOr<std::vector<Crdt>> EncodedJoins::Decode() const {
  std::vector<Crdt> out;
  out.reserve(size());
  for (size_t i = 0; i < size(); ++i) {
    StatusOr<Crdt> value = DecodeCrdt(encoded(i));
    if (!value.ok()) {
      return Status::InvalidArgument("the value of key '" + PrintableBytes(key(i)) +
                                     "' does not decode: " + value.status().ToString());
    }
    out.push_back(std::move(value).value());
  }
  return out;
}

}  // namespace geokv

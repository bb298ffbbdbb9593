// Causal tokens: the opaque bytes a write's reply carries and a read or a
// write presents, naming the write. Format in docs/formats.md.

#ifndef GEOKV_REPLICATION_CAUSAL_TOKEN_H_
#define GEOKV_REPLICATION_CAUSAL_TOKEN_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <capnp/list.h>

#include "crdt/hlc.h"
#include "domain/replica_id.h"
#include "util/status.h"

namespace geokv {

// Names a write: the `seq`-th entry of `origin`'s replication log. A replica
// has seen the write once it holds origin's log through seq. A write that
// changed nothing names the last entry before it (seq 0: none).
//
// `stamp` bounds the write's HLC from above (its coordinator's clock when
// the write was committed): a write that presents the token is stamped
// above it. Zero: no bound (a token of a node that did not carry stamps).
struct CausalToken {
  CausalToken() = default;
  CausalToken(ReplicaId origin_id, uint64_t log_seq, HlcTimestamp bound = {})
      : origin(origin_id), seq(log_seq), stamp(bound) {}

  ReplicaId origin = 0;
  uint64_t seq = 0;
  HlcTimestamp stamp;

  // Tokens name the same write when origin and seq agree; the stamp is a
  // bound, not part of the name.
  friend bool operator==(const CausalToken& a, const CausalToken& b) {
    return a.origin == b.origin && a.seq == b.seq;
  }
};

// The 17-byte form when the stamp is zero, else the 29-byte form.
std::string EncodeToken(const CausalToken& token);
// InvalidArgument when `bytes` is not a token, or carries a stamp that is
// not valid (HlcTimestamp::IsValid).
StatusOr<CausalToken> DecodeToken(std::string_view bytes);
// The most tokens one request may present.
inline constexpr size_t kMaxTokens = 1024;
// Every token of a request; InvalidArgument names the first bad one, or
// says there are more than kMaxTokens.
StatusOr<std::vector<CausalToken>> DecodeTokens(capnp::List<capnp::Data>::Reader list);

// The greatest stamp of `tokens` (zero when none carries one).
HlcTimestamp MaxStamp(const std::vector<CausalToken>& tokens);

}  // namespace geokv

#endif  // GEOKV_REPLICATION_CAUSAL_TOKEN_H_

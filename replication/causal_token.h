// Causal tokens: the opaque bytes a write's reply carries and a read or a
// wait presents, naming the write. Format in docs/formats.md.

#ifndef GEOKV_REPLICATION_CAUSAL_TOKEN_H_
#define GEOKV_REPLICATION_CAUSAL_TOKEN_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <capnp/list.h>

#include "domain/replica_id.h"
#include "util/status.h"

namespace geokv {

// Names a write: the `seq`-th entry of `origin`'s replication log. A replica
// has seen the write once it holds origin's log through seq. A write that
// changed nothing names the last entry before it (seq 0: none).
struct CausalToken {
  ReplicaId origin = 0;
  uint64_t seq = 0;

  friend bool operator==(const CausalToken& a, const CausalToken& b) {
    return a.origin == b.origin && a.seq == b.seq;
  }
};

std::string EncodeToken(const CausalToken& token);
// InvalidArgument when `bytes` is not a token.
StatusOr<CausalToken> DecodeToken(std::string_view bytes);
// Every token of a request; InvalidArgument names the first bad one.
StatusOr<std::vector<CausalToken>> DecodeTokens(capnp::List<capnp::Data>::Reader list);

}  // namespace geokv

#endif  // GEOKV_REPLICATION_CAUSAL_TOKEN_H_

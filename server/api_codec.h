// The opaque byte strings the client API hands out and takes back: causal
// tokens and multi-value contexts. Formats in docs/formats.md.

#ifndef GEOKV_SERVER_API_CODEC_H_
#define GEOKV_SERVER_API_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "crdt/causal_context.h"
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

// A multi-value register's context as given to clients. It carries a
// fingerprint of its key: dots are numbered per key, so a context applied to
// another key would supersede siblings it never saw.
std::string EncodeClientContext(std::string_view key, const CausalContext& context);
// Empty bytes are the empty context. InvalidArgument when `bytes` does not
// decode or belongs to another key.
StatusOr<CausalContext> DecodeClientContext(std::string_view key, std::string_view bytes);

}  // namespace geokv

#endif  // GEOKV_SERVER_API_CODEC_H_

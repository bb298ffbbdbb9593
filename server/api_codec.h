// Multi-value contexts as the client API hands them out and takes them back
// (causal tokens: replication/causal_token.h). Format in docs/formats.md.

#ifndef GEOKV_SERVER_API_CODEC_H_
#define GEOKV_SERVER_API_CODEC_H_

#include <string>
#include <string_view>

#include "crdt/causal_context.h"
#include "util/status.h"

namespace geokv {

// A multi-value register's context as given to clients. It carries a
// fingerprint of its key: dots are numbered per key, so a context applied to
// another key would supersede siblings it never saw.
std::string EncodeClientContext(std::string_view key, const CausalContext& context);
// Empty bytes are the empty context. InvalidArgument when `bytes` does not
// decode or belongs to another key.
StatusOr<CausalContext> DecodeClientContext(std::string_view key, std::string_view bytes);

}  // namespace geokv

#endif  // GEOKV_SERVER_API_CODEC_H_

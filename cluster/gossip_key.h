// The cluster keys that authenticate gossip datagrams (--gossip-key-file;
// cluster/gossip_auth.h uses them), and the file that holds them.
//
// The file holds one key a line: an id, white space, and the secret as
// `hex:` followed by hex digits or `base64:` followed by standard base64
// (e.g. `openssl rand -hex 32`). Blank lines and lines whose first
// non-blank character is '#' are skipped. The first key is the one this
// node sends under; every key listed is accepted. Operators rotate by
// adding the new key everywhere, then making it first, then removing the
// old one (docs/operations.md).
//
//   # id      secret
//   2026-12   hex:8f1c...(64 hex digits or more)
//   2026-06   base64:Zm9v...

#ifndef GEOKV_CLUSTER_GOSSIP_KEY_H_
#define GEOKV_CLUSTER_GOSSIP_KEY_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace geokv {

struct GossipKey {
  // 1 to kMaxGossipKeyIdBytes characters of [A-Za-z0-9._-]; travels in
  // every datagram, so that a receiver knows which key to check.
  std::string id;
  // kMinGossipKeyBytes to kMaxGossipKeyBytes bytes.
  std::string secret;
};

inline constexpr size_t kMaxGossipKeyIdBytes = 32;
inline constexpr size_t kMinGossipKeyBytes = 32;
inline constexpr size_t kMaxGossipKeyBytes = 128;
// A rotation needs two; a few more leave room for a mistake.
inline constexpr size_t kMaxGossipKeys = 8;

// The keys in `text` (the file's contents), in order. InvalidArgument
// naming the line and what is wrong with it: a malformed line, an id that
// is empty, too long, of other characters or listed twice, a secret that
// does not decode or is shorter than kMinGossipKeyBytes bytes or longer
// than kMaxGossipKeyBytes, more than kMaxGossipKeys keys, or none.
StatusOr<std::vector<GossipKey>> ParseGossipKeys(std::string_view text);

// Reads and parses the file at `path`. Besides ParseGossipKeys's errors,
// IOError when it cannot be read, and FailedPrecondition when it is not a
// regular file or group or others may read or write it (a secret shared
// with every user of the machine is no secret); every message names the
// path.
StatusOr<std::vector<GossipKey>> LoadGossipKeys(const std::string& path);

}  // namespace geokv

#endif  // GEOKV_CLUSTER_GOSSIP_KEY_H_

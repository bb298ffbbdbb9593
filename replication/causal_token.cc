#include "replication/causal_token.h"

#include "schema/kv_text.h"
#include "util/coding.h"

namespace geokv {
namespace {

constexpr char kTokenVersion = 1;
constexpr size_t kTokenSize = 1 + 8 + 8;
// With the write's stamp appended: wall milliseconds (8) and logical (4).
constexpr size_t kStampedTokenSize = kTokenSize + 8 + 4;

}  // namespace

std::string EncodeToken(const CausalToken& token) {
  std::string out(1, kTokenVersion);
  PutBigEndian64(&out, token.origin);
  PutBigEndian64(&out, token.seq);
  if (!token.stamp.IsZero()) {
    PutBigEndian64(&out, token.stamp.wall_ms);
    PutBigEndian32(&out, token.stamp.logical);
  }
  return out;
}

StatusOr<CausalToken> DecodeToken(std::string_view bytes) {
  if ((bytes.size() != kTokenSize && bytes.size() != kStampedTokenSize) ||
      bytes[0] != kTokenVersion) {
    return Status::InvalidArgument("not a causal token: " + PrintableBytes(bytes));
  }
  CausalToken token;
  token.origin = DecodeBigEndian64(bytes.data() + 1);
  token.seq = DecodeBigEndian64(bytes.data() + 9);
  if (bytes.size() == kStampedTokenSize) {
    token.stamp.wall_ms = DecodeBigEndian64(bytes.data() + kTokenSize);
    token.stamp.logical = DecodeBigEndian32(bytes.data() + kTokenSize + 8);
    if (!token.stamp.IsValid() || token.stamp.IsZero()) {
      return Status::InvalidArgument("causal token with an invalid stamp " +
                                     DescribeStamp(token.stamp) + ": " + PrintableBytes(bytes));
    }
  }
  return token;
}

StatusOr<std::vector<CausalToken>> DecodeTokens(capnp::List<capnp::Data>::Reader list) {
  if (list.size() > kMaxTokens) {
    return Status::InvalidArgument(std::to_string(list.size()) + " tokens in one request; at most " +
                                   std::to_string(kMaxTokens));
  }
  std::vector<CausalToken> out;
  out.reserve(list.size());
  for (auto bytes : list) {
    GEOKV_ASSIGN_OR_RETURN(CausalToken token, DecodeToken(View(bytes)));
    out.push_back(token);
  }
  return out;
}

HlcTimestamp MaxStamp(const std::vector<CausalToken>& tokens) {
  HlcTimestamp max;
  for (const CausalToken& t : tokens) {
    if (max < t.stamp) max = t.stamp;
  }
  return max;
}

}  // namespace geokv

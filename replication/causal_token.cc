#include "replication/causal_token.h"

#include "schema/kv_text.h"
#include "util/coding.h"

namespace geokv {
namespace {

constexpr char kTokenVersion = 1;
constexpr size_t kTokenSize = 1 + 8 + 8;

}  // namespace

std::string EncodeToken(const CausalToken& token) {
  std::string out(1, kTokenVersion);
  PutBigEndian64(&out, token.origin);
  PutBigEndian64(&out, token.seq);
  return out;
}

StatusOr<CausalToken> DecodeToken(std::string_view bytes) {
  if (bytes.size() != kTokenSize || bytes[0] != kTokenVersion) {
    return Status::InvalidArgument("not a causal token: " + PrintableBytes(bytes));
  }
  CausalToken token;
  token.origin = DecodeBigEndian64(bytes.data() + 1);
  token.seq = DecodeBigEndian64(bytes.data() + 9);
  return token;
}

StatusOr<std::vector<CausalToken>> DecodeTokens(capnp::List<capnp::Data>::Reader list) {
  std::vector<CausalToken> out;
  out.reserve(list.size());
  for (auto bytes : list) {
    GEOKV_ASSIGN_OR_RETURN(CausalToken token, DecodeToken(View(bytes)));
    out.push_back(token);
  }
  return out;
}

}  // namespace geokv

#include "server/api_codec.h"

#include "crdt/codec.h"
#include "util/coding.h"

namespace geokv {
namespace {

constexpr char kContextVersion = 1;

// FNV-1a, 64 bits: a guard against a context pasted onto the wrong key, not
// against an adversary (who could forge any context anyway).
uint64_t KeyFingerprint(std::string_view key) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace

std::string EncodeClientContext(std::string_view key, const CausalContext& context) {
  if (context.empty()) return {};
  std::string out(1, kContextVersion);
  PutBigEndian64(&out, KeyFingerprint(key));
  out += EncodeContext(context);
  return out;
}

StatusOr<CausalContext> DecodeClientContext(std::string_view key, std::string_view bytes) {
  if (bytes.empty()) return CausalContext();
  if (bytes.size() < 9 || bytes[0] != kContextVersion) {
    return Status::InvalidArgument("not a multi-value context");
  }
  if (DecodeBigEndian64(bytes.data() + 1) != KeyFingerprint(key)) {
    return Status::InvalidArgument("the multi-value context belongs to another key");
  }
  auto context = DecodeContext(bytes.substr(9));
  if (!context.ok()) {
    return Status::InvalidArgument("multi-value context does not decode: " +
                                   context.status().message());
  }
  return std::move(context).value();
}

}  // namespace geokv

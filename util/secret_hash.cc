#include "util/secret_hash.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <charconv>
#include <vector>

#include "util/coding.h"

namespace geokv {
namespace {

constexpr std::string_view kScheme = "pbkdf2-sha256";
constexpr size_t kSaltBytes = 16;
constexpr size_t kMaxSaltBytes = 64;
constexpr size_t kHashBytes = 32;

std::string Derive(std::string_view secret, std::string_view salt, uint32_t iterations) {
  std::string out(kHashBytes, '\0');
  PKCS5_PBKDF2_HMAC(secret.data(), static_cast<int>(secret.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()),
                    static_cast<int>(salt.size()), static_cast<int>(iterations), EVP_sha256(),
                    static_cast<int>(out.size()), reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

Status CheckIterations(uint32_t iterations) {
  if (iterations < kMinSecretIterations || iterations > kMaxSecretIterations) {
    return Status::InvalidArgument("iterations must be " + std::to_string(kMinSecretIterations) +
                                   " to " + std::to_string(kMaxSecretIterations) + ", not " +
                                   std::to_string(iterations));
  }
  return Status::OK();
}

}  // namespace

StatusOr<std::string> HashSecret(std::string_view secret, uint32_t iterations) {
  if (secret.empty() || secret.size() > kMaxSecretBytes) {
    return Status::InvalidArgument("a secret is 1 to " + std::to_string(kMaxSecretBytes) +
                                   " bytes, not " + std::to_string(secret.size()));
  }
  if (Status s = CheckIterations(iterations); !s.ok()) return s;
  std::string salt(kSaltBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), static_cast<int>(salt.size())) !=
      1) {
    return Status::IOError("the system gave no random bytes for a salt");
  }
  return std::string(kScheme) + "$" + std::to_string(iterations) + "$" + ToHex(salt) + "$" +
         ToHex(Derive(secret, salt, iterations));
}

StatusOr<SecretHash> ParseSecretHash(std::string_view encoded) {
  std::vector<std::string_view> parts;
  for (size_t pos = 0;;) {
    const size_t end = encoded.find('$', pos);
    parts.push_back(encoded.substr(pos, end == std::string_view::npos ? end : end - pos));
    if (end == std::string_view::npos || parts.size() > 4) break;
    pos = end + 1;
  }
  if (parts.size() != 4) {
    return Status::InvalidArgument("a secret hash is SCHEME$ITERATIONS$SALT$HASH");
  }
  if (parts[0] != kScheme) {
    return Status::InvalidArgument("unknown secret hash scheme '" + PrintableBytes(parts[0]) +
                                   "'; geokv makes and reads " + std::string(kScheme));
  }
  SecretHash h;
  auto [end, ec] = std::from_chars(parts[1].data(), parts[1].data() + parts[1].size(),
                                   h.iterations);
  if (ec != std::errc() || end != parts[1].data() + parts[1].size()) {
    return Status::InvalidArgument("the iterations of a secret hash are not a number");
  }
  if (Status s = CheckIterations(h.iterations); !s.ok()) return s;
  auto salt = FromHex(parts[2]);
  if (!salt || salt->size() < kSaltBytes || salt->size() > kMaxSaltBytes) {
    return Status::InvalidArgument("the salt of a secret hash must be " +
                                   std::to_string(kSaltBytes) + " to " +
                                   std::to_string(kMaxSaltBytes) + " bytes in hex");
  }
  auto hash = FromHex(parts[3]);
  if (!hash || hash->size() != kHashBytes) {
    return Status::InvalidArgument("the hash of a secret hash must be " +
                                   std::to_string(kHashBytes) + " bytes in hex");
  }
  h.salt = std::move(*salt);
  h.hash = std::move(*hash);
  return h;
}

bool SecretMatches(const SecretHash& hash, std::string_view secret) {
  const std::string derived = Derive(secret, hash.salt, hash.iterations);
  return hash.hash.size() == derived.size() &&
         CRYPTO_memcmp(derived.data(), hash.hash.data(), derived.size()) == 0;
}

}  // namespace geokv

// Salted, slow hashes of user secrets (passwords and API keys), as a users
// file stores them: PBKDF2-HMAC-SHA256 with a random 16-byte salt, written
//   pbkdf2-sha256$ITERATIONS$SALT$HASH
// with SALT and HASH in lower-case hex (docs/formats.md, Users file). A node
// keeps only these; checking a secret costs ITERATIONS rounds of HMAC, so
// guessing secrets from a stolen file, or by trying logins, is slow.

#ifndef GEOKV_UTIL_SECRET_HASH_H_
#define GEOKV_UTIL_SECRET_HASH_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "util/status.h"

namespace geokv {

// What a hash is made with unless told otherwise: OWASP's 2023 figure for
// PBKDF2-HMAC-SHA256.
inline constexpr uint32_t kDefaultSecretIterations = 600000;
// The range a stored hash's iterations must fall in: fewer would make it
// fast to guess, more would make one login take seconds.
inline constexpr uint32_t kMinSecretIterations = 1000;
inline constexpr uint32_t kMaxSecretIterations = 10000000;
// Secrets are 1 to this many bytes.
inline constexpr size_t kMaxSecretBytes = 1024;

struct SecretHash {
  uint32_t iterations = 0;
  std::string salt;  // 16 to 64 bytes
  std::string hash;  // 32 bytes
};

// A new hash of `secret` under a random salt. InvalidArgument when the
// secret is empty or over kMaxSecretBytes, or `iterations` is out of range.
StatusOr<std::string> HashSecret(std::string_view secret,
                                 uint32_t iterations = kDefaultSecretIterations);

// The parts of an encoded hash; InvalidArgument saying what is wrong.
StatusOr<SecretHash> ParseSecretHash(std::string_view encoded);

// Whether `secret` is the one `hash` was made from. Takes `hash.iterations`
// rounds whatever the answer; compares in constant time.
bool SecretMatches(const SecretHash& hash, std::string_view secret);

}  // namespace geokv

#endif  // GEOKV_UTIL_SECRET_HASH_H_

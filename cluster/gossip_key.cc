#include "cluster/gossip_key.h"

#include <openssl/evp.h>

#include <algorithm>
#include <optional>
#include <set>

#include "util/coding.h"
#include "util/private_file.h"

namespace geokv {
namespace {

// A key file is a few lines; anything larger is not one.
constexpr size_t kMaxFileBytes = 64 << 10;

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-';
}

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

// Standard base64 with padding; nullopt for anything else.
std::optional<std::string> FromBase64(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0 || text.size() > 4 * kMaxGossipKeyBytes) {
    return std::nullopt;
  }
  size_t padding = 0;
  while (padding < 2 && text[text.size() - 1 - padding] == '=') ++padding;
  if (text.substr(0, text.size() - padding).find('=') != std::string_view::npos) {
    return std::nullopt;
  }
  std::string out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size()) return std::nullopt;
  out.resize(out.size() - padding);
  return out;
}

Status LineError(size_t line, const std::string& what) {
  return Status::InvalidArgument("line " + std::to_string(line) + ": " + what);
}

}  // namespace

StatusOr<std::vector<GossipKey>> ParseGossipKeys(std::string_view text) {
  std::vector<GossipKey> keys;
  std::set<std::string> ids;
  size_t number = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = std::min(text.find('\n', pos), text.size());
    std::string_view line = Trim(text.substr(pos, end - pos));
    pos = end + 1;
    ++number;
    if (line.empty() || line.front() == '#') continue;
    size_t gap = 0;
    while (gap < line.size() && !IsBlank(line[gap])) ++gap;
    const std::string_view id = line.substr(0, gap);
    const std::string_view secret = Trim(line.substr(gap));
    if (secret.empty()) return LineError(number, "expected 'ID hex:SECRET' or 'ID base64:SECRET'");
    if (id.size() > kMaxGossipKeyIdBytes || !std::all_of(id.begin(), id.end(), IsIdChar)) {
      return LineError(number, "the key id '" + PrintableBytes(id) + "' is not 1 to " +
                                   std::to_string(kMaxGossipKeyIdBytes) +
                                   " characters of A-Z a-z 0-9 . _ -");
    }
    if (!ids.insert(std::string(id)).second) {
      return LineError(number, "the key id '" + std::string(id) + "' is listed twice");
    }
    std::optional<std::string> bytes;
    if (secret.rfind("hex:", 0) == 0) {
      bytes = FromHex(secret.substr(4));
      if (!bytes) return LineError(number, "key '" + std::string(id) + "': not hex digits");
    } else if (secret.rfind("base64:", 0) == 0) {
      bytes = FromBase64(secret.substr(7));
      if (!bytes) return LineError(number, "key '" + std::string(id) + "': not padded base64");
    } else {
      return LineError(number, "key '" + std::string(id) +
                                   "': the secret must start with 'hex:' or 'base64:'");
    }
    if (bytes->size() < kMinGossipKeyBytes || bytes->size() > kMaxGossipKeyBytes) {
      return LineError(number, "key '" + std::string(id) + "' is " +
                                   std::to_string(bytes->size()) + " bytes; it must be " +
                                   std::to_string(kMinGossipKeyBytes) + " to " +
                                   std::to_string(kMaxGossipKeyBytes));
    }
    if (keys.size() == kMaxGossipKeys) {
      return LineError(number, "more than " + std::to_string(kMaxGossipKeys) + " keys");
    }
    keys.push_back(GossipKey{std::string(id), std::move(*bytes)});
  }
  if (keys.empty()) return Status::InvalidArgument("holds no key");
  return keys;
}

StatusOr<std::vector<GossipKey>> LoadGossipKeys(const std::string& path) {
  const std::string what = "gossip key file";
  auto text = ReadPrivateFile(path, what, kMaxFileBytes);
  if (!text.ok()) return text.status();
  auto keys = ParseGossipKeys(*text);
  if (!keys.ok()) return keys.status().WithContext(what + " " + path);
  return keys;
}

}  // namespace geokv

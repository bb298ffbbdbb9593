#include "cluster/gossip_auth.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cassert>
#include <utility>

#include "util/coding.h"

namespace geokv {
namespace {

constexpr char kMagic[] = "GKVA";
constexpr size_t kMagicBytes = 4;
constexpr uint8_t kEnvelopeVersion = 1;
constexpr size_t kMacBytes = 32;
// Sender id, recipient id, stamp.
constexpr size_t kIdsAndStampBytes = 24;

using Micros = std::chrono::microseconds;

std::string Mac(const GossipKey& key, std::string_view bytes) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.secret.data(), static_cast<int>(key.secret.size()),
       reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), out, &n);
  assert(n == kMacBytes);
  return std::string(reinterpret_cast<const char*>(out), n);
}

// "12.5 s" for a span of microseconds.
std::string Seconds(uint64_t micros) {
  return fmt::format("{:.1f} s", static_cast<double>(micros) / 1e6);
}

}  // namespace

std::string_view GossipRefusalName(GossipRefusal refusal) {
  switch (refusal) {
    case GossipRefusal::kUnauthenticated:
      return "unauthenticated";
    case GossipRefusal::kMalformed:
      return "malformed";
    case GossipRefusal::kUnknownKey:
      return "unknown_key";
    case GossipRefusal::kBadMac:
      return "bad_mac";
    case GossipRefusal::kMisdirected:
      return "misdirected";
    case GossipRefusal::kStale:
      return "stale";
    case GossipRefusal::kReplayed:
      return "replayed";
  }
  return "unknown";
}

GossipAuthenticator::GossipAuthenticator(GossipAuthOptions options, ReplicaId self)
    : options_(std::move(options)), self_(self) {
  const uint64_t now = NowMicros();
  const auto slack = static_cast<uint64_t>(Micros(options_.start_slack).count());
  start_floor_ = now > slack ? now - slack : 0;
}

uint64_t GossipAuthenticator::NowMicros() const {
  const auto now = options_.wall_clock ? options_.wall_clock() : std::chrono::system_clock::now();
  const auto micros = std::chrono::duration_cast<Micros>(now.time_since_epoch()).count();
  return micros > 0 ? static_cast<uint64_t>(micros) : 0;
}

const GossipKey* GossipAuthenticator::FindKey(std::string_view id, size_t* index) const {
  for (size_t i = 0; i < options_.keys.size(); ++i) {
    if (options_.keys[i].id == id) {
      *index = i;
      return &options_.keys[i];
    }
  }
  return nullptr;
}

void GossipAuthenticator::SetKeys(std::vector<GossipKey> keys) {
  std::vector<std::string> old_ids;
  for (const GossipKey& k : options_.keys) old_ids.push_back(k.id);
  options_.keys = std::move(keys);
  for (auto& [id, sender] : senders_) {
    size_t index = 0;
    sender.key = sender.key < old_ids.size() && FindKey(old_ids[sender.key], &index) ? index : 0;
  }
}

std::string GossipAuthenticator::Seal(std::string_view packet, ReplicaId recipient) {
  if (!enabled()) return std::string(packet);
  size_t index = 0;
  if (recipient != 0) {
    auto it = senders_.find(recipient);
    if (it != senders_.end()) index = it->second.key;
  }
  const GossipKey& key = options_.keys[index];
  last_stamp_ = std::max(last_stamp_ + 1, NowMicros());

  std::string out;
  out.reserve(kMagicBytes + 2 + key.id.size() + kIdsAndStampBytes + packet.size() + kMacBytes);
  out.append(kMagic, kMagicBytes);
  out.push_back(static_cast<char>(kEnvelopeVersion));
  out.push_back(static_cast<char>(key.id.size()));
  out += key.id;
  PutBigEndian64(&out, self_);
  PutBigEndian64(&out, recipient);
  PutBigEndian64(&out, last_stamp_);
  out.append(packet.data(), packet.size());
  out += Mac(key, out);
  return out;
}

std::optional<GossipRefusal> GossipAuthenticator::Open(std::string_view datagram,
                                                        std::string_view* packet,
                                                        std::string* detail) {
  if (datagram.substr(0, kMagicBytes) != std::string_view(kMagic, kMagicBytes)) {
    if (enabled() && !options_.accept_unauthenticated) {
      *detail = "a datagram without the GKVA envelope (a node without --gossip-key-file?)";
      return GossipRefusal::kUnauthenticated;
    }
    *packet = datagram;
    return std::nullopt;
  }

  // The envelope, every length checked before it is used.
  const size_t fixed = kMagicBytes + 2;
  if (datagram.size() < fixed) {
    *detail = "an envelope of " + std::to_string(datagram.size()) + " bytes";
    return GossipRefusal::kMalformed;
  }
  const auto version = static_cast<uint8_t>(datagram[kMagicBytes]);
  const auto id_bytes = static_cast<uint8_t>(datagram[kMagicBytes + 1]);
  if (version != kEnvelopeVersion) {
    *detail = "envelope version " + std::to_string(version) + " (this node speaks " +
              std::to_string(kEnvelopeVersion) + ")";
    return GossipRefusal::kMalformed;
  }
  const size_t header = fixed + id_bytes + kIdsAndStampBytes;
  if (id_bytes == 0 || id_bytes > kMaxGossipKeyIdBytes || datagram.size() <= header + kMacBytes) {
    *detail = "an envelope of " + std::to_string(datagram.size()) + " bytes with a key id of " +
              std::to_string(id_bytes);
    return GossipRefusal::kMalformed;
  }
  const std::string_view key_id = datagram.substr(fixed, id_bytes);
  const char* ids = datagram.data() + fixed + id_bytes;
  const ReplicaId sender = DecodeBigEndian64(ids);
  const ReplicaId recipient = DecodeBigEndian64(ids + 8);
  const uint64_t stamp = DecodeBigEndian64(ids + 16);
  const std::string_view body = datagram.substr(header, datagram.size() - header - kMacBytes);
  if (!enabled()) {
    *packet = body;
    return std::nullopt;
  }

  size_t index = 0;
  const GossipKey* key = FindKey(key_id, &index);
  if (key == nullptr) {
    *detail = "key id '" + PrintableBytes(key_id) + "', which this node does not hold";
    return GossipRefusal::kUnknownKey;
  }
  const std::string_view sealed = datagram.substr(0, datagram.size() - kMacBytes);
  const std::string expected = Mac(*key, sealed);
  if (CRYPTO_memcmp(expected.data(), datagram.data() + sealed.size(), kMacBytes) != 0) {
    *detail = "a MAC that does not match under key '" + key->id + "'";
    return GossipRefusal::kBadMac;
  }
  const std::string from = fmt::format("member {:016x}", sender);
  if (recipient != 0 && recipient != self_) {
    *detail = fmt::format("from {}, meant for member {:016x}", from, recipient);
    return GossipRefusal::kMisdirected;
  }
  const uint64_t now = NowMicros();
  const auto window = static_cast<uint64_t>(Micros(options_.window).count());
  if (stamp + window < now || stamp > now + window) {
    *detail = fmt::format("from {}, stamped {} {} this node's clock (window {})", from,
                          Seconds(stamp < now ? now - stamp : stamp - now),
                          stamp < now ? "behind" : "ahead of", Seconds(window));
    return GossipRefusal::kStale;
  }
  auto it = senders_.find(sender);
  const uint64_t initial_floor = std::max(start_floor_, evicted_floor_);
  const uint64_t floor = it == senders_.end() ? initial_floor : it->second.floor;
  if (stamp <= floor || (it != senders_.end() && it->second.stamps.count(stamp) != 0)) {
    *detail = fmt::format("from {}, stamped {} before now, already accepted or older than "
                          "what this node still tells apart",
                          from, Seconds(now > stamp ? now - stamp : 0));
    return GossipRefusal::kReplayed;
  }

  // Accepted: remember it.
  if (it == senders_.end()) {
    if (senders_.size() >= options_.max_senders) {
      auto oldest = std::min_element(senders_.begin(), senders_.end(), [](const auto& a,
                                                                           const auto& b) {
        return a.second.heard < b.second.heard;
      });
      const Sender& gone = oldest->second;
      evicted_floor_ =
          std::max({evicted_floor_, gone.floor, gone.stamps.empty() ? 0 : *gone.stamps.rbegin()});
      senders_.erase(oldest);
    }
    Sender fresh;
    fresh.floor = initial_floor;
    it = senders_.emplace(sender, std::move(fresh)).first;
  }
  Sender& s = it->second;
  s.stamps.insert(stamp);
  s.key = index;
  s.heard = ++tick_;
  Expire(s, now);
  while (s.stamps.size() > options_.max_stamps_per_sender) {
    s.floor = *s.stamps.begin();
    s.stamps.erase(s.stamps.begin());
  }
  *packet = body;
  return std::nullopt;
}

void GossipAuthenticator::Expire(Sender& sender, uint64_t now) const {
  const auto window = static_cast<uint64_t>(Micros(options_.window).count());
  while (!sender.stamps.empty() && *sender.stamps.begin() + window < now) {
    sender.floor = std::max(sender.floor, *sender.stamps.begin());
    sender.stamps.erase(sender.stamps.begin());
  }
}

}  // namespace geokv

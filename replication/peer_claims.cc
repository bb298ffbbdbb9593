#include "replication/peer_claims.h"

#include <fmt/format.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "util/coding.h"

namespace geokv {

std::string_view PeerClaimName(PeerClaim claim) {
  switch (claim) {
    case PeerClaim::kOrigin: return "origin";
    case PeerClaim::kBatchRange: return "batch_range";
    case PeerClaim::kRepairedPosition: return "repaired_position";
    case PeerClaim::kReplicaId: return "replica_id";
    case PeerClaim::kAcknowledgedPosition: return "acknowledged_position";
  }
  return "unknown";
}

Status CheckBatchRange(ReplicaId origin, uint64_t from, uint64_t through) {
  if (through - from > kMaxBatchPositions) {
    return Status::InvalidArgument(fmt::format(
        "a batch of the log of {:016x} covers positions {} to {}, {} positions; a batch covers "
        "at most {}",
        origin, from + 1, through, through - from, kMaxBatchPositions));
  }
  if (through >= kMaxLogPosition) {
    return Status::InvalidArgument(
        fmt::format("a batch of the log of {:016x} runs through position {}, past any log ({})",
                    origin, through, kMaxLogPosition));
  }
  return Status::OK();
}

Status CheckRepairedPosition(ReplicaId origin, uint64_t through) {
  if (through >= kMaxLogPosition) {
    return Status::InvalidArgument(fmt::format(
        "a repair of the log of {:016x} is said to run through position {}, past any log ({})",
        origin, through, kMaxLogPosition));
  }
  return Status::OK();
}

Status CheckAcknowledgedPosition(uint64_t held, uint64_t last, uint64_t held_at_hello) {
  if (held <= last || held <= held_at_hello) return Status::OK();
  return Status::InvalidArgument(fmt::format(
      "the peer answers that it holds this node's log through {}, past its last entry {}", held,
      last));
}

Status CheckHeldAtHello(uint64_t held) {
  if (held < kMaxLogPosition) return Status::OK();
  return Status::InvalidArgument(fmt::format(
      "the peer answers hello that it holds this node's log through {}, past any log ({})", held,
      kMaxLogPosition));
}

Status CheckHelloIdentity(const std::vector<KnownNode>& known, ReplicaId id,
                          std::string_view name, std::string_view region,
                          const std::vector<ReplicaId>& retired) {
  // Another's id is named first, whatever the order of `known`.
  for (const KnownNode& k : known) {
    if (k.id == id && (k.name != name || k.region != region)) {
      return Status::InvalidArgument(fmt::format(
          "a hello as {} of region {} claims replica id {:016x}, which is {} of region {}",
          PrintableBytes(name), PrintableBytes(region), id, PrintableBytes(k.name),
          PrintableBytes(k.region)));
    }
  }
  for (const KnownNode& k : known) {
    if (k.name == name && k.region == region && k.id != id &&
        std::find(retired.begin(), retired.end(), k.id) == retired.end()) {
      return Status::InvalidArgument(fmt::format(
          "a hello as {} of region {} claims replica id {:016x}, but this node knows it as "
          "{:016x}, not retired; a node that lost its data dir is removed first "
          "(geokv-cli remove)",
          PrintableBytes(name), PrintableBytes(region), id, k.id));
    }
  }
  return Status::OK();
}

ClaimRefusals::ClaimRefusals(Metrics* metrics) : metrics_(metrics) {
  if (metrics_ == nullptr) return;
  for (size_t i = 0; i < kPeerClaims; ++i) {
    metrics_->PeerClaimRefused(std::string(PeerClaimName(static_cast<PeerClaim>(i))));
  }
}

void ClaimRefusals::Refuse(PeerClaim claim, std::string_view region, const Status& why) {
  const std::string name(PeerClaimName(claim));
  if (metrics_ != nullptr) metrics_->PeerClaimRefused(name).Increment();
  uint64_t held_back = 0;
  if (log_.Allow(LogLimiter::Clock::now(), &held_back)) {
    spdlog::warn("refused a claim of a node of region {} ({}): {}{}", PrintableBytes(region),
                 name, why.message(),
                 held_back == 0 ? std::string()
                                : fmt::format(" (and {} more refusals since the last message)",
                                              held_back));
  }
  kj::throwFatalException(
      kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::str(why.message())));
}

}  // namespace geokv

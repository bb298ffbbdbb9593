#include "placement/ring.h"

#include <algorithm>
#include <string>
#include <utility>

#include "util/coding.h"

namespace geokv {
namespace {

uint64_t SegmentStart(size_t segment) {
  return static_cast<uint64_t>(segment) << (64 - kSegmentBits);
}

}  // namespace

Ring::Ring(std::vector<ReplicaId> nodes, size_t vnodes)
    : nodes_(std::move(nodes)), vnodes_(vnodes) {
  std::sort(nodes_.begin(), nodes_.end());
  nodes_.erase(std::unique(nodes_.begin(), nodes_.end()), nodes_.end());
  tokens_.reserve(nodes_.size() * vnodes_);
  for (ReplicaId node : nodes_) {
    const std::string id = EncodeBigEndian64(node);
    for (size_t i = 0; i < vnodes_; ++i) tokens_.push_back(Token{Hash64(id, i), node});
  }
  std::sort(tokens_.begin(), tokens_.end(), [](const Token& a, const Token& b) {
    return a.position != b.position ? a.position < b.position : a.node < b.node;
  });
  if (tokens_.empty()) return;

  first_token_.resize(kSegments);
  for (size_t s = 0; s < kSegments; ++s) {
    auto it = std::lower_bound(tokens_.begin(), tokens_.end(), SegmentStart(s),
                               [](const Token& t, uint64_t p) { return t.position < p; });
    first_token_[s] = it == tokens_.end() ? 0 : static_cast<size_t>(it - tokens_.begin());
  }
  precomputed_ = std::min(kPrecomputedOwners, nodes_.size());
  owners_.reserve(kSegments * precomputed_);
  for (size_t s = 0; s < kSegments; ++s) {
    const size_t begin = owners_.size();
    for (size_t i = first_token_[s]; owners_.size() - begin < precomputed_;
         i = (i + 1) % tokens_.size()) {
      const ReplicaId node = tokens_[i].node;
      if (std::find(owners_.begin() + begin, owners_.end(), node) == owners_.end()) {
        owners_.push_back(node);
      }
    }
  }
}

template <typename Visit>
void Ring::ForEachOwner(size_t segment, size_t n, Visit&& visit) const {
  if (segment >= kSegments || tokens_.empty()) return;
  n = std::min(n, nodes_.size());
  if (n <= precomputed_) {
    const ReplicaId* owners = owners_.data() + segment * precomputed_;
    for (size_t i = 0; i < n; ++i) {
      if (!visit(owners[i])) return;
    }
    return;
  }
  // Beyond the precomputed owners: walk the ring, marking nodes by index.
  std::vector<bool> seen(nodes_.size());
  size_t found = 0;
  for (size_t i = first_token_[segment]; found < n; i = (i + 1) % tokens_.size()) {
    const ReplicaId node = tokens_[i].node;
    const size_t index = std::lower_bound(nodes_.begin(), nodes_.end(), node) - nodes_.begin();
    if (seen[index]) continue;
    seen[index] = true;
    ++found;
    if (!visit(node)) return;
  }
}

std::vector<ReplicaId> Ring::SegmentOwners(size_t segment, size_t n) const {
  std::vector<ReplicaId> out;
  out.reserve(std::min(n, nodes_.size()));
  ForEachOwner(segment, n, [&out](ReplicaId node) {
    out.push_back(node);
    return true;
  });
  return out;
}

std::vector<ReplicaId> Ring::Owners(std::string_view key, size_t n) const {
  return SegmentOwners(SegmentOf(key), n);
}

bool Ring::Owns(ReplicaId node, size_t segment, size_t n) const {
  bool owns = false;
  ForEachOwner(segment, n, [&](ReplicaId owner) {
    owns = owner == node;
    return !owns;
  });
  return owns;
}

std::vector<bool> Ring::OwnedSegments(ReplicaId node, size_t n) const {
  std::vector<bool> out(kSegments);
  for (size_t s = 0; s < kSegments; ++s) out[s] = Owns(node, s, n);
  return out;
}

double Ring::PrimaryShare(ReplicaId node) const {
  if (precomputed_ == 0) return 0;
  size_t primary = 0;
  for (size_t s = 0; s < kSegments; ++s) primary += owners_[s * precomputed_] == node;
  return static_cast<double>(primary) / kSegments;
}

double MovedFraction(const Ring& before, const Ring& after, size_t n) {
  size_t moved = 0;
  size_t total = 0;
  for (size_t s = 0; s < kSegments; ++s) {
    const std::vector<ReplicaId> now = after.SegmentOwners(s, n);
    const std::vector<ReplicaId> then = before.SegmentOwners(s, n);
    for (ReplicaId node : now) {
      moved += std::find(then.begin(), then.end(), node) == then.end();
    }
    total += now.size();
  }
  return total == 0 ? 0 : static_cast<double>(moved) / total;
}

double IdealMovedFraction(const Ring& before, const Ring& after, size_t n) {
  const size_t count_after = after.nodes().size();
  const size_t count_before = before.nodes().size();
  if (count_after == 0 || n == 0) return 0;
  const double fair_after = static_cast<double>(std::min(n, count_after)) / count_after;
  const double fair_before =
      count_before == 0 ? 0 : static_cast<double>(std::min(n, count_before)) / count_before;
  double gained = 0;
  for (ReplicaId node : after.nodes()) {
    const bool survivor =
        std::binary_search(before.nodes().begin(), before.nodes().end(), node);
    gained += std::max(0.0, fair_after - (survivor ? fair_before : 0));
  }
  return gained / std::min(n, count_after);
}

std::vector<double> RelativeLoads(const Ring& ring, size_t n) {
  const size_t nodes = ring.nodes().size();
  const double fair = static_cast<double>(kSegments) * std::min(n, nodes) / nodes;
  std::vector<double> out;
  for (ReplicaId node : ring.nodes()) {
    const std::vector<bool> owned = ring.OwnedSegments(node, n);
    out.push_back(std::count(owned.begin(), owned.end(), true) / fair);
  }
  return out;
}

}  // namespace geokv

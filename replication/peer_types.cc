#include "replication/peer_types.h"

#include <set>

namespace geokv {

StatusOr<std::vector<PeerAddress>> ParsePeers(std::string_view spec, std::string_view own_region) {
  std::vector<PeerAddress> out;
  std::set<std::string> regions;
  size_t pos = 0;
  while (pos <= spec.size() && !spec.empty()) {
    size_t comma = spec.find(',', pos);
    std::string_view entry =
        spec.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    size_t eq = entry.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == entry.size() ||
        entry.find(':', eq) == std::string_view::npos) {
      return Status::InvalidArgument("peer '" + std::string(entry) +
                                     "' is not REGION=HOST:PORT");
    }
    PeerAddress peer{std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1))};
    if (peer.region == own_region) {
      return Status::InvalidArgument("peer '" + std::string(entry) +
                                     "' is in this node's own region " + peer.region);
    }
    if (!regions.insert(peer.region).second) {
      return Status::InvalidArgument("region " + peer.region + " is named twice in --peers");
    }
    out.push_back(std::move(peer));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

}  // namespace geokv

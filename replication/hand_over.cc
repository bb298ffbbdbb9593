#include "replication/hand_over.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>
#include <string_view>

#include "replication/peer_wire.h"
#include "replication/set_paging.h"

namespace geokv {
namespace {

// One chunk of a hand-over: the states sent, and the keys (with the digests
// sent) to drop once every owner holds them.
struct HandOffChunk {
  EncodedStatesList states;
  std::vector<std::string> paged;  // keys whose OR-set goes in pages
  RemoteApply drops;
  size_t bytes = 0;
  size_t to = 0;
};

kj::Promise<HandOffChunk> ReadHandOffChunk(AsyncStore& reader, const std::vector<KeyDigest>& keys,
                                           size_t from, size_t batch_bytes,
                                           size_t max_message_bytes) {
  std::vector<KeyDigest> slice(keys.begin() + from,
                               keys.begin() + std::min(keys.size(), from + HandOver::kChunkKeys));
  return reader.RunBackground([slice = std::move(slice), from, batch_bytes,
                               max_message_bytes](Store& s) {
    HandOffChunk out;
    size_t i = 0;
    for (; i < slice.size() && (i == 0 || out.bytes < batch_bytes); ++i) {
      EncodedKeyStates encoded = EncodeKeyStates(s, slice[i].key, max_message_bytes);
      if (encoded.encoded.empty() && !encoded.paged_set) continue;  // cannot travel: kept here
      out.bytes += encoded.bytes + slice[i].key.size();
      if (encoded.paged_set) out.paged.push_back(slice[i].key);
      if (!encoded.encoded.empty()) out.states.emplace_back(slice[i].key, std::move(encoded.encoded));
      out.drops.drops.emplace_back(slice[i].key, slice[i].digest);
    }
    out.to = from + i;
    return out;
  });
}

}  // namespace

kj::Promise<void> HandOver::Run() {
  const auto interval = std::min(env_.options.anti_entropy_interval, std::chrono::milliseconds(1000));
  return env_.timer
      .afterDelay(ToKj(interval))
      .then([this] { return Pass(); })
      .catch_([](kj::Exception&& e) {
        spdlog::warn("rebalancing pass failed: {}", e.getDescription().cStr());
      })
      .then([this] { return Run(); });
}

size_t HandOver::UnsettledCount() const {
  size_t n = 0;
  for (size_t s = 0; s < kTreeSegments; ++s) {
    if (!env_.own_segments.empty() && env_.own_segments[s] && !Settled(s)) ++n;
  }
  return n;
}

void HandOver::UnsettleAll() {
  for (size_t s = 0; s < kTreeSegments; ++s) {
    if (env_.own_segments.empty() || env_.own_segments[s]) {
      unsettled_[s] = true;
      ++generation_[s];
    }
  }
}

void HandOver::PlacementChanged(const std::vector<bool>& before) {
  for (size_t s = 0; s < env_.own_segments.size() && s < kTreeSegments; ++s) {
    const bool owned_before = s < before.size() && before[s];
    if (env_.own_segments[s] && !owned_before && !unsettled_[s]) {
      unsettled_[s] = true;
      ++generation_[s];
    }
    if (!env_.own_segments[s]) {
      arriving_[s] = false;
    } else if (!owned_before && (!before.empty() || ArrivingAtStart(s)) && unsettled_[s]) {
      arriving_[s] = true;
    }
  }
  KeepVouched();
}

void HandOver::KeepVouched() {
  if (writing_vouched_ || env_.own_segments.empty()) return;
  writing_vouched_ = true;
  vouched_write_ = WriteVouched().eagerlyEvaluate([this](kj::Exception&& e) {
    writing_vouched_ = false;
    spdlog::warn("cannot record the segments this node vouches for: {}",
                 e.getDescription().cStr());
  });
}

kj::Promise<void> HandOver::WriteVouched() {
  std::vector<bool> vouched(kTreeSegments, false);
  for (size_t s = 0; s < kTreeSegments; ++s) vouched[s] = Vouches(s);
  if (vouched == written_vouched_) {
    writing_vouched_ = false;
    return kj::READY_NOW;
  }
  RemoteApply apply;
  apply.vouched_segments = vouched;
  return env_.committer.SubmitRemote(std::move(apply))
      .then([this, vouched = std::move(vouched)](WriteResult r) mutable {
        KJ_REQUIRE(r.status.ok(), "commit failed", r.status.ToString());
        written_vouched_ = std::move(vouched);
        return WriteVouched();
      });
}

kj::Promise<void> HandOver::Pass() {
  KeepVouched();  // after a failed write
  // With a segment unsettled, the tree digests of every other member of the
  // region: a segment whose digest equals an owner's is in step with it
  // already, and no member that is not an owner may still hold its keys.
  bool unsettled = false;
  for (size_t s = 0; s < kTreeSegments && !env_.own_segments.empty() && !unsettled; ++s) {
    unsettled = env_.own_segments[s] && !Settled(s) && !Dropped(s);
  }
  std::vector<ReplicaId> members;
  if (unsettled) members = links_.RegionMembers();
  kj::Vector<kj::Promise<std::pair<ReplicaId, Remote>>> answers;
  for (ReplicaId id : members) {
    if (!links_.IsConnected(id)) continue;
    answers.add(links_.Session(id).treeDigestsRequest().send().then(
        [id](auto&& resp) {
          Remote r;
          for (uint64_t d : resp.getDigests()) r.digests.push_back(d);
          auto owned = resp.getOwned();
          if (owned.size() > 0 && !DecodeSegmentSet(View(owned), &r.owned)) {
            r.owned.assign(kTreeSegments, true);  // a set of the wrong size: may own any
          }
          r.coverage = ReadPositions(resp.getCoverage());
          return std::make_pair(id, std::move(r));
        },
        [id](kj::Exception&&) { return std::make_pair(id, Remote{}); }));
  }
  return kj::joinPromises(answers.releaseAsArray())
      .then([this](kj::Array<std::pair<ReplicaId, Remote>> answered) {
        std::map<ReplicaId, Remote> remote;
        for (auto& [id, r] : answered) {
          if (!r.digests.empty()) remote[id] = std::move(r);
        }
        return PassWith(remote);
      });
}

bool HandOver::HeldOnlyByOwners(size_t segment, const std::vector<ReplicaId>& owners,
                                const std::vector<ReplicaId>& members,
                                const std::map<ReplicaId, Remote>& remote) {
  for (ReplicaId id : members) {
    if (std::find(owners.begin(), owners.end(), id) != owners.end()) continue;
    auto r = remote.find(id);
    if (r == remote.end() || r->second.digests.size() != kTreeSegments) return false;
    if (r->second.digests[segment] != 0) return false;
    if (!r->second.owned.empty() && r->second.owned[segment]) return false;
  }
  return true;
}

kj::Promise<void> HandOver::PassWith(const std::map<ReplicaId, Remote>& remote) {
  std::vector<uint64_t> digests = env_.store.TreeDigests();
  const std::vector<ReplicaId> members = links_.RegionMembers();
  const kj::TimePoint now = env_.timer.now();
  kj::Promise<void> pass = kj::READY_NOW;
  size_t handing = 0;
  for (size_t s = 0; s < digests.size() && !env_.own_segments.empty(); ++s) {
    std::vector<ReplicaId> owners = links_.RegionOwners(s);
    bool reachable = !owners.empty() &&
                     std::all_of(owners.begin(), owners.end(),
                                 [this](ReplicaId id) { return links_.IsConnected(id); });
    const bool unsettled = env_.own_segments[s] && unsettled_[s] && !Dropped(s) &&
                           HeldOnlyByOwners(s, owners, members, remote);
    if (unsettled && owners.empty() && !trim_held_) {
      MarkSettled(s);  // no other owner to miss anything from
    } else if (unsettled && reachable) {
      std::vector<ReplicaId> differing;
      for (ReplicaId id : owners) {
        auto r = remote.find(id);
        if (r == remote.end() || r->second.digests.size() != digests.size() ||
            r->second.digests[s] != digests[s]) {
          differing.push_back(id);
        } else if (env_.coverage != nullptr && !r->second.owned.empty() && r->second.owned[s]) {
          // (Its coverage is of the segments it says it owns.)
          env_.coverage->InStep(s, r->second.coverage);
        }
      }
      pass = pass.then([this, s, differing = std::move(differing), gen = generation_[s]]() mutable {
        return Settle(s, std::move(differing), gen);
      });
    }
    if (digests[s] != 0 && !env_.own_segments[s] && reachable) {
      auto retry = retries_.find(s);
      if (retry != retries_.end() && now < retry->second.next) continue;
      ++handing;
      pass = pass.then([this, s, owners, before = digests[s]] {
        return HandOff(s, owners)
            .then([this, s, before] { Retried(s, before, ""); },
                  [this, s, before](kj::Exception&& e) {
                    Retried(s, before, e.getDescription().cStr());
                  });
      });
    } else if (Syncing(s) && reachable) {
      // Links are looked up when used: one may close meanwhile.
      pass = pass.then([this, s, owner = owners.front()] {
        return links_.SyncSegment(owner, static_cast<uint32_t>(s)).then([this, s] {
          return ClearDropped(s);
        });
      });
    } else if (Syncing(s) && owners.empty() && !trim_held_) {
      // No other node of the region (as gossip knows it) owns it: the nodes
      // it went to handed it back before they left.
      pass = pass.then([this, s] { return ClearDropped(s); });
    }
  }
  if (handing > 0) spdlog::info("handing {} segments over to their owners", handing);
  return pass;
}

kj::Promise<void> HandOver::Settle(size_t segment, std::vector<ReplicaId> owners,
                                   uint64_t generation) {
  kj::Promise<void> synced = kj::READY_NOW;
  for (ReplicaId id : owners) {
    synced = synced.then([this, segment, id] {
      return links_.SyncSegment(id, static_cast<uint32_t>(segment));
    });
  }
  return synced.then(
      [this, segment, generation] {
        if (generation_[segment] == generation) MarkSettled(segment);
      },
      [segment](kj::Exception&& e) {
        spdlog::info("segment {} not yet in step with its other owners: {}", segment,
                     e.getDescription().cStr());
      });
}

void HandOver::Retried(size_t segment, uint64_t before, const std::string& error) {
  uint64_t after = env_.store.TreeDigests()[segment];
  if (after == 0 || env_.OwnsSegment(segment)) {
    retries_.erase(segment);
    return;
  }
  Retry& retry = retries_[segment];
  // Progress (the segment changed: keys went) starts the backoff again.
  if (after != before || retry.delay == 0 * kj::SECONDS) {
    retry.delay = kRetryMin;
  } else {
    retry.delay = std::min(retry.delay * 2, kRetryMax);
  }
  retry.next = env_.timer.now() + retry.delay;
  retry.error = error.empty() ? "keys written during the hand-over stayed" : error;
  spdlog::warn("segment {} not handed over ({}); next try in {} s", segment, retry.error,
               retry.delay / kj::SECONDS);
}

std::vector<size_t> HandOver::Held() const {
  std::vector<size_t> out;
  if (env_.own_segments.empty()) return out;
  std::vector<uint64_t> digests = env_.store.TreeDigests();
  for (size_t s = 0; s < digests.size(); ++s) {
    if (digests[s] != 0 && !env_.own_segments[s]) out.push_back(s);
  }
  return out;
}

kj::Promise<void> HandOver::ClearDropped(size_t segment) {
  RemoteApply apply;
  apply.clear_dropped.push_back(segment);
  return env_.committer.SubmitRemote(std::move(apply)).then([this, segment](WriteResult r) {
    KJ_REQUIRE(r.status.ok(), "cannot clear a segment's mark", r.status.ToString());
    dropped_[segment] = false;
  });
}

kj::Promise<void> HandOver::HandOff(size_t segment, std::vector<ReplicaId> owners) {
  return env_.reader.SegmentKeys(segment).then(
      [this, segment, owners = std::move(owners)](StatusOr<std::vector<KeyDigest>> keys) mutable {
        KJ_REQUIRE(keys.ok(), "cannot list a segment", keys.status().ToString());
        return HandOffKeys(segment, std::move(owners), std::move(keys).value(), 0);
      });
}

kj::Promise<void> HandOver::HandOffKeys(size_t segment, std::vector<ReplicaId> owners,
                                        std::vector<KeyDigest> keys, size_t from) {
  if (from >= keys.size()) return kj::READY_NOW;
  const ReplicatorOptions& o = env_.options;
  auto chunk = ReadHandOffChunk(env_.reader, keys, from, o.batch_bytes, o.max_message_bytes);
  return chunk.then([this, segment, owners = std::move(owners),
                     keys = std::move(keys)](HandOffChunk chunk) mutable {
    // Every owner confirms (its commit) before this node lets go of a key,
    // and a key written here since it was read is kept.
    kj::Vector<kj::Promise<void>> puts;
    for (ReplicaId owner : owners) {
      auto session = links_.Session(owner);
      auto req = session.putStatesRequest();
      SetStates(req.initStates(chunk.states.size()), chunk.states);
      puts.add(env_.timer.timeoutAfter(30 * kj::SECONDS, req.send()).ignoreResult());
    }
    const size_t bytes = chunk.bytes, to = chunk.to;
    return kj::joinPromises(puts.releaseAsArray())
        .then([this, owners, paged = std::move(chunk.paged)]() mutable {
          std::vector<peer::PeerSession::Client> sessions;
          for (ReplicaId owner : owners) {
            sessions.emplace_back(links_.Session(owner));
          }
          auto budget = [this, owner = owners.front()](size_t page_bytes) {
            return links_.Budget(owner, page_bytes * 2);
          };
          return PushSets(env_, std::move(sessions), std::move(paged), budget);
        })
        .then([this, drops = std::move(chunk.drops)]() mutable {
          if (drops.drops.empty()) return kj::Promise<WriteResult>(WriteResult{});
          return env_.committer.SubmitRemote(std::move(drops));
        })
        .then([this, segment](WriteResult r) {
          KJ_REQUIRE(r.status.ok(), "cannot drop handed-over keys", r.status.ToString());
          if (segment < dropped_.size()) dropped_[segment] = true;
          if (env_.coverage != nullptr) env_.coverage->Dropped(segment, env_.Origins());
        })
        .then([this, owner = owners.front(), bytes] {
          return links_.Budget(owner, bytes * 2);
        })
        .then([this, segment, owners = std::move(owners), keys = std::move(keys), to]() mutable {
          return HandOffKeys(segment, std::move(owners), std::move(keys), to);
        });
  });
}

}  // namespace geokv

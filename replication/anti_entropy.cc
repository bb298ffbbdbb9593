#include "replication/anti_entropy.h"

#include <kj/debug.h>
#include <kj/vector.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace geokv {

kj::Promise<void> AntiEntropy::Pass(peer::PeerSession::Client session, Scope scope) {
  return session.treeDigestsRequest().send().then([this, session, scope](auto&& resp) mutable {
    auto remote = resp.getDigests();
    KJ_REQUIRE(remote.size() == kTreeSegments, "peer has another tree shape", remote.size());
    std::vector<uint64_t> local = env_.store.TreeDigests();
    // The peer's coverage is of the segments it says it owns.
    const Coverage least = ReadPositions(resp.getCoverage());
    std::vector<bool> covered;
    if (least.empty() || !DecodeSegmentSet(View(resp.getOwned()), &covered)) covered.clear();
    auto queue = kj::heap<SegmentQueue>();
    for (uint32_t i = 0; i < kTreeSegments; ++i) {
      if (!BothOwn(i)) continue;
      if (remote[i] != local[i]) {
        queue->segments.push_back(i);
      } else if (i < covered.size() && covered[i]) {
        InStep(i, least);
      }
    }
    if (!queue->segments.empty()) {
      spdlog::debug("peer {}: {} tree segments differ", region_, queue->segments.size());
    }
    kj::Vector<kj::Promise<void>> workers;
    // A routine pass runs beside client traffic: one segment at a time.
    const size_t workers_wanted = scope == Scope::kRoutine ? 1 : kSegmentsInFlight;
    for (size_t w = 0; w < workers_wanted && w < queue->segments.size(); ++w) {
      workers.add(RepairQueued(session, *queue, scope));
    }
    return kj::joinPromises(workers.releaseAsArray()).attach(kj::mv(queue));
  });
}

kj::Promise<void> AntiEntropy::RepairQueued(peer::PeerSession::Client session, SegmentQueue& queue,
                                            Scope scope) {
  if (queue.next == queue.segments.size()) return kj::READY_NOW;
  const uint32_t segment = queue.segments[queue.next++];
  return RepairSegment(session, segment, scope).then([this, session, &queue, scope]() mutable {
    return RepairQueued(kj::mv(session), queue, scope);
  });
}

kj::Promise<AntiEntropy::Differences> AntiEntropy::Differ(peer::PeerSession::Client session,
                                                          uint32_t segment, Coverage* coverage) {
  auto req = session.segmentKeysRequest();
  req.setSegment(segment);
  return req.send().then([this, segment, coverage](auto&& resp) {
    if (coverage != nullptr) *coverage = ReadPositions(resp.getCoverage());
    size_t bytes = 0;
    Differences diff;
    for (auto kd : resp.getKeys()) {
      diff[std::string(String(kd.getKey()))] = {0, kd.getDigest()};
      bytes += kd.getKey().size() + 16;
    }
    return env_.reader.SegmentKeys(segment).then(
        [this, bytes, diff = std::move(diff)](StatusOr<std::vector<KeyDigest>> local) mutable {
          KJ_REQUIRE(local.ok(), "cannot list a tree segment", local.status().ToString());
          env_.metrics.ae_keys_compared.Increment(static_cast<double>(local->size()));
          for (const KeyDigest& kd : *local) {
            auto it = diff.find(kd.key);
            if (it == diff.end()) {
              diff[kd.key] = {kd.digest, 0};
            } else if (it->second.second == kd.digest) {
              diff.erase(it);
            } else {
              it->second.first = kd.digest;
            }
          }
          return Throttle(bytes).then([diff = std::move(diff)]() mutable { return std::move(diff); });
        });
  });
}

void AntiEntropy::InStep(uint32_t segment, const Coverage& coverage) {
  // (A segment handed over meanwhile lost its keys: Dropped marked it.)
  if (env_.coverage == nullptr || !env_.OwnsSegment(segment)) return;
  env_.coverage->InStep(segment, coverage);
}

kj::Promise<void> AntiEntropy::RepairSegment(peer::PeerSession::Client session, uint32_t segment,
                                             Scope scope) {
  auto coverage = kj::heap<Coverage>();
  Coverage* peer_coverage = coverage.get();
  return Differ(session, segment, peer_coverage)
      .then([this, session, segment, scope,
             peer_coverage](Differences first) mutable -> kj::Promise<void> {
        if (first.empty()) {
          InStep(segment, *peer_coverage);
          return kj::READY_NOW;
        }
        if (scope != Scope::kRoutine) {
          std::vector<std::string> keys;
          for (const auto& [key, digests] : first) {
            // A key the peer holds and this node does not: nothing to push.
            if (scope == Scope::kPush && digests.first == 0) continue;
            keys.push_back(key);
          }
          kj::Promise<void> repaired =
              RepairKeys(kj::mv(session), std::move(keys), 0, scope == Scope::kPush);
          if (scope == Scope::kPush) return repaired;
          // Every differing key now holds the peer's state of it, or later.
          return repaired.then(
              [this, segment, peer_coverage] { InStep(segment, *peer_coverage); });
        }
        return env_.timer
            .afterDelay(kSettle)
            .then([this, session, segment]() mutable { return Differ(kj::mv(session), segment); })
            .then([this, session, first = std::move(first)](Differences second) mutable {
              // A side that holds nothing of a key gets no emptied register
              // or set from the other: it collected one (a stale copy would
              // come back, and be collected, again and again), or it never
              // saw the key's writes, and then gets them from their logs.
              std::vector<std::string> stable;
              Differences absent;
              for (const auto& [key, digests] : second) {
                auto it = first.find(key);
                if (it == first.end() || it->second != digests) continue;
                stable.push_back(key);
                if (digests.first == 0 || digests.second == 0) absent.emplace(key, digests);
              }
              return RepairKeys(kj::mv(session), std::move(stable), 0, false, std::move(absent));
            });
      })
      .attach(kj::mv(coverage));
}

kj::Promise<void> AntiEntropy::RepairKeys(peer::PeerSession::Client session,
                                          std::vector<std::string> keys, size_t from,
                                          bool push_only, Differences absent) {
  if (from >= keys.size()) return kj::READY_NOW;
  const ReplicatorOptions& o = env_.options;
  std::set<std::string> absent_here, absent_there;
  for (size_t i = from; i < keys.size() && i < from + kChunkKeys; ++i) {
    auto it = absent.find(keys[i]);
    if (it == absent.end()) continue;
    (it->second.first == 0 ? absent_here : absent_there).insert(keys[i]);
  }
  return ReadStatesChunk(env_.reader, keys, from, kChunkKeys, o.batch_bytes, o.max_message_bytes,
                         std::move(absent_there))
      .then([this, session, keys = std::move(keys), from, push_only, absent = std::move(absent),
             absent_here = std::move(absent_here)](StatesChunk local) mutable {
        env_.metrics.ae_keys_repaired.Increment(static_cast<double>(local.to - from));
        auto push = session.putStatesRequest();
        SetStates(push.initStates(local.found.size()), local.found);
        kj::Promise<uint32_t> pulled =
            push_only ? kj::Promise<uint32_t>(static_cast<uint32_t>(local.to - from))
                      : Pull(session, keys, from, local.to, std::move(absent_here));
        kj::Promise<void> pushed = local.found.empty() ? kj::Promise<void>(kj::READY_NOW)
                                                       : push.send().ignoreResult();
        return pushed.then([this, bytes = local.bytes] { return Throttle(bytes); })
            .then([this, session, paged = std::move(local.paged)]() mutable {
              std::vector<peer::PeerSession::Client> to;
              to.emplace_back(session);
              return PushSets(env_, std::move(to), std::move(paged), Throttler());
            })
            .then([pulled = kj::mv(pulled)]() mutable { return kj::mv(pulled); })
            .then([this, session, keys = std::move(keys), from, push_only,
                   absent = std::move(absent)](uint32_t served) mutable {
              // Keys the peer left out are asked for again (and their local
              // states sent again, harmlessly).
              return RepairKeys(kj::mv(session), std::move(keys), from + served, push_only,
                                std::move(absent));
            });
      });
}

kj::Promise<uint32_t> AntiEntropy::Pull(peer::PeerSession::Client session,
                                        const std::vector<std::string>& keys, size_t from,
                                        size_t to, std::set<std::string> absent_here) {
  auto pull = session.getStatesRequest();
  auto names = pull.initKeys(to - from);
  for (size_t i = from; i < to; ++i) names.set(i - from, AsData(keys[i]));
  return pull.send().then([this, session,
                           absent_here = std::move(absent_here)](auto&& resp) mutable {
    std::vector<std::string> paged;
    for (auto key : resp.getPaged()) paged.push_back(String(key));
    RemoteApply apply;
    apply.joins = ReceivedStates(resp.getStates());
    apply.unless_emptied = std::move(absent_here);
    size_t received = resp.totalSize().wordCount * sizeof(capnp::word);
    uint32_t served = std::max<uint32_t>(resp.getServed(), 1);
    kj::Promise<void> joined = kj::READY_NOW;
    if (!apply.joins.empty()) {
      joined = env_.committer.SubmitRemote(std::move(apply)).then([](WriteResult result) {
        KJ_REQUIRE(result.status.ok(), "cannot join repaired states", result.status.ToString());
      });
    }
    return joined.then([this, received] { return Throttle(received); })
        .then([this, session = kj::mv(session), paged = std::move(paged)]() mutable {
          return PullSets(env_, kj::mv(session), std::move(paged), Throttler());
        })
        .then([served] { return served; });
  });
}

kj::Promise<void> AntiEntropy::Throttle(size_t bytes) {
  kj::Timer& timer = env_.timer;
  kj::TimePoint now = timer.now();
  if (budget_free_at_ < now) budget_free_at_ = now;
  uint64_t rate = std::max<uint64_t>(env_.options.anti_entropy_bytes_per_second, 1);
  budget_free_at_ += static_cast<int64_t>(bytes * 1'000'000 / rate) * kj::MICROSECONDS;
  if (budget_free_at_ <= now) return kj::READY_NOW;
  return timer.atTime(budget_free_at_);
}

kj::Promise<StatesChunk> ReadStatesChunk(AsyncStore& reader, const std::vector<std::string>& keys,
                                         size_t from, size_t max_keys, size_t batch_bytes,
                                         size_t max_message_bytes,
                                         std::set<std::string> absent_there) {
  std::vector<std::string> slice(keys.begin() + from,
                                 keys.begin() + std::min(keys.size(), from + max_keys));
  return reader.RunBackground([slice = std::move(slice), from, batch_bytes, max_message_bytes,
                               absent_there = std::move(absent_there)](Store& s) {
    StatesChunk out;
    size_t i = 0;
    for (; i < slice.size() && (i == 0 || out.bytes < batch_bytes); ++i) {
      EncodedKeyStates states =
          EncodeKeyStates(s, slice[i], max_message_bytes, absent_there.count(slice[i]) > 0);
      out.bytes += states.bytes + slice[i].size();
      if (states.paged_set) out.paged.push_back(slice[i]);
      if (!states.encoded.empty()) out.found.emplace_back(slice[i], std::move(states.encoded));
    }
    out.to = from + i;
    return out;
  });
}

kj::Promise<ServedStates> ReadServedStates(AsyncStore& reader, std::vector<std::string> keys,
                                           size_t batch_bytes, size_t max_message_bytes,
                                           bool for_read) {
  auto read = [keys = std::move(keys), batch_bytes, max_message_bytes](Store& s) {
    ServedStates out;
    size_t bytes = 0;
    for (const std::string& key : keys) {
      EncodedKeyStates states = EncodeKeyStates(s, key, max_message_bytes);
      if (!out.found.empty() && bytes + states.bytes > batch_bytes) break;
      ++out.served;
      bytes += states.bytes;
      if (states.paged_set) out.paged.push_back(key);
      if (!states.encoded.empty()) out.found.emplace_back(key, std::move(states.encoded));
    }
    return out;
  };
  return for_read ? reader.Run(std::move(read)) : reader.RunBackground(std::move(read));
}

}  // namespace geokv

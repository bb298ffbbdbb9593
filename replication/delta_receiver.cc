#include "replication/delta_receiver.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>


namespace geokv {

uint64_t& DeltaReceiver::SubmittedRef(ReplicaId origin) {
  auto it = submitted_.find(origin);
  if (it == submitted_.end()) it = submitted_.emplace(origin, options_.durable(origin)).first;
  // A hand-over that failed may have lowered it below what later ones made
  // durable.
  it->second = std::max(it->second, options_.durable(origin));
  return it->second;
}

uint64_t DeltaReceiver::Submitted(ReplicaId origin) { return SubmittedRef(origin); }

kj::Promise<PushAnswer> DeltaReceiver::Answer(kj::Promise<void> before, ReplicaId origin,
                                              uint64_t from, uint64_t through) {
  return before.then([this, origin, from, through] {
    PushAnswer answer;
    answer.applied = options_.durable(origin);
    auto it = superseded_.find(origin);
    if (it != superseded_.end()) {
      for (auto s = it->second.upper_bound(from); s != it->second.end() && s->first <= through;
           ++s) {
        answer.superseded.push_back(Superseded{s->first, s->second});
      }
    }
    return answer;
  });
}

void DeltaReceiver::NoteSuperseded(ReplicaId origin, uint64_t position, HlcTimestamp held) {
  auto& kept = superseded_[origin];
  kept[position] = held;
  while (kept.size() > kSupersededKept) kept.erase(kept.begin());
}

kj::Promise<PushAnswer> DeltaReceiver::PushDeltas(const std::string& region, DeltaBatch batch) {
  const ReplicaId origin = batch.origin;
  KJ_REQUIRE(origin != options_.self && origin != 0, "deltas of a bad origin", origin);
  const uint64_t from = batch.from;
  const uint64_t through = batch.through;
  KJ_REQUIRE(from < through, "a batch covering no log positions", from, through);
  if (Status bounded = CheckBatchRange(origin, from, through); !bounded.ok()) {
    refusals_.Refuse(PeerClaim::kBatchRange, region, bounded);
  }
  uint64_t& submitted = SubmittedRef(origin);
  RemoteApply apply;
  apply.origin = origin;
  // Positions from+1..submitted are replays; a batch starting past
  // submitted + 1 leaves a gap, and the origin resends from the answer.
  const bool gap = from > submitted;
  KJ_REQUIRE(batch.positions.size() == batch.deltas.size(), "a delta per log entry");
  size_t first_new = batch.positions.size();  // the first entry past submitted
  uint64_t prev = from;
  for (size_t i = 0; i < batch.positions.size(); ++i) {
    const uint64_t p = batch.positions[i].position;
    KJ_REQUIRE(p > prev && p <= through, "log entries out of order", prev, p);
    prev = p;
    if (p > submitted && first_new == batch.positions.size()) first_new = i;
  }
  if (gap || through <= submitted) {
    // Answer once what was handed over before has committed.
    auto it = last_submit_.find(origin);
    kj::Promise<void> before = it == last_submit_.end() || gap ? kj::Promise<void>(kj::READY_NOW)
                                                               : it->second.addBranch();
    return Answer(kj::mv(before), origin, from, through);
  }
  std::vector<uint64_t> made_ms;    // when the origin made each joined entry
  std::vector<uint64_t> positions;  // and its position
  for (size_t i = first_new; i < batch.positions.size(); ++i) {
    made_ms.push_back(batch.positions[i].made_ms);
    positions.push_back(batch.positions[i].position);
  }
  if (options_.coverage != nullptr) options_.coverage->Mark(origin, from, through, batch.skipped);
  apply.joins = first_new == 0 ? std::move(batch.deltas) : batch.deltas.From(first_new);
  apply.first = submitted + 1;
  apply.through = through;
  submitted = through;
  auto committed =
      options_.submit(std::move(apply))
          .then([this, origin, region, made_ms = std::move(made_ms),
                 positions = std::move(positions)](WriteResult result) {
            if (!result.status.ok()) {
              // Later hand-overs of this origin fail their continuity
              // check; the origin resends from here.
              submitted_[origin] = options_.durable(origin);
              KJ_FAIL_REQUIRE("cannot apply deltas", result.status.ToString());
            }
            for (const auto& [i, held] : result.superseded) {
              if (i < positions.size()) NoteSuperseded(origin, positions[i], held);
            }
            if (options_.clock == nullptr || options_.metrics == nullptr) return;
            const double now_ms = static_cast<double>(options_.clock->NowMillis());
            std::vector<double> lags;
            lags.reserve(made_ms.size());
            for (uint64_t ms : made_ms) {
              // (A time past the valid stamps is a peer's nonsense.)
              if (ms != 0 && ms <= kMaxHlcWallMs) {
                lags.push_back((now_ms - static_cast<double>(ms)) / 1000);
              }
            }
            options_.metrics->ReplicationLag(region, lags);
          })
          .fork();
  kj::Promise<void> mine = committed.addBranch();
  last_submit_.insert_or_assign(origin, kj::mv(committed));
  return Answer(kj::mv(mine), origin, from, through);
}

kj::Promise<uint64_t> DeltaReceiver::MarkRepaired(const std::string& region, ReplicaId origin,
                                                  uint64_t through) {
  if (Status bounded = CheckRepairedPosition(origin, through); !bounded.ok()) {
    refusals_.Refuse(PeerClaim::kRepairedPosition, region, bounded);
  }
  RemoteApply apply;
  apply.origin = origin;
  apply.through = through;
  // The pass covered only the segments both sides own.
  if (options_.coverage != nullptr) {
    options_.coverage->MarkAll(origin, options_.durable(origin), through);
  }
  uint64_t& submitted = SubmittedRef(origin);
  submitted = std::max(submitted, through);
  return options_.submit(std::move(apply))
      .then([this, region, origin, through](WriteResult result) {
        KJ_REQUIRE(result.status.ok(), "cannot record the repair", result.status.ToString());
        spdlog::info("region {} repaired this node through its log position {}", region, through);
        return options_.durable(origin);
      });
}

}  // namespace geokv

#include "server/coordinator.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "replication/causal_token.h"
#include "server/coordinator_internal.h"

namespace geokv {

Coordinator::Coordinator(AsyncStore& store, GroupCommitter& committer, Replicator& replicator,
                         const ClusterView& view, Forwarder& forwarder,
                         CoordinatorOptions options)
    : store_(store),
      committer_(committer),
      replicator_(replicator),
      view_(view),
      forwarder_(forwarder),
      options_(std::move(options)),
      metrics_(options_.metrics),
      facts_(options_.facts),
      error_logger_(kj::heap<ErrorLogger>()),
      tasks_(*error_logger_) {
  if (metrics_ == nullptr) {
    own_metrics_ = std::make_unique<Metrics>(view.region());
    metrics_ = own_metrics_.get();
  }
  if (facts_ == nullptr) {
    own_facts_ = std::make_unique<Facts>(replicator);
    facts_ = own_facts_.get();
  }
}

Coordinator::~Coordinator() = default;

std::string Coordinator::OwnerName(ReplicaId id) const {
  const Member* m = view_.Find(id);
  return m != nullptr ? m->name : fmt::format("{:016x}", id);
}

kj::Promise<Answer> Coordinator::Run(ParsedRequest request, bool forwarded) {
  auto one = [](Result r) {
    Answer a;
    a.overloaded = r.owner_overloaded;
    a.results.push_back(std::move(r));
    return a;
  };
  if (IsWrite(request.kind)) {
    if (request.status.ok() && !committer_.HasRoom(1)) {
      Answer a;
      a.overloaded = true;
      return a;
    }
    return Write(std::move(request), forwarded).then(one);
  }
  return Read(std::move(request), forwarded).then([this, one](ReadDone done) {
    std::vector<ReadDone> reads;
    reads.push_back(std::move(done));
    Spend(reads);
    return one(std::move(reads[0].result));
  });
}

kj::Promise<Answer> Coordinator::RunBatch(std::vector<ParsedRequest> requests) {
  size_t writes = 0;
  for (const ParsedRequest& r : requests) writes += IsWrite(r.kind) ? 1 : 0;
  if (writes > committer_.max_pending()) {
    // It could never fit: refusing each write is final, not overloaded.
    Status refused = Status::TooLarge("a batch of " + std::to_string(writes) +
                                      " writes exceeds max-pending-writes " +
                                      std::to_string(committer_.max_pending()));
    for (ParsedRequest& r : requests) {
      if (IsWrite(r.kind)) r.status = refused;
    }
  } else if (!committer_.HasRoom(writes)) {
    Answer a;
    a.overloaded = true;
    return a;
  }
  auto results = std::make_shared<std::vector<Result>>(requests.size());
  auto pending = std::make_shared<std::vector<ParsedRequest>>(std::move(requests));
  kj::Vector<kj::Promise<void>> written;
  for (size_t i = 0; i < pending->size(); ++i) {
    if (!IsWrite((*pending)[i].kind)) continue;
    written.add(Write(std::move((*pending)[i]), false).then([results, i](Result r) {
      (*results)[i] = std::move(r);
    }));
  }
  return kj::joinPromises(written.releaseAsArray())
      .then([this, pending]() {
        kj::Vector<kj::Promise<ReadDone>> reads;
        for (ParsedRequest& r : *pending) {
          if (!IsWrite(r.kind)) reads.add(Read(std::move(r), false));
        }
        return kj::joinPromises(reads.releaseAsArray());
      })
      .then([this, pending, results](kj::Array<ReadDone> done) {
        std::vector<ReadDone> reads;
        for (ReadDone& d : done) reads.push_back(std::move(d));
        Spend(reads);
        size_t j = 0;
        for (size_t i = 0; i < pending->size(); ++i) {
          if (!IsWrite((*pending)[i].kind)) (*results)[i] = std::move(reads[j++].result);
        }
        Answer a;
        a.results = std::move(*results);
        return a;
      });
}

void Coordinator::Spend(std::vector<ReadDone>& reads) const {
  size_t budget = options_.max_message_bytes / 2;
  for (ReadDone& d : reads) {
    if (!d.local) continue;
    const size_t bytes = d.result.ValueBytes();
    if (bytes <= budget) {
      budget -= bytes;
      continue;
    }
    d.result.DropValues();
    if (d.result.status.ok()) {
      d.result.status = Status::TooLarge("the reply would exceed max-message-bytes " +
                                         std::to_string(options_.max_message_bytes) +
                                         "; read fewer or smaller values per call");
    }
  }
}

kj::Promise<Result> Coordinator::Forward(ReplicaId node, const ParsedRequest& request,
                                         Consistency level) {
  metrics_->forwarded.Increment();
  // The owner may wait for tokens and then for its own replicas: the
  // forward gives it both waits and a margin before giving up on it.
  return forwarder_.Forward(node, request, level,
                            options_.request_timeout + replicator_.token_wait() +
                                std::chrono::seconds(1));
}

kj::Promise<Result> Coordinator::Write(ParsedRequest request, bool forwarded) {
  if (!request.status.ok()) return ResultOf(std::move(request.status));
  const Consistency level = Resolve(request.consistency);
  Plan plan = MakePlan(view_, PlanRequest{request.key, level, forwarded, true}, *facts_);
  if (!plan.status.ok()) return ResultOf(std::move(plan.status));
  if (plan.forward_to) {
    const ReplicaId node = *plan.forward_to;
    return Forward(node, request, level)
        .then([](Result r) { return r; },
              [this, node](kj::Exception&& e) {
                // A call that got no answer in time or lost its connection
                // may have been applied by the owner: only a refusal means
                // nothing was.
                std::string what = "forwarding to the key's owner " + OwnerName(node) +
                                   " failed: " + Described(e);
                switch (e.getType()) {
                  case kj::Exception::Type::DISCONNECTED:
                    return ResultOf(Status::Timeout(what + "; the write may have been applied"));
                  case kj::Exception::Type::OVERLOADED: {
                    Result r = ResultOf(Status::Unavailable(
                        what + "; the owner sheds load, nothing was applied, retry later"));
                    r.owner_overloaded = true;
                    return r;
                  }
                  default:
                    return ResultOf(Status::Unavailable(what));
                }
              });
  }
  return WriteHere(std::move(request), std::move(plan));
}

kj::Promise<Result> Coordinator::WriteHere(ParsedRequest request, Plan plan) {
  Status allowed = replicator_.WritesAllowed();
  if (!allowed.ok()) {
    metrics_->writes_refused_clock.Increment();
    return ResultOf(std::move(allowed));
  }
  // A session's write is ordered after the writes whose tokens it
  // presents: the clock passes their stamps before this write is stamped,
  // whatever this node has received of them.
  Status ordered = committer_.AdvanceClockPast(MaxStamp(request.tokens));
  if (!ordered.ok()) return ResultOf(std::move(ordered));
  return WriteStamped(std::move(request.key), std::move(request.op), std::move(plan), 1);
}

kj::Promise<Result> Coordinator::WriteStamped(std::string key, Operation op, Plan plan,
                                              int attempt) {
  // Only a register write can lose to a newer stamp; it is kept for another
  // attempt.
  std::optional<std::pair<std::string, Operation>> again;
  if (plan.needed > 0 &&
      (std::holds_alternative<LwwSet>(op) || std::holds_alternative<LwwDelete>(op))) {
    again.emplace(key, op);
  }
  return committer_.Submit(std::move(key), std::move(op))
      .then([this, plan = std::move(plan), again = std::move(again),
             attempt](WriteResult written) mutable -> kj::Promise<Result> {
        if (!written.status.ok()) return ResultOf(std::move(written.status));
        Result result;
        result.token = EncodeToken({store_.store().node_id(), written.seq, written.stamp});
        replicator_.NoteHints(plan.others, written.seq);
        replicator_.NoteHints(plan.away, written.seq);
        if (plan.needed == 0) return result;
        const size_t needed = plan.needed;
        const uint64_t seq = written.seq;
        auto acked = replicator_.WaitAcked(plan.others, seq, plan.segment, needed,
                                           options_.request_timeout);
        return acked.then([this, needed, seq, attempt, plan = std::move(plan),
                           again = std::move(again),
                           result = std::move(result)](size_t acked) mutable
                          -> kj::Promise<Result> {
          if (acked < needed) {
            result.status = Status::Timeout(
                "the write is durable here and on " + std::to_string(acked) +
                " other owner(s), " + std::to_string(needed - acked) +
                " fewer than its consistency level needs within --request-timeout (" +
                std::to_string(options_.request_timeout.count()) +
                " ms); it will reach the others");
            return kj::mv(result);
          }
          std::optional<HlcTimestamp> above = replicator_.HeldAbove(plan.others, seq);
          if (!above || !again) return kj::mv(result);
          const std::string held = "an owner already held a value of the key stamped " +
                                   DescribeStamp(*above) + ", above this write";
          Status past = attempt < kMaxStampAttempts
                            ? committer_.AdvanceClockPast(*above)
                            : Status::FailedPrecondition("no attempt left");
          if (!past.ok()) {
            result.status = Status::Timeout(
                "the write is durable here and on " + std::to_string(acked) +
                " other owner(s), but " + held + " after " + std::to_string(attempt) +
                " attempt(s) (" + past.message() + "); that value may hide it");
            return kj::mv(result);
          }
          spdlog::debug("{}: writing it again above that stamp", held);
          metrics_->writes_restamped.Increment();
          return WriteStamped(std::move(again->first), std::move(again->second),
                              std::move(plan), attempt + 1);
        });
      });
}

}  // namespace geokv

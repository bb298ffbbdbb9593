// The coordinator's reads: token waits, quorum digests and read repair, and
// the answer from this node's store on the reader pool.

#include <memory>
#include <optional>
#include <utility>

#include "replication/peer_wire.h"
#include "server/api_codec.h"
#include "server/coordinator.h"
#include "server/coordinator_internal.h"
#include "util/coding.h"

namespace geokv {
namespace {

// NotFound, or WrongType when another type is live at `key`.
Status Absent(Store& store, const std::string& key, CrdtType wanted) {
  GEOKV_ASSIGN_OR_RETURN(std::vector<CrdtType> live, store.LiveTypes(key));
  for (CrdtType t : live) {
    if (t != wanted) {
      return Status::WrongType("key '" + PrintableBytes(key) + "' holds a value of type " +
                               std::string(TypeName(t)) + ", not " +
                               std::string(TypeName(wanted)));
    }
  }
  return Status::NotFound("key not found");
}

// For a set read with an empty answer: OK, or WrongType when another type
// is live at `key`.
Status EmptySet(Store& store, const std::string& key) {
  Status absent = Absent(store, key, CrdtType::kOrSet);
  return absent.IsNotFound() ? Status::OK() : absent;
}

// What a read asks of the store, copied for the reader thread.
struct LocalRead {
  RequestKind kind;
  std::string key;
  std::string element;
  std::optional<std::string> after;
  uint32_t limit;
};

// The answer of `read` from `store`; on a reader thread. `siblings` gets
// the number of a multi-value register's siblings, when one was read.
Status ReadStore(Store& store, const LocalRead& read, Result& out,
                 std::optional<size_t>& siblings) {
  const std::string& key = read.key;
  switch (read.kind) {
    case RequestKind::kGet: {
      GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> state, store.Get(key, CrdtType::kLww));
      if (state) {
        const auto& value = std::get<LwwRegister>(*state).value();
        if (value) {
          out.value = *value;
          return Status::OK();
        }
      }
      return Absent(store, key, CrdtType::kLww);
    }
    case RequestKind::kMvGet: {
      GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> state, store.Get(key, CrdtType::kMvRegister));
      if (!state) return Absent(store, key, CrdtType::kMvRegister);
      const auto& reg = std::get<MvRegister>(*state);
      out.context = EncodeClientContext(key, reg.context());
      out.values = reg.Values();
      siblings = out.values.size();
      if (out.values.empty()) return Absent(store, key, CrdtType::kMvRegister);
      return Status::OK();
    }
    case RequestKind::kSIsMember: {
      GEOKV_ASSIGN_OR_RETURN(out.member, store.SetContains(key, read.element));
      if (out.member) return Status::OK();
      return EmptySet(store, key);
    }
    case RequestKind::kSMembers: {
      std::optional<std::string_view> after;
      if (read.after) after = *read.after;
      GEOKV_ASSIGN_OR_RETURN(SetPage page, store.SetMembers(key, after, read.limit));
      out.elements = std::move(page.elements);
      out.more = page.more;
      if (!out.elements.empty() || read.after) return Status::OK();
      return EmptySet(store, key);
    }
    case RequestKind::kSCard: {
      GEOKV_ASSIGN_OR_RETURN(out.count, store.SetSize(key));
      if (out.count > 0) return Status::OK();
      return EmptySet(store, key);
    }
    case RequestKind::kCounterGet: {
      GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> state, store.Get(key, CrdtType::kCounter));
      // A deleted counter (every increment reset) holds no value.
      if (!state || !std::get<PnCounter>(*state).IsLive()) {
        return Absent(store, key, CrdtType::kCounter);
      }
      out.counter = std::get<PnCounter>(*state).Value();
      return Status::OK();
    }
    case RequestKind::kType: {
      GEOKV_ASSIGN_OR_RETURN(out.types, store.LiveTypes(key));
      return Status::OK();
    }
    default: break;
  }
  return Status::InvalidArgument("not a read");
}

}  // namespace

kj::Promise<Coordinator::ReadDone> Coordinator::Read(ParsedRequest request, bool forwarded) {
  if (!request.status.ok()) return ReadDone{ResultOf(std::move(request.status)), true};
  const Consistency level = Resolve(request.consistency);
  Plan plan = MakePlan(
      view_, PlanRequest{request.key, level, forwarded, false, !request.tokens.empty()}, *facts_);
  if (!plan.status.ok()) return ReadDone{ResultOf(std::move(plan.status)), true};
  if (plan.forward_to) {
    const ReplicaId node = *plan.forward_to;
    return Forward(node, request, level)
        .then([](Result r) { return ReadDone{std::move(r), false}; },
              [this, node](kj::Exception&& e) {
                return ReadDone{ResultOf(Status::Unavailable("forwarding to the key's owner " +
                                                             OwnerName(node) + " failed: " +
                                                             Described(e))),
                                true};
              });
  }
  std::vector<CausalToken> tokens = std::move(request.tokens);
  kj::Promise<Status> visible =
      tokens.empty() ? kj::Promise<Status>(Status::OK())
                     : replicator_.WaitVisible(std::move(tokens), TreeSegmentOf(request.key),
                                               replicator_.token_wait());
  auto req = std::make_shared<ParsedRequest>(std::move(request));
  return visible.then([this, req, plan = std::move(plan)](Status s) mutable
                      -> kj::Promise<ReadDone> {
    if (!s.ok()) return ReadDone{ResultOf(std::move(s)), true};
    if (plan.needed == 0) {
      return ReadHere(*req).then([](Result r) { return ReadDone{std::move(r), true}; });
    }
    // The answer is read with the digest: when the owners asked agree, it
    // is the answer; when one differed, its state is joined first and the
    // answer read again.
    return ReadLocal(*req, true).then([this, req, plan = std::move(plan)](
                                          LocalAnswer local) mutable -> kj::Promise<ReadDone> {
      if (!local.digest.ok()) return ReadDone{ResultOf(local.digest.status()), true};
      const uint64_t digest = *local.digest;
      return RepairRead(req->key, std::move(plan.others), plan.needed, digest)
          .then([this, req, local = std::move(local)](
                    StatusOr<bool> joined) mutable -> kj::Promise<ReadDone> {
            if (!joined.ok()) return ReadDone{ResultOf(joined.status()), true};
            if (*joined) {
              return ReadHere(*req).then([](Result r) { return ReadDone{std::move(r), true}; });
            }
            if (local.siblings) {
              metrics_->mv_siblings.Observe(static_cast<double>(*local.siblings));
            }
            return ReadDone{std::move(local.result), true};
          });
    });
  });
}

kj::Promise<Coordinator::LocalAnswer> Coordinator::ReadLocal(const ParsedRequest& request,
                                                             bool digest) {
  LocalRead read{request.kind, request.key, request.element, request.after, request.limit};
  return store_.Run([read = std::move(read), digest](Store& store) {
    LocalAnswer answer;
    if (digest) {
      answer.digest = store.KeyDigest(read.key);
      if (!answer.digest.ok()) return answer;
    }
    answer.result.status = ReadStore(store, read, answer.result, answer.siblings);
    return answer;
  });
}

kj::Promise<Result> Coordinator::ReadHere(const ParsedRequest& request) {
  return ReadLocal(request, false).then([this](LocalAnswer answer) {
    if (answer.siblings) metrics_->mv_siblings.Observe(static_cast<double>(*answer.siblings));
    return kj::mv(answer.result);
  });
}

// The digests a quorum read gathers: the first `needed` of settled owners
// count; an owner still catching up on the key's segment
// (HandOver::Settled) does not.
struct Coordinator::DigestGather {
  DigestGather(std::string key, std::vector<ReplicaId> owners, size_t needed, uint64_t local)
      : key(std::move(key)), owners(std::move(owners)), tally(needed, local) {}
  std::string key;
  std::vector<ReplicaId> owners;
  size_t asked = 0;    // owners[0, asked) were asked
  size_t pending = 0;  // of them, not answered yet
  DigestTally tally;
  kj::Own<kj::PromiseFulfiller<void>> done;
  bool waiting() { return done->isWaiting(); }
  void Settle() {
    if (waiting() && (tally.Enough() || (pending == 0 && asked == owners.size()))) {
      done->fulfill();
    }
  }
};

void Coordinator::AskDigests(const std::shared_ptr<DigestGather>& g, size_t count) {
  for (; count > 0 && g->asked < g->owners.size(); --count) {
    const ReplicaId id = g->owners[g->asked++];
    ++g->pending;
    tasks_.add(replicator_.KeyDigest(id, g->key, options_.request_timeout)
                   .then(
                       [this, g, id](Replicator::PeerDigest answer) {
                         --g->pending;
                         g->tally.Answer(id, answer.digest, answer.settled);
                         if (!answer.settled && g->waiting()) AskDigests(g, 1);
                         g->Settle();
                       },
                       [this, g](kj::Exception&&) {
                         --g->pending;
                         if (g->waiting()) AskDigests(g, 1);
                         g->Settle();
                       }));
  }
}

void Coordinator::HedgeLater(const std::shared_ptr<DigestGather>& g) {
  hedges_.emplace_back(replicator_.timer().now() + ToKj(options_.read_hedge), g);
  if (!hedge_armed_) ArmHedge();
}

void Coordinator::ArmHedge() {
  hedge_armed_ = true;
  tasks_.add(replicator_.timer()
                 .atTime(hedges_.front().first + ToKj(options_.read_hedge) / 4)
                 .then([this]() { Hedge(); }));
}

void Coordinator::Hedge() {
  hedge_armed_ = false;
  const kj::TimePoint now = replicator_.timer().now();
  while (!hedges_.empty() && hedges_.front().first <= now) {
    if (auto g = hedges_.front().second.lock(); g && g->waiting()) {
      AskDigests(g, g->owners.size());
    }
    hedges_.pop_front();
  }
  if (!hedges_.empty()) ArmHedge();
}

kj::Promise<StatusOr<bool>> Coordinator::RepairRead(std::string key, std::vector<ReplicaId> others,
                                                    size_t needed, uint64_t local) {
  auto g = std::make_shared<DigestGather>(key, std::move(others), needed, local);
  auto paf = kj::newPromiseAndFulfiller<void>();
  g->done = kj::mv(paf.fulfiller);
  const auto hedge = options_.read_hedge;
  AskDigests(g, hedge.count() > 0 ? needed : g->owners.size());
  g->Settle();
  // Owners that answer slowly (a paused process is still connected) do not
  // hold the read: after the hedge delay the rest are asked too.
  if (g->waiting() && g->asked < g->owners.size()) HedgeLater(g);
  return paf.promise.then([this, g, key = std::move(key)]() mutable -> kj::Promise<StatusOr<bool>> {
    const DigestTally& t = g->tally;
    if (!t.Enough() && t.unsettled() > 0 && g->pending == 0) {
      return StatusOr<bool>(Status::Unavailable(
          "the read needed " + std::to_string(t.needed()) +
          " other owner(s) of the key holding its segment; " + std::to_string(t.answered()) +
          " answered, " + std::to_string(t.unsettled()) +
          " still catching up on it (after a restart or a change of owners)"));
    }
    if (!t.Enough()) {
      return StatusOr<bool>(Status::Timeout("the read needed " + std::to_string(t.needed()) +
                                            " other owner(s) of the key; " +
                                            std::to_string(t.answered()) +
                                            " answered within --request-timeout"));
    }
    if (t.Agreed()) return StatusOr<bool>(false);
    metrics_->read_repairs.Increment();
    // Every owner that differed so far is fetched; one whose state does not
    // arrive has not answered, and the read cannot count it toward its level.
    auto differing = std::make_shared<std::vector<ReplicaId>>(t.differing());
    kj::Vector<kj::Promise<std::optional<EncodedJoins>>> fetches;
    for (ReplicaId id : *differing) {
      fetches.add(replicator_.FetchStates(id, key, options_.request_timeout)
                      .then(
                          [](EncodedJoins states) {
                            return std::optional<EncodedJoins>(std::move(states));
                          },
                          [](kj::Exception&&) { return std::optional<EncodedJoins>(); }));
    }
    return kj::joinPromises(fetches.releaseAsArray())
        .then([this, g, key](kj::Array<std::optional<EncodedJoins>> fetched)
                  -> kj::Promise<WriteResult> {
          size_t arrived = 0;
          for (const auto& states : fetched) arrived += states ? 1 : 0;
          if (!g->tally.HeldAfterJoining(arrived)) {
            WriteResult r;
            r.status = Status::Timeout(
                "the read needed " + std::to_string(g->tally.needed()) +
                " other owner(s) of the key; " + std::to_string(fetched.size() - arrived) +
                " differed and did not send their state");
            return r;
          }
          RemoteApply apply;
          for (auto& states : fetched) {
            if (!states) continue;
            for (size_t i = 0; i < states->size(); ++i) {
              apply.joins.Add(states->key(i), states->encoded(i));
            }
          }
          // As anti-entropy: a node that holds nothing of the key takes no
          // emptied register or set (it may have collected it).
          apply.unless_emptied.insert(key);
          if (apply.joins.empty()) return kj::Promise<WriteResult>(WriteResult{});
          return committer_.SubmitRemote(std::move(apply));
        })
        .then([this, g, differing, key](WriteResult joined) -> StatusOr<bool> {
          if (!joined.status.ok()) return joined.status;
          // The owners that differed get the joined state; the read does
          // not wait for them.
          for (ReplicaId id : *differing) {
            tasks_.add(replicator_.PushStates(id, key, options_.request_timeout,
                                              g->tally.Absent(id)));
          }
          return true;
        });
  });
}

}  // namespace geokv

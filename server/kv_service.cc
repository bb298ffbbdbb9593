#include "server/kv_service.h"

#include <capnp/message.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "schema/kv_text.h"
#include "replication/causal_token.h"
#include "server/api_codec.h"
#include "util/coding.h"
#include "util/hash.h"

namespace geokv {
namespace {


rpc::Outcome::Code CodeOf(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk: return rpc::Outcome::Code::OK;
    case Status::Code::kNotFound: return rpc::Outcome::Code::NOT_FOUND;
    case Status::Code::kWrongType: return rpc::Outcome::Code::WRONG_TYPE;
    case Status::Code::kTooLarge: return rpc::Outcome::Code::TOO_LARGE;
    case Status::Code::kInvalidArgument: return rpc::Outcome::Code::INVALID;
    case Status::Code::kUnavailable: return rpc::Outcome::Code::UNAVAILABLE;
    case Status::Code::kTimeout: return rpc::Outcome::Code::TIMEOUT;
    case Status::Code::kCorruption:
    case Status::Code::kIOError:
    case Status::Code::kFailedPrecondition: return rpc::Outcome::Code::INTERNAL;
  }
  return rpc::Outcome::Code::INTERNAL;
}

size_t Needed(rpc::Consistency level, size_t owners) {
  switch (level) {
    case rpc::Consistency::ONE: return 1;
    case rpc::Consistency::ALL: return owners;
    case rpc::Consistency::QUORUM:
    case rpc::Consistency::DEFAULT: break;
  }
  return owners / 2 + 1;
}

const char* LevelName(rpc::Consistency level) {
  switch (level) {
    case rpc::Consistency::ONE: return "ONE";
    case rpc::Consistency::ALL: return "ALL";
    case rpc::Consistency::QUORUM:
    case rpc::Consistency::DEFAULT: break;
  }
  return "QUORUM";
}

std::string Described(const kj::Exception& e) { return e.getDescription().cStr(); }

// The union form of a typed request, to forward it.
void Wrap(rpc::Request::Builder b, rpc::SetRequest::Reader r) { b.setSet(r); }
void Wrap(rpc::Request::Builder b, rpc::GetRequest::Reader r) { b.setGet(r); }
void Wrap(rpc::Request::Builder b, rpc::DelRequest::Reader r) { b.setDel(r); }
void Wrap(rpc::Request::Builder b, rpc::MvSetRequest::Reader r) { b.setMvSet(r); }
void Wrap(rpc::Request::Builder b, rpc::MvGetRequest::Reader r) { b.setMvGet(r); }
void Wrap(rpc::Request::Builder b, rpc::MvDelRequest::Reader r) { b.setMvDel(r); }
void Wrap(rpc::Request::Builder b, rpc::SAddRequest::Reader r) { b.setSAdd(r); }
void Wrap(rpc::Request::Builder b, rpc::SRemRequest::Reader r) { b.setSRem(r); }
void Wrap(rpc::Request::Builder b, rpc::SIsMemberRequest::Reader r) { b.setSIsMember(r); }
void Wrap(rpc::Request::Builder b, rpc::SMembersRequest::Reader r) { b.setSMembers(r); }
void Wrap(rpc::Request::Builder b, rpc::SCardRequest::Reader r) { b.setSCard(r); }
void Wrap(rpc::Request::Builder b, rpc::IncrByRequest::Reader r) { b.setIncrBy(r); }
void Wrap(rpc::Request::Builder b, rpc::CounterGetRequest::Reader r) { b.setCounterGet(r); }
void Wrap(rpc::Request::Builder b, rpc::TypeRequest::Reader r) { b.setType(r); }

}  // namespace

class KvService::ErrorLogger final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& e) override {
    spdlog::warn("coordination task failed: {}", e.getDescription().cStr());
  }
};

KvService::KvService(Store& store, GroupCommitter& committer, Replicator& replicator,
                     const ClusterView& view, KvServiceOptions options)
    : store_(store),
      committer_(committer),
      replicator_(replicator),
      view_(view),
      options_(std::move(options)),
      metrics_(options_.metrics),
      error_logger_(kj::heap<ErrorLogger>()),
      tasks_(*error_logger_) {
  if (metrics_ == nullptr) {
    own_metrics_ = std::make_unique<Metrics>(options_.region);
    metrics_ = own_metrics_.get();
  }
}

KvService::~KvService() = default;

// ---- placement -------------------------------------------------------------

std::string KvService::OwnerName(ReplicaId id) const {
  const Member* m = view_.Find(id);
  return m != nullptr ? m->name : fmt::format("{:016x}", id);
}

KvService::Plan KvService::PlanFor(std::string_view key, rpc::Consistency level,
                                   bool forwarded, bool write) const {
  Plan plan;
  if (level != rpc::Consistency::ONE && !view_.joined()) {
    plan.status = Status::Unavailable(
        std::string(LevelName(level)) + " needs the key's owners in region " + view_.region() +
        ", and this node has not yet heard from its region's gossip seeds; ONE is served");
    return plan;
  }
  const ReplicaId self = view_.self_id();
  std::vector<ReplicaId> owners = view_.Owners(key);
  bool mine = std::find(owners.begin(), owners.end(), self) != owners.end();
  // A node that handed a segment over no longer holds its keys' causal
  // contexts or counter totals: a write there would reuse dots and totals
  // the owners already have. Until it gets the segment back it leaves writes
  // there to the others, and refuses them when a node with an older view
  // forwards them here.
  plan.segment = TreeSegmentOf(key);
  const bool syncing =
      write && (mine ? replicator_.Syncing(plan.segment) : replicator_.Dropped(plan.segment));
  if (syncing && forwarded) {
    plan.status = Status::Unavailable(
        mine ? "this node is still receiving the key's segment back"
             : "this node handed the key's segment over to its owners");
    return plan;
  }
  if ((!mine || syncing) && !forwarded) {
    for (ReplicaId o : owners) {
      if (o != self && view_.Up(o) && replicator_.IsConnected(o)) {
        plan.forward_to = o;
        return plan;
      }
    }
    plan.status = Status::Unavailable("none of the " + std::to_string(owners.size()) +
                                      " owners of the key in region " + view_.region() +
                                      " is reachable from this node");
    return plan;
  }
  if (!mine) owners.push_back(self);
  const size_t needed = Needed(level, owners.size());
  for (ReplicaId o : owners) {
    if (o == self) continue;
    (view_.Up(o) ? plan.others : plan.away).push_back(o);
  }
  if (1 + plan.others.size() < needed) {
    plan.status = Status::Unavailable(
        std::string(LevelName(level)) + " needs " + std::to_string(needed) + " of the key's " +
        std::to_string(owners.size()) + " owners in region " + view_.region() + "; " +
        std::to_string(1 + plan.others.size()) + " are up");
    return plan;
  }
  plan.needed = needed - 1;
  return plan;
}

template <typename Request>
kj::Promise<capnp::Response<peer::PeerSession::ForwardResults>> KvService::ForwardTo(
    ReplicaId node, Request request, rpc::Consistency level) {
  metrics_->forwarded.Increment();
  capnp::MallocMessageBuilder message;
  if constexpr (std::is_same_v<Request, rpc::Request::Reader>) {
    message.setRoot(request);
  } else {
    Wrap(message.initRoot<rpc::Request>(), request);
  }
  // The owner may wait for tokens and then for its own replicas: the
  // forward gives it both waits and a margin before giving up on it.
  return replicator_.Forward(node, message.getRoot<rpc::Request>().asReader(), level,
                             options_.request_timeout + replicator_.token_wait() +
                                 std::chrono::seconds(1));
}

void KvService::CheckServing() const {
  if (!serving_) kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "node is shutting down"));
}

kj::Promise<void> KvService::Overloaded() {
  return KJ_EXCEPTION(OVERLOADED, "too many writes waiting to commit; retry later");
}

void KvService::SetOutcome(rpc::Outcome::Builder out, const Status& status) {
  out.setCode(CodeOf(status));
  if (!status.ok()) out.setMessage(status.message());
  if (CodeOf(status) == rpc::Outcome::Code::INTERNAL) {
    spdlog::error("request failed: {}", status.ToString());
  }
}

Status KvService::CheckKey(capnp::Data::Reader key) const {
  if (key.size() == 0) return Status::InvalidArgument("empty key");
  if (key.size() > options_.max_key_bytes) {
    return Status::TooLarge("key of " + std::to_string(key.size()) +
                            " bytes exceeds max-key-bytes " +
                            std::to_string(options_.max_key_bytes));
  }
  return Status::OK();
}

Status KvService::CheckValue(capnp::Data::Reader value) const {
  if (value.size() > options_.max_value_bytes) {
    return Status::TooLarge("value of " + std::to_string(value.size()) +
                            " bytes exceeds max-value-bytes " +
                            std::to_string(options_.max_value_bytes));
  }
  return Status::OK();
}

StatusOr<std::vector<std::string>> KvService::ReadElements(
    capnp::List<capnp::Data>::Reader elements) const {
  if (elements.size() == 0) return Status::InvalidArgument("no set elements given");
  std::vector<std::string> out;
  out.reserve(elements.size());
  // Elements are stored as parts of row keys, so they share the key limit.
  for (auto e : elements) {
    if (e.size() > options_.max_key_bytes) {
      return Status::TooLarge("set element of " + std::to_string(e.size()) +
                              " bytes exceeds max-key-bytes " +
                              std::to_string(options_.max_key_bytes));
    }
    out.push_back(String(e));
  }
  return out;
}

Status KvService::Spend(const std::vector<std::string>& values) {
  size_t bytes = 0;
  for (const auto& v : values) bytes += v.size();
  return Spend(bytes);
}

Status KvService::Spend(size_t reply_bytes) {
  if (reply_bytes > reply_budget_) {
    return Status::TooLarge("the reply would exceed max-message-bytes " +
                            std::to_string(options_.max_message_bytes) +
                            "; read fewer or smaller values per call");
  }
  reply_budget_ -= reply_bytes;
  return Status::OK();
}

Status KvService::EmptySet(std::string_view key) {
  Status absent = Absent(key, CrdtType::kOrSet);
  return absent.IsNotFound() ? Status::OK() : absent;
}

Status KvService::Absent(std::string_view key, CrdtType wanted) {
  GEOKV_ASSIGN_OR_RETURN(std::vector<CrdtType> live, store_.LiveTypes(key));
  for (CrdtType t : live) {
    if (t != wanted) {
      return Status::WrongType("key '" + PrintableBytes(key) + "' holds a value of type " +
                               std::string(TypeName(t)) +
                               ", not " + std::string(TypeName(wanted)));
    }
  }
  return Status::NotFound("key not found");
}

// ---- writes ----------------------------------------------------------------

// Each getter below is called once per request: Cap'n Proto counts every
// pointer read against the message's traversal limit, which is the message
// size limit, so reading a large value twice would exceed it.

KvService::ParsedWrite KvService::Parse(rpc::SetRequest::Reader r) const {
  auto key = r.getKey();
  auto value = r.getValue();
  Status s = CheckKey(key);
  if (s.ok()) s = CheckValue(value);
  if (!s.ok()) return {s, {}, {}};
  return {s, String(key), LwwSet{String(value)}};
}

KvService::ParsedWrite KvService::Parse(rpc::DelRequest::Reader r) const {
  auto key = r.getKey();
  return {CheckKey(key), String(key), LwwDelete{}};
}

KvService::ParsedWrite KvService::Parse(rpc::MvSetRequest::Reader r) const {
  auto key = r.getKey();
  auto value = r.getValue();
  Status s = CheckKey(key);
  if (s.ok()) s = CheckValue(value);
  if (!s.ok()) return {s, {}, {}};
  auto seen = DecodeClientContext(View(key), View(r.getContext()));
  if (!seen.ok()) return {seen.status(), {}, {}};
  return {s, String(key), MvWrite{String(value), std::move(seen).value()}};
}

KvService::ParsedWrite KvService::Parse(rpc::MvDelRequest::Reader r) const {
  auto key = r.getKey();
  Status s = CheckKey(key);
  if (!s.ok()) return {s, {}, {}};
  auto seen = DecodeClientContext(View(key), View(r.getContext()));
  if (!seen.ok()) return {seen.status(), {}, {}};
  return {s, String(key), MvClear{std::move(seen).value()}};
}

template <typename SetOperation, typename Request>
KvService::ParsedWrite KvService::ParseElements(Request r) const {
  auto key = r.getKey();
  Status s = CheckKey(key);
  if (!s.ok()) return {s, {}, {}};
  auto elements = ReadElements(r.getElements());
  if (!elements.ok()) return {elements.status(), {}, {}};
  return {s, String(key), SetOperation{std::move(elements).value()}};
}

KvService::ParsedWrite KvService::Parse(rpc::SAddRequest::Reader r) const {
  return ParseElements<SetAdd>(r);
}

KvService::ParsedWrite KvService::Parse(rpc::SRemRequest::Reader r) const {
  return ParseElements<SetRemove>(r);
}

KvService::ParsedWrite KvService::Parse(rpc::IncrByRequest::Reader r) const {
  auto key = r.getKey();
  return {CheckKey(key), String(key), CounterAdd{r.getDelta()}};
}

template <typename Request, typename AdoptFn>
kj::Promise<void> KvService::CoordinateWrite(Request request, ParsedWrite parsed,
                                             rpc::WriteReply::Builder reply,
                                             rpc::Consistency level, bool forwarded,
                                             AdoptFn adopt) {
  Plan plan;
  if (parsed.status.ok()) {
    plan = PlanFor(parsed.key, level, forwarded, true);
    parsed.status = plan.status;
  }
  if (!parsed.status.ok()) {
    SetOutcome(reply.initOutcome(), parsed.status);
    return kj::READY_NOW;
  }
  if (plan.forward_to) {
    ReplicaId node = *plan.forward_to;
    return ForwardTo(node, request, level)
        .then([adopt = kj::mv(adopt)](auto&& resp) mutable { adopt(resp.getReply()); },
              [this, reply, node](kj::Exception&& e) mutable {
                // A call that timed out or lost its connection may have been
                // applied by the owner: only a refusal means nothing was.
                const bool unknown = e.getType() == kj::Exception::Type::OVERLOADED ||
                                     e.getType() == kj::Exception::Type::DISCONNECTED;
                std::string what = "forwarding to the key's owner " + OwnerName(node) +
                                   " failed: " + Described(e);
                SetOutcome(reply.initOutcome(),
                           unknown ? Status::Timeout(what + "; the write may have been applied")
                                   : Status::Unavailable(what));
              });
  }
  return Write(std::move(parsed), reply, std::move(plan));
}

kj::Promise<void> KvService::Write(ParsedWrite parsed, rpc::WriteReply::Builder reply,
                                   Plan plan) {
  Status allowed = replicator_.WritesAllowed();
  if (!allowed.ok()) {
    metrics_->writes_refused_clock.Increment();
    SetOutcome(reply.initOutcome(), allowed);
    return kj::READY_NOW;
  }
  return committer_.Submit(std::move(parsed.key), std::move(parsed.op))
      .then([this, reply, plan = std::move(plan)](WriteResult result) mutable -> kj::Promise<void> {
        if (!result.status.ok()) {
          SetOutcome(reply.initOutcome(), result.status);
          return kj::READY_NOW;
        }
        reply.setToken(AsData(EncodeToken({store_.node_id(), result.seq})));
        replicator_.NoteHints(plan.others, result.seq);
        replicator_.NoteHints(plan.away, result.seq);
        if (plan.needed == 0) {
          SetOutcome(reply.initOutcome(), Status::OK());
          return kj::READY_NOW;
        }
        const size_t needed = plan.needed;
        return replicator_
            .WaitAcked(plan.others, result.seq, plan.segment, needed, options_.request_timeout)
            .then([this, reply, needed](size_t acked) mutable {
              if (acked >= needed) {
                SetOutcome(reply.initOutcome(), Status::OK());
                return;
              }
              SetOutcome(reply.initOutcome(), Status::Timeout(
                  "the write is durable here and on " + std::to_string(acked) +
                  " other owner(s), " + std::to_string(needed - acked) +
                  " fewer than its consistency level needs within --request-timeout (" +
                  std::to_string(options_.request_timeout.count()) +
                  " ms); it will reach the others"));
            });
      });
}

// ---- reads -----------------------------------------------------------------

template <typename Request, typename AdoptFn>
kj::Promise<std::optional<Status>> KvService::PrepareRead(Request request,
                                                          rpc::Consistency level,
                                                          bool forwarded, AdoptFn adopt) {
  using Prepared = std::optional<Status>;
  auto key = request.getKey();
  Status s = CheckKey(key);
  if (!s.ok()) return Prepared(s);
  auto tokens = DecodeTokens(request.getTokens());
  if (!tokens.ok()) return Prepared(tokens.status());
  Plan plan = PlanFor(View(key), level, forwarded, false);
  if (!plan.status.ok()) return Prepared(plan.status);
  if (plan.forward_to) {
    ReplicaId node = *plan.forward_to;
    return ForwardTo(node, request, level)
        .then([adopt = kj::mv(adopt)](auto&& resp) mutable {
                adopt(resp.getReply());
                return Prepared();
              },
              [this, node](kj::Exception&& e) {
                return Prepared(Status::Unavailable("forwarding to the key's owner " +
                                                    OwnerName(node) + " failed: " +
                                                    Described(e)));
              });
  }
  kj::Promise<Status> visible =
      tokens->empty() ? kj::Promise<Status>(Status::OK())
                      : replicator_.WaitVisible(std::move(tokens).value(), replicator_.token_wait());
  return visible.then([this, key = String(key), plan = std::move(plan)](Status s) mutable
                      -> kj::Promise<Prepared> {
    if (!s.ok() || plan.needed == 0) return Prepared(s);
    return RepairRead(std::move(key), std::move(plan.others), plan.needed)
        .then([](Status s) { return Prepared(s); });
  });
}

kj::Promise<Status> KvService::RepairRead(std::string key, std::vector<ReplicaId> others,
                                          size_t needed) {
  auto local = store_.KeyDigest(key);
  if (!local.ok()) return local.status();
  // Gathers the first `needed` digests; the others are not waited for.
  struct Gather {
    size_t needed = 0, pending = 0, answered = 0;
    uint64_t local = 0;
    std::vector<ReplicaId> differing;
    kj::Own<kj::PromiseFulfiller<void>> done;
    void Settle() {
      if (done->isWaiting() && (answered >= needed || pending == 0)) done->fulfill();
    }
  };
  auto g = std::make_shared<Gather>();
  g->needed = needed;
  g->pending = others.size();
  g->local = *local;
  auto paf = kj::newPromiseAndFulfiller<void>();
  g->done = kj::mv(paf.fulfiller);
  for (ReplicaId id : others) {
    tasks_.add(replicator_.KeyDigest(id, key, options_.request_timeout)
                   .then([g, id](uint64_t digest) {
                           --g->pending;
                           ++g->answered;
                           if (digest != g->local && g->answered <= g->needed) {
                             g->differing.push_back(id);
                           }
                           g->Settle();
                         },
                         [g](kj::Exception&&) {
                           --g->pending;
                           g->Settle();
                         }));
  }
  return paf.promise.then([this, g, key = std::move(key)]() mutable -> kj::Promise<Status> {
    if (g->answered < g->needed) {
      return Status::Timeout("the read needed " + std::to_string(g->needed) +
                             " other owner(s) of the key; " + std::to_string(g->answered) +
                             " answered within --request-timeout");
    }
    if (g->differing.empty()) return Status::OK();
    metrics_->read_repairs.Increment();
    // A differing owner whose state does not arrive has not answered: the
    // read cannot count it toward its level.
    kj::Vector<kj::Promise<std::optional<std::vector<Crdt>>>> fetches;
    for (ReplicaId id : g->differing) {
      fetches.add(replicator_.FetchStates(id, key, options_.request_timeout)
                      .then([](std::vector<Crdt> states) {
                              return std::optional<std::vector<Crdt>>(std::move(states));
                            },
                            [](kj::Exception&&) { return std::optional<std::vector<Crdt>>(); }));
    }
    return kj::joinPromises(fetches.releaseAsArray())
        .then([this, g, key](kj::Array<std::optional<std::vector<Crdt>>> fetched)
                  -> kj::Promise<WriteResult> {
          size_t failed = 0;
          for (const auto& states : fetched) failed += states ? 0 : 1;
          if (g->answered - failed < g->needed) {
            WriteResult r;
            r.status = Status::Timeout(
                "the read needed " + std::to_string(g->needed) + " other owner(s) of the key; " +
                std::to_string(failed) + " differed and did not send their state");
            return r;
          }
          RemoteApply apply;
          for (auto& states : fetched) {
            if (!states) continue;
            for (Crdt& state : *states) apply.joins.emplace_back(key, std::move(state));
          }
          if (apply.joins.empty()) return kj::Promise<WriteResult>(WriteResult{});
          return committer_.SubmitRemote(std::move(apply));
        })
        .then([this, g, key](WriteResult joined) {
          if (!joined.status.ok()) return joined.status;
          // The owners that differed get the joined state; the read does not
          // wait for them.
          for (ReplicaId id : g->differing) {
            tasks_.add(replicator_.PushStates(id, key, options_.request_timeout));
          }
          return Status::OK();
        });
  });
}

Status KvService::Read(std::string_view key, rpc::GetRequest::Reader,
                       rpc::ValueReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> state, store_.Get(key, CrdtType::kLww));
  if (state) {
    const auto& value = std::get<LwwRegister>(*state).value();
    if (value) {
      GEOKV_RETURN_IF_ERROR(Spend(value->size()));
      reply.setValue(AsData(*value));
      return Status::OK();
    }
  }
  return Absent(key, CrdtType::kLww);
}

Status KvService::Read(std::string_view key, rpc::MvGetRequest::Reader,
                       rpc::MvReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> state, store_.Get(key, CrdtType::kMvRegister));
  if (!state) return Absent(key, CrdtType::kMvRegister);
  const auto& reg = std::get<MvRegister>(*state);
  reply.setContext(AsData(EncodeClientContext(key, reg.context())));
  std::vector<std::string> values = reg.Values();
  metrics_->mv_siblings.Observe(static_cast<double>(values.size()));
  if (values.empty()) return Absent(key, CrdtType::kMvRegister);
  // Too large to answer: the context alone still lets a write merge them.
  GEOKV_RETURN_IF_ERROR(Spend(values));
  auto out = reply.initValues(values.size());
  for (size_t i = 0; i < values.size(); ++i) out.set(i, AsData(values[i]));
  return Status::OK();
}

Status KvService::Read(std::string_view key, rpc::SIsMemberRequest::Reader r,
                       rpc::BoolReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(bool member, store_.SetContains(key, View(r.getElement())));
  reply.setValue(member);
  if (member) return Status::OK();
  return EmptySet(key);
}

Status KvService::Read(std::string_view key, rpc::SMembersRequest::Reader r,
                       rpc::MembersReply::Builder reply) {
  std::optional<std::string_view> after;
  auto from = r.getFrom();
  if (from.isAfter()) after = View(from.getAfter());
  uint32_t limit = r.getLimit() == 0 ? kDefaultMembersPage
                                     : std::min(r.getLimit(), kDefaultMembersPage);
  GEOKV_ASSIGN_OR_RETURN(SetPage page, store_.SetMembers(key, after, limit));
  GEOKV_RETURN_IF_ERROR(Spend(page.elements));
  auto out = reply.initElements(page.elements.size());
  for (size_t i = 0; i < page.elements.size(); ++i) out.set(i, AsData(page.elements[i]));
  reply.setMore(page.more);
  if (!page.elements.empty() || after) return Status::OK();
  return EmptySet(key);
}

Status KvService::Read(std::string_view key, rpc::SCardRequest::Reader,
                       rpc::CountReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(uint64_t size, store_.SetSize(key));
  reply.setCount(size);
  if (size > 0) return Status::OK();
  return EmptySet(key);
}

Status KvService::Read(std::string_view key, rpc::CounterGetRequest::Reader,
                       rpc::CounterReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> state, store_.Get(key, CrdtType::kCounter));
  if (!state) return Absent(key, CrdtType::kCounter);
  reply.setValue(std::get<PnCounter>(*state).Value());
  return Status::OK();
}

Status KvService::Read(std::string_view key, rpc::TypeRequest::Reader,
                       rpc::TypeReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(std::vector<CrdtType> live, store_.LiveTypes(key));
  auto out = reply.initTypes(live.size());
  for (size_t i = 0; i < live.size(); ++i) {
    out.set(i, static_cast<rpc::Type>(static_cast<uint16_t>(live[i])));
  }
  return Status::OK();
}

// ---- typed calls -----------------------------------------------------------

kj::Promise<void> KvService::set(SetContext context) {
  return Timed(MetricOp::kSet, context, [&] { return WriteCall(context); });
}
kj::Promise<void> KvService::get(GetContext context) {
  return Timed(MetricOp::kGet, context, [&] { return ReadCall(context); });
}
kj::Promise<void> KvService::del(DelContext context) {
  return Timed(MetricOp::kDel, context, [&] { return WriteCall(context); });
}
kj::Promise<void> KvService::mvSet(MvSetContext context) {
  return Timed(MetricOp::kMvSet, context, [&] { return WriteCall(context); });
}
kj::Promise<void> KvService::mvGet(MvGetContext context) {
  return Timed(MetricOp::kMvGet, context, [&] { return ReadCall(context); });
}
kj::Promise<void> KvService::mvDel(MvDelContext context) {
  return Timed(MetricOp::kMvDel, context, [&] { return WriteCall(context); });
}
kj::Promise<void> KvService::sAdd(SAddContext context) {
  return Timed(MetricOp::kSAdd, context, [&] { return WriteCall(context); });
}
kj::Promise<void> KvService::sRem(SRemContext context) {
  return Timed(MetricOp::kSRem, context, [&] { return WriteCall(context); });
}
kj::Promise<void> KvService::sIsMember(SIsMemberContext context) {
  return Timed(MetricOp::kSIsMember, context, [&] { return ReadCall(context); });
}
kj::Promise<void> KvService::sMembers(SMembersContext context) {
  return Timed(MetricOp::kSMembers, context, [&] { return ReadCall(context); });
}
kj::Promise<void> KvService::sCard(SCardContext context) {
  return Timed(MetricOp::kSCard, context, [&] { return ReadCall(context); });
}
kj::Promise<void> KvService::incrBy(IncrByContext context) {
  return Timed(MetricOp::kIncrBy, context, [&] { return WriteCall(context); });
}
kj::Promise<void> KvService::counterGet(CounterGetContext context) {
  return Timed(MetricOp::kCounterGet, context, [&] { return ReadCall(context); });
}
kj::Promise<void> KvService::type(TypeContext context) {
  return Timed(MetricOp::kType, context, [&] { return ReadCall(context); });
}

// ---- batches and forwarded requests ----------------------------------------

bool KvService::IsWrite(rpc::Request::Reader r) {
  switch (r.which()) {
    case rpc::Request::SET:
    case rpc::Request::DEL:
    case rpc::Request::MV_SET:
    case rpc::Request::MV_DEL:
    case rpc::Request::S_ADD:
    case rpc::Request::S_REM:
    case rpc::Request::INCR_BY: return true;
    default: return false;
  }
}

KvService::ParsedWrite KvService::ParseWrite(rpc::Request::Reader r) const {
  switch (r.which()) {
    case rpc::Request::SET: return Parse(r.getSet());
    case rpc::Request::DEL: return Parse(r.getDel());
    case rpc::Request::MV_SET: return Parse(r.getMvSet());
    case rpc::Request::MV_DEL: return Parse(r.getMvDel());
    case rpc::Request::S_ADD: return Parse(r.getSAdd());
    case rpc::Request::S_REM: return Parse(r.getSRem());
    case rpc::Request::INCR_BY: return Parse(r.getIncrBy());
    default: return {Status::InvalidArgument("not a write"), {}, {}};
  }
}

kj::Promise<void> KvService::CoordinateUnionWrite(rpc::Request::Reader r, ParsedWrite parsed,
                                             rpc::Reply::Builder reply, rpc::Consistency level,
                                             bool forwarded,
                                             kj::Function<void(rpc::Reply::Reader)> adopt) {
  auto run = [&](auto request) {
    return CoordinateWrite(request, std::move(parsed), reply.initWrite(),
                           Resolve(level == rpc::Consistency::DEFAULT ? request.getConsistency()
                                                                      : level),
                           forwarded, kj::mv(adopt));
  };
  switch (r.which()) {
    case rpc::Request::SET: return run(r.getSet());
    case rpc::Request::DEL: return run(r.getDel());
    case rpc::Request::MV_SET: return run(r.getMvSet());
    case rpc::Request::MV_DEL: return run(r.getMvDel());
    case rpc::Request::S_ADD: return run(r.getSAdd());
    case rpc::Request::S_REM: return run(r.getSRem());
    case rpc::Request::INCR_BY: return run(r.getIncrBy());
    default: break;
  }
  KJ_FAIL_REQUIRE("not a write");
}

kj::Promise<std::optional<Status>> KvService::PrepareUnionRead(
    rpc::Request::Reader r, rpc::Consistency level, bool forwarded,
    kj::Function<void(rpc::Reply::Reader)> adopt) {
  auto run = [&](auto request) {
    return PrepareRead(request,
                       Resolve(level == rpc::Consistency::DEFAULT ? request.getConsistency()
                                                                  : level),
                       forwarded, kj::mv(adopt));
  };
  switch (r.which()) {
    case rpc::Request::GET: return run(r.getGet());
    case rpc::Request::MV_GET: return run(r.getMvGet());
    case rpc::Request::S_IS_MEMBER: return run(r.getSIsMember());
    case rpc::Request::S_MEMBERS: return run(r.getSMembers());
    case rpc::Request::S_CARD: return run(r.getSCard());
    case rpc::Request::COUNTER_GET: return run(r.getCounterGet());
    case rpc::Request::TYPE: return run(r.getType());
    default: break;
  }
  return std::optional<Status>(Status::InvalidArgument(
      "unknown request kind " + std::to_string(static_cast<int>(r.which()))));
}

void KvService::AnswerUnion(rpc::Request::Reader r, rpc::Reply::Builder reply, Status prepared) {
  switch (r.which()) {
    case rpc::Request::GET: Answer(r.getGet(), reply.initValue(), prepared); return;
    case rpc::Request::MV_GET: Answer(r.getMvGet(), reply.initMv(), prepared); return;
    case rpc::Request::S_IS_MEMBER: Answer(r.getSIsMember(), reply.initBoolean(), prepared); return;
    case rpc::Request::S_MEMBERS: Answer(r.getSMembers(), reply.initMembers(), prepared); return;
    case rpc::Request::S_CARD: Answer(r.getSCard(), reply.initCount(), prepared); return;
    case rpc::Request::COUNTER_GET:
      Answer(r.getCounterGet(), reply.initCounter(), prepared);
      return;
    case rpc::Request::TYPE: Answer(r.getType(), reply.initType(), prepared); return;
    default: SetOutcome(reply.initUnknown(), prepared); return;
  }
}

kj::Promise<void> KvService::batch(BatchContext context) {
  auto start = std::chrono::steady_clock::now();
  return kj::evalNow([&] { return RunBatch(context); })
      .then(
          [this, context, start]() mutable {
            double seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            auto requests = context.getParams().getRequests();
            auto replies = context.getResults().getReplies();
            for (uint32_t i = 0; i < requests.size() && i < replies.size(); ++i) {
              CountBatched(requests[i], replies[i], seconds);
            }
            metrics_->Request(MetricOp::kBatch, 0, seconds);
          },
          [this, start](kj::Exception&& e) {
            double seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            metrics_->Request(MetricOp::kBatch,
                              static_cast<uint16_t>(rpc::Outcome::Code::UNAVAILABLE), seconds);
            kj::throwFatalException(kj::mv(e));
          });
}

void KvService::CountBatched(rpc::Request::Reader request, rpc::Reply::Reader reply,
                             double seconds) {
  MetricOp op;
  switch (request.which()) {
    case rpc::Request::SET: op = MetricOp::kSet; break;
    case rpc::Request::GET: op = MetricOp::kGet; break;
    case rpc::Request::DEL: op = MetricOp::kDel; break;
    case rpc::Request::MV_SET: op = MetricOp::kMvSet; break;
    case rpc::Request::MV_GET: op = MetricOp::kMvGet; break;
    case rpc::Request::MV_DEL: op = MetricOp::kMvDel; break;
    case rpc::Request::S_ADD: op = MetricOp::kSAdd; break;
    case rpc::Request::S_REM: op = MetricOp::kSRem; break;
    case rpc::Request::S_IS_MEMBER: op = MetricOp::kSIsMember; break;
    case rpc::Request::S_MEMBERS: op = MetricOp::kSMembers; break;
    case rpc::Request::S_CARD: op = MetricOp::kSCard; break;
    case rpc::Request::INCR_BY: op = MetricOp::kIncrBy; break;
    case rpc::Request::COUNTER_GET: op = MetricOp::kCounterGet; break;
    case rpc::Request::TYPE: op = MetricOp::kType; break;
    default: return;
  }
  rpc::Outcome::Reader outcome;
  switch (reply.which()) {
    case rpc::Reply::WRITE: outcome = reply.getWrite().getOutcome(); break;
    case rpc::Reply::VALUE: outcome = reply.getValue().getOutcome(); break;
    case rpc::Reply::MV: outcome = reply.getMv().getOutcome(); break;
    case rpc::Reply::BOOLEAN: outcome = reply.getBoolean().getOutcome(); break;
    case rpc::Reply::MEMBERS: outcome = reply.getMembers().getOutcome(); break;
    case rpc::Reply::COUNT: outcome = reply.getCount().getOutcome(); break;
    case rpc::Reply::COUNTER: outcome = reply.getCounter().getOutcome(); break;
    case rpc::Reply::TYPE: outcome = reply.getType().getOutcome(); break;
    case rpc::Reply::UNKNOWN: outcome = reply.getUnknown(); break;
  }
  metrics_->Request(op, static_cast<uint16_t>(outcome.getCode()), seconds);
}

kj::Promise<void> KvService::RunBatch(BatchContext context) {
  CheckServing();
  auto requests = context.getParams().getRequests();
  auto replies = context.getResults().initReplies(requests.size());

  // Every request is read and checked before any write is queued, so a
  // batch that fails (a malformed message throws while it is read) or is
  // refused leaves nothing applied: retrying it cannot apply an increment
  // twice.
  std::vector<std::pair<uint32_t, ParsedWrite>> writes;
  std::vector<uint32_t> reads;
  for (uint32_t i = 0; i < requests.size(); ++i) {
    if (IsWrite(requests[i])) {
      writes.emplace_back(i, ParseWrite(requests[i]));
    } else {
      reads.push_back(i);
    }
  }
  if (writes.size() > committer_.max_pending()) {
    // It could never fit: refusing each write is final, not OVERLOADED.
    Status refused = Status::TooLarge("a batch of " + std::to_string(writes.size()) +
                                      " writes exceeds max-pending-writes " +
                                      std::to_string(committer_.max_pending()));
    for (auto& [i, write] : writes) write.status = refused;
  } else if (!committer_.HasRoom(writes.size())) {
    return Overloaded();
  }

  kj::Vector<kj::Promise<void>> written;
  for (auto& [i, write] : writes) {
    written.add(CoordinateUnionWrite(requests[i], std::move(write), replies[i],
                                rpc::Consistency::DEFAULT, false,
                                [replies, i = i](rpc::Reply::Reader r) mutable {
                                  replies.setWithCaveats(i, r);
                                }));
  }
  // The reads run after the writes; they are answered together, within one
  // reply budget, once each is prepared.
  kj::Promise<void> ready = written.empty() ? kj::Promise<void>(kj::READY_NOW)
                                            : kj::joinPromises(written.releaseAsArray());
  return ready
      .then([this, requests, replies, reads]() mutable {
        kj::Vector<kj::Promise<std::optional<Status>>> prepared;
        for (uint32_t i : reads) {
          prepared.add(PrepareUnionRead(requests[i], rpc::Consistency::DEFAULT, false,
                                   [replies, i](rpc::Reply::Reader r) mutable {
                                     replies.setWithCaveats(i, r);
                                   }));
        }
        return kj::joinPromises(prepared.releaseAsArray());
      })
      .then([this, requests, replies, reads](kj::Array<std::optional<Status>> prepared) mutable {
        reply_budget_ = ReplyBudget();
        for (size_t j = 0; j < reads.size(); ++j) {
          if (prepared[j]) AnswerUnion(requests[reads[j]], replies[reads[j]], *prepared[j]);
        }
      });
}

kj::Promise<void> KvService::RunForwarded(rpc::Request::Reader request, rpc::Consistency level,
                                          rpc::Reply::Builder reply) {
  CheckServing();
  auto no_adopt = [](rpc::Reply::Reader) { KJ_FAIL_REQUIRE("a forwarded request forwarded again"); };
  if (IsWrite(request)) {
    ParsedWrite parsed = ParseWrite(request);
    if (parsed.status.ok() && !committer_.HasRoom(1)) return Overloaded();
    return CoordinateUnionWrite(request, std::move(parsed), reply, level, true, no_adopt);
  }
  return PrepareUnionRead(request, level, true, no_adopt)
      .then([this, request, reply](std::optional<Status> s) mutable {
        reply_budget_ = ReplyBudget();
        AnswerUnion(request, reply, s.value_or(Status::OK()));
      });
}

rpc::WriteReply::Reader KvService::Pick(rpc::Reply::Reader r, rpc::WriteReply::Builder) {
  KJ_REQUIRE(r.isWrite(), "the owner answered another kind of reply");
  return r.getWrite();
}
rpc::ValueReply::Reader KvService::Pick(rpc::Reply::Reader r, rpc::ValueReply::Builder) {
  KJ_REQUIRE(r.isValue(), "the owner answered another kind of reply");
  return r.getValue();
}
rpc::MvReply::Reader KvService::Pick(rpc::Reply::Reader r, rpc::MvReply::Builder) {
  KJ_REQUIRE(r.isMv(), "the owner answered another kind of reply");
  return r.getMv();
}
rpc::BoolReply::Reader KvService::Pick(rpc::Reply::Reader r, rpc::BoolReply::Builder) {
  KJ_REQUIRE(r.isBoolean(), "the owner answered another kind of reply");
  return r.getBoolean();
}
rpc::MembersReply::Reader KvService::Pick(rpc::Reply::Reader r, rpc::MembersReply::Builder) {
  KJ_REQUIRE(r.isMembers(), "the owner answered another kind of reply");
  return r.getMembers();
}
rpc::CountReply::Reader KvService::Pick(rpc::Reply::Reader r, rpc::CountReply::Builder) {
  KJ_REQUIRE(r.isCount(), "the owner answered another kind of reply");
  return r.getCount();
}
rpc::CounterReply::Reader KvService::Pick(rpc::Reply::Reader r, rpc::CounterReply::Builder) {
  KJ_REQUIRE(r.isCounter(), "the owner answered another kind of reply");
  return r.getCounter();
}
rpc::TypeReply::Reader KvService::Pick(rpc::Reply::Reader r, rpc::TypeReply::Builder) {
  KJ_REQUIRE(r.isType(), "the owner answered another kind of reply");
  return r.getType();
}

kj::Promise<void> KvService::info(InfoContext context) {
  CheckServing();
  auto out = context.getResults();
  out.setName(options_.name);
  out.setRegion(options_.region);
  out.setReplicaId(store_.node_id());
  out.setVersion(GEOKV_VERSION);
  out.setApiVersion(1);
  std::vector<uint64_t> digests = store_.TreeDigests();
  out.setStateDigest(Hash64(std::string_view(reinterpret_cast<const char*>(digests.data()),
                                             digests.size() * sizeof(uint64_t))));
  out.setLastSeq(store_.LastSeq());
  out.setClockOffsetMs(replicator_.ClockOffsetMs());
  Status writes = replicator_.WritesAllowed();
  if (!writes.ok()) out.setWritesRefused(writes.message());
  auto keys = store_.KeyCount();
  out.setKeyCount(keys.ok() ? *keys : 0);
  Replicator::HintStats hints = replicator_.Hints();
  out.setHintsStored(hints.stored);
  out.setHintsReplayed(hints.replayed);
  out.setHintsDropped(hints.dropped);
  out.setHintsPending(hints.pending);
  out.setForwarded(static_cast<uint64_t>(metrics_->forwarded.Value()));
  out.setReadRepairs(static_cast<uint64_t>(metrics_->read_repairs.Value()));
  std::vector<PeerStatus> peers = replicator_.Peers();
  auto list = out.initPeers(peers.size());
  for (size_t i = 0; i < peers.size(); ++i) {
    const PeerStatus& p = peers[i];
    auto info = list[i];
    info.setRegion(p.address.region);
    info.setAddress(p.address.address);
    info.setName(p.name);
    info.setConnected(p.connected);
    info.setRepairing(p.repairing);
    info.setAcked(p.acked);
    info.setBacklogBytes(p.backlog_bytes);
    info.setClockOffsetMs(p.clock_offset_ms.value_or(0));
  }
  return kj::READY_NOW;
}

kj::Promise<void> KvService::waitReplicated(WaitReplicatedContext context) {
  return Timed(MetricOp::kWaitReplicated, context, [&] { return RunWaitReplicated(context); });
}

kj::Promise<void> KvService::RunWaitReplicated(WaitReplicatedContext context) {
  CheckServing();
  auto request = context.getParams();
  auto reply = context.getResults();
  auto tokens = DecodeTokens(request.getTokens());
  if (!tokens.ok()) {
    SetOutcome(reply.initOutcome(), tokens.status());
    return kj::READY_NOW;
  }
  std::vector<std::string> regions;
  for (auto r : request.getRegions()) regions.emplace_back(r.cStr());
  auto timeout = request.getTimeoutMs() == 0 ? replicator_.token_wait()
                                             : std::chrono::milliseconds(request.getTimeoutMs());
  return replicator_.WaitReplicated(std::move(tokens).value(), std::move(regions), timeout)
      .then([this, reply, timeout](StatusOr<std::vector<std::string>> missing) mutable {
        if (!missing.ok()) {
          SetOutcome(reply.initOutcome(), missing.status());
          return;
        }
        if (missing->empty()) {
          SetOutcome(reply.initOutcome(), Status::OK());
          return;
        }
        std::string names;
        auto list = reply.initMissing(missing->size());
        for (size_t i = 0; i < missing->size(); ++i) {
          list.set(i, (*missing)[i]);
          names += (i ? ", " : "") + (*missing)[i];
        }
        SetOutcome(reply.initOutcome(),
                   Status::Timeout("not replicated to " + names + " within " +
                                   std::to_string(timeout.count()) + " ms"));
      });
}

namespace {

rpc::MemberState WireState(MemberState s) {
  switch (s) {
    case MemberState::kAlive: return rpc::MemberState::ALIVE;
    case MemberState::kSuspect: return rpc::MemberState::SUSPECT;
    case MemberState::kDead: return rpc::MemberState::DEAD;
    case MemberState::kLeft: return rpc::MemberState::LEFT;
  }
  return rpc::MemberState::DEAD;
}

}  // namespace

void KvService::Describe(const Member& m, rpc::MemberInfo::Builder out) const {
  out.setName(m.name);
  out.setRegion(m.region);
  out.setReplicaId(m.id);
  out.setState(WireState(m.state));
  out.setIncarnation(m.incarnation);
  if (m.region == view_.region()) out.setGossipAddress(m.gossip_address);
  out.setClientAddress(m.client_address);
  auto route = m.peer_routes.find(view_.region());
  out.setPeerAddress(m.region != view_.region() && route != m.peer_routes.end()
                         ? route->second
                         : m.peer_address);
  out.setOwnedShare(view_.OwnedShare(m.id));
  out.setPrimaryShare(view_.PrimaryShare(m.id));
}

kj::Promise<void> KvService::cluster(ClusterContext context) {
  CheckServing();
  auto out = context.getResults();
  out.setReplicationFactor(static_cast<uint32_t>(view_.replication_factor()));
  out.setVnodes(static_cast<uint32_t>(view_.vnodes()));
  out.setFailureDetections(failure_detections_ ? failure_detections_() : 0);
  std::vector<const Member*> members = view_.Members();
  auto list = out.initMembers(members.size());
  for (size_t i = 0; i < members.size(); ++i) Describe(*members[i], list[i]);
  return kj::READY_NOW;
}

kj::Promise<void> KvService::owners(OwnersContext context) {
  CheckServing();
  auto key = context.getParams().getKey();
  auto out = context.getResults();
  Status s = CheckKey(key);
  SetOutcome(out.initOutcome(), s);
  if (!s.ok()) return kj::READY_NOW;
  out.setSegment(static_cast<uint32_t>(TreeSegmentOf(View(key))));
  std::vector<std::string> regions = view_.Regions();
  auto list = out.initRegions(regions.size());
  for (size_t i = 0; i < regions.size(); ++i) {
    list[i].setRegion(regions[i]);
    std::vector<ReplicaId> owners = view_.Owners(View(key), regions[i]);
    auto owned = list[i].initOwners(owners.size());
    for (size_t j = 0; j < owners.size(); ++j) {
      if (const Member* m = view_.Find(owners[j])) Describe(*m, owned[j]);
    }
  }
  return kj::READY_NOW;
}

kj::Promise<void> KvService::leave(LeaveContext context) {
  CheckServing();
  Status s = leave_ ? leave_() : Status::Unavailable("this node cannot leave");
  SetOutcome(context.getResults().initOutcome(), s);
  return kj::READY_NOW;
}

kj::Promise<void> KvService::remove(RemoveContext context) {
  CheckServing();
  const std::string wanted = context.getParams().getMember();
  std::optional<ReplicaId> id;
  for (const Member* m : view_.Members()) {
    if (m->region == view_.region() &&
        (m->name == wanted || fmt::format("{:016x}", m->id) == wanted)) {
      id = m->id;
    }
  }
  Status s;
  if (!remove_) {
    s = Status::Unavailable("this node runs no gossip (--gossip-listen): its region has no "
                            "other members");
  } else if (!id) {
    s = Status::NotFound("region " + view_.region() + " has no member named " + wanted);
  } else {
    s = remove_(*id);
    if (s.code() == Status::Code::kFailedPrecondition) s = Status::InvalidArgument(s.message());
    if (s.ok()) spdlog::info("member {} of region {} removed", wanted, view_.region());
  }
  SetOutcome(context.getResults().initOutcome(), s);
  return kj::READY_NOW;
}

}  // namespace geokv

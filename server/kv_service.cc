#include "server/kv_service.h"

#include <kj/debug.h>

#include <string>
#include <utility>
#include <vector>

#include "replication/causal_token.h"
#include "schema/kv_text.h"

namespace geokv {
namespace {

// The metric of a request kind: both enums list the typed calls in the
// schema's order.
static_assert(static_cast<int>(RequestKind::kSet) == static_cast<int>(MetricOp::kSet));
static_assert(static_cast<int>(RequestKind::kType) == static_cast<int>(MetricOp::kType));
MetricOp OpOf(RequestKind kind) { return static_cast<MetricOp>(static_cast<uint8_t>(kind)); }

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

kj::Maybe<kj::Promise<void>> CallLimit::Wait() {
  if (under_way_ < max_) return nullptr;
  auto paf = kj::newPromiseAndFulfiller<void>();
  waiting_ = kj::mv(paf.fulfiller);
  return kj::Promise<void>(kj::mv(paf.promise));
}

void CallLimit::End() {
  --under_way_;
  if (waiting_ && under_way_ < max_) {
    waiting_->fulfill();
    waiting_ = nullptr;
  }
}

kj::Promise<void> AnswerLogin(Authenticator* users, LoginCallContext context,
                              std::function<capnp::Capability::Client(Role)> open) {
  if (users == nullptr) {
    SetOutcome(Status::InvalidArgument("this node has no users (--users): every connection may "
                                       "do everything without logging in"),
               context.getResults().initOutcome());
    return kj::READY_NOW;
  }
  auto params = context.getParams();
  return users->Login(params.getUser(), params.getSecret())
      .then([context, open = std::move(open)](StatusOr<Role> role) mutable {
        auto results = context.getResults();
        SetOutcome(role.status(), results.initOutcome());
        if (!role.ok()) return;
        results.setRole(RoleName(*role));
        results.setKv(open(*role).castAs<rpc::GeoKv>());
      });
}

kj::Promise<void> LoginService::login(LoginContext context) {
  return AnswerLogin(&users_, context, open_);
}

capnp::Capability::Server::DispatchCallResult LoginService::dispatchCall(
    uint64_t interface_id, uint16_t method_id,
    capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) {
  if (interface_id == capnp::typeId<rpc::Login>()) {
    return rpc::Login::Server::dispatchCall(interface_id, method_id, context);
  }
  kj::throwFatalException(KJ_EXCEPTION(
      FAILED, "unauthenticated: this node has users (--users); log in first (Login.login, or "
              "geokv-cli --user)"));
}

KvService::KvService(Coordinator& coordinator, Admin& admin, Replicator& replicator,
                     const ServingGate& gate, std::shared_ptr<CallLimit> calls,
                     KvServiceOptions options, ClientAccess access)
    : coordinator_(coordinator),
      admin_(admin),
      replicator_(replicator),
      gate_(gate),
      calls_(std::move(calls)),
      options_(std::move(options)),
      access_(access),
      metrics_(options_.metrics) {
  if (metrics_ == nullptr) {
    own_metrics_ = std::make_unique<Metrics>("");
    metrics_ = own_metrics_.get();
  }
}

KvService::~KvService() = default;

kj::Promise<void> KvService::Counted(kj::Promise<void> call) {
  if (!calls_) return call;
  calls_->Begin();
  return call.attach(kj::defer([calls = calls_] { calls->End(); }));
}

void KvService::CheckServing() const {
  if (!gate_.open()) kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "node is shutting down"));
}

void KvService::CheckAllowed(ParsedRequest& request) const {
  if (request.status.ok() && IsWrite(request.kind)) {
    request.status = CheckRole(access_.role, Role::kWrite, "a write");
  }
}

void KvService::Overloaded() {
  kj::throwFatalException(
      KJ_EXCEPTION(OVERLOADED, "too many writes waiting to commit; retry later"));
}

template <typename Context, typename Call>
kj::Promise<void> KvService::Timed(MetricOp op, Context context, Call call) {
  auto start = std::chrono::steady_clock::now();
  return Counted(kj::evalNow(call)).then(
      [this, op, context, start]() mutable {
        metrics_->Request(op, static_cast<uint16_t>(context.getResults().getOutcome().getCode()),
                          SecondsSince(start));
      },
      [this, op, start](kj::Exception&& e) {
        metrics_->Request(op, static_cast<uint16_t>(rpc::Outcome::Code::UNAVAILABLE),
                          SecondsSince(start));
        kj::throwFatalException(kj::mv(e));
      });
}

template <typename Context>
kj::Promise<void> KvService::Single(MetricOp op, Context context) {
  return Timed(op, context, [this, context]() mutable {
    CheckServing();
    ParsedRequest parsed = ParseRequest(context.getParams(), options_.limits);
    CheckAllowed(parsed);
    return coordinator_.Run(std::move(parsed), false).then([context](Answer answer) mutable {
      if (answer.overloaded) Overloaded();
      EncodeReply(answer.results.front(), context.getResults());
    });
  });
}

kj::Promise<void> KvService::set(SetContext c) { return Single(MetricOp::kSet, c); }
kj::Promise<void> KvService::get(GetContext c) { return Single(MetricOp::kGet, c); }
kj::Promise<void> KvService::del(DelContext c) { return Single(MetricOp::kDel, c); }
kj::Promise<void> KvService::mvSet(MvSetContext c) { return Single(MetricOp::kMvSet, c); }
kj::Promise<void> KvService::mvGet(MvGetContext c) { return Single(MetricOp::kMvGet, c); }
kj::Promise<void> KvService::mvDel(MvDelContext c) { return Single(MetricOp::kMvDel, c); }
kj::Promise<void> KvService::sAdd(SAddContext c) { return Single(MetricOp::kSAdd, c); }
kj::Promise<void> KvService::sRem(SRemContext c) { return Single(MetricOp::kSRem, c); }
kj::Promise<void> KvService::sIsMember(SIsMemberContext c) {
  return Single(MetricOp::kSIsMember, c);
}
kj::Promise<void> KvService::sMembers(SMembersContext c) {
  return Single(MetricOp::kSMembers, c);
}
kj::Promise<void> KvService::sCard(SCardContext c) { return Single(MetricOp::kSCard, c); }
kj::Promise<void> KvService::incrBy(IncrByContext c) { return Single(MetricOp::kIncrBy, c); }
kj::Promise<void> KvService::counterGet(CounterGetContext c) {
  return Single(MetricOp::kCounterGet, c);
}
kj::Promise<void> KvService::type(TypeContext c) { return Single(MetricOp::kType, c); }

kj::Promise<void> KvService::batch(BatchContext context) {
  auto start = std::chrono::steady_clock::now();
  return Counted(kj::evalNow([&] { return RunBatch(context, start); }))
      .then([this, start]() { metrics_->Request(MetricOp::kBatch, 0, SecondsSince(start)); },
            [this, start](kj::Exception&& e) {
              metrics_->Request(MetricOp::kBatch,
                                static_cast<uint16_t>(rpc::Outcome::Code::UNAVAILABLE),
                                SecondsSince(start));
              kj::throwFatalException(kj::mv(e));
            });
}

kj::Promise<void> KvService::RunBatch(BatchContext context,
                                      std::chrono::steady_clock::time_point start) {
  CheckServing();
  // Parsed whole before anything runs: a batch that is malformed (it throws
  // while it is read) or refused leaves nothing applied, so retrying it
  // cannot apply an increment twice.
  std::vector<ParsedRequest> requests =
      ParseBatch(context.getParams().getRequests(), options_.limits);
  std::vector<RequestKind> kinds;
  kinds.reserve(requests.size());
  for (ParsedRequest& r : requests) {
    CheckAllowed(r);
    kinds.push_back(r.kind);
  }
  return coordinator_.RunBatch(std::move(requests))
      .then([this, context, kinds = std::move(kinds), start](Answer answer) mutable {
        if (answer.overloaded) Overloaded();
        auto replies = context.getResults().initReplies(kinds.size());
        const double seconds = SecondsSince(start);
        for (size_t i = 0; i < kinds.size(); ++i) {
          EncodeReply(kinds[i], answer.results[i], replies[i]);
          if (kinds[i] != RequestKind::kUnknown) {
            metrics_->Request(OpOf(kinds[i]),
                              static_cast<uint16_t>(OutcomeCode(answer.results[i].status)),
                              seconds);
          }
        }
      });
}

kj::Promise<void> KvService::RunForwarded(rpc::Request::Reader request, rpc::Consistency level,
                                          rpc::Reply::Builder reply) {
  CheckServing();
  ParsedRequest parsed = ParseRequest(request, options_.limits);
  if (Status known = CheckConsistency(level); !known.ok()) {
    if (parsed.status.ok()) parsed.status = known;
  } else if (level != rpc::Consistency::DEFAULT) {
    parsed.consistency = PlainConsistency(level);
  }
  const RequestKind kind = parsed.kind;
  return coordinator_.Run(std::move(parsed), true).then([kind, reply](Answer answer) mutable {
    if (answer.overloaded) Overloaded();
    EncodeReply(kind, answer.results.front(), reply);
  });
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
    SetOutcome(tokens.status(), reply.initOutcome());
    return kj::READY_NOW;
  }
  std::vector<std::string> regions;
  for (auto r : request.getRegions()) regions.emplace_back(r.cStr());
  auto timeout = request.getTimeoutMs() == 0 ? replicator_.token_wait()
                                             : std::chrono::milliseconds(request.getTimeoutMs());
  return replicator_.WaitReplicated(std::move(tokens).value(), std::move(regions), timeout)
      .then([reply, timeout](StatusOr<std::vector<std::string>> missing) mutable {
        if (!missing.ok()) {
          SetOutcome(missing.status(), reply.initOutcome());
          return;
        }
        if (missing->empty()) {
          SetOutcome(Status::OK(), reply.initOutcome());
          return;
        }
        std::string names;
        auto list = reply.initMissing(missing->size());
        for (size_t i = 0; i < missing->size(); ++i) {
          list.set(i, (*missing)[i]);
          names += (i ? ", " : "") + (*missing)[i];
        }
        SetOutcome(Status::Timeout("not replicated to " + names + " within " +
                                   std::to_string(timeout.count()) + " ms"),
                   reply.initOutcome());
      });
}

kj::Promise<void> KvService::info(InfoContext context) {
  CheckServing();
  return Counted(admin_.Info(context.getResults(), access_.role == Role::kAdmin));
}

kj::Promise<void> KvService::cluster(ClusterContext context) {
  CheckServing();
  admin_.Cluster(context.getResults());
  return kj::READY_NOW;
}

kj::Promise<void> KvService::owners(OwnersContext context) {
  CheckServing();
  admin_.Owners(context.getParams().getKey(), context.getResults());
  return kj::READY_NOW;
}

kj::Promise<void> KvService::leave(LeaveContext context) {
  CheckServing();
  Status allowed = CheckRole(access_.role, Role::kAdmin, "leave");
  SetOutcome(allowed.ok() ? admin_.Leave() : allowed, context.getResults().initOutcome());
  return kj::READY_NOW;
}

kj::Promise<void> KvService::remove(RemoveContext context) {
  CheckServing();
  Status allowed = CheckRole(access_.role, Role::kAdmin, "remove");
  SetOutcome(allowed.ok() ? admin_.Remove(context.getParams().getMember()) : allowed,
             context.getResults().initOutcome());
  return kj::READY_NOW;
}

kj::Promise<void> KvService::login(LoginContext context) {
  CheckServing();
  return AnswerLogin(access_.users, context, [this](Role role) -> capnp::Capability::Client {
    return kj::heap<KvService>(coordinator_, admin_, replicator_, gate_, calls_, options_,
                               ClientAccess{role, access_.users});
  });
}

}  // namespace geokv

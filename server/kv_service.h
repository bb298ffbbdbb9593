// The client API (schema/kv.capnp) of one node: validates each request
// against the limits and coordinates it. A request for a key this node does
// not own is forwarded to an owner that is up; on an owner, a write goes
// through the group committer and then waits until enough other owners hold
// it (the request's consistency level), and a read compares the key's
// digest with enough other owners, joins the states of those that differ
// (and repairs them) and answers from the store, on the event loop's thread.

#ifndef GEOKV_SERVER_KV_SERVICE_H_
#define GEOKV_SERVER_KV_SERVICE_H_

#include <chrono>
#include <functional>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "schema/kv.capnp.h"
#include "schema/kv_text.h"
#include "replication/group_commit.h"
#include "monitoring/metrics.h"
#include "replication/replicator.h"
#include "server/cluster_view.h"
#include "storage/store.h"

namespace geokv {

struct KvServiceOptions {
  std::string name;    // the node's name
  std::string region;
  size_t max_key_bytes = 4 << 10;    // keys and set elements
  size_t max_value_bytes = 8 << 20;  // register values
  // The largest message; replies are kept below it (see ReplyBudget).
  size_t max_message_bytes = 64 << 20;
  // The level of requests that ask for `default`. Default: quorum.
  rpc::Consistency consistency = rpc::Consistency::QUORUM;
  // How long a coordinator waits for other owners (acknowledgements,
  // digests, forwarded requests).
  std::chrono::milliseconds request_timeout{5000};
  // Where the service reports. Not owned. Default (nullptr): its own,
  // served nowhere.
  Metrics* metrics = nullptr;
};


// Default page of sMembers when the request's limit is 0, and its largest.
inline constexpr uint32_t kDefaultMembersPage = 1000;

// Lives on the event loop's thread, like the committer and every call.
class KvService final : public rpc::GeoKv::Server {
 public:
  // `store`, `committer`, `replicator` and `view` must outlive the service.
  KvService(Store& store, GroupCommitter& committer, Replicator& replicator,
            const ClusterView& view, KvServiceOptions options);
  ~KvService();

  // Runs a request another node of the region forwarded, here (the
  // replicator's forward handler).
  kj::Promise<void> RunForwarded(rpc::Request::Reader request, rpc::Consistency level,
                                 rpc::Reply::Builder reply);

  // Where `cluster` reads the failure detections count of gossip.
  void SetFailureDetections(std::function<uint64_t()> f) { failure_detections_ = std::move(f); }
  // What `leave` starts: OK, or why the node cannot leave.
  void SetLeave(std::function<Status()> f) { leave_ = std::move(f); }
  // What `remove` does to a member of this region: see Membership::Remove.
  void SetMemberRemoval(std::function<Status(ReplicaId)> f) { remove_ = std::move(f); }

  // From now on every call fails with DISCONNECTED ("shutting down"); calls
  // already accepted run to the end.
  void StopServing() { serving_ = false; }

  kj::Promise<void> set(SetContext context) override;
  kj::Promise<void> get(GetContext context) override;
  kj::Promise<void> del(DelContext context) override;
  kj::Promise<void> mvSet(MvSetContext context) override;
  kj::Promise<void> mvGet(MvGetContext context) override;
  kj::Promise<void> mvDel(MvDelContext context) override;
  kj::Promise<void> sAdd(SAddContext context) override;
  kj::Promise<void> sRem(SRemContext context) override;
  kj::Promise<void> sIsMember(SIsMemberContext context) override;
  kj::Promise<void> sMembers(SMembersContext context) override;
  kj::Promise<void> sCard(SCardContext context) override;
  kj::Promise<void> incrBy(IncrByContext context) override;
  kj::Promise<void> counterGet(CounterGetContext context) override;
  kj::Promise<void> type(TypeContext context) override;
  kj::Promise<void> batch(BatchContext context) override;
  kj::Promise<void> info(InfoContext context) override;
  kj::Promise<void> waitReplicated(WaitReplicatedContext context) override;
  kj::Promise<void> cluster(ClusterContext context) override;
  kj::Promise<void> owners(OwnersContext context) override;
  kj::Promise<void> leave(LeaveContext context) override;
  kj::Promise<void> remove(RemoveContext context) override;

 private:
  // A write request turned into what the store applies, or why it is refused.
  struct ParsedWrite {
    Status status;
    std::string key;
    Operation op;
  };

  // Where an operation on one key runs.
  struct Plan {
    Status status;  // not OK: refuse the operation with it
    std::optional<ReplicaId> forward_to;  // run it on that owner
    std::vector<ReplicaId> others;  // running here: the other owners up
    std::vector<ReplicaId> away;    // and those that are not (hinted)
    size_t needed = 0;              // of `others`, how many must answer
    size_t segment = 0;             // the key's tree segment
  };
  // `forwarded`: another node sent the request here to run, whatever this
  // node's ring says.
  Plan PlanFor(std::string_view key, rpc::Consistency level, bool forwarded, bool write) const;
  std::string OwnerName(ReplicaId id) const;
  void Describe(const Member& m, rpc::MemberInfo::Builder out) const;
  rpc::Consistency Resolve(rpc::Consistency level) const {
    return level == rpc::Consistency::DEFAULT ? options_.consistency : level;
  }

  // Runs a typed call and counts it: its operation, its outcome (unavailable
  // for an exception) and its time.
  template <typename Context, typename Call>
  kj::Promise<void> Timed(MetricOp op, Context context, Call call) {
    auto start = std::chrono::steady_clock::now();
    auto seconds = [start] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    return kj::evalNow(call).then(
        [this, op, context, seconds]() mutable {
          metrics_->Request(op, static_cast<uint16_t>(context.getResults().getOutcome().getCode()),
                            seconds());
        },
        [this, op, seconds](kj::Exception&& e) {
          metrics_->Request(op, static_cast<uint16_t>(rpc::Outcome::Code::UNAVAILABLE), seconds());
          kj::throwFatalException(kj::mv(e));
        });
  }

  template <typename Context>
  kj::Promise<void> WriteCall(Context& context) {
    CheckServing();
    auto request = context.getParams();
    ParsedWrite parsed = Parse(request);
    if (parsed.status.ok() && !committer_.HasRoom(1)) return Overloaded();
    return CoordinateWrite(request, std::move(parsed), context.getResults(),
                           Resolve(request.getConsistency()), false,
                           [context](rpc::Reply::Reader r) mutable {
                             context.setResults(Pick(r, context.getResults()));
                           });
  }

  template <typename Context>
  kj::Promise<void> ReadCall(Context& context) {
    CheckServing();
    auto request = context.getParams();
    return PrepareRead(request, Resolve(request.getConsistency()), false,
                       [context](rpc::Reply::Reader r) mutable {
                         context.setResults(Pick(r, context.getResults()));
                       })
        .then([this, context](std::optional<Status> s) mutable {
          if (!s) return;
          reply_budget_ = ReplyBudget();
          Answer(context.getParams(), context.getResults(), *s);
        });
  }

  // Runs a parsed write here or on the owner it is forwarded to (whose
  // reply `adopt` takes).
  template <typename Request, typename AdoptFn>
  kj::Promise<void> CoordinateWrite(Request request, ParsedWrite parsed,
                                    rpc::WriteReply::Builder reply, rpc::Consistency level,
                                    bool forwarded, AdoptFn adopt);
  // Resolves with the status to answer a read with from this node's store
  // (after its tokens' wait and the quorum's repair), or nullopt when it
  // was forwarded and `adopt` took the owner's reply.
  template <typename Request, typename AdoptFn>
  kj::Promise<std::optional<Status>> PrepareRead(Request request, rpc::Consistency level,
                                                 bool forwarded, AdoptFn adopt);
  // Compares the key's digest with `needed` of `others`, joins the states of
  // those that differ here and sends them the result.
  kj::Promise<Status> RepairRead(std::string key, std::vector<ReplicaId> others, size_t needed);
  // Sends `request` to `node` to run; resolves with its reply.
  template <typename Request>
  kj::Promise<capnp::Response<peer::PeerSession::ForwardResults>> ForwardTo(
      ReplicaId node, Request request, rpc::Consistency level);
  // The union forms of the above, for batches and forwarded requests.
  // `level`: DEFAULT takes the request's own level.
  ParsedWrite ParseWrite(rpc::Request::Reader request) const;
  kj::Promise<void> CoordinateUnionWrite(rpc::Request::Reader request, ParsedWrite parsed,
                                    rpc::Reply::Builder reply, rpc::Consistency level,
                                    bool forwarded,
                                    kj::Function<void(rpc::Reply::Reader)> adopt);
  kj::Promise<std::optional<Status>> PrepareUnionRead(rpc::Request::Reader request,
                                                 rpc::Consistency level, bool forwarded,
                                                 kj::Function<void(rpc::Reply::Reader)> adopt);
  void AnswerUnion(rpc::Request::Reader request, rpc::Reply::Builder reply, Status prepared);
  // The member of a forwarded request's reply that a call of the typed
  // method answers with (the builder names the type); fails when the
  // owner answered another kind.
  static rpc::WriteReply::Reader Pick(rpc::Reply::Reader r, rpc::WriteReply::Builder);
  static rpc::ValueReply::Reader Pick(rpc::Reply::Reader r, rpc::ValueReply::Builder);
  static rpc::MvReply::Reader Pick(rpc::Reply::Reader r, rpc::MvReply::Builder);
  static rpc::BoolReply::Reader Pick(rpc::Reply::Reader r, rpc::BoolReply::Builder);
  static rpc::MembersReply::Reader Pick(rpc::Reply::Reader r, rpc::MembersReply::Builder);
  static rpc::CountReply::Reader Pick(rpc::Reply::Reader r, rpc::CountReply::Builder);
  static rpc::CounterReply::Reader Pick(rpc::Reply::Reader r, rpc::CounterReply::Builder);
  static rpc::TypeReply::Reader Pick(rpc::Reply::Reader r, rpc::TypeReply::Builder);

  // Answers a read request whose preparation ended as `prepared` says.
  template <typename Request, typename Reply>
  void Answer(Request request, Reply reply, Status prepared) {
    Status s = prepared;
    if (s.ok()) s = Read(View(request.getKey()), request, reply);
    SetOutcome(reply.initOutcome(), s);
  }

  void CheckServing() const;
  static kj::Promise<void> Overloaded();
  static void SetOutcome(rpc::Outcome::Builder out, const Status& status);

  Status CheckKey(capnp::Data::Reader key) const;
  Status CheckValue(capnp::Data::Reader value) const;
  // The elements, each checked against the limit, read once (every read
  // counts against the message's traversal limit).
  StatusOr<std::vector<std::string>> ReadElements(
      capnp::List<capnp::Data>::Reader elements) const;

  // Bytes of values one call's reply may carry: a reply, like a request,
  // must fit in max-message-bytes, with room for its structure.
  size_t ReplyBudget() const { return options_.max_message_bytes / 2; }
  // Takes `reply_bytes` from the current call's budget, or TooLarge.
  Status Spend(size_t reply_bytes);
  Status Spend(const std::vector<std::string>& values);
  // For a set read with an empty answer: OK, or WrongType when another
  // type is live at `key`.
  Status EmptySet(std::string_view key);
  // NotFound, or WrongType when another type is live at `key`.
  Status Absent(std::string_view key, CrdtType wanted);

  ParsedWrite Parse(rpc::SetRequest::Reader r) const;
  ParsedWrite Parse(rpc::DelRequest::Reader r) const;
  ParsedWrite Parse(rpc::MvSetRequest::Reader r) const;
  ParsedWrite Parse(rpc::MvDelRequest::Reader r) const;
  ParsedWrite Parse(rpc::SAddRequest::Reader r) const;
  ParsedWrite Parse(rpc::SRemRequest::Reader r) const;
  ParsedWrite Parse(rpc::IncrByRequest::Reader r) const;
  // sAdd and sRem: a key and a non-empty list of elements.
  template <typename SetOperation, typename Request>
  ParsedWrite ParseElements(Request r) const;
  // Applies a write here and waits for plan.needed other owners.
  kj::Promise<void> Write(ParsedWrite parsed, rpc::WriteReply::Builder reply, Plan plan);

  // Fill the reply's fields but the outcome; return the outcome. `key` is
  // the request's key, already checked.
  Status Read(std::string_view key, rpc::GetRequest::Reader r,
              rpc::ValueReply::Builder reply);
  Status Read(std::string_view key, rpc::MvGetRequest::Reader r,
              rpc::MvReply::Builder reply);
  Status Read(std::string_view key, rpc::SIsMemberRequest::Reader r,
              rpc::BoolReply::Builder reply);
  Status Read(std::string_view key, rpc::SMembersRequest::Reader r,
              rpc::MembersReply::Builder reply);
  Status Read(std::string_view key, rpc::SCardRequest::Reader r,
              rpc::CountReply::Builder reply);
  Status Read(std::string_view key, rpc::CounterGetRequest::Reader r,
              rpc::CounterReply::Builder reply);
  Status Read(std::string_view key, rpc::TypeRequest::Reader r,
              rpc::TypeReply::Builder reply);
  static bool IsWrite(rpc::Request::Reader request);
  kj::Promise<void> RunBatch(BatchContext context);
  kj::Promise<void> RunWaitReplicated(WaitReplicatedContext context);
  // Counts one request of a batch, by its reply's outcome.
  void CountBatched(rpc::Request::Reader request, rpc::Reply::Reader reply, double seconds);

  Store& store_;
  GroupCommitter& committer_;
  Replicator& replicator_;
  const ClusterView& view_;
  const KvServiceOptions options_;
  bool serving_ = true;
  std::unique_ptr<Metrics> own_metrics_;
  Metrics* metrics_;
  std::function<uint64_t()> failure_detections_;
  std::function<Status()> leave_;
  std::function<Status(ReplicaId)> remove_;
  class ErrorLogger;
  kj::Own<ErrorLogger> error_logger_;
  kj::TaskSet tasks_;  // digest gathers and read repairs
  // What the reply being built may still carry; reset by every call (reads
  // run synchronously on the loop thread, one call at a time).
  size_t reply_budget_ = 0;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_KV_SERVICE_H_

// The client API (schema/kv.capnp) of one node, as a thin Cap'n Proto
// adapter: each call is parsed into plain requests (server/wire_request.h),
// run by the Coordinator, and its Result encoded as the reply; the
// administrative calls go to Admin. Counts every call in the metrics.

#ifndef GEOKV_SERVER_KV_SERVICE_H_
#define GEOKV_SERVER_KV_SERVICE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "monitoring/metrics.h"
#include "replication/replicator.h"
#include "schema/kv.capnp.h"
#include "server/admin.h"
#include "server/coordinator.h"
#include "server/users.h"
#include "server/wire_request.h"

namespace geokv {

// Whether the client API takes calls: one gate for the services of every
// connection of a node. Lives on the event loop's thread.
class ServingGate {
 public:
  bool open() const { return open_; }
  // From now on every call fails with DISCONNECTED ("shutting down"); calls
  // already accepted run to the end.
  void Close() { open_ = false; }

 private:
  bool open_ = true;
};

// The calls of one connection under way, and a wait for room below `max`:
// a call's reply exists only once its reads are done, so the replies queued
// on the connection alone would not hold back a client that sends calls and
// never reads the answers. Lives on the event loop's thread.
class CallLimit {
 public:
  explicit CallLimit(size_t max) : max_(max) {}
  // nullptr when fewer than `max` calls are under way; else a promise that
  // resolves once they are. A second wait replaces the first.
  kj::Maybe<kj::Promise<void>> Wait();
  void Begin() { ++under_way_; }
  void End();
  size_t under_way() const { return under_way_; }

 private:
  const size_t max_;
  size_t under_way_ = 0;
  kj::Own<kj::PromiseFulfiller<void>> waiting_;
};

// Who a connection is: what it may do, and where its logins are checked.
struct ClientAccess {
  Role role = Role::kAdmin;
  // nullptr: the node has no users (every connection is admin, and a
  // login is refused as invalid).
  Authenticator* users = nullptr;
};

using LoginCallContext = capnp::CallContext<rpc::Login::LoginParams, rpc::Login::LoginResults>;

// Answers a login on `users` (may be null): on success, the connection's
// new service is `open(role)`.
kj::Promise<void> AnswerLogin(Authenticator* users, LoginCallContext context,
                              std::function<capnp::Capability::Client(Role)> open);

// What a connection to a node with users holds before it logs in: a Login,
// and nothing else. Any other call fails with an exception saying to log
// in (a call on a GeoKv method has no reply struct to carry an outcome).
class LoginService final : public rpc::Login::Server {
 public:
  LoginService(Authenticator& users, std::function<capnp::Capability::Client(Role)> open)
      : users_(users), open_(std::move(open)) {}

  kj::Promise<void> login(LoginContext context) override;
  DispatchCallResult dispatchCall(uint64_t interface_id, uint16_t method_id,
                                  capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context)
      override;

 private:
  Authenticator& users_;
  std::function<capnp::Capability::Client(Role)> open_;
};

struct KvServiceOptions {
  RequestLimits limits;
  // Where the service counts calls. Not owned. Default (nullptr): its own,
  // served nowhere.
  Metrics* metrics = nullptr;
};

// Lives on the event loop's thread, like the coordinator and every call.
class KvService final : public rpc::GeoKv::Server {
 public:
  // `coordinator`, `admin`, `replicator` and `gate` must outlive the
  // service. `calls` counts its calls (shared with the connection's pacing);
  // may be null.
  KvService(Coordinator& coordinator, Admin& admin, Replicator& replicator,
            const ServingGate& gate, std::shared_ptr<CallLimit> calls, KvServiceOptions options,
            ClientAccess access = {});
  ~KvService();

  // Runs a request another node of the region forwarded, here (the
  // replicator's forward handler). `level` DEFAULT takes the request's own.
  kj::Promise<void> RunForwarded(rpc::Request::Reader request, rpc::Consistency level,
                                 rpc::Reply::Builder reply);

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
  kj::Promise<void> login(LoginContext context) override;

 private:
  // Runs a typed call and counts it: its operation, its outcome (unavailable
  // for an exception) and its time.
  template <typename Context, typename Call>
  kj::Promise<void> Timed(MetricOp op, Context context, Call call);
  // A typed call of one request: parse, run, encode.
  template <typename Context>
  kj::Promise<void> Single(MetricOp op, Context context);
  kj::Promise<void> RunBatch(BatchContext context, std::chrono::steady_clock::time_point start);
  kj::Promise<void> RunWaitReplicated(WaitReplicatedContext context);

  void CheckServing() const;
  // Refuses `request` when the connection's role may not run it.
  void CheckAllowed(ParsedRequest& request) const;
  // Counts `call` among this connection's calls until it ends.
  kj::Promise<void> Counted(kj::Promise<void> call);
  // The answer when the coordinator is overloaded: OVERLOADED.
  [[noreturn]] static void Overloaded();

  Coordinator& coordinator_;
  Admin& admin_;
  Replicator& replicator_;
  const ServingGate& gate_;
  std::shared_ptr<CallLimit> calls_;
  const KvServiceOptions options_;
  const ClientAccess access_;
  std::unique_ptr<Metrics> own_metrics_;
  Metrics* metrics_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_KV_SERVICE_H_

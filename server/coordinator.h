// The coordinator of one node: runs parsed requests (server/request.h) for
// any front end. A request for a key this node does not own is forwarded to
// an owner that is up; on an owner, a write goes through the group
// committer and then waits until enough other owners hold it (the request's
// consistency level), and a read waits for its tokens, compares the key's
// digest with enough other owners, joins the states of those that differ
// (and repairs them) and answers from the store. Every store read goes
// through the AsyncStore's reader pool; the loop never waits on the disk.
//
// It knows no wire format: front ends parse into ParsedRequest and encode
// the Result, and forwarding goes through a Forwarder that encodes.
//
// Thread safety: lives on the KJ event loop's thread, like the committer,
// the replicator and the view; every call is made there.

#ifndef GEOKV_SERVER_COORDINATOR_H_
#define GEOKV_SERVER_COORDINATOR_H_

#include <kj/async.h>

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "monitoring/metrics.h"
#include "replication/group_commit.h"
#include "replication/replicator.h"
#include "server/cluster_view.h"
#include "server/plan.h"
#include "server/request.h"
#include "storage/async_store.h"

namespace geokv {

// Sends a request to another owner of its key to run there.
class Forwarder {
 public:
  virtual ~Forwarder() = default;
  // Resolves with the owner's result. Rejects when the call failed: with
  // DISCONNECTED when the owner may have run it (a call that got no answer
  // within `timeout` or lost its connection), with OVERLOADED when the
  // owner shed it (nothing ran; retrying later may succeed), with another
  // type when it did not run.
  virtual kj::Promise<Result> Forward(ReplicaId node, const ParsedRequest& request,
                                      Consistency level, std::chrono::milliseconds timeout) = 0;
};

struct CoordinatorOptions {
  // The level of requests that ask for kDefault. Default: quorum.
  Consistency consistency = Consistency::kQuorum;
  // How long the coordinator waits for other owners (acknowledgements,
  // digests, forwarded requests).
  std::chrono::milliseconds request_timeout{5000};
  // A quorum read asks R-1 other owners for the key's digest, one more for
  // each that fails or is not settled, and every other owner once this
  // long has passed without enough answers. 0: every other owner at once.
  // Default: 20 ms.
  std::chrono::milliseconds read_hedge{20};
  // The largest message: one call's reply carries at most half of it in
  // values, keeping room for its structure.
  size_t max_message_bytes = 64 << 20;
  // Where it reports. Not owned. Default (nullptr): its own, served nowhere.
  Metrics* metrics = nullptr;
  // What plans read of the segments and links. Not owned. Default
  // (nullptr): the replicator's answers.
  const ReplicaFacts* facts = nullptr;
};

// What a call ends with. `overloaded`: too many writes wait to commit (here,
// or at the owner a single write was forwarded to), and nothing of the call
// ran; the front end sheds it (retry later). Otherwise one result per
// request, in order.
struct Answer {
  bool overloaded = false;
  std::vector<Result> results;
};

class Coordinator {
 public:
  // Every reference must outlive the coordinator.
  Coordinator(AsyncStore& store, GroupCommitter& committer, Replicator& replicator,
              const ClusterView& view, Forwarder& forwarder, CoordinatorOptions options);
  ~Coordinator();

  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Runs one request. `forwarded`: another node of the region sent it here
  // to run at request.consistency, whatever this node's ring says; it is
  // never forwarded again.
  kj::Promise<Answer> Run(ParsedRequest request, bool forwarded);

  // Runs a batch, parsed whole before this call (so a batch that cannot be
  // parsed applies nothing). Its writes are submitted together (one group)
  // and its reads run after them, answered within one reply budget in
  // order. A batch with more writes than max-pending-writes refuses each of
  // them (TooLarge); one without room now is overloaded.
  kj::Promise<Answer> RunBatch(std::vector<ParsedRequest> requests);

  // The level kDefault stands for.
  Consistency Resolve(Consistency level) const {
    return level == Consistency::kDefault ? options_.consistency : level;
  }

 private:
  class Facts;
  class ErrorLogger;
  struct ReadDone;
  struct DigestGather;

  // A checked write, here or on the owner it is forwarded to.
  kj::Promise<Result> Write(ParsedRequest request, bool forwarded);
  // Applies a write here and waits for plan.needed other owners.
  kj::Promise<Result> WriteHere(ParsedRequest request, Plan plan);
  // Attempts of a register write whose acknowledging owners already held a
  // register stamped above it.
  static constexpr int kMaxStampAttempts = 3;
  // Makes the write (attempt `attempt`) and waits for its quorum. When an
  // owner whose acknowledgement counts had already joined a register
  // stamped above it (a write from a clock ahead, which this node had not
  // received yet), the write is made again above that stamp: a write
  // acknowledged before this one began is held by one of the owners this
  // one counts, so it never hides this one.
  kj::Promise<Result> WriteStamped(std::string key, Operation op, Plan plan, int attempt);
  // A read, here or forwarded; `local` says whether its values count
  // against this call's reply budget.
  kj::Promise<ReadDone> Read(ParsedRequest request, bool forwarded);
  // Compares this node's digest of the key, `local`, with `needed` of
  // `others` (asked as CoordinatorOptions::read_hedge says), joins the
  // states of those that differ here and sends them the result. Resolves to
  // whether any state was joined here.
  kj::Promise<StatusOr<bool>> RepairRead(std::string key, std::vector<ReplicaId> others,
                                         size_t needed, uint64_t local);
  // The answer from this node's store, read on the reader pool; with
  // `digest`, also the key's digest read in the same trip.
  struct LocalAnswer {
    Result result;
    std::optional<size_t> siblings;  // of a multi-value register read
    StatusOr<uint64_t> digest = uint64_t{0};
  };
  kj::Promise<LocalAnswer> ReadLocal(const ParsedRequest& request, bool digest);
  kj::Promise<Result> ReadHere(const ParsedRequest& request);
  // Asks the next `count` owners of `g` not yet asked for their digest.
  void AskDigests(const std::shared_ptr<DigestGather>& g, size_t count);
  // Asks the rest of `g`'s owners once the hedge delay passed, if it still
  // waits. One timer serves every read: it fires at most four times per
  // delay, for every read then due.
  void HedgeLater(const std::shared_ptr<DigestGather>& g);
  void Hedge();
  // Sets the hedge timer for the earliest read waiting (hedges_ not empty).
  void ArmHedge();
  kj::Promise<Result> Forward(ReplicaId node, const ParsedRequest& request, Consistency level);
  std::string OwnerName(ReplicaId id) const;
  // Takes the results' values from one budget in order; local results over
  // it become TooLarge.
  void Spend(std::vector<ReadDone>& reads) const;

  AsyncStore& store_;
  GroupCommitter& committer_;
  Replicator& replicator_;
  const ClusterView& view_;
  Forwarder& forwarder_;
  const CoordinatorOptions options_;
  std::unique_ptr<Metrics> own_metrics_;
  Metrics* metrics_;
  std::unique_ptr<Facts> own_facts_;
  const ReplicaFacts* facts_;
  kj::Own<ErrorLogger> error_logger_;
  std::deque<std::pair<kj::TimePoint, std::weak_ptr<DigestGather>>> hedges_;
  bool hedge_armed_ = false;
  kj::TaskSet tasks_;  // digest gathers, hedges and read repairs
};

}  // namespace geokv

#endif  // GEOKV_SERVER_COORDINATOR_H_

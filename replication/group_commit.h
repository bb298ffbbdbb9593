// Group commit: the writes that arrive in one turn of the KJ event loop
// (client writes, and deltas and states received from peers) are handed to
// a writer thread, which commits everything handed to it since its
// last commit as one store group (one WAL write, one fsync in kFsync). The
// loop never blocks on the disk, and while the writer commits a group, the
// next one gathers without waiting for the loop. No write's promise
// resolves before its group is durable. Trims of the log run there too.

#ifndef GEOKV_REPLICATION_GROUP_COMMIT_H_
#define GEOKV_REPLICATION_GROUP_COMMIT_H_

#include <kj/async.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <functional>
#include <map>
#include <set>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "replication/encoded_joins.h"
#include "storage/store.h"
#include "util/log_limiter.h"

namespace geokv {

// How one write ended.
struct WriteResult {
  // OK, or why the write changed nothing (Mutate's error, or the group's
  // commit failure).
  Status status;
  // The write's log sequence; when it changed nothing, the last sequence
  // committed with its group.
  uint64_t seq = 0;
  // At or above the write's stamp (and every stamp before it here): the
  // store's clock right after the write was made. Set only when OK.
  HlcTimestamp stamp;
  // Of a RemoteApply: the joins (index into `joins`) that were LWW
  // registers stamped below the register held here, with its stamp.
  std::vector<std::pair<size_t, HlcTimestamp>> superseded;
};

// Deltas or full states made elsewhere, joined in order without logging.
struct RemoteApply {
  // The node whose log entries `joins` are, or 0 for full states from
  // anti-entropy (which advance no position).
  ReplicaId origin = 0;
  // Once every join succeeded, the store records origin's log as applied
  // through this sequence (0: nothing to record).
  uint64_t through = 0;
  // The sequence of the first join's entry: the joins are entries
  // first..through, applied only when they continue what is applied (a
  // failed earlier hand-over leaves a gap, and the peer must resend). 0:
  // no check (full states, or a position proved by anti-entropy).
  uint64_t first = 0;
  // Encoded values (as a peer sent them), decoded and joined in order on
  // the writer thread; one that does not decode fails the write before
  // anything of it is joined.
  EncodedJoins joins;
  // Keys of `joins` whose states are left out when they are only what
  // removals left (OnlyRemovals) and this node holds nothing of the key
  // (anti-entropy's, see AntiEntropy::RepairSegment).
  std::set<std::string> unless_emptied;
  // After the joins: pages of OR-sets moved in pieces
  // (WriteGroup::JoinSetPage), then the contexts that end such transfers
  // (WriteGroup::JoinSetContext).
  std::vector<std::pair<std::string, OrSetPage>> set_pages;
  std::vector<std::pair<std::string, CausalContext>> set_contexts;
  // After the joins: keys this node hands over, each removed only if its
  // digest is still the one given (WriteGroup::Drop), and segments whose
  // dropped mark is cleared.
  std::vector<std::pair<std::string, uint64_t>> drops;
  std::vector<size_t> clear_dropped;
  // Replaces what the store keeps of other regions' members learned through
  // member exchange (Store::PeerMembers).
  std::optional<std::string> peer_members;
  // Replaces the segments this node vouches for (Store::VouchedSegments).
  std::optional<std::vector<bool>> vouched_segments;
};

// Lives on the thread of a KJ event loop, which must outlive it; every call
// is made on that thread.
class GroupCommitter : private kj::TaskSet::ErrorHandler {
 public:
  // `store` must outlive the committer. Submit refuses writes beyond
  // `max_pending` waiting or being written (see HasRoom).
  GroupCommitter(Store& store, size_t max_pending);
  // REQUIRES: Drain() resolved (no write pending).
  ~GroupCommitter();

  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  size_t max_pending() const { return max_pending_; }

  // From now on, refuses every remote apply carrying an LWW stamp more than
  // `max_ahead` ahead of this node's wall clock (the store's clock's wall):
  // nothing of it is applied, and its result is Unavailable naming the
  // stamp and the limit, so the sender retries once the clock has caught
  // up. Default: no bound beyond the one on valid stamps (kMaxHlcWallMs).
  // Thread-safe.
  void SetMaxStampAhead(std::chrono::milliseconds max_ahead) {
    max_stamp_ahead_ms_.store(max_ahead.count());
  }

  // Advances the store's clock past `stamp`, a bound a client presented
  // (the stamp of an earlier write's token), so that every write stamped
  // after this call is stamped above it. A stamp further ahead of the wall
  // clock than SetMaxStampAhead allows is refused as a peer's would be:
  // Unavailable, naming the stamp and the limit, and the clock unchanged
  // (InvalidArgument when it is not valid). Zero: nothing to do.
  // Thread-safe.
  [[nodiscard]] Status AdvanceClockPast(const HlcTimestamp& stamp);

  // Remote applies refused for a stamp ahead of the bound, so far.
  // Thread-safe.
  uint64_t stamps_refused() const { return stamps_refused_.load(); }

  // Whether `n` more writes fit under max_pending.
  bool HasRoom(size_t n) const { return pending() + n <= max_pending_; }

  // Queues `op` on `key` for the next group.
  // REQUIRES: HasRoom(1).
  kj::Promise<WriteResult> Submit(std::string key, Operation op);

  // Queues `apply` for the next group as one write, waiting first while
  // there is no room (backpressure for peers, which must not be refused):
  // its joins in order, stopping at the first that fails (whose error the
  // result carries), then the recorded position when all succeeded. The
  // result's seq is unused.
  kj::Promise<WriteResult> SubmitRemote(RemoteApply apply);

  // Queues a trim of the log through `through` (Store::TrimLog) for the
  // next group, waiting first while there is no room: the writer thread runs
  // it once the group's writes have committed, so the loop never waits on
  // it. Resolves with the trim's status (or the group's commit failure).
  // REQUIRES: through <= the store's LastSeq().
  kj::Promise<Status> SubmitTrim(uint64_t through);

  // Queues a collection of LWW tombstones and emptied registers and sets
  // (WriteGroup::CollectTombstones, with `bound`, `emptied_bound` and
  // `limit`) for the next group, waiting first while there is no room.
  // Resolves with the keys removed, or the error.
  kj::Promise<StatusOr<size_t>> SubmitCollect(HlcTimestamp bound, HlcTimestamp emptied_bound,
                                              size_t limit);

  // Called on the loop thread after the writes of each committed group are
  // answered: new log entries or positions may be there.
  void OnCommitted(std::function<void()> hook) { on_committed_ = std::move(hook); }

  // Resolves once no write is pending or being written.
  kj::Promise<void> Drain();

  size_t pending() const { return next_.size() + handed_over_; }

  // Groups written so far (successfully or not).
  uint64_t groups_committed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return groups_committed_;
  }

 private:
  struct LogTrim {
    uint64_t through = 0;
  };
  struct TombstoneCollection {
    HlcTimestamp bound;
    HlcTimestamp emptied_bound;
    size_t limit = 0;
  };
  struct Write {
    std::string key;
    // A collection's result carries the keys it removed as its seq.
    std::variant<Operation, RemoteApply, LogTrim, TombstoneCollection> work;
    WriteResult result;
  };
  kj::Promise<WriteResult> Queue(Write write);
  // Queues `write` once there is room.
  kj::Promise<WriteResult> QueueWhenRoom(Write write);
  void ScheduleFlush();
  void Flush();
  // Arms the writer's wakeup of the loop for finished batches.
  void AwaitFinished();
  // Answers the writes of every finished batch.
  void AnswerFinished();
  void NotifyIfIdle();
  void taskFailed(kj::Exception&& exception) override;

  // The writer thread's loop, and one group of it.
  void WriterLoop();
  void CommitGroup(std::vector<std::vector<Write>>& batches);
  // Joins `apply` into `group`; adds to `superseded` the joins that lost to
  // a register held here (WriteResult::superseded).
  Status Apply(WriteGroup& group, const RemoteApply& apply,
               std::vector<std::pair<size_t, HlcTimestamp>>* superseded);
  // OK, or why `decoded` holds a stamp too far ahead of the wall clock.
  Status CheckStamps(const RemoteApply& apply, const std::vector<Crdt>& decoded);

  Store& store_;
  const size_t max_pending_;

  // Loop thread only.
  std::vector<Write> next_;
  std::vector<kj::Own<kj::PromiseFulfiller<WriteResult>>> next_fulfillers_;
  // The fulfillers of the batches handed to the writer, oldest first.
  std::deque<std::vector<kj::Own<kj::PromiseFulfiller<WriteResult>>>> handed_fulfillers_;
  size_t handed_over_ = 0;  // writes handed to the writer, not yet answered
  bool flush_scheduled_ = false;
  bool awaiting_finished_ = false;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> drain_waiters_;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> room_waiters_;
  std::function<void()> on_committed_;
  kj::TaskSet tasks_;

  // Shared with the writer thread. Batches travel in order: queued_ to the
  // writer, finished_ back; one wakeup each way at most per group, which
  // keeps thread switches rare when batches are small.
  mutable std::mutex mu_;
  std::condition_variable wake_writer_;
  std::deque<std::vector<Write>> queued_;
  std::deque<std::vector<Write>> finished_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake_loop_;  // armed by the loop
  bool writer_waiting_ = false;
  bool stopping_ = false;
  uint64_t groups_committed_ = 0;

  // Writer thread only: per origin, the position as of the groups written
  // (from the store when absent; cleared when a commit fails).
  std::map<ReplicaId, uint64_t> remote_through_;
  // Writer thread only: refused stamps are logged at most every 10 s.
  LogLimiter refusal_log_;

  std::atomic<int64_t> max_stamp_ahead_ms_{-1};  // -1: no bound
  std::atomic<uint64_t> stamps_refused_{0};

  std::thread writer_;
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_GROUP_COMMIT_H_

// Group commit: the writes that arrive in one turn of the KJ event loop are
// committed as one store group (one WAL write, one fsync in kFsync) on a
// writer thread, so the loop never blocks on the disk. While a group is
// being written, new writes gather for the next one. No write's promise
// resolves before its group is durable.

#ifndef GEOKV_SERVER_GROUP_COMMIT_H_
#define GEOKV_SERVER_GROUP_COMMIT_H_

#include <kj/async.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "storage/store.h"

namespace geokv {

// How one write ended.
struct WriteResult {
  // OK, or why the write changed nothing (Mutate's error, or the group's
  // commit failure).
  Status status;
  // The write's log sequence; when it changed nothing, the last sequence
  // committed with its group.
  uint64_t seq = 0;
};

// Lives on the thread of a KJ event loop, which must outlive it; every call
// is made on that thread.
class GroupCommitter : private kj::TaskSet::ErrorHandler {
 public:
  // `store` must outlive the committer. More than `max_pending` writes
  // waiting or being written make Submit fail with OVERLOADED.
  GroupCommitter(Store& store, size_t max_pending);
  // REQUIRES: Drain() resolved (no write pending).
  ~GroupCommitter();

  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  // Whether `n` more writes fit under max_pending.
  bool HasRoom(size_t n) const { return pending() + n <= max_pending_; }

  // Queues `op` on `key` for the next group.
  // REQUIRES: HasRoom(1).
  kj::Promise<WriteResult> Submit(std::string key, Operation op);

  // Resolves once no write is pending or being written.
  kj::Promise<void> Drain();

  size_t pending() const { return next_.size() + in_flight_; }

  // Groups written so far (successfully or not).
  uint64_t groups_committed() const { return groups_committed_; }

 private:
  struct Write {
    std::string key;
    Operation op;
    WriteResult result;
  };

  void ScheduleFlush();
  void Flush();
  // On the writer thread.
  std::vector<Write> CommitGroup(std::vector<Write> writes);
  void GroupDone();
  void NotifyIfIdle();
  void taskFailed(kj::Exception&& exception) override;

  Store& store_;
  const size_t max_pending_;
  std::vector<Write> next_;
  std::vector<kj::Own<kj::PromiseFulfiller<WriteResult>>> next_fulfillers_;
  uint64_t groups_committed_ = 0;
  size_t in_flight_ = 0;  // writes in the group being written
  std::vector<kj::Own<kj::PromiseFulfiller<WriteResult>>> in_flight_fulfillers_;
  bool flush_scheduled_ = false;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> drain_waiters_;

  std::thread writer_;
  const kj::Executor* writer_executor_ = nullptr;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_writer_;

  kj::TaskSet tasks_;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_GROUP_COMMIT_H_

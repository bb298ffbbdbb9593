// Reads of a Store off the event loop (DESIGN.md section 3): every read,
// scan and log read that the KJ event loop needs runs on a small pool of
// reader threads, and its result comes back to the loop as a kj::Promise.
// The loop never waits on the disk; writes go through the group committer
// (replication/group_commit.h), never through here.
//
// Each call copies what it needs (the key, the bounds) before it returns, so
// the caller's buffers may go at once. A promise that is dropped before it
// resolves does not stop its read; the result is discarded.
//
// Reads come in two classes. Foreground reads (a client's, and what a
// quorum read asks of another owner: digests, and states to repair) run
// before any background read that waits (bulk reads for shipping,
// anti-entropy and hand-over), and with two threads or more one thread is
// kept for them, so a client read never waits behind a long scan.
//
// Reads go out and results come back in batches. A foreground read wakes a
// reader thread only when no reader is on its way to it (none runs a
// foreground read, none was just woken), and a reader that takes a read and
// finds more waiting wakes another; a reader thread that finishes a read
// queues it for the loop and wakes the loop only if it sleeps, and the loop
// answers every finished read in one turn. Many reads in flight cost the
// loop few cross-thread wakeups either way, not one each.
//
// Thread safety: construct, call and destroy an AsyncStore on one thread,
// which runs a KJ event loop; results resolve on that thread. The Store's
// own in-memory accessors (node_id, LastSeq, TrimmedThrough, TreeDigests,
// AppliedPositions, DroppedSegments) take no disk read and stay on Store.

#ifndef GEOKV_STORAGE_ASYNC_STORE_H_
#define GEOKV_STORAGE_ASYNC_STORE_H_

#include <kj/async.h>
#include <kj/debug.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "storage/store.h"

namespace geokv {

class AsyncStore {
 public:
  // Starts `threads` reader threads over `store`, which must outlive this.
  // REQUIRES: threads >= 1.
  AsyncStore(Store& store, size_t threads);
  // Finishes the read each thread is running and joins them; reads still
  // queued are not run (their promises, if still held, reject).
  ~AsyncStore();

  AsyncStore(const AsyncStore&) = delete;
  AsyncStore& operator=(const AsyncStore&) = delete;

  Store& store() { return store_; }

  // Runs `read(store)` on a reader thread and resolves with its result on
  // the calling loop's thread. `read` must not touch state of the loop
  // thread; an exception it throws rejects the promise.
  template <typename Read>
  auto Run(Read read) -> kj::Promise<decltype(read(std::declval<Store&>()))>;
  // As Run, as a background read.
  template <typename Read>
  auto RunBackground(Read read) -> kj::Promise<decltype(read(std::declval<Store&>()))>;

  // The Store reads, as there (storage/store.h). ReadLog, LogBytesAfter,
  // SegmentKeys and SetStatePage are background reads; the others are
  // foreground reads.
  kj::Promise<StatusOr<std::optional<Crdt>>> Get(std::string key, CrdtType type);
  kj::Promise<StatusOr<std::vector<CrdtType>>> LiveTypes(std::string key);
  kj::Promise<StatusOr<bool>> SetContains(std::string key, std::string element);
  kj::Promise<StatusOr<uint64_t>> SetSize(std::string key);
  kj::Promise<StatusOr<SetPage>> SetMembers(std::string key, std::optional<std::string> start_after,
                                            size_t limit);
  kj::Promise<StatusOr<OrSetPage>> SetStatePage(std::string key,
                                                std::optional<std::string> start_after,
                                                size_t max_elements, size_t max_bytes);
  kj::Promise<StatusOr<std::vector<LogEntry>>> ReadLog(uint64_t after_seq, size_t max_entries,
                                                       size_t max_bytes);
  kj::Promise<uint64_t> LogBytesAfter(uint64_t seq);
  kj::Promise<StatusOr<std::vector<geokv::KeyDigest>>> SegmentKeys(size_t segment);
  kj::Promise<StatusOr<uint64_t>> KeyDigest(std::string key);
  kj::Promise<StatusOr<std::vector<Crdt>>> GetStates(std::string key);
  kj::Promise<Store::SpaceEstimates> Space();

  // Reads queued or running now.
  size_t pending() const;

 private:
  // A read: Run on a reader thread, then Answer on the loop's thread.
  struct Job {
    virtual ~Job() noexcept(false) = default;
    virtual void Run(Store& store) = 0;
    virtual void Answer() = 0;
  };
  template <typename T, typename Read>
  struct JobFor final : Job {
    JobFor(Read r, kj::Own<kj::PromiseFulfiller<T>> f)
        : read(std::move(r)), fulfiller(kj::mv(f)) {}
    void Run(Store& store) override {
      KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { result.emplace(read(store)); })) {
        error = kj::mv(*e);
      }
    }
    void Answer() override {
      KJ_IF_MAYBE(e, error) {
        fulfiller->reject(kj::mv(*e));
      } else {
        fulfiller->fulfill(std::move(*result));
      }
    }
    Read read;
    kj::Own<kj::PromiseFulfiller<T>> fulfiller;
    std::optional<T> result;
    kj::Maybe<kj::Exception> error;
  };

  template <typename Read>
  auto Submit(Read read, bool background) -> kj::Promise<decltype(read(std::declval<Store&>()))>;
  void Queue(std::unique_ptr<Job> job, bool background);
  void ReaderLoop();
  // Whether a thread may start a background read now. REQUIRES: mu_ held.
  bool BackgroundMayRun() const;
  // Loop thread: answers finished reads, a batch per wakeup, for as long as
  // this lives (started by the first read).
  kj::Promise<void> AnswerLoop();

  Store& store_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Job>> queue_;             // foreground
  std::deque<std::unique_ptr<Job>> background_queue_;
  size_t running_ = 0;
  size_t running_background_ = 0;
  bool stopping_ = false;
  // Reads run and not yet answered, and the loop's wakeup for them (armed
  // by the loop, taken by the thread that fulfills it).
  std::vector<std::unique_ptr<Job>> finished_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake_loop_;
  std::vector<std::thread> threads_;

  kj::Maybe<kj::Promise<void>> answering_;  // loop thread only
  // Readers asleep in wake_, and whether one has been woken and is not
  // up yet (under mu_).
  size_t idle_ = 0;
  bool waking_ = false;
};

template <typename Read>
auto AsyncStore::Submit(Read read, bool background)
    -> kj::Promise<decltype(read(std::declval<Store&>()))> {
  using T = decltype(read(std::declval<Store&>()));
  auto paf = kj::newPromiseAndFulfiller<T>();
  Queue(std::make_unique<JobFor<T, Read>>(std::move(read), kj::mv(paf.fulfiller)), background);
  if (answering_ == nullptr) answering_ = AnswerLoop().eagerlyEvaluate(nullptr);
  return kj::mv(paf.promise);
}

template <typename Read>
auto AsyncStore::Run(Read read) -> kj::Promise<decltype(read(std::declval<Store&>()))> {
  return Submit(std::move(read), false);
}

template <typename Read>
auto AsyncStore::RunBackground(Read read) -> kj::Promise<decltype(read(std::declval<Store&>()))> {
  return Submit(std::move(read), true);
}

}  // namespace geokv

#endif  // GEOKV_STORAGE_ASYNC_STORE_H_

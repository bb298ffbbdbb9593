#include "storage/async_store.h"

#include "util/thread.h"

namespace geokv {

AsyncStore::AsyncStore(Store& store, size_t threads) : store_(store) {
  KJ_REQUIRE(threads >= 1, "an AsyncStore needs a reader thread");
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { ReaderLoop(); });
}

AsyncStore::~AsyncStore() {
  answering_ = nullptr;
  std::deque<std::unique_ptr<Job>> dropped, dropped_background;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    dropped.swap(queue_);
    dropped_background.swap(background_queue_);
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
  // Reads run but not answered (finished_) go with the members: their
  // promises, if still held, reject.
}

kj::Promise<void> AsyncStore::AnswerLoop() {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_.empty()) {
      wake_loop_ = kj::mv(paf.fulfiller);
    } else {
      paf.fulfiller->fulfill();
    }
  }
  return paf.promise.then([this] {
    std::vector<std::unique_ptr<Job>> finished;
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished.swap(finished_);
    }
    for (auto& job : finished) job->Answer();
    return AnswerLoop();
  });
}

size_t AsyncStore::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size() + background_queue_.size() + running_;
}

void AsyncStore::Queue(std::unique_ptr<Job> job, bool background) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    KJ_REQUIRE(!stopping_, "the store's readers are stopping");
    (background ? background_queue_ : queue_).push_back(std::move(job));
    // Waking a thread costs the loop a system call: a foreground read wakes
    // a reader only when none is on its way to it, that is when no reader
    // runs a foreground read (it takes the next when done) and none has
    // been woken yet. A reader that takes a read and finds more waiting
    // wakes the next (ReaderLoop), so a burst still spreads over the pool.
    if (!background && !waking_ && idle_ > 0 && running_ == running_background_) {
      waking_ = true;
      wake = true;
    }
  }
  // A background read may be runnable by one thread only: wake them all.
  if (background) {
    wake_.notify_all();
  } else if (wake) {
    wake_.notify_one();
  }
}

bool AsyncStore::BackgroundMayRun() const {
  const size_t limit = threads_.size() > 1 ? threads_.size() - 1 : 1;
  return !background_queue_.empty() && running_background_ < limit;
}

void AsyncStore::ReaderLoop() {
  NameThisThread("geokv-reader");
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    ++idle_;
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty() || BackgroundMayRun(); });
    --idle_;
    waking_ = false;
    if (stopping_) return;
    const bool background = queue_.empty();
    auto& from = background ? background_queue_ : queue_;
    std::unique_ptr<Job> job = std::move(from.front());
    from.pop_front();
    if (!queue_.empty() && idle_ > 0 && !waking_) {
      waking_ = true;
      wake_.notify_one();
    }
    ++running_;
    if (background) ++running_background_;
    lock.unlock();
    job->Run(store_);
    lock.lock();
    finished_.push_back(std::move(job));
    if (wake_loop_) {
      // Fulfilled outside the lock: it wakes the loop.
      auto wake = kj::mv(wake_loop_);
      lock.unlock();
      wake->fulfill();
      lock.lock();
    }
    --running_;
    if (background) {
      --running_background_;
      // Another thread may have been waiting for this background slot.
      if (!background_queue_.empty()) wake_.notify_all();
    }
  }
}

kj::Promise<StatusOr<std::optional<Crdt>>> AsyncStore::Get(std::string key, CrdtType type) {
  return Run([key = std::move(key), type](Store& s) { return s.Get(key, type); });
}

kj::Promise<StatusOr<std::vector<CrdtType>>> AsyncStore::LiveTypes(std::string key) {
  return Run([key = std::move(key)](Store& s) { return s.LiveTypes(key); });
}

kj::Promise<StatusOr<bool>> AsyncStore::SetContains(std::string key, std::string element) {
  return Run([key = std::move(key), element = std::move(element)](Store& s) {
    return s.SetContains(key, element);
  });
}

kj::Promise<StatusOr<uint64_t>> AsyncStore::SetSize(std::string key) {
  return Run([key = std::move(key)](Store& s) { return s.SetSize(key); });
}

kj::Promise<StatusOr<SetPage>> AsyncStore::SetMembers(std::string key,
                                                      std::optional<std::string> start_after,
                                                      size_t limit) {
  return Run([key = std::move(key), start_after = std::move(start_after), limit](Store& s) {
    std::optional<std::string_view> after;
    if (start_after) after = *start_after;
    return s.SetMembers(key, after, limit);
  });
}

kj::Promise<StatusOr<OrSetPage>> AsyncStore::SetStatePage(std::string key,
                                                          std::optional<std::string> start_after,
                                                          size_t max_elements, size_t max_bytes) {
  return RunBackground([key = std::move(key), start_after = std::move(start_after),
                        max_elements, max_bytes](Store& s) {
    std::optional<std::string_view> after;
    if (start_after) after = *start_after;
    return s.SetStatePage(key, after, max_elements, max_bytes);
  });
}

kj::Promise<StatusOr<std::vector<LogEntry>>> AsyncStore::ReadLog(uint64_t after_seq,
                                                                 size_t max_entries,
                                                                 size_t max_bytes) {
  return RunBackground([=](Store& s) { return s.ReadLog(after_seq, max_entries, max_bytes); });
}

kj::Promise<uint64_t> AsyncStore::LogBytesAfter(uint64_t seq) {
  return RunBackground([seq](Store& s) { return s.LogBytesAfter(seq); });
}

kj::Promise<StatusOr<std::vector<geokv::KeyDigest>>> AsyncStore::SegmentKeys(size_t segment) {
  return RunBackground([segment](Store& s) { return s.SegmentKeys(segment); });
}

kj::Promise<StatusOr<uint64_t>> AsyncStore::KeyDigest(std::string key) {
  return Run([key = std::move(key)](Store& s) { return s.KeyDigest(key); });
}

kj::Promise<StatusOr<std::vector<Crdt>>> AsyncStore::GetStates(std::string key) {
  return Run([key = std::move(key)](Store& s) { return s.GetStates(key); });
}

kj::Promise<Store::SpaceEstimates> AsyncStore::Space() {
  return Run([](Store& s) { return s.Space(); });
}

}  // namespace geokv

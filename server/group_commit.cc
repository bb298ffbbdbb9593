#include "server/group_commit.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <future>

namespace geokv {

GroupCommitter::GroupCommitter(Store& store, size_t max_pending)
    : store_(store), max_pending_(max_pending), tasks_(*this) {
  std::promise<std::pair<const kj::Executor*, kj::Own<kj::CrossThreadPromiseFulfiller<void>>>>
      started;
  auto ready = started.get_future();
  writer_ = std::thread([&started] {
    kj::EventLoop loop;
    kj::WaitScope wait_scope(loop);
    auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
    started.set_value({&kj::getCurrentThreadExecutor(), kj::mv(stop.fulfiller)});
    stop.promise.wait(wait_scope);
  });
  auto [executor, stop] = ready.get();
  writer_executor_ = executor;
  stop_writer_ = kj::mv(stop);
}

GroupCommitter::~GroupCommitter() {
  stop_writer_->fulfill();
  writer_.join();
}

kj::Promise<WriteResult> GroupCommitter::Submit(std::string key, Operation op) {
  KJ_REQUIRE(HasRoom(1));
  auto paf = kj::newPromiseAndFulfiller<WriteResult>();
  next_.push_back(Write{std::move(key), std::move(op), {}});
  next_fulfillers_.push_back(kj::mv(paf.fulfiller));
  ScheduleFlush();
  return kj::mv(paf.promise);
}

kj::Promise<void> GroupCommitter::Drain() {
  if (pending() == 0) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  drain_waiters_.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void GroupCommitter::ScheduleFlush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  // evalLast runs once every event already queued, among them the other
  // calls that arrived with this one, has run: they all join this group.
  tasks_.add(kj::evalLast([this] { Flush(); }));
}

void GroupCommitter::Flush() {
  flush_scheduled_ = false;
  if (in_flight_ > 0 || next_.empty()) return;  // the running group flushes again
  std::vector<Write> writes = std::move(next_);
  next_.clear();
  in_flight_fulfillers_ = std::move(next_fulfillers_);
  next_fulfillers_.clear();
  in_flight_ = writes.size();
  tasks_.add(writer_executor_
                 ->executeAsync([this, writes = std::move(writes)]() mutable {
                   return CommitGroup(std::move(writes));
                 })
                 .then(
                     [this](std::vector<Write> done) {
                       for (size_t i = 0; i < done.size(); ++i) {
                         in_flight_fulfillers_[i]->fulfill(std::move(done[i].result));
                       }
                       GroupDone();
                     },
                     [this](kj::Exception&& e) {
                       spdlog::error("group commit failed: {}", e.getDescription().cStr());
                       for (auto& f : in_flight_fulfillers_) f->reject(kj::cp(e));
                       GroupDone();
                     }));
}

void GroupCommitter::GroupDone() {
  ++groups_committed_;
  in_flight_ = 0;
  in_flight_fulfillers_.clear();
  if (!next_.empty()) ScheduleFlush();
  NotifyIfIdle();
}

std::vector<GroupCommitter::Write> GroupCommitter::CommitGroup(std::vector<Write> writes) {
  auto group = store_.BeginGroup();
  for (Write& w : writes) {
    StatusOr<uint64_t> seq = group->Mutate(w.key, w.op);
    if (seq.ok()) {
      w.result.seq = *seq;
    } else {
      w.result.status = seq.status();
    }
  }
  Status committed = group->Commit();
  uint64_t last_seq = store_.LastSeq();
  for (Write& w : writes) {
    if (!committed.ok()) {
      w.result.status = committed;
    } else if (w.result.status.ok() && w.result.seq == 0) {
      w.result.seq = last_seq;
    }
  }
  if (!committed.ok()) {
    spdlog::error("commit of a group of {} writes failed: {}", writes.size(),
                  committed.ToString());
  }
  return writes;
}

void GroupCommitter::NotifyIfIdle() {
  if (pending() != 0) return;
  for (auto& waiter : drain_waiters_) waiter->fulfill();
  drain_waiters_.clear();
}

void GroupCommitter::taskFailed(kj::Exception&& exception) {
  spdlog::error("group commit task failed: {}", exception.getDescription().cStr());
}

}  // namespace geokv

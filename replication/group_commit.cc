#include "replication/group_commit.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include "util/coding.h"
#include "util/thread.h"

namespace geokv {

GroupCommitter::GroupCommitter(Store& store, size_t max_pending)
    : store_(store), max_pending_(max_pending), tasks_(*this) {
  writer_ = std::thread([this] { WriterLoop(); });
}

GroupCommitter::~GroupCommitter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_writer_.notify_one();
  writer_.join();
}

kj::Promise<WriteResult> GroupCommitter::Submit(std::string key, Operation op) {
  return Queue(Write{std::move(key), std::move(op), {}});
}

kj::Promise<WriteResult> GroupCommitter::SubmitRemote(RemoteApply apply) {
  return QueueWhenRoom(Write{{}, std::move(apply), {}});
}

kj::Promise<Status> GroupCommitter::SubmitTrim(uint64_t through) {
  return QueueWhenRoom(Write{{}, LogTrim{through}, {}}).then([](WriteResult r) {
    return r.status;
  });
}

kj::Promise<StatusOr<size_t>> GroupCommitter::SubmitCollect(HlcTimestamp bound,
                                                            HlcTimestamp emptied_bound,
                                                            size_t limit) {
  return QueueWhenRoom(Write{{}, TombstoneCollection{bound, emptied_bound, limit}, {}})
      .then([](WriteResult r) -> StatusOr<size_t> {
        if (!r.status.ok()) return r.status;
        return static_cast<size_t>(r.seq);
      });
}

kj::Promise<WriteResult> GroupCommitter::QueueWhenRoom(Write write) {
  if (HasRoom(1)) return Queue(std::move(write));
  auto paf = kj::newPromiseAndFulfiller<void>();
  room_waiters_.push_back(kj::mv(paf.fulfiller));
  return paf.promise.then([this, write = std::move(write)]() mutable {
    return QueueWhenRoom(std::move(write));
  });
}

kj::Promise<WriteResult> GroupCommitter::Queue(Write write) {
  KJ_REQUIRE(HasRoom(1));
  auto paf = kj::newPromiseAndFulfiller<WriteResult>();
  next_.push_back(std::move(write));
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
  // evalLater runs after the events already queued, among them the other
  // calls that arrived with this one, so they travel together. (evalLast
  // would wait for the queue to run dry, which under a steady stream of
  // reads delays writes by many milliseconds.)
  tasks_.add(kj::evalLater([this] { Flush(); }));
}

void GroupCommitter::Flush() {
  flush_scheduled_ = false;
  if (next_.empty()) return;
  handed_over_ += next_.size();
  handed_fulfillers_.push_back(std::move(next_fulfillers_));
  next_fulfillers_.clear();
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued_.push_back(std::move(next_));
    wake = writer_waiting_;
  }
  next_.clear();
  if (wake) wake_writer_.notify_one();
  AwaitFinished();
}

void GroupCommitter::AwaitFinished() {
  if (awaiting_finished_) return;
  awaiting_finished_ = true;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_.empty()) {
      paf.fulfiller->fulfill();
    } else {
      wake_loop_ = kj::mv(paf.fulfiller);
    }
  }
  tasks_.add(paf.promise.then([this] {
    awaiting_finished_ = false;
    AnswerFinished();
  }));
}

void GroupCommitter::AnswerFinished() {
  std::deque<std::vector<Write>> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished.swap(finished_);
  }
  for (auto& batch : finished) {
    auto& fulfillers = handed_fulfillers_.front();
    for (size_t i = 0; i < batch.size(); ++i) fulfillers[i]->fulfill(std::move(batch[i].result));
    handed_fulfillers_.pop_front();
    handed_over_ -= batch.size();
  }
  if (handed_over_ > 0) AwaitFinished();
  if (!finished.empty() && on_committed_) on_committed_();
  NotifyIfIdle();
}

void GroupCommitter::WriterLoop() {
  NameThisThread("geokv-writer");
  while (true) {
    std::vector<std::vector<Write>> batches;
    {
      std::unique_lock<std::mutex> lock(mu_);
      writer_waiting_ = true;
      wake_writer_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
      writer_waiting_ = false;
      if (queued_.empty()) return;  // stopping, and nothing left
      while (!queued_.empty()) {
        batches.push_back(std::move(queued_.front()));
        queued_.pop_front();
      }
    }
    try {
      CommitGroup(batches);
    } catch (const std::exception& e) {
      // Nothing of the group was committed (an exception leaves Commit
      // uncalled, and the group rolls back); every write says so.
      spdlog::error("group of writes failed: {}", e.what());
      remote_through_.clear();
      for (auto& batch : batches) {
        for (Write& w : batch) {
          w.result = {Status::IOError(std::string("write failed: ") + e.what()), 0, {}, {}};
        }
      }
    }
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& batch : batches) finished_.push_back(std::move(batch));
      wake = kj::mv(wake_loop_);
    }
    if (wake) wake->fulfill();
  }
}

void GroupCommitter::CommitGroup(std::vector<std::vector<Write>>& batches) {
  auto group = store_.BeginGroup();
  size_t writes = 0;
  for (auto& batch : batches) {
    for (Write& w : batch) {
      if (auto* op = std::get_if<Operation>(&w.work)) {
        StatusOr<uint64_t> seq = group->Mutate(w.key, *op);
        if (seq.ok()) {
          w.result.seq = *seq;
          w.result.stamp = store_.clock()->Last();
        } else {
          w.result.status = seq.status();
        }
      } else if (auto* apply = std::get_if<RemoteApply>(&w.work)) {
        w.result.status = Apply(*group, *apply, &w.result.superseded);
      } else if (auto* collect = std::get_if<TombstoneCollection>(&w.work)) {
        StatusOr<size_t> removed =
            group->CollectTombstones(collect->bound, collect->emptied_bound, collect->limit);
        if (removed.ok()) {
          w.result.seq = *removed;
        } else {
          w.result.status = removed.status();
        }
      }
    }
    writes += batch.size();
  }
  Status committed = group->Commit();
  if (!committed.ok()) {
    remote_through_.clear();
    spdlog::error("commit of a group of {} writes failed: {}", writes, committed.ToString());
  }
  uint64_t last_seq = store_.LastSeq();
  for (auto& batch : batches) {
    for (Write& w : batch) {
      if (!committed.ok()) {
        w.result.status = committed;
        w.result.stamp = {};
        w.result.superseded.clear();
      } else if (auto* trim = std::get_if<LogTrim>(&w.work)) {
        // After the group's commit: the entries it trims are durable.
        w.result.status = store_.TrimLog(trim->through);
      } else if (w.result.status.ok() && w.result.seq == 0 &&
                 !std::holds_alternative<TombstoneCollection>(w.work)) {
        w.result.seq = last_seq;
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++groups_committed_;
}

Status GroupCommitter::Apply(WriteGroup& group, const RemoteApply& apply,
                             std::vector<std::pair<size_t, HlcTimestamp>>* superseded) {
  uint64_t* through = nullptr;
  if (apply.origin != 0) {
    auto it = remote_through_.find(apply.origin);
    if (it == remote_through_.end()) {
      auto applied = store_.AppliedPositions();
      auto a = applied.find(apply.origin);
      it = remote_through_.emplace(apply.origin, a == applied.end() ? 0 : a->second).first;
    }
    through = &it->second;
    if (apply.first != 0 && apply.first > *through + 1) {
      return Status::FailedPrecondition("entries from " + std::to_string(apply.first) +
                                        " do not follow the applied position " +
                                        std::to_string(*through));
    }
  }
  StatusOr<std::vector<Crdt>> decoded = apply.joins.Decode();
  if (!decoded.ok()) return decoded.status();
  GEOKV_RETURN_IF_ERROR(CheckStamps(apply, *decoded));
  // Keys of unless_emptied this node holds nothing of whose states are only
  // what removals left: none of their states is joined.
  std::map<std::string_view, std::vector<Crdt>> candidates;
  for (size_t i = 0; i < decoded->size(); ++i) {
    if (apply.unless_emptied.count(std::string(apply.joins.key(i))) > 0) {
      candidates[apply.joins.key(i)].push_back((*decoded)[i]);
    }
  }
  std::set<std::string_view> left_out;
  for (const auto& [key, states] : candidates) {
    if (!OnlyRemovals(states)) continue;
    StatusOr<uint64_t> held = group.KeyDigest(key);
    if (!held.ok()) return held.status();
    if (*held == 0) left_out.insert(key);
  }
  for (size_t i = 0; i < decoded->size(); ++i) {
    if (left_out.count(apply.joins.key(i))) continue;
    HlcTimestamp held_above;
    Status joined = group.Join(apply.joins.key(i), (*decoded)[i], &held_above);
    if (!held_above.IsZero()) superseded->emplace_back(i, held_above);
    // Joins before this one stay: they are harmless to keep and arrive
    // again, since the position does not advance.
    if (!joined.ok()) {
      return joined.WithContext("join key '" + PrintableBytes(apply.joins.key(i)) + "'");
    }
  }
  for (const auto& [key, page] : apply.set_pages) {
    Status joined = group.JoinSetPage(key, page);
    if (!joined.ok()) return joined.WithContext("join a page of key '" + PrintableBytes(key) + "'");
  }
  for (const auto& [key, ctx] : apply.set_contexts) {
    Status joined = group.JoinSetContext(key, ctx);
    if (!joined.ok()) return joined.WithContext("join the context of key '" + PrintableBytes(key) + "'");
  }
  for (const auto& [key, digest] : apply.drops) {
    StatusOr<bool> dropped = group.Drop(key, digest);
    if (!dropped.ok()) return dropped.status().WithContext("drop key '" + PrintableBytes(key) + "'");
  }
  for (size_t segment : apply.clear_dropped) group.ClearDropped(segment);
  if (apply.peer_members) group.SetPeerMembers(*apply.peer_members);
  if (apply.vouched_segments) group.SetVouchedSegments(*apply.vouched_segments);
  if (through != nullptr && apply.through > *through) {
    group.RecordApplied(apply.origin, apply.through);
    *through = apply.through;
  }
  return Status::OK();
}

Status GroupCommitter::AdvanceClockPast(const HlcTimestamp& stamp) {
  if (stamp.IsZero()) return Status::OK();
  const int64_t max_ahead = max_stamp_ahead_ms_.load();
  if (max_ahead >= 0) {
    const uint64_t now = store_.clock()->wall()->NowMillis();
    const uint64_t limit = now + static_cast<uint64_t>(max_ahead);
    if (stamp.wall_ms > limit) {
      return Status::Unavailable(
          "a token presented with the write carries the stamp " + DescribeStamp(stamp) + ", " +
          std::to_string(stamp.wall_ms - now) + " ms ahead of this node's clock " +
          std::to_string(now) + " (limit --max-clock-offset " + std::to_string(max_ahead) +
          " ms); nothing was applied, retry once this node's clock has caught up");
    }
  }
  return store_.clock()->Update(stamp);
}

Status GroupCommitter::CheckStamps(const RemoteApply& apply, const std::vector<Crdt>& decoded) {
  const int64_t max_ahead = max_stamp_ahead_ms_.load();
  if (max_ahead < 0) return Status::OK();
  const uint64_t now = store_.clock()->wall()->NowMillis();
  const uint64_t limit = now + static_cast<uint64_t>(max_ahead);
  for (size_t i = 0; i < decoded.size(); ++i) {
    const auto* lww = std::get_if<LwwRegister>(&decoded[i]);
    if (lww == nullptr || lww->timestamp().wall_ms <= limit) continue;
    stamps_refused_.fetch_add(1);
    Status refused = Status::Unavailable(
        "key '" + PrintableBytes(apply.joins.key(i)) + "' carries the stamp " +
        DescribeStamp(lww->timestamp()) + ", " + std::to_string(lww->timestamp().wall_ms - now) +
        " ms ahead of this node's clock " + std::to_string(now) +
        " (limit --max-clock-offset " + std::to_string(max_ahead) +
        " ms); nothing of the batch is applied until this node's clock has caught up");
    uint64_t held_back = 0;
    if (refusal_log_.Allow(LogLimiter::Clock::now(), &held_back)) {
      if (held_back > 0) {
        spdlog::warn("{} (and {} more refusals since the last message)", refused.message(),
                     held_back);
      } else {
        spdlog::warn("{}", refused.message());
      }
    }
    return refused;
  }
  return Status::OK();
}

void GroupCommitter::NotifyIfIdle() {
  if (HasRoom(1)) {
    // Each resumed waiter checks for room again before it queues.
    for (auto& waiter : room_waiters_) waiter->fulfill();
    room_waiters_.clear();
  }
  if (pending() != 0) return;
  for (auto& waiter : drain_waiters_) waiter->fulfill();
  drain_waiters_.clear();
}

void GroupCommitter::taskFailed(kj::Exception&& exception) {
  spdlog::error("group commit task failed: {}", exception.getDescription().cStr());
}

}  // namespace geokv

#include "replication/log_shipper.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace geokv {

LogShipper::LogShipper(ShipperLog& log, ShipperOptions options)
    : log_(log), options_(std::move(options)), refusals_(options_.metrics) {}

void LogShipper::Connected(uint64_t applied) {
  Status held = CheckHeldAtHello(applied);
  if (!held.ok()) refusals_.Refuse(PeerClaim::kAcknowledgedPosition, options_.region, held);
  acked_ = applied;
  held_at_hello_ = applied;
  acked_known_ = true;
  sent_ = acked_;
  inflight_ = 0;
  if (acked_ > log_.LastSeq()) {
    // The target holds entries this node no longer has: the log lost its
    // tail (a machine crash in wal mode) or the data dir was restored from
    // a copy. New writes would reuse those positions.
    spdlog::error("peer {} ({}) holds this node's log through {}, past its last entry {}",
                  options_.region, options_.address, acked_, log_.LastSeq());
    if (options_.on_log_behind) options_.on_log_behind(acked_);
  }
  if (acked_ < log_.TrimmedThrough()) {
    StartRepair("it needs log entries after " + std::to_string(acked_) + ", trimmed through " +
                std::to_string(log_.TrimmedThrough()));
  }
}

kj::Promise<void> LogShipper::Run(ShipTransport& transport) {
  auto failed = kj::newPromiseAndFulfiller<void>();
  failed_ = kj::mv(failed.fulfiller);
  pushes_ = kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this));
  return Loop(transport).exclusiveJoin(kj::mv(failed.promise));
}

void LogShipper::Disconnected() {
  pushes_ = nullptr;
  failed_ = nullptr;
  inflight_ = 0;
  reads_outstanding_ = 0;
  repair_active_ = false;
}

void LogShipper::taskFailed(kj::Exception&& e) {
  if (failed_.get() != nullptr) {
    failed_->reject(kj::mv(e));
    failed_ = nullptr;
  }
}

kj::Promise<void> LogShipper::Loop(ShipTransport& transport) {
  if (repairing_) {
    return Repair(transport).then([this, &transport] { return Loop(transport); });
  }
  if (inflight_ >= options_.window || sent_ >= log_.LastSeq()) {
    return wake_.Wait().then([this, &transport] { return Loop(transport); });
  }
  const uint64_t from = sent_;
  ++reads_outstanding_;
  return log_.ReadLog(from, kMaxBatchEntries, options_.batch_bytes)
      .then([this, &transport, from](StatusOr<std::vector<LogEntry>> read) -> kj::Promise<void> {
        --reads_outstanding_;
        if (!read.ok()) {
          if (read.status().code() != Status::Code::kFailedPrecondition) {
            KJ_FAIL_REQUIRE("cannot read the replication log", read.status().ToString());
          }
          StartRepair(read.status().message());
        } else if (read->empty()) {
          return wake_.Wait().then([this, &transport] { return Loop(transport); });
        } else if (sent_ == from && !repairing_) {
          // (An answer that moved sent_ meanwhile makes this read stale.)
          Push(transport, *read);
        }
        return Loop(transport);
      });
}

void LogShipper::Push(ShipTransport& transport, const std::vector<LogEntry>& read) {
  std::vector<const LogEntry*> entries;
  std::vector<uint16_t> skipped;
  for (const LogEntry& e : read) {
    const size_t segment = TreeSegmentOf(e.key);
    if (!options_.owns || options_.owns(segment)) {
      entries.push_back(&e);
    } else {
      skipped.push_back(static_cast<uint16_t>(segment));
    }
  }
  std::sort(skipped.begin(), skipped.end());
  skipped.erase(std::unique(skipped.begin(), skipped.end()), skipped.end());
  const uint64_t last = read.back().seq;
  auto answer = transport.PushDeltas(sent_, last, entries, skipped);
  sent_ = last;
  ++inflight_;
  pushes_->add(answer.then([this, last](uint64_t applied) { Answered(last, applied); }));
}

void LogShipper::CheckHeld(uint64_t applied) {
  Status held = CheckAcknowledgedPosition(applied, log_.LastSeq(), held_at_hello_);
  if (!held.ok()) refusals_.Refuse(PeerClaim::kAcknowledgedPosition, options_.region, held);
}

void LogShipper::Answered(uint64_t last, uint64_t applied) {
  --inflight_;
  CheckHeld(applied);
  if (applied > acked_) {
    acked_ = applied;
    SettleHints(false);
    if (options_.on_acked) options_.on_acked();
  }
  // A gap at the target (entries it lost with a restart): resend from what
  // it holds.
  if (applied < last && sent_ > acked_) sent_ = acked_;
  // Replies to a previous session's hand-overs can acknowledge more than
  // this session sent.
  sent_ = std::max(sent_, acked_);
  wake_.Notify();
}

kj::Promise<void> LogShipper::Repair(ShipTransport& transport) {
  repair_from_ = log_.LastSeq();
  repair_active_ = true;
  repair_pins_log_ = true;
  spdlog::info("peer {}: anti-entropy repair pass from log position {}", options_.region,
               repair_from_);
  return transport.RepairPass().then([this, &transport]() -> kj::Promise<void> {
    if (log_.TrimmedThrough() > repair_from_) {
      // The log let go of the pass's start: go again from now.
      return Repair(transport);
    }
    return transport.MarkRepaired(repair_from_).then([this](uint64_t applied) {
      CheckHeld(applied);
      acked_ = std::max(acked_, applied);
      if (options_.on_acked) options_.on_acked();
      sent_ = acked_;
      repairing_ = false;
      repair_active_ = false;
      spdlog::info("peer {}: repaired; shipping the log from {}", options_.region, acked_);
    });
  });
}

void LogShipper::StartRepair(const std::string& why) {
  if (repairing_) return;
  repairing_ = true;
  SettleHints(true);
  spdlog::warn("peer {} ({}): repairing by anti-entropy instead of the log: {}", options_.region,
               options_.address, why);
  wake_.Notify();
}

void LogShipper::Hint(uint64_t position) {
  if (position <= acked_) return;
  if (options_.metrics != nullptr) options_.metrics->hints_stored.Increment();
  // A target under repair gets the write from the repair, not the log.
  if (repairing_) {
    if (options_.metrics != nullptr) options_.metrics->hints_dropped.Increment();
    return;
  }
  hinted_.push_back(position);
}

void LogShipper::SettleHints(bool dropped) {
  while (!hinted_.empty() && (dropped || hinted_.front() <= acked_)) {
    hinted_.pop_front();
    if (options_.metrics == nullptr) continue;
    (dropped ? options_.metrics->hints_dropped : options_.metrics->hints_replayed).Increment();
  }
}

uint64_t LogShipper::BacklogFloor() const {
  if (repairing_) return repair_from_;
  return acked_known_ ? acked_ : log_.TrimmedThrough();
}

kj::Promise<void> LogShipper::SampleBacklog() {
  const uint64_t acked = acked_;
  const uint64_t floor = BacklogFloor();
  const bool repairing = repairing_;
  const uint64_t last = log_.LastSeq();
  auto bytes_after = [this, last](uint64_t position) {
    return last > position ? log_.LogBytesAfter(position) : kj::Promise<uint64_t>(uint64_t{0});
  };
  auto after_floor = floor == acked ? kj::Promise<uint64_t>(uint64_t{0}) : bytes_after(floor);
  return bytes_after(acked).then(
      [this, acked, floor, repairing, after_floor = kj::mv(after_floor)](uint64_t bytes) mutable {
        return after_floor.then([this, acked, floor, repairing, bytes](uint64_t floor_bytes) {
          acked_bytes_ = bytes;
          floor_bytes_ = floor == acked ? bytes : floor_bytes;
          sampled_ = true;
          sampled_repairing_ = repairing;
          floor_sampled_ = floor;
        });
      });
}

uint64_t LogShipper::backlog_bytes() const {
  if (log_.LastSeq() <= acked_ || !sampled_) return 0;
  return acked_bytes_;
}

void LogShipper::CheckBacklog() {
  // A sample taken in the other mode measured from another floor: the next
  // turn samples again. (Shipping, the floor only moves up between a sample
  // and this check, by what was acknowledged meanwhile, which the limit
  // need not count exactly; repairing, it moves only with a new pass.)
  if (!sampled_ || sampled_repairing_ != repairing_) return;
  if (repairing_) {
    if (floor_sampled_ != repair_from_) return;
    // A long pass must not hold the log without bound either: past the
    // limit it lets go, and another pass follows from where the log is.
    if (repair_active_ && repair_pins_log_ && log_.LastSeq() > repair_from_ &&
        floor_bytes_ > options_.max_backlog_bytes) {
      repair_pins_log_ = false;
    }
    return;
  }
  if (log_.LastSeq() <= BacklogFloor()) return;
  if (floor_bytes_ > options_.max_backlog_bytes) {
    StartRepair("its backlog of " + std::to_string(floor_bytes_) +
                " bytes exceeds --max-backlog");
  }
}

std::optional<uint64_t> LogShipper::TrimFloor() const {
  if (repairing_) {
    if (repair_active_ && repair_pins_log_) return repair_from_;
    return std::nullopt;
  }
  return acked_known_ ? acked_ : log_.TrimmedThrough();
}

}  // namespace geokv

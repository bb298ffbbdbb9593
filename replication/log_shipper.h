// The log shipper of one target: ships this node's replication log to one
// other node from that node's position in it.
//
// Positions (DESIGN.md: a "position" is a sequence in one node's log):
//   - acked: the target's durable position in this node's log, as it last
//     answered (kept across connections);
//   - sent: the last position shipped on this connection.
// While connected, the shipper reads the log after `sent` in batches of at
// most `batch_bytes` (and kMaxBatchEntries entries), one read outstanding at
// a time, off the event loop (ShipperLog), and pushes each batch, leaving out
// the entries of segments the target does not own, with at most `window`
// batches unanswered. An answer below a batch's end says the target has a
// gap: shipping resumes from what it holds. An answer past the log's last
// entry (CheckAcknowledgedPosition) fails the connection and moves
// nothing. A target that needs entries
// already trimmed, or whose backlog passes `max_backlog_bytes`, is repaired
// by a complete anti-entropy pass instead, after which shipping resumes from
// where the pass began.
//
// Hints are the writes acknowledged while the target was away; they count
// as replayed once acked passes them, or as dropped when repair takes over.
// The trim floor is the position the target still needs the log from.
//
// Thread safety: everything runs on the KJ event loop's thread.

#ifndef GEOKV_REPLICATION_LOG_SHIPPER_H_
#define GEOKV_REPLICATION_LOG_SHIPPER_H_

#include <kj/async.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "monitoring/metrics.h"
#include "replication/peer_claims.h"
#include "replication/peer_wire.h"
#include "storage/async_store.h"
#include "storage/store.h"

namespace geokv {

// This node's log as a shipper sees it: in-memory positions on the loop,
// reads off it.
class ShipperLog {
 public:
  virtual ~ShipperLog() = default;
  virtual uint64_t LastSeq() const = 0;
  virtual uint64_t TrimmedThrough() const = 0;
  // As Store::ReadLog, run off the loop; resolves on the loop's thread.
  virtual kj::Promise<StatusOr<std::vector<LogEntry>>> ReadLog(uint64_t after, size_t max_entries,
                                                               size_t max_bytes) = 0;
  // As Store::LogBytesAfter, run off the loop.
  virtual kj::Promise<uint64_t> LogBytesAfter(uint64_t position) = 0;
};

// The ShipperLog of a Store, read through an AsyncStore, which must outlive
// it.
class StoreLog final : public ShipperLog {
 public:
  explicit StoreLog(AsyncStore& reader) : reader_(reader) {}
  uint64_t LastSeq() const override { return reader_.store().LastSeq(); }
  uint64_t TrimmedThrough() const override { return reader_.store().TrimmedThrough(); }
  kj::Promise<StatusOr<std::vector<LogEntry>>> ReadLog(uint64_t after, size_t max_entries,
                                                       size_t max_bytes) override {
    return reader_.ReadLog(after, max_entries, max_bytes);
  }
  kj::Promise<uint64_t> LogBytesAfter(uint64_t position) override {
    return reader_.LogBytesAfter(position);
  }

 private:
  AsyncStore& reader_;
};

// What a shipper sends through: the session of one connection to the target.
class ShipTransport {
 public:
  virtual ~ShipTransport() noexcept(false) = default;
  // Sends `entries` as covering this node's log after `from` through
  // `through`, with the segments of the entries left out (`skipped`, in
  // order, each once); resolves with the target's position after it. The
  // entries are valid only during the call (copy them into the request).
  virtual kj::Promise<uint64_t> PushDeltas(uint64_t from, uint64_t through,
                                           const std::vector<const LogEntry*>& entries,
                                           const std::vector<uint16_t>& skipped) = 0;
  // A complete anti-entropy pass against the target.
  virtual kj::Promise<void> RepairPass() = 0;
  // Tells the target it holds this node's log through `through` (a repair
  // pass that began there is done); resolves with its position.
  virtual kj::Promise<uint64_t> MarkRepaired(uint64_t through) = 0;
};

struct ShipperOptions {
  // How logs name the target: its region and address.
  std::string region;
  std::string address;
  size_t batch_bytes = 1 << 20;
  size_t window = 64;
  uint64_t max_backlog_bytes = uint64_t{256} << 20;
  // Whether the target owns a tree segment. Default: every segment.
  std::function<bool(size_t segment)> owns;
  // Called after acked advanced.
  std::function<void()> on_acked;
  // Called when the target says it holds this node's log through a position
  // past its last entry: the log went back, and new writes would reuse
  // positions the target holds.
  std::function<void(uint64_t held)> on_log_behind;
  // Where the hint counters go. Not owned; nullptr: nowhere.
  Metrics* metrics = nullptr;
};

class LogShipper final : private kj::TaskSet::ErrorHandler {
 public:
  // Entries per pushed batch, whatever their size. A batch covers as many
  // positions as it read entries, so receivers take it (CheckBatchRange).
  static constexpr size_t kMaxBatchEntries = kMaxPeerListEntries;
  static_assert(kMaxBatchEntries <= kMaxBatchPositions, "receivers refuse longer batches");

  // `log` must outlive the shipper.
  LogShipper(ShipperLog& log, ShipperOptions options);

  LogShipper(const LogShipper&) = delete;
  LogShipper& operator=(const LogShipper&) = delete;

  void SetOwns(std::function<bool(size_t)> owns) { options_.owns = std::move(owns); }

  // A connection said hello: the target holds this node's log through
  // `applied`. Starts a repair when it needs entries already trimmed.
  // Throws, changing nothing, when `applied` is past any log
  // (CheckHeldAtHello).
  void Connected(uint64_t applied);
  // Ships (and repairs) through `transport` until a push fails, which
  // rejects the promise. Cancel it by dropping it, then call Disconnected.
  // REQUIRES: Connected() since the last Disconnected(); `transport`
  // outlives the promise.
  kj::Promise<void> Run(ShipTransport& transport);
  // The connection ended: forgets its pushes in flight.
  void Disconnected();
  // New log entries or positions may be there.
  void Wake() { wake_.Notify(); }

  // Switches to repair by anti-entropy (logged with `why`), dropping hints.
  void StartRepair(const std::string& why);

  // A write at `position` was acknowledged while the target, one of its
  // owners, was away.
  void Hint(uint64_t position);
  // Counts the hints the target now holds, or (`dropped`) all of them as
  // left to repair.
  void SettleHints(bool dropped);
  size_t hints_pending() const { return hinted_.size(); }

  // Samples the backlog bytes off the loop (for CheckBacklog and Report);
  // call once per maintenance turn.
  kj::Promise<void> SampleBacklog();
  // Switches to repair when the last sampled backlog is over the limit, or
  // lets a long repair pass stop holding the log.
  void CheckBacklog();
  // The position the target still needs the log from, or nullopt when it
  // does not hold the log back (it is being repaired while away).
  std::optional<uint64_t> TrimFloor() const;

  uint64_t acked() const { return acked_; }
  uint64_t sent() const { return sent_; }
  bool repairing() const { return repairing_; }
  // Log bytes after acked, as last sampled; 0 when it holds the whole log.
  uint64_t backlog_bytes() const;
  size_t inflight() const { return inflight_; }
  size_t reads_outstanding() const { return reads_outstanding_; }

 private:
  kj::Promise<void> Loop(ShipTransport& transport);
  void Push(ShipTransport& transport, const std::vector<LogEntry>& read);
  void Answered(uint64_t last, uint64_t applied);
  // Refuses (ClaimRefusals) an answer holding more than the log has.
  void CheckHeld(uint64_t applied);
  kj::Promise<void> Repair(ShipTransport& transport);
  // Where the backlog limit is measured from now.
  uint64_t BacklogFloor() const;
  void taskFailed(kj::Exception&& e) override;

  ShipperLog& log_;
  ShipperOptions options_;
  Signal wake_;
  ClaimRefusals refusals_;

  // Per connection.
  kj::Own<kj::TaskSet> pushes_;
  kj::Own<kj::PromiseFulfiller<void>> failed_;
  size_t inflight_ = 0;
  size_t reads_outstanding_ = 0;
  uint64_t sent_ = 0;

  // Across connections.
  uint64_t acked_ = 0;
  uint64_t held_at_hello_ = 0;  // what the target answered at the last hello
  bool acked_known_ = false;
  std::deque<uint64_t> hinted_;
  bool repairing_ = false;
  bool repair_active_ = false;    // a repair pass runs now, from repair_from_
  bool repair_pins_log_ = false;  // and the log is kept from repair_from_ for it
  uint64_t repair_from_ = 0;
  // The last samples: log bytes after acked, and after BacklogFloor().
  uint64_t acked_bytes_ = 0;
  uint64_t floor_bytes_ = 0;
  uint64_t floor_sampled_ = 0;  // the floor of the last sample
  bool sampled_ = false;
  bool sampled_repairing_ = false;  // the mode the last sample was taken in
};

}  // namespace geokv

#endif  // GEOKV_REPLICATION_LOG_SHIPPER_H_

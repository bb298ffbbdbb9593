// The durable state of one node: CRDT objects by (key, type), the
// replication log of the deltas this node coordinated, the applied position
// of every other origin, and the node's identity.
//
// Writes go through a WriteGroup: each operation or remote delta joins into
// the stored state AND (for local operations) appends its delta to the log,
// and Commit() writes the whole group as one atomic RocksDB WriteBatch: one
// WAL write, and in Durability::kFsync one fsync. Nothing in a group is
// visible to readers, or durable, before Commit() returns OK.

#ifndef GEOKV_STORAGE_STORE_H_
#define GEOKV_STORAGE_STORE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "crdt/crdt.h"
#include "crdt/hlc.h"
#include "util/hash.h"
#include "util/status.h"

namespace geokv {

enum class Durability {
  kFsync,  // acknowledged means fsynced through the WAL: survives a machine crash
  kWal,    // written to the WAL without fsync: survives a process crash only
};

struct StoreOptions {
  // Default: kFsync.
  Durability durability = Durability::kFsync;

  // The node's hybrid clock. Not owned; must outlive the store. Default
  // (nullptr): the store owns one over WallClock::System().
  HybridClock* clock = nullptr;

  // A multi-value register write that would leave more siblings than this is
  // refused with TooLarge (write with the context of a read to merge them).
  // Default: 64.
  size_t max_siblings = 64;

  // Memory for what writes need to know of recently written keys (their
  // live types, for the WRONG_TYPE check, and their LWW register row's
  // hash, for the hash tree), which spares most writes a read of each.
  // Default: 32 MiB.
  size_t key_facts_cache_bytes = size_t{32} << 20;

  // RocksDB block cache shared by all column families. Default: 64 MiB.
  size_t block_cache_bytes = size_t{64} << 20;

  // The identity of the running boot of the machine, compared at open with
  // the one of the run that did not close cleanly. Default (empty): read
  // from /proc/sys/kernel/random/boot_id.
  std::string boot_id{};

  // Takes a new replica id at open whatever the checks find: for a data dir
  // restored in a way the checks cannot tell (a filesystem snapshot rolled
  // back in place). Default: false.
  bool new_identity = false;
};

// A replica id a store used before it took a new one (Store::Open), and the
// last position of its log the store held then.
struct RetiredId {
  ReplicaId id = 0;
  uint64_t last_seq = 0;
  std::string reason;
};

// What a client asks of one key. The store turns each into a delta.
struct LwwSet { std::string value; };
// Deletes the register and, when the key holds a live counter, the counter
// as this store has seen it (an observed reset: increments it has not seen
// survive). The reset is logged as its own delta, before the tombstone.
struct LwwDelete {};
// Writes a sibling superseding the ones `seen` holds (from a read).
struct MvWrite { std::string value; CausalContext seen; };
// Removes the siblings `seen` holds.
struct MvClear { CausalContext seen; };
struct SetAdd { std::vector<std::string> elements; };     // empty: InvalidArgument
struct SetRemove { std::vector<std::string> elements; };  // empty: InvalidArgument
struct CounterAdd { int64_t delta = 0; };
using Operation = std::variant<LwwSet, LwwDelete, MvWrite, MvClear, SetAdd, SetRemove, CounterAdd>;

// The CRDT type an operation acts on.
CrdtType OperationType(const Operation& op);

// A delta this node coordinated, as kept in the replication log.
struct LogEntry {
  uint64_t seq = 0;        // from 1, gapless, in commit order
  ReplicaId origin = 0;    // the coordinating node: this node
  HlcTimestamp timestamp;  // the HLC when the delta was made
  std::string key;
  Crdt delta;
};

// One page of an OR-set's elements, in byte order.
struct SetPage {
  std::vector<std::string> elements;
  bool more = false;  // further elements follow the last one here
};

// Anti-entropy hash tree: every key falls in one of kTreeSegments segments,
// the key segments of util/hash.h (placement uses the same ones). A key's
// digest is the XOR of Hash64 of each of its state rows (object rows and
// OR-set element rows, not derived rows); a segment's digest is the XOR of
// its keys' digests. Two stores holding the same state have the same
// digests. The exact row hash is a persisted and wire format:
// docs/formats.md.
inline constexpr int kTreeSegmentBits = kSegmentBits;
inline constexpr size_t kTreeSegments = kSegments;

// A set of segments (kTreeSegments entries) as kTreeSegments bits, bit s
// in byte s / 8 (docs/formats.md): the dropped_segments row, and the
// segments a node owns in peer answers.
inline std::string EncodeSegmentSet(const std::vector<bool>& segments) {
  std::string out(kTreeSegments / 8, '\0');
  for (size_t s = 0; s < kTreeSegments && s < segments.size(); ++s) {
    if (segments[s]) out[s / 8] = static_cast<char>(out[s / 8] | (1 << (s % 8)));
  }
  return out;
}

// Decodes EncodeSegmentSet's bytes into `segments` (kTreeSegments entries).
// Returns false when `bytes` has the wrong size.
inline bool DecodeSegmentSet(std::string_view bytes, std::vector<bool>* segments) {
  if (bytes.size() != kTreeSegments / 8) return false;
  segments->assign(kTreeSegments, false);
  for (size_t s = 0; s < kTreeSegments; ++s) {
    (*segments)[s] = (static_cast<uint8_t>(bytes[s / 8]) >> (s % 8)) & 1;
  }
  return true;
}

inline size_t TreeSegmentOf(std::string_view key) { return SegmentOf(key); }

// One key of a segment and its digest.
struct KeyDigest {
  std::string key;
  uint64_t digest = 0;

  friend bool operator==(const KeyDigest& a, const KeyDigest& b) {
    return a.key == b.key && a.digest == b.digest;
  }
};

// A point of this node's log: every entry at or below `seq` is stamped at or
// below `stamp`, every later one above it.
struct LogCheckpoint {
  uint64_t seq = 0;
  HlcTimestamp stamp;
};

// A batch of writes committed atomically. Holds the store's single writer
// slot from creation until Commit() or destruction: groups run one at a
// time. Not thread-safe: create, use, commit and destroy it on one thread.
class WriteGroup {
 public:
  virtual ~WriteGroup() = default;

  // Turns `op` into a delta against the state as of every earlier write in
  // this group, joins it and appends it to the log. Returns the delta's log
  // sequence, or 0 when the operation changed nothing (removing an absent
  // element, adding 0). On error nothing of `op` stays in the group:
  //   WrongType      the key holds a live value of another type (for
  //                  LwwDelete: of a type other than register and counter)
  //   TooLarge       too many multi-value siblings
  //   InvalidArgument an empty element list, a counter value or this node's
  //                  counter totals that would overflow, or a multi-value
  //                  context holding writes of this node the key never saw
  //   Corruption     a stored row of the key does not decode (names the key)
  virtual StatusOr<uint64_t> Mutate(std::string_view key, const Operation& op) = 0;

  // Joins a delta or full state made elsewhere (replication, repair) without
  // logging it. Advances the clock past any LWW stamp in it.
  Status Join(std::string_view key, const Crdt& delta) { return Join(key, delta, nullptr); }
  // As above; when `delta` is an LWW register stamped below the register
  // held at `key` (it loses to it), and `held_above` is not null, sets
  // *held_above to the held register's stamp.
  virtual Status Join(std::string_view key, const Crdt& delta, HlcTimestamp* held_above) = 0;

  // Joins one page of another store's OR-set at `key` (Store::SetStatePage)
  // as OrSet::JoinPage does, without logging it: the elements of the page's
  // range end as a join of the whole set would leave them, the others stay,
  // and the set's context gains only the dots of the page's elements. Each
  // page is a delta on its own, so a transfer cut off after any page loses
  // nothing and brings nothing back. Costs O(elements of the range, on both
  // sides). On error nothing of the page stays in the group:
  //   WrongType   never; a page joins beside values of other types, as Join
  //   Corruption  a stored row of the set does not decode
  virtual Status JoinSetPage(std::string_view key, const OrSetPage& page) = 0;

  // Joins `ctx` into the context of the OR-set at `key`, removing no
  // element (OrSet::JoinPagedContext): the last step of a paged transfer.
  // REQUIRES: pages covering the whole byte range were joined since `ctx`
  // was read, each read at or after it; in a transfer that reads its pages
  // in order, pass the first page's context.
  virtual Status JoinSetContext(std::string_view key, const CausalContext& ctx) = 0;

  // Removes every row of `key`, of every type, as if the key never had
  // state, and takes its digest out of the hash tree; but only if the key's
  // digest as of the earlier writes in this group (Store::KeyDigest) equals
  // `expected_digest`, so that a write that arrived after the caller read the
  // digest is never lost. Returns whether it dropped: true also for an absent
  // key with `expected_digest` 0, which changes nothing. Not a CRDT operation
  // and not logged: it is how a node hands over a key it no longer owns,
  // once the key's new owners hold it. A drop that removed something marks
  // the key's segment in DroppedSegments(). On error (a failed read) nothing
  // of the drop stays in the group.
  virtual StatusOr<bool> Drop(std::string_view key, uint64_t expected_digest) = 0;

  // Collects LWW tombstones every replica holds (DESIGN.md section 1, item
  // 6): visits the tombstones written here (the tombstone index, by writer
  // and stamp) stamped at or below `bound`, whatever their writer, at most
  // `limit` of them, and removes every row of each key whose state is
  // still nothing but that tombstone, as Drop does (the key's digest leaves
  // the hash tree; the segment is not marked dropped). Keys written again
  // since, or holding a value of another type, are left as they are. The
  // caller decides the bound: a tombstone may go only once every node
  // holds every write stamped at or below it, from every writer, or a
  // stale value still on its way would come back. Returns the keys
  // removed. On error (a failed read) the keys removed before it stay
  // removed in the group.
  // Then, within the same `limit` of visits, collects the multi-value
  // registers, OR-sets and counters a write here left without siblings,
  // elements or increments beyond their reset floors (the emptied index,
  // IsEmptied) whose stamp (this node's clock when the write left them
  // empty) is at or below `emptied_bound`. A key goes only when every state
  // it holds is such a tombstone or emptied state (a deleted counter's key
  // holds both). This node's dots and counter totals in a key removed go
  // into its segment's floor, so it never makes them again. The caller's
  // bound must also cover every write an emptied state has seen, whoever
  // stamped it.
  virtual StatusOr<size_t> CollectTombstones(HlcTimestamp bound, HlcTimestamp emptied_bound,
                                             size_t limit) = 0;

  // The digest of `key` as of the earlier writes in this group
  // (Store::KeyDigest); 0 when it holds nothing.
  virtual StatusOr<uint64_t> KeyDigest(std::string_view key) = 0;

  // Unmarks `segment` in DroppedSegments(), at commit.
  // REQUIRES: segment < kTreeSegments (others are ignored).
  virtual void ClearDropped(size_t segment) = 0;

  // Records that `origin`'s log is applied through `seq`; persisted at
  // commit. Lower positions than the recorded one are ignored.
  virtual void RecordApplied(ReplicaId origin, uint64_t seq) = 0;

  // Replaces Store::PeerMembers() with `bytes`, at commit.
  virtual void SetPeerMembers(std::string bytes) = 0;
  // Replaces Store::VouchedSegments() with `segments` (kTreeSegments
  // entries), at commit.
  virtual void SetVouchedSegments(std::vector<bool> segments) = 0;

  // Writes the group. On OK it is durable as the store's Durability says and
  // visible to readers. After Commit(), successful or not, the group is spent.
  virtual Status Commit() = 0;

  // Writes (operations that changed something, joins, and drops that removed
  // a key) in the group.
  virtual size_t size() const = 0;
};

// Thread-safe: reads may run on any thread, concurrently with a WriteGroup.
class Store {
 public:
  virtual ~Store() = default;

  // Opens (creating if absent) the RocksDB store in `dir`. A new store gets a
  // fresh random node id. Fails with IOError if another process holds it,
  // and with FailedPrecondition, leaving it untouched, if it holds a disk
  // format this build neither opens nor migrates (docs/formats.md). A store
  // of the previous format is migrated first, on the calling thread, at a
  // cost of one walk of every key's rows.
  //
  // The log of a node must never go back below positions its peers hold:
  // its new writes would reuse them. A store whose log may have gone back
  // continues under a new random node id instead: the old one is retired
  // (RetiredIds) with the store's applied position for it set to its last
  // log entry, and the log is trimmed through that entry, so every peer is
  // repaired by anti-entropy. That happens when
  //   - the previous run did not close cleanly, ran in Durability::kWal,
  //     and the machine has restarted since (the boot id differs): the WAL
  //     may have lost acknowledged writes;
  //   - `dir` is a copy: its marker file (keys::kDirMarkerFile) is not the
  //     one the store recorded;
  //   - RetireAtNextOpen was called in an earlier run;
  //   - StoreOptions::new_identity.
  static StatusOr<std::unique_ptr<Store>> Open(const std::string& dir,
                                               const StoreOptions& options);

  virtual ReplicaId node_id() const = 0;
  // The ids this store used before node_id(), oldest first.
  virtual std::vector<RetiredId> RetiredIds() const = 0;
  // Why this open took a new node id; empty when it did not.
  virtual std::string IdentityChange() const = 0;
  // Records, durably, that the next open must take a new node id: a peer
  // holds this node's log past its last entry. Blocks on the disk.
  virtual Status RetireAtNextOpen(const std::string& why) = 0;
  virtual HybridClock* clock() = 0;

  // Waits for the writer slot, then starts a group.
  virtual std::unique_ptr<WriteGroup> BeginGroup() = 0;

  // The state of (key, type), or nullopt when it is bottom. An OR-set is
  // assembled from all its rows: O(size); use the Set* calls for one element
  // or a page.
  virtual StatusOr<std::optional<Crdt>> Get(std::string_view key, CrdtType type) = 0;

  // The types with a live value at `key` (an LWW value not deleted, a
  // non-empty MV register or set, a counter ever changed); more than one only
  // after concurrent writes of different types in different regions.
  virtual StatusOr<std::vector<CrdtType>> LiveTypes(std::string_view key) = 0;

  virtual StatusOr<bool> SetContains(std::string_view key, std::string_view element) = 0;
  virtual StatusOr<uint64_t> SetSize(std::string_view key) = 0;
  // Up to `limit` elements greater than `start_after` (all, when nullopt).
  virtual StatusOr<SetPage> SetMembers(std::string_view key,
                                       std::optional<std::string_view> start_after,
                                       size_t limit) = 0;
  // One page of the full state of the OR-set at `key`, for moving it in
  // pieces (WriteGroup::JoinSetPage): the elements greater than
  // `start_after` (from the first, when nullopt) with their dots, stopping
  // before `max_elements` elements or `max_bytes` of element names and
  // encoded dots would be passed (at least one element when any is there),
  // and the set's whole context; read at one snapshot. The page's range is
  // (start_after, its last element] when more follow (page.more()), else
  // everything after start_after. An absent set gives an empty page with an
  // empty context. O(page).
  virtual StatusOr<OrSetPage> SetStatePage(std::string_view key,
                                           std::optional<std::string_view> start_after,
                                           size_t max_elements, size_t max_bytes) = 0;

  // Up to `max_entries` log entries after `after_seq`, stopping once
  // `max_bytes` of encoded entries are read (at least one entry is returned
  // when any is there). FailedPrecondition if entries after `after_seq` were
  // trimmed.
  virtual StatusOr<std::vector<LogEntry>> ReadLog(uint64_t after_seq, size_t max_entries,
                                                  size_t max_bytes) = 0;
  // The sequence of the last committed log entry (0 when none ever was).
  virtual uint64_t LastSeq() const = 0;
  // The last commit's point of the log (LogCheckpoint), read together.
  virtual LogCheckpoint LastCheckpoint() const = 0;
  // Every entry at or below this sequence is trimmed.
  virtual uint64_t TrimmedThrough() const = 0;
  // Deletes log entries through `seq`. REQUIRES: seq <= LastSeq().
  virtual Status TrimLog(uint64_t seq) = 0;
  // An estimate of the bytes of log entries after `seq` (RocksDB approximate
  // sizes including memtables); for backlog limits, not exact. Entries in
  // table files are estimated closely; the most recent ones, still in a
  // memtable (up to the write buffer size), from a walk of its skip list
  // that can be off by a factor of 2 or more. 0 when RocksDB cannot estimate.
  virtual uint64_t LogBytesAfter(uint64_t seq) = 0;

  // Makes every committed write durable against a machine crash (fsyncs
  // the WAL); what Commit() already does in kFsync. For a clean shutdown in
  // kWal.
  virtual Status Sync() = 0;

  // The committed RecordApplied positions, by origin.
  virtual std::map<ReplicaId, uint64_t> AppliedPositions() const = 0;

  // The digests of all kTreeSegments segments as of the last commit. A
  // commit updates its segments' digests after its write succeeds, so the
  // result may trail a concurrent reader's view of the state by one commit.
  virtual std::vector<uint64_t> TreeDigests() const = 0;
  // The keys with state in `segment`, in byte order, each with its digest,
  // read at one snapshot: O(keys of the segment), a key index row and the
  // key's object rows (at most one a type) each.
  // REQUIRES: segment < kTreeSegments (else InvalidArgument).
  // (Qualified: the method KeyDigest below hides the struct in this class.)
  virtual StatusOr<std::vector<geokv::KeyDigest>> SegmentKeys(size_t segment) = 0;
  // The digest of `key` as SegmentKeys reports it; 0 when the key has no
  // state. Reads the key's index row (which holds the digest of its OR-set
  // element rows, kept by every commit that changes them) and its object
  // rows: O(1) whatever the set's size. Compares one key across replicas.
  virtual StatusOr<uint64_t> KeyDigest(std::string_view key) = 0;
  // The number of keys with state (with an object row of any type, a
  // tombstone too), exactly as of the last commit: each commit counts the
  // keys it creates and drops, persists the change in its batch and updates
  // this count after its write succeeds, so it may trail a concurrent
  // reader's view of the state by one commit. In memory, O(1), never fails;
  // safe on the event loop.
  virtual StatusOr<uint64_t> KeyCount() = 0;
  // The segments from which a WriteGroup::Drop removed a key since their
  // last WriteGroup::ClearDropped, as of the last commit: kTreeSegments
  // entries. Persisted.
  virtual std::vector<bool> DroppedSegments() const = 0;
  // The members of other regions this node learned, as of the last commit
  // (WriteGroup::SetPeerMembers), read at open: bytes the store keeps for
  // replication (replication/members.h) and does not interpret; "" when
  // never set. In memory; persisted.
  virtual std::string PeerMembers() const = 0;
  // The segments replication last said this node vouches for
  // (WriteGroup::SetVouchedSegments, replication/hand_over.h), as of the
  // last commit: kTreeSegments entries, or nullopt when never set (a data
  // dir from before the row). In memory; persisted.
  virtual std::optional<std::vector<bool>> VouchedSegments() const = 0;

  // LWW values joined from elsewhere (replication or repair) that lost to a
  // later stamp already here: writes overwritten by a concurrent write.
  virtual uint64_t LwwOverwritten() const = 0;

  // What RocksDB estimates for the whole store, for metrics: the live data
  // size, the bytes in memtables and the bytes compaction must rewrite.
  struct SpaceEstimates {
    uint64_t live_data_bytes = 0;
    uint64_t memtable_bytes = 0;
    uint64_t pending_compaction_bytes = 0;
  };
  virtual SpaceEstimates Space() = 0;
  // The full state of every type stored at `key` (including non-live ones,
  // such as a deleted LWW register, whose tombstone must still travel), in
  // CrdtType order; empty when the key has no state. Read at one snapshot.
  virtual StatusOr<std::vector<Crdt>> GetStates(std::string_view key) = 0;
};

}  // namespace geokv

#endif  // GEOKV_STORAGE_STORE_H_

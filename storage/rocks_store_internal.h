// Private to storage/rocks_*.cc: the RocksDB store's classes and the helpers its files share.
#ifndef GEOKV_STORAGE_ROCKS_STORE_INTERNAL_H_
#define GEOKV_STORAGE_ROCKS_STORE_INTERNAL_H_

#include <capnp/message.h>
#include <rocksdb/db.h>
#include <rocksdb/utilities/write_batch_with_index.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <mutex>
#include <random>
#include <unordered_map>

#include "crdt/codec.h"
#include "schema/framing.h"
#include "schema/storage.capnp.h"
#include "storage/keys.h"
#include "storage/rocks_config.h"
#include "storage/store.h"

namespace geokv {
namespace rocks_internal {

namespace keys = storage_keys;

std::string Describe(std::string_view key, CrdtType type);

inline uint8_t TypeBit(CrdtType type) {
  return static_cast<uint8_t>(1u << static_cast<uint8_t>(type));
}

inline constexpr uint8_t kAllTypeBits = (1u << 1) | (1u << 2) | (1u << 3) | (1u << 4);

// The causal context and cardinality of a set stored one row per element.
struct SetHeader {
  CausalContext ctx;
  uint64_t cardinality = 0;
};

std::string EncodeSetHeader(const SetHeader& h);
Status DecodeSetHeader(std::string_view bytes, SetHeader* out);
std::string EncodeElementDots(const DotSet& dots);
// Decodes the row of `element` of the set at `key`; errors name both.
Status DecodeElementDots(std::string_view key, std::string_view element, std::string_view bytes,
                         DotSet* out);
std::string EncodeLogEntry(uint64_t seq, ReplicaId origin, HlcTimestamp ts, std::string_view key,
                           const Crdt& delta);
Status DecodeLogEntry(std::string_view bytes, LogEntry* out);

struct WriterState {
  uint64_t last_seq = 0;
  HlcTimestamp clock;
};
std::string EncodeWriterState(const WriterState& w);
Status DecodeWriterState(std::string_view bytes, WriterState* out);

inline bool StartsWith(const rocksdb::Slice& s, const std::string& prefix) {
  return s.size() >= prefix.size() && std::memcmp(s.data(), prefix.data(), prefix.size()) == 0;
}

// Reads rows of the state column family, either straight from the database
// (optionally at a snapshot) or through a write group's pending batch.
class RowReader {
 public:
  virtual ~RowReader() = default;
  // Sets *found; fills *value when found.
  virtual Status Get(const std::string& row, std::string* value, bool* found) = 0;
  virtual std::unique_ptr<rocksdb::Iterator> NewIterator() = 0;

  // Reads `row` into *value: nullopt when absent.
  Status GetRow(const std::string& row, std::optional<std::string>* value) {
    std::string v;
    bool found;
    GEOKV_RETURN_IF_ERROR(Get(row, &v, &found));
    if (found) {
      *value = std::move(v);
    } else {
      value->reset();
    }
    return Status::OK();
  }

  Status GetLiveMask(std::string_view key, uint8_t* mask) {
    std::string v;
    bool found;
    GEOKV_RETURN_IF_ERROR(Get(keys::LiveTypesRow(key), &v, &found));
    if (!found) {
      *mask = 0;
    } else if (v.size() != 1 || (static_cast<uint8_t>(v[0]) & ~kAllTypeBits) != 0) {
      return Status::Corruption("key '" + PrintableBytes(key) + "': bad live-types row");
    } else {
      *mask = static_cast<uint8_t>(v[0]);
    }
    return Status::OK();
  }

  // The state of a register or counter; bottom when absent. With `raw`, the
  // row as read goes there too (nullopt when absent).
  StatusOr<Crdt> GetObject(std::string_view key, CrdtType type,
                           std::optional<std::string>* raw = nullptr) {
    std::optional<std::string> local;
    if (raw == nullptr) raw = &local;
    GEOKV_RETURN_IF_ERROR(GetRow(keys::ObjectRow(key, type), raw));
    if (!*raw) return Bottom(type);
    StatusOr<Crdt> value = DecodeCrdt(**raw);
    if (!value.ok()) return value.status().WithContext(Describe(key, type));
    if (TypeOf(*value) != type) {
      return Status::Corruption(Describe(key, type) + ": row holds a " +
                                std::string(TypeName(TypeOf(*value))));
    }
    return value;
  }

  // The set's header; empty when absent. With `raw`, as GetObject.
  Status GetSetHeader(std::string_view key, SetHeader* out,
                      std::optional<std::string>* raw = nullptr) {
    std::optional<std::string> local;
    if (raw == nullptr) raw = &local;
    *out = SetHeader();
    GEOKV_RETURN_IF_ERROR(GetRow(keys::ObjectRow(key, CrdtType::kOrSet), raw));
    if (!*raw) return Status::OK();
    return DecodeSetHeader(**raw, out).WithContext(Describe(key, CrdtType::kOrSet));
  }

  // The element's dots; empty when absent. With `raw`, as GetObject.
  Status GetElementDots(std::string_view key, std::string_view element, DotSet* out,
                        std::optional<std::string>* raw = nullptr) {
    std::optional<std::string> local;
    if (raw == nullptr) raw = &local;
    out->clear();
    GEOKV_RETURN_IF_ERROR(GetRow(keys::ElementRow(key, element), raw));
    if (!*raw) return Status::OK();
    return DecodeElementDots(key, element, **raw, out);
  }

  // The set's header context with the entries of `elements` only: enough for
  // the OR-set's mutators on those elements.
  StatusOr<OrSet> GetSetProjection(std::string_view key, const std::vector<std::string>& elements) {
    SetHeader header;
    GEOKV_RETURN_IF_ERROR(GetSetHeader(key, &header));
    OrSet::Entries entries;
    for (const std::string& e : elements) {
      DotSet dots;
      GEOKV_RETURN_IF_ERROR(GetElementDots(key, e, &dots));
      if (!dots.empty()) entries.emplace(e, std::move(dots));
    }
    return OrSet(std::move(entries), std::move(header.ctx));
  }
};

class DbReader : public RowReader {
 public:
  DbReader(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, bool snapshot) : db_(db), cf_(cf) {
    if (snapshot) options_.snapshot = snapshot_ = db->GetSnapshot();
  }
  ~DbReader() override {
    if (snapshot_ != nullptr) db_->ReleaseSnapshot(snapshot_);
  }

  Status Get(const std::string& row, std::string* value, bool* found) override {
    rocksdb::Status s = db_->Get(options_, cf_, row, value);
    *found = s.ok();
    if (s.IsNotFound()) return Status::OK();
    return FromRocks(s, "read");
  }

  std::unique_ptr<rocksdb::Iterator> NewIterator() override { return NewIterator(cf_); }

  // A row of another column family, at the same snapshot; as Get.
  Status GetFrom(rocksdb::ColumnFamilyHandle* cf, const std::string& row, std::string* value,
                 bool* found) {
    rocksdb::Status s = db_->Get(options_, cf, row, value);
    *found = s.ok();
    if (s.IsNotFound()) return Status::OK();
    return FromRocks(s, "read");
  }

  // An iterator over another column family, at the same snapshot.
  std::unique_ptr<rocksdb::Iterator> NewIterator(rocksdb::ColumnFamilyHandle* cf) {
    return std::unique_ptr<rocksdb::Iterator>(db_->NewIterator(options_, cf));
  }

 private:
  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* cf_;
  rocksdb::ReadOptions options_;
  const rocksdb::Snapshot* snapshot_ = nullptr;
};

class BatchReader : public RowReader {
 public:
  BatchReader(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf,
              rocksdb::WriteBatchWithIndex* batch)
      : db_(db), cf_(cf), batch_(batch) {}

  Status Get(const std::string& row, std::string* value, bool* found) override {
    rocksdb::Status s = batch_->GetFromBatchAndDB(db_, options_, cf_, row, value);
    *found = s.ok();
    if (s.IsNotFound()) return Status::OK();
    return FromRocks(s, "read");
  }

  std::unique_ptr<rocksdb::Iterator> NewIterator() override {
    return std::unique_ptr<rocksdb::Iterator>(
        batch_->NewIteratorWithBase(cf_, db_->NewIterator(options_, cf_)));
  }

 private:
  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* cf_;
  rocksdb::WriteBatchWithIndex* batch_;
  rocksdb::ReadOptions options_;
};

// Positions `it`, over the state family, at the first element row of the
// set at `key` greater than `start_after` (the first, when nullopt).
void SeekElementsAfter(rocksdb::Iterator* it, std::string_view key,
                       const std::optional<std::string_view>& start_after);
// The state of (key, type) as `reader` sees it; nullopt when bottom.
StatusOr<std::optional<Crdt>> ReadState(RowReader& reader, std::string_view key, CrdtType type);
// The XOR of the hashes of the element rows of `key`, read through `it`.
StatusOr<uint64_t> ElementsDigestOf(rocksdb::Iterator* it, std::string_view key);
// The XOR of the hashes of the object rows of `key`, as `reader` sees them.
StatusOr<uint64_t> ObjectsDigestOf(RowReader& reader, std::string_view key);
// The same through `it`, an iterator of the state family, which it moves:
// one seek (and one more past a set's element rows) in place of a read of
// each type's row, for a caller that visits many keys.
StatusOr<uint64_t> ObjectsDigestOf(rocksdb::Iterator* it, std::string_view key);

// An LWW register's object row as the hash tree counts it: whether it is
// there, and its hash (keys::StateRowHash).
struct LwwRowFact {
  bool present = false;
  uint64_t hash = 0;
};

// What the writes of recently used keys need to know of them without
// reading the database: the live-types row (the WRONG_TYPE check), and the
// LWW register's row (a blind LWW write folds the old row's hash into the
// tree). Either may be unknown. It holds committed values only and is used
// only by the group holding the writer slot. When full, it evicts entries
// from random buckets.
class KeyFactsCache {
 public:
  explicit KeyFactsCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}

  std::optional<uint8_t> Mask(const std::string& key) const {
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    return it->second.mask;
  }
  std::optional<LwwRowFact> LwwRow(const std::string& key) const {
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    return it->second.lww_row;
  }

  void SetMask(const std::string& key, uint8_t mask) { Entry(key).mask = mask; }
  void SetLwwRow(const std::string& key, LwwRowFact row) { Entry(key).lww_row = row; }

  void Erase(const std::string& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    bytes_ -= Cost(key);
    map_.erase(it);
  }

 private:
  struct Facts {
    std::optional<uint8_t> mask;
    std::optional<LwwRowFact> lww_row;
  };
  // Roughly what a node of the map costs besides the key's bytes.
  static size_t Cost(const std::string& key) { return key.size() + 80; }

  // The entry of `key`, made (evicting others while over capacity) if new.
  Facts& Entry(const std::string& key) {
    auto [it, inserted] = map_.try_emplace(key);
    if (!inserted) return it->second;
    bytes_ += Cost(key);
    // Evicts from a random bucket on, never `key` itself.
    size_t bucket = rng_() % map_.bucket_count();
    while (bytes_ > capacity_ && map_.size() > 1) {
      auto victim = std::find_if(map_.begin(bucket), map_.end(bucket),
                                 [&key](const auto& entry) { return entry.first != key; });
      if (victim == map_.end(bucket)) {
        bucket = (bucket + 1) % map_.bucket_count();
        continue;
      }
      const std::string gone = victim->first;
      bytes_ -= Cost(gone);
      map_.erase(gone);
    }
    return map_.find(key)->second;
  }

  const size_t capacity_;
  size_t bytes_ = 0;
  std::unordered_map<std::string, Facts> map_;
  std::minstd_rand rng_;
};

// Refuses a data dir whose `format` row holds `value` unless it is this
// build's format or the one it migrates.
Status CheckFormat(std::string_view value);
// The number held by a key index row (a digest) or the key count row.
StatusOr<uint64_t> DecodeTreeValue(const std::string& value, std::string_view what);
// Refuses a database in `dir` that lacks some of `config`'s column families.
Status CheckFamilies(const RocksConfig& config, const std::string& dir);

class RocksStore;

class RocksWriteGroup : public WriteGroup {
 public:
  RocksWriteGroup(RocksStore* store, std::unique_lock<std::mutex> lock);

  StatusOr<uint64_t> Mutate(std::string_view key, const Operation& op) override;
  using WriteGroup::Join;
  Status Join(std::string_view key, const Crdt& delta, HlcTimestamp* held_above) override;
  Status JoinSetPage(std::string_view key, const OrSetPage& page) override;
  Status JoinSetContext(std::string_view key, const CausalContext& ctx) override;
  StatusOr<bool> Drop(std::string_view key, uint64_t expected_digest) override;
  StatusOr<size_t> CollectTombstones(HlcTimestamp bound, HlcTimestamp emptied_bound,
                                     size_t limit) override;
  StatusOr<uint64_t> KeyDigest(std::string_view key) override {
    return DigestInGroup(std::string(key));
  }
  void ClearDropped(size_t segment) override;
  void RecordApplied(ReplicaId origin, uint64_t seq) override;
  void SetPeerMembers(std::string bytes) override { peer_members_ = std::move(bytes); }
  void SetVouchedSegments(std::vector<bool> segments) override {
    segments.resize(kTreeSegments, false);
    vouched_ = std::move(segments);
  }
  Status Commit() override;
  size_t size() const override { return size_; }

 private:
  // What an operation did: its delta, and whether the object is live after.
  struct Change {
    Crdt delta;
    bool live;
  };

  // Runs `write`, which changes `key` only, so that it takes effect in the
  // group entirely or, when it returns an error, not at all (batch rows,
  // masks, sequence, size, tree changes).
  template <typename Write>
  auto Atomically(std::string_view key, Write&& write) -> decltype(write());
  // Mutate without Atomically: may leave partial writes on error.
  StatusOr<uint64_t> MutateUnguarded(std::string_view key, const Operation& op);
  // Writes the new state of the object `op` acts on; nullopt when `op`
  // changes nothing.
  StatusOr<std::optional<Change>> MakeChange(std::string_view key, const Operation& op);
  // Deletes the counter at `key` as this store has seen it (PnCounter::Reset)
  // and logs the reset; does nothing when the counter is not live.
  Status ResetCounter(std::string_view key);
  // Joins `delta` into the stored (key, type) and returns whether the
  // object is live afterwards.
  StatusOr<bool> JoinInto(std::string_view key, const Crdt& delta, HlcTimestamp* held_above);
  StatusOr<bool> JoinSet(std::string_view key, const OrSet& delta);
  StatusOr<bool> JoinPageInto(std::string_view key, const OrSetPage& page);
  // Joins into (key, type) with `join`, which returns whether the object is
  // live afterwards, and keeps the key's live types.
  template <typename JoinFn>
  Status JoinAndMark(std::string_view key, CrdtType type, JoinFn&& join);
  // Rewrites the row of `element` in the set at `key` from `before` (its
  // dots and `before_row` its row as read) to `after`, with the dot index,
  // counting the element in or out of *cardinality.
  void RewriteElement(std::string_view key, const std::string& element, const DotSet& before,
                      const std::optional<std::string>& before_row, const DotSet& after,
                      int64_t* cardinality);
  // Writes the set's header with `cardinality`, whose row in the group is
  // `header_row`; returns whether the set is live.
  StatusOr<bool> PutSetHeader(std::string_view key, SetHeader header,
                              const std::optional<std::string>& header_row, int64_t cardinality);
  // Writes the object row of `state`, whose row in the group is `old`
  // (nullopt: absent). A bottom state gets no row: a store that never heard
  // of the object must hold the same rows.
  // A new LWW tombstone also gets its tombstone index row.
  void PutObject(std::string_view key, const Crdt& state, const std::optional<std::string>& old);
  // Removes every row of `key`, whose digest as of this group is `digest`,
  // and takes the key out of the tree; raises the segment's floor to this
  // node's dots in it and, when `collected` (not handed over), to its
  // counter totals. REQUIRES: inside Atomically.
  Status RemoveKey(std::string_view key, uint64_t digest, bool collected);
  // What collection found of a key: removed; holding a tombstone or an
  // emptied state not stable yet (an emptied state without its record gets
  // one); or holding a live value (or nothing).
  enum class Collectable { kCollected, kNotYet, kLive };
  // Removes `key` (RemoveKey) when every state it holds is an LWW
  // tombstone stamped at or below `bound` or an emptied register, set or
  // counter (IsEmptied) recorded at or below `emptied_bound`, and nothing
  // else. REQUIRES: inside Atomically.
  StatusOr<Collectable> CollectKey(const std::string& key, HlcTimestamp bound,
                                   HlcTimestamp emptied_bound);
  // The two halves of CollectTombstones: the keys of the tombstone index,
  // then those of the emptied index.
  StatusOr<size_t> CollectLwwTombstones(HlcTimestamp bound, HlcTimestamp emptied_bound,
                                        size_t limit);
  StatusOr<size_t> CollectEmptied(HlcTimestamp bound, HlcTimestamp emptied_bound, size_t limit);
  // The floor of `key`'s segment as of this group (keys::kMetaFloorPrefix).
  uint64_t Floor(std::string_view key) const;
  // Raises the floor of `key`'s segment to `value`, if below.
  void RaiseFloor(std::string_view key, uint64_t value);
  // Reads a meta row as of this group; nullopt when absent.
  Status GetMeta(const std::string& row, std::optional<std::string>* value);
  // Records that a write left a register, set or counter at `key` without
  // a value, stamped with the clock now (the emptied index), replacing the
  // key's earlier record.
  Status NoteEmptied(std::string_view key);
  // Writes the object row of (key, type); a key's first object row also
  // enters the key in the tree's key index at commit (only Drop deletes
  // object rows, and the index row with them).
  void PutObjectRow(std::string_view key, CrdtType type, const std::optional<std::string>& old,
                    std::string value);
  // Writes the LWW register row of `key`, a blind write's: as PutObjectRow,
  // knowing of the old row only what the hash tree needs.
  void PutLwwRow(std::string_view key, LwwRowFact old, std::string value);
  // What both come to: `row` is (key, type)'s object row, whose old value
  // hashed to `old_hash` (nullopt: absent); an LWW row is recorded
  // (SetLwwRow).
  void WriteObjectRow(std::string_view key, CrdtType type, const std::string& row,
                      std::optional<uint64_t> old_hash, std::string value);
  // Writes `value` to `row`, a state row of the running operation's key
  // that counts in the hash tree (an object row, or an element row when
  // `element`), or deletes it when `value` is nullopt. `old` is the row's
  // value in the group (nullopt: absent); the change of the row's hash goes
  // to the operation's tree change, and to its key index row's only for an
  // element row. Every write of a counted row goes through here or, for a
  // blind LWW write (PutLwwRow), WriteCountedRow below it.
  void WriteStateRow(const std::string& row, bool element, const std::optional<std::string>& old,
                     std::optional<std::string> value);
  // WriteStateRow knowing the old row's hash (nullopt: absent), however it
  // compares; returns the new row's hash (0: deleted).
  uint64_t WriteCountedRow(const std::string& row, bool element, std::optional<uint64_t> old_hash,
                           std::optional<std::string> value);
  // The live-types mask of `key` as of this group: from the group's own
  // writes, the cache, or the database.
  Status GetLiveMask(const std::string& key, uint8_t* mask);
  // Refuses a client's context that holds writes of this node the register
  // has never seen: it was forged, or read from another key, and would
  // silently supersede this node's future writes.
  Status CheckSeen(std::string_view key, const MvRegister& reg, const CausalContext& seen) const;
  // Writes the live-types row of `key`, whose current value is `mask`, with
  // `type` marked live or not; a register, set or counter marked not live
  // is recorded in the emptied index (NoteEmptied).
  Status PutLiveMask(const std::string& key, uint8_t mask, CrdtType type, bool live);
  // Sets the live-types mask of `key` in the group to `mask`, without
  // writing its row.
  void SetMask(const std::string& key, uint8_t mask);
  // The LWW register row of `key` as of this group: from the group's own
  // writes, the cache, or the database.
  Status GetLwwRow(const std::string& key, LwwRowFact* row);
  // Records the LWW register row of `key` the group now holds.
  void SetLwwRow(const std::string& key, LwwRowFact row);
  // Undoes the mask and LWW row records made since the undo logs had
  // `marks` entries.
  struct UndoMarks {
    size_t masks = 0;
    size_t lww_rows = 0;
  };
  UndoMarks Marks() const { return {mask_undo_.size(), lww_undo_.size()}; }
  void RollbackFacts(UndoMarks marks);
  // The group's DroppedSegments: the store's until the group changes it.
  std::vector<bool>& Dropped();
  // The digest of `key` as of the earlier writes in this group.
  StatusOr<uint64_t> DigestInGroup(const std::string& key);
  // Adds the tree rows of key_changes_ to the batch and returns the change
  // of the key count.
  StatusOr<int64_t> WriteTreeRows();
  uint64_t AppendLog(std::string_view key, HlcTimestamp ts, const Crdt& delta);

  RocksStore* const store_;
  std::unique_lock<std::mutex> lock_;
  std::unordered_map<std::string, uint8_t> masks_;  // live-types rows written here
  // Each mask write's previous entry in masks_ (nullopt: none), for rollback.
  std::vector<std::pair<std::string, std::optional<uint8_t>>> mask_undo_;
  std::unordered_map<std::string, LwwRowFact> lww_rows_;  // LWW rows written here
  std::vector<std::pair<std::string, std::optional<LwwRowFact>>> lww_undo_;  // as mask_undo_
  // What the group changes of one key's entry in the tree.
  struct KeyChange {
    uint64_t element_change = 0;  // XOR into the key index row (into 0 after a drop)
    bool dropped = false;        // a Drop removed the key: its index row goes
    bool created = false;        // an object row was first written, after any drop
  };
  std::unordered_map<std::string, KeyChange> key_changes_;
  std::map<size_t, uint64_t> segment_changes_;  // segment -> XOR into its digest
  // The running operation's share, folded into the two above if it succeeds.
  uint64_t op_digest_change_ = 0;   // all its counted rows', for the segment
  uint64_t op_element_change_ = 0;  // its element rows', for the key index row
  bool op_created_ = false;
  bool op_dropped_ = false;
  rocksdb::WriteBatchWithIndex batch_;
  BatchReader reader_;
  uint64_t next_seq_;
  std::map<ReplicaId, uint64_t> applied_;
  // Copied from the store on the group's first change; the writer slot keeps
  // the store's from changing meanwhile.
  std::optional<std::vector<bool>> dropped_;
  std::optional<std::string> peer_members_;  // to write at commit
  std::optional<std::vector<bool>> vouched_;  // to write at commit
  std::map<size_t, uint64_t> raised_floors_;  // floors raised here, to write at commit
  size_t size_ = 0;
  uint64_t lww_overwritten_ = 0;  // LWW joins that lost, added at commit
  bool spent_ = false;
};

class RocksStore : public Store {
 public:
  ~RocksStore() override {
    if (db_ == nullptr) return;  // DB::Open failed
    CloseRun();
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close();
  }

  static StatusOr<std::unique_ptr<Store>> OpenImpl(const std::string& dir,
                                                   const StoreOptions& options);

  ReplicaId node_id() const override { return node_id_; }
  std::vector<RetiredId> RetiredIds() const override { return retired_; }
  std::string IdentityChange() const override { return identity_change_; }
  Status RetireAtNextOpen(const std::string& why) override;
  HybridClock* clock() override { return clock_; }

  std::unique_ptr<WriteGroup> BeginGroup() override {
    std::unique_lock<std::mutex> lock(writer_mu_);
    return std::make_unique<RocksWriteGroup>(this, std::move(lock));
  }

  StatusOr<std::optional<Crdt>> Get(std::string_view key, CrdtType type) override;
  StatusOr<std::vector<CrdtType>> LiveTypes(std::string_view key) override;
  StatusOr<bool> SetContains(std::string_view key, std::string_view element) override;
  StatusOr<uint64_t> SetSize(std::string_view key) override;
  StatusOr<SetPage> SetMembers(std::string_view key, std::optional<std::string_view> start_after,
                               size_t limit) override;
  StatusOr<OrSetPage> SetStatePage(std::string_view key,
                                   std::optional<std::string_view> start_after,
                                   size_t max_elements, size_t max_bytes) override;
  StatusOr<std::vector<LogEntry>> ReadLog(uint64_t after_seq, size_t max_entries,
                                          size_t max_bytes) override;
  uint64_t LastSeq() const override { return last_seq_.load(); }
  LogCheckpoint LastCheckpoint() const override {
    std::lock_guard<std::mutex> l(checkpoint_mu_);
    return checkpoint_;
  }
  uint64_t LwwOverwritten() const override { return lww_overwritten_.load(); }
  SpaceEstimates Space() override {
    SpaceEstimates out;
    db_->GetAggregatedIntProperty("rocksdb.estimate-live-data-size", &out.live_data_bytes);
    db_->GetAggregatedIntProperty("rocksdb.cur-size-all-mem-tables", &out.memtable_bytes);
    db_->GetAggregatedIntProperty("rocksdb.estimate-pending-compaction-bytes",
                                  &out.pending_compaction_bytes);
    return out;
  }
  uint64_t TrimmedThrough() const override { return trimmed_.load(); }
  Status TrimLog(uint64_t seq) override;
  uint64_t LogBytesAfter(uint64_t seq) override;
  Status Sync() override { return FromRocks(db_->SyncWAL(), "sync the WAL"); }
  std::map<ReplicaId, uint64_t> AppliedPositions() const override {
    std::lock_guard<std::mutex> l(applied_mu_);
    return applied_;
  }
  std::vector<uint64_t> TreeDigests() const override {
    std::lock_guard<std::mutex> l(tree_mu_);
    return digests_;
  }
  StatusOr<std::vector<geokv::KeyDigest>> SegmentKeys(size_t segment) override;
  StatusOr<uint64_t> KeyDigest(std::string_view key) override;
  StatusOr<uint64_t> KeyCount() override { return key_count_.load(); }
  std::vector<bool> DroppedSegments() const override {
    std::lock_guard<std::mutex> l(tree_mu_);
    return dropped_;
  }
  std::string PeerMembers() const override {
    std::lock_guard<std::mutex> l(tree_mu_);
    return peer_members_;
  }
  std::optional<std::vector<bool>> VouchedSegments() const override {
    std::lock_guard<std::mutex> l(tree_mu_);
    return vouched_;
  }
  StatusOr<std::vector<Crdt>> GetStates(std::string_view key) override;

 private:
  friend class RocksWriteGroup;

  explicit RocksStore(const StoreOptions& options)
      : options_(options), key_facts_(options.key_facts_cache_bytes) {}
  Status LoadMeta();
  // Storage/rocks_identity.cc: decides at open whether the log may have
  // gone back and takes a new node id if so (Store::Open), then records the
  // run under way.
  Status CheckIdentity(const std::string& dir);
  Status Retire(const std::string& reason);
  // Marks the run closed cleanly (synced, so the WAL before it is too).
  void CloseRun();
  Status LoadDigests();
  // Rewrites a store of keys::kMigratedDiskFormat to kIndexedDiskFormat: every key
  // index row gets the digest of its key's element rows, and the key count
  // row is written; then the format row. Idempotent: a crash part-way leaves
  // the old format, and the next open starts over.
  Status Migrate();
  // Walks every object row of the state family, letting `index` add rows
  // to a batch written every 10,000 rows, then writes `format` to the
  // format row; `what` names the rows in errors.
  using ObjectIndexer = std::function<Status(std::string_view key, CrdtType type,
                                             std::string_view value, rocksdb::WriteBatch* batch)>;
  Status IndexObjects(uint8_t format, std::string_view what, const ObjectIndexer& index);
  // Rewrites a store of keys::kIndexedDiskFormat to
  // kTombstoneIndexedDiskFormat: writes the tombstone index row of every LWW
  // tombstone, then the format row. Idempotent, as Migrate.
  Status IndexTombstones();
  // Rewrites a store of keys::kTombstoneIndexedDiskFormat to this format:
  // writes the emptied index rows of every register and set without
  // siblings or elements, stamped with the clock now, then the format row.
  // Idempotent, as Migrate.
  Status IndexEmptied();

  StoreOptions options_;
  std::unique_ptr<HybridClock> owned_clock_;
  HybridClock* clock_ = nullptr;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* state_ = nullptr;
  rocksdb::ColumnFamilyHandle* log_ = nullptr;
  rocksdb::ColumnFamilyHandle* tree_ = nullptr;
  ReplicaId node_id_ = 0;
  std::vector<RetiredId> retired_;
  std::string identity_change_;

  std::mutex writer_mu_;  // the single writer slot
  KeyFactsCache key_facts_;  // guarded by writer_mu_
  std::atomic<uint64_t> last_seq_{0};
  mutable std::mutex checkpoint_mu_;
  LogCheckpoint checkpoint_;  // committed
  std::atomic<uint64_t> key_count_{0};  // committed; wraps as its row does
  std::atomic<uint64_t> lww_overwritten_{0};
  std::atomic<uint64_t> trimmed_{0};
  std::mutex trim_mu_;
  mutable std::mutex applied_mu_;
  std::map<ReplicaId, uint64_t> applied_;
  mutable std::mutex tree_mu_;
  std::vector<uint64_t> digests_ = std::vector<uint64_t>(kTreeSegments);  // committed
  std::vector<bool> dropped_ = std::vector<bool>(kTreeSegments);           // committed
  // keys::kMetaFloorPrefix, per segment; guarded by writer_mu_.
  std::vector<uint64_t> floors_ = std::vector<uint64_t>(kTreeSegments);
  std::string peer_members_;                                               // committed
  std::optional<std::vector<bool>> vouched_;                               // committed
};

}  // namespace rocks_internal
}  // namespace geokv

#endif  // GEOKV_STORAGE_ROCKS_STORE_INTERNAL_H_

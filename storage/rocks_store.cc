// The RocksDB implementation of Store. Key layout: storage/keys.h.

#include <capnp/message.h>
#include <rocksdb/db.h>
#include <rocksdb/utilities/write_batch_with_index.h>

#include <algorithm>
#include <atomic>
#include <cstring>
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
namespace {

namespace keys = storage_keys;

std::string Describe(std::string_view key, CrdtType type) {
  return "key '" + PrintableBytes(key) + "' (" + std::string(TypeName(type)) + ")";
}

uint8_t TypeBit(CrdtType type) { return static_cast<uint8_t>(1u << static_cast<uint8_t>(type)); }

constexpr uint8_t kAllTypeBits = (1u << 1) | (1u << 2) | (1u << 3) | (1u << 4);

// The causal context and cardinality of a set stored one row per element.
struct SetHeader {
  CausalContext ctx;
  uint64_t cardinality = 0;
};

std::string EncodeSetHeader(const SetHeader& h) {
  capnp::MallocMessageBuilder message(kFirstSegmentWords);
  auto root = message.initRoot<schema::SetHeader>();
  WriteContext(h.ctx, root.initContext());
  root.setCardinality(h.cardinality);
  return FrameMessage(message);
}

Status DecodeSetHeader(std::string_view bytes, SetHeader* out) {
  return ReadFramed(bytes, [out](capnp::MessageReader& m) {
    auto root = m.getRoot<schema::SetHeader>();
    GEOKV_ASSIGN_OR_RETURN(out->ctx, ReadContext(root.getContext()));
    out->cardinality = root.getCardinality();
    return Status::OK();
  });
}

std::string EncodeElementDots(const DotSet& dots) {
  capnp::MallocMessageBuilder message(kFirstSegmentWords);
  auto root = message.initRoot<schema::ElementDots>();
  WriteDots(dots, root.initDots(static_cast<unsigned>(dots.size())));
  return FrameMessage(message);
}

// Decodes the row of `element` of the set at `key`; errors name both.
Status DecodeElementDots(std::string_view key, std::string_view element, std::string_view bytes,
                         DotSet* out) {
  return ReadFramed(bytes,
                    [out](capnp::MessageReader& m) {
                      GEOKV_ASSIGN_OR_RETURN(
                          *out, ReadDots(m.getRoot<schema::ElementDots>().getDots()));
                      if (out->empty()) return Status::Corruption("element without dots");
                      return Status::OK();
                    })
      .WithContext(Describe(key, CrdtType::kOrSet) + " element '" + PrintableBytes(element) +
                   "'");
}

std::string EncodeLogEntry(uint64_t seq, ReplicaId origin, HlcTimestamp ts, std::string_view key,
                           const Crdt& delta) {
  capnp::MallocMessageBuilder message(kFirstSegmentWords);
  auto root = message.initRoot<schema::LogEntry>();
  root.setSeq(seq);
  root.setOrigin(origin);
  WriteTimestamp(ts, root.initTimestamp());
  root.setKey(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(key.data()), key.size()));
  WriteCrdt(delta, root.initDelta());
  return FrameMessage(message);
}

Status DecodeLogEntry(std::string_view bytes, LogEntry* out) {
  return ReadFramed(bytes, [out](capnp::MessageReader& m) {
    auto root = m.getRoot<schema::LogEntry>();
    out->seq = root.getSeq();
    out->origin = root.getOrigin();
    out->timestamp = ReadTimestamp(root.getTimestamp());
    auto key = root.getKey();
    out->key.assign(reinterpret_cast<const char*>(key.begin()), key.size());
    GEOKV_ASSIGN_OR_RETURN(out->delta, ReadCrdt(root.getDelta()));
    return Status::OK();
  });
}

struct WriterState {
  uint64_t last_seq = 0;
  HlcTimestamp clock;
};

std::string EncodeWriterState(const WriterState& w) {
  capnp::MallocMessageBuilder message(kFirstSegmentWords);
  auto root = message.initRoot<schema::WriterState>();
  root.setLastSeq(w.last_seq);
  WriteTimestamp(w.clock, root.initClock());
  return FrameMessage(message);
}

Status DecodeWriterState(std::string_view bytes, WriterState* out) {
  return ReadFramed(bytes, [out](capnp::MessageReader& m) {
    auto root = m.getRoot<schema::WriterState>();
    out->last_seq = root.getLastSeq();
    out->clock = ReadTimestamp(root.getClock());
    return Status::OK();
  });
}

bool StartsWith(const rocksdb::Slice& s, const std::string& prefix) {
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
                       const std::optional<std::string_view>& start_after) {
  if (!start_after) {
    it->Seek(keys::ElementPrefix(key));
    return;
  }
  const std::string from = keys::ElementRow(key, *start_after);
  it->Seek(from);
  if (it->Valid() && it->key() == rocksdb::Slice(from)) it->Next();
}

// The state of (key, type) as `reader` sees it; nullopt when bottom. An
// OR-set is assembled from all its rows.
StatusOr<std::optional<Crdt>> ReadState(RowReader& reader, std::string_view key, CrdtType type) {
  if (type != CrdtType::kOrSet) {
    GEOKV_ASSIGN_OR_RETURN(Crdt value, reader.GetObject(key, type));
    if (IsBottom(value)) return std::optional<Crdt>();
    return std::optional<Crdt>(std::move(value));
  }
  SetHeader header;
  GEOKV_RETURN_IF_ERROR(reader.GetSetHeader(key, &header));
  OrSet::Entries entries;
  std::string prefix = keys::ElementPrefix(key);
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator();
  for (it->Seek(prefix); it->Valid() && StartsWith(it->key(), prefix); it->Next()) {
    std::string element = it->key().ToString().substr(prefix.size());
    DotSet dots;
    GEOKV_RETURN_IF_ERROR(DecodeElementDots(
        key, element, std::string_view(it->value().data(), it->value().size()), &dots));
    entries.emplace_hint(entries.end(), std::move(element), std::move(dots));
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan set"));
  OrSet set(std::move(entries), std::move(header.ctx));
  if (set.IsBottom()) return std::optional<Crdt>();
  return std::optional<Crdt>(std::move(set));
}

// The XOR of the hashes of the element rows of `key`, read through `it`, an
// iterator over the state family: what its key index row holds
// (storage/keys.h). O(rows of the key); only a migration walks it.
StatusOr<uint64_t> ElementsDigestOf(rocksdb::Iterator* it, std::string_view key) {
  const std::string prefix = keys::KeyPrefix(key);
  std::string after_dot_index = prefix;
  after_dot_index.push_back(static_cast<char>(CrdtType::kOrSet));
  after_dot_index.push_back(keys::kDotIndexRow + 1);
  uint64_t digest = 0;
  for (it->Seek(prefix); it->Valid() && StartsWith(it->key(), prefix);) {
    const rocksdb::Slice row = it->key();
    // After K(key): one byte in the live-types row, else a type and a kind.
    if (row.size() > prefix.size() + 1 && row[prefix.size() + 1] == keys::kDotIndexRow) {
      it->Seek(after_dot_index);
      continue;
    }
    if (row.size() > prefix.size() + 1 && row[prefix.size() + 1] == keys::kElementRow) {
      digest ^= keys::StateRowHash(std::string_view(row.data(), row.size()),
                                   std::string_view(it->value().data(), it->value().size()));
    }
    it->Next();
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan key"));
  return digest;
}

// The XOR of the hashes of the object rows of `key` (at most one a type),
// as `reader` sees them. With the key index row's, the key's digest.
StatusOr<uint64_t> ObjectsDigestOf(RowReader& reader, std::string_view key) {
  uint64_t digest = 0;
  for (CrdtType type : kAllCrdtTypes) {
    const std::string row = keys::ObjectRow(key, type);
    std::optional<std::string> value;
    GEOKV_RETURN_IF_ERROR(reader.GetRow(row, &value));
    if (value) digest ^= keys::StateRowHash(row, *value);
  }
  return digest;
}

// The live-types rows of recently used keys, so that the WRONG_TYPE check of
// a write seldom reads the database. It holds committed values only and is
// used only by the group holding the writer slot. When full, it evicts
// entries from random buckets.
class LiveTypesCache {
 public:
  explicit LiveTypesCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}

  std::optional<uint8_t> Lookup(const std::string& key) const {
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }

  void Insert(const std::string& key, uint8_t mask) {
    auto [it, inserted] = map_.try_emplace(key, mask);
    if (!inserted) {
      it->second = mask;
      return;
    }
    bytes_ += Cost(key);
    while (bytes_ > capacity_ && !map_.empty()) {
      size_t bucket = rng_() % map_.bucket_count();
      while (map_.bucket_size(bucket) == 0) bucket = (bucket + 1) % map_.bucket_count();
      auto victim = map_.find(map_.begin(bucket)->first);
      bytes_ -= Cost(victim->first);
      map_.erase(victim);
    }
  }

  void Erase(const std::string& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    bytes_ -= Cost(key);
    map_.erase(it);
  }

 private:
  // Roughly what a node of the map costs besides the key's bytes.
  static size_t Cost(const std::string& key) { return key.size() + 64; }

  const size_t capacity_;
  size_t bytes_ = 0;
  std::unordered_map<std::string, uint8_t> map_;
  std::minstd_rand rng_;
};

// Refuses a data dir whose `format` row holds `value` unless it is this
// build's format or the one it migrates.
Status CheckFormat(std::string_view value) {
  const uint8_t format = value.size() == 1 ? static_cast<uint8_t>(value[0]) : 0;
  if (format == keys::kDiskFormat || format == keys::kMigratedDiskFormat) return Status::OK();
  return Status::FailedPrecondition(
      "data dir format " + std::to_string(format) + " is not supported: this build opens format " +
      std::to_string(keys::kDiskFormat) + " and migrates format " +
      std::to_string(keys::kMigratedDiskFormat));
}

// The number held by a key index row (a digest) or the key count row.
StatusOr<uint64_t> DecodeTreeValue(const std::string& value, std::string_view what) {
  if (value.size() != keys::kTreeKeyDigestSize) {
    return Status::Corruption("bad " + std::string(what) + " row in the tree");
  }
  return DecodeBigEndian64(value.data());
}

// Opening creates missing column families; a database in `dir` that lacks
// some of `config`'s is of an older format, refused (by CheckFormat) from a
// read-only look that leaves it as it was.
Status CheckFamilies(const RocksConfig& config, const std::string& dir) {
  std::vector<std::string> names;
  if (!rocksdb::DB::ListColumnFamilies(config.db, dir, &names).ok()) return Status::OK();  // new
  const bool complete =
      std::all_of(config.families.begin(), config.families.end(), [&](const auto& family) {
        return std::find(names.begin(), names.end(), family.name) != names.end();
      });
  if (complete) return Status::OK();
  std::vector<rocksdb::ColumnFamilyDescriptor> existing;
  for (const std::string& name : names) existing.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  GEOKV_RETURN_IF_ERROR(FromRocks(
      rocksdb::DB::OpenForReadOnly(config.db, dir, existing, &handles, &raw), "read-only open"));
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string format;
  rocksdb::Status s = db->Get(rocksdb::ReadOptions(), db->DefaultColumnFamily(),
                              keys::kMetaFormat, &format);
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "read format");
  GEOKV_RETURN_IF_ERROR(CheckFormat(format));
  return Status::Corruption("data dir of format " + std::to_string(keys::kDiskFormat) +
                            " lacks column families");
}

class RocksStore;

class RocksWriteGroup : public WriteGroup {
 public:
  RocksWriteGroup(RocksStore* store, std::unique_lock<std::mutex> lock);

  StatusOr<uint64_t> Mutate(std::string_view key, const Operation& op) override;
  Status Join(std::string_view key, const Crdt& delta) override;
  Status JoinSetPage(std::string_view key, const OrSetPage& page) override;
  Status JoinSetContext(std::string_view key, const CausalContext& ctx) override;
  StatusOr<bool> Drop(std::string_view key, uint64_t expected_digest) override;
  void ClearDropped(size_t segment) override;
  void RecordApplied(ReplicaId origin, uint64_t seq) override;
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
  // Joins `delta` into the stored (key, type) and returns whether the
  // object is live afterwards.
  StatusOr<bool> JoinInto(std::string_view key, const Crdt& delta);
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
  void PutObject(std::string_view key, const Crdt& state, const std::optional<std::string>& old);
  // Writes the object row of (key, type); a key's first object row also
  // enters the key in the tree's key index at commit (only Drop deletes
  // object rows, and the index row with them).
  void PutObjectRow(std::string_view key, CrdtType type, const std::optional<std::string>& old,
                    std::string value);
  // Writes `value` to `row`, a state row of the running operation's key
  // that counts in the hash tree (an object row, or an element row when
  // `element`), or deletes it when `value` is nullopt. `old` is the row's
  // value in the group (nullopt: absent); the change of the row's hash goes
  // to the operation's tree change, and to its key index row's only for an
  // element row. Every write of a counted row goes through here.
  void WriteStateRow(const std::string& row, bool element, const std::optional<std::string>& old,
                     std::optional<std::string> value);
  // The live-types mask of `key` as of this group: from the group's own
  // writes, the cache, or the database.
  Status GetLiveMask(const std::string& key, uint8_t* mask);
  // Refuses a client's context that holds writes of this node the register
  // has never seen: it was forged, or read from another key, and would
  // silently supersede this node's future writes.
  Status CheckSeen(std::string_view key, const MvRegister& reg, const CausalContext& seen) const;
  // Writes the live-types row of `key`, whose current value is `mask`, with
  // `type` marked live or not.
  void PutLiveMask(const std::string& key, uint8_t mask, CrdtType type, bool live);
  // Sets the live-types mask of `key` in the group to `mask`, without
  // writing its row.
  void SetMask(const std::string& key, uint8_t mask);
  // Undoes the mask writes made since the undo log had `mark` entries.
  void RollbackMasks(size_t mark);
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
  size_t size_ = 0;
  uint64_t lww_overwritten_ = 0;  // LWW joins that lost, added at commit
  bool spent_ = false;
};

class RocksStore : public Store {
 public:
  ~RocksStore() override {
    if (db_ == nullptr) return;  // DB::Open failed
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close();
  }

  static StatusOr<std::unique_ptr<Store>> OpenImpl(const std::string& dir,
                                                   const StoreOptions& options);

  ReplicaId node_id() const override { return node_id_; }
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
  StatusOr<std::vector<Crdt>> GetStates(std::string_view key) override;

 private:
  friend class RocksWriteGroup;

  explicit RocksStore(const StoreOptions& options)
      : options_(options), live_types_cache_(options.live_types_cache_bytes) {}
  Status LoadMeta();
  Status LoadDigests();
  // Rewrites a store of keys::kMigratedDiskFormat to this format: every key
  // index row gets the digest of its key's element rows, and the key count
  // row is written; then the format row. Idempotent: a crash part-way leaves
  // the old format, and the next open starts over.
  Status Migrate();

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

  std::mutex writer_mu_;  // the single writer slot
  LiveTypesCache live_types_cache_;  // guarded by writer_mu_
  std::atomic<uint64_t> last_seq_{0};
  std::atomic<uint64_t> key_count_{0};  // committed; wraps as its row does
  std::atomic<uint64_t> lww_overwritten_{0};
  std::atomic<uint64_t> trimmed_{0};
  std::mutex trim_mu_;
  mutable std::mutex applied_mu_;
  std::map<ReplicaId, uint64_t> applied_;
  mutable std::mutex tree_mu_;
  std::vector<uint64_t> digests_ = std::vector<uint64_t>(kTreeSegments);  // committed
  std::vector<bool> dropped_ = std::vector<bool>(kTreeSegments);           // committed
};

RocksWriteGroup::RocksWriteGroup(RocksStore* store, std::unique_lock<std::mutex> lock)
    : store_(store),
      lock_(std::move(lock)),
      batch_(rocksdb::BytewiseComparator(), 0, /*overwrite_key=*/true),
      reader_(store->db_.get(), store->state_, &batch_),
      next_seq_(store->last_seq_.load() + 1) {}

template <typename Write>
auto RocksWriteGroup::Atomically(std::string_view key, Write&& write) -> decltype(write()) {
  if (spent_) return Status::FailedPrecondition("write group already committed");
  batch_.SetSavePoint();
  const uint64_t seq_before = next_seq_;
  const size_t size_before = size_;
  const size_t undo_mark = mask_undo_.size();
  op_digest_change_ = op_element_change_ = 0;
  op_created_ = op_dropped_ = false;
  auto result = write();
  if (result.ok()) {
    batch_.PopSavePoint();
    // A register or counter write changes an object row only: its key
    // index row stays as it is unless the key is new.
    if (op_element_change_ != 0 || op_created_ || op_dropped_) {
      KeyChange& c = key_changes_[std::string(key)];
      if (op_dropped_) {
        c = KeyChange{0, true, false};
      } else {
        c.element_change ^= op_element_change_;
        c.created = c.created || op_created_;
      }
    }
    if (op_digest_change_ != 0) segment_changes_[TreeSegmentOf(key)] ^= op_digest_change_;
  } else {
    batch_.RollbackToSavePoint();
    RollbackMasks(undo_mark);
    next_seq_ = seq_before;
    size_ = size_before;
  }
  return result;
}

StatusOr<uint64_t> RocksWriteGroup::Mutate(std::string_view key, const Operation& op) {
  return Atomically(key, [&] { return MutateUnguarded(key, op); });
}

StatusOr<uint64_t> RocksWriteGroup::MutateUnguarded(std::string_view key, const Operation& op) {
  const CrdtType type = OperationType(op);
  const std::string key_string(key);
  uint8_t mask;
  GEOKV_RETURN_IF_ERROR(GetLiveMask(key_string, &mask));
  if ((mask & ~TypeBit(type)) != 0) {
    std::string holds;
    for (CrdtType t : kAllCrdtTypes) {
      if (t != type && (mask & TypeBit(t))) holds = std::string(TypeName(t));
    }
    return Status::WrongType("key '" + PrintableBytes(key) + "' holds a value of type " + holds +
                             ", not " + std::string(TypeName(type)));
  }
  GEOKV_ASSIGN_OR_RETURN(std::optional<Change> change, MakeChange(key, op));
  if (!change) return uint64_t{0};
  PutLiveMask(key_string, mask, type, change->live);
  HlcTimestamp ts = std::holds_alternative<LwwRegister>(change->delta)
                        ? std::get<LwwRegister>(change->delta).timestamp()
                        : store_->clock_->Now();
  return AppendLog(key, ts, change->delta);
}

StatusOr<std::optional<RocksWriteGroup::Change>> RocksWriteGroup::MakeChange(
    std::string_view key, const Operation& op) {
  using Result = std::optional<Change>;
  const CrdtType type = OperationType(op);
  const ReplicaId node = store_->node_id_;
  HybridClock* clock = store_->clock_;

  if (type == CrdtType::kLww) {
    // The clock has passed every stamp stored here (Join advances it), so
    // this write's stamp is the greatest and the delta is the state. The old
    // row is read for the hash tree only, raw.
    std::optional<std::string> old;
    GEOKV_RETURN_IF_ERROR(reader_.GetRow(keys::ObjectRow(key, type), &old));
    // A delete is written even when nothing is live here: the tombstone must
    // also beat older writes still on their way from other regions.
    auto* set = std::get_if<LwwSet>(&op);
    LwwRegister delta(clock->Now(), node,
                      set ? std::optional<std::string>(set->value) : std::nullopt);
    PutObject(key, delta, old);
    return Result(Change{std::move(delta), set != nullptr});
  }
  std::optional<std::string> old;
  if (auto* write = std::get_if<MvWrite>(&op)) {
    GEOKV_ASSIGN_OR_RETURN(Crdt state, reader_.GetObject(key, type, &old));
    auto& reg = std::get<MvRegister>(state);
    GEOKV_RETURN_IF_ERROR(CheckSeen(key, reg, write->seen));
    MvRegister delta = reg.Write(write->value, write->seen, node);
    if (reg.sibling_count() > store_->options_.max_siblings) {
      return Status::TooLarge("key '" + PrintableBytes(key) + "' would have " +
                              std::to_string(reg.sibling_count()) + " siblings (limit " +
                              std::to_string(store_->options_.max_siblings) +
                              "); write with the context of a read to merge them");
    }
    PutObject(key, state, old);
    return Result(Change{std::move(delta), true});
  }
  if (auto* clear = std::get_if<MvClear>(&op)) {
    GEOKV_ASSIGN_OR_RETURN(Crdt state, reader_.GetObject(key, type, &old));
    auto& reg = std::get<MvRegister>(state);
    GEOKV_RETURN_IF_ERROR(CheckSeen(key, reg, clear->seen));
    MvRegister before = reg;
    MvRegister delta = reg.Clear(clear->seen);
    if (reg == before) return Result();
    PutObject(key, state, old);
    return Result(Change{std::move(delta), reg.sibling_count() > 0});
  }
  if (std::holds_alternative<SetAdd>(op) || std::holds_alternative<SetRemove>(op)) {
    const bool add = std::holds_alternative<SetAdd>(op);
    const auto& elements = add ? std::get<SetAdd>(op).elements : std::get<SetRemove>(op).elements;
    if (elements.empty()) {
      return Status::InvalidArgument(std::string("set ") + (add ? "add" : "remove") +
                                     " without elements");
    }
    GEOKV_ASSIGN_OR_RETURN(OrSet projection, reader_.GetSetProjection(key, elements));
    OrSet delta = add ? projection.AddAll(elements, node) : projection.RemoveAll(elements);
    if (delta.IsBottom()) return Result();
    GEOKV_ASSIGN_OR_RETURN(bool live, JoinSet(key, delta));
    return Result(Change{std::move(delta), live});
  }
  const auto& inc = std::get<CounterAdd>(op);
  if (inc.delta == 0) return Result();
  GEOKV_ASSIGN_OR_RETURN(Crdt state, reader_.GetObject(key, type, &old));
  auto& counter = std::get<PnCounter>(state);
  __int128 next = static_cast<__int128>(counter.Value()) + inc.delta;
  if (next > std::numeric_limits<int64_t>::max() || next < std::numeric_limits<int64_t>::min()) {
    return Status::InvalidArgument("increment would overflow the counter at key '" +
                                   PrintableBytes(key) + "'");
  }
  // Each node's totals only grow; one that wrapped would lose every join.
  auto mine = counter.entries().find(node);
  if (mine != counter.entries().end()) {
    uint64_t magnitude = inc.delta >= 0 ? static_cast<uint64_t>(inc.delta)
                                        : 0 - static_cast<uint64_t>(inc.delta);
    uint64_t total = inc.delta >= 0 ? mine->second.added : mine->second.subtracted;
    if (total > UINT64_MAX - magnitude) {
      return Status::InvalidArgument("this node's running total for the counter at key '" +
                                     PrintableBytes(key) + "' would overflow");
    }
  }
  PnCounter delta = counter.Increment(node, inc.delta);
  PutObject(key, state, old);
  return Result(Change{std::move(delta), true});
}

template <typename JoinFn>
Status RocksWriteGroup::JoinAndMark(std::string_view key, CrdtType type, JoinFn&& join) {
  return Atomically(key, [&]() -> Status {
    const std::string key_string(key);
    uint8_t mask;
    GEOKV_RETURN_IF_ERROR(GetLiveMask(key_string, &mask));
    GEOKV_ASSIGN_OR_RETURN(bool live, join());
    PutLiveMask(key_string, mask, type, live);
    ++size_;
    return Status::OK();
  });
}

Status RocksWriteGroup::Join(std::string_view key, const Crdt& delta) {
  return JoinAndMark(key, TypeOf(delta), [&] { return JoinInto(key, delta); });
}

Status RocksWriteGroup::JoinSetPage(std::string_view key, const OrSetPage& page) {
  return JoinAndMark(key, CrdtType::kOrSet, [&] { return JoinPageInto(key, page); });
}

Status RocksWriteGroup::JoinSetContext(std::string_view key, const CausalContext& ctx) {
  return JoinAndMark(key, CrdtType::kOrSet, [&]() -> StatusOr<bool> {
    SetHeader header;
    std::optional<std::string> header_row;
    GEOKV_RETURN_IF_ERROR(reader_.GetSetHeader(key, &header, &header_row));
    header.ctx.Join(ctx);
    const auto cardinality = static_cast<int64_t>(header.cardinality);
    return PutSetHeader(key, std::move(header), header_row, cardinality);
  });
}

StatusOr<bool> RocksWriteGroup::JoinPageInto(std::string_view key, const OrSetPage& page) {
  SetHeader header;
  std::optional<std::string> header_row;
  GEOKV_RETURN_IF_ERROR(reader_.GetSetHeader(key, &header, &header_row));
  int64_t cardinality = static_cast<int64_t>(header.cardinality);

  // This set's elements of the page's range, collected first: the iterator
  // reads the batch, which the rewrites below change.
  std::vector<std::pair<std::string, std::string>> held;  // element, row
  {
    const std::string prefix = keys::ElementPrefix(key);
    std::unique_ptr<rocksdb::Iterator> it = reader_.NewIterator();
    for (SeekElementsAfter(it.get(), key, page.after);
         it->Valid() && StartsWith(it->key(), prefix); it->Next()) {
      std::string element = it->key().ToString().substr(prefix.size());
      if (!page.InRange(element)) break;
      held.emplace_back(std::move(element), it->value().ToString());
    }
    GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan set"));
  }

  // Per element of the range, on either side: the dot-store join, the
  // page's context deciding what this set holds and the page lacks.
  static const DotSet kNone;
  DotSet seen;  // the page's dots, the only ones it adds to the context
  auto h = held.begin();
  auto p = page.entries.begin();
  while (p != page.entries.end() && !page.InRange(p->first)) ++p;
  while (h != held.end() || p != page.entries.end()) {
    const bool here = h != held.end() && (p == page.entries.end() || h->first <= p->first);
    const bool there = p != page.entries.end() && (h == held.end() || p->first <= h->first);
    const std::string& element = here ? h->first : p->first;
    DotSet before;
    std::optional<std::string> before_row;
    if (here) {
      before_row = h->second;
      GEOKV_RETURN_IF_ERROR(DecodeElementDots(key, element, *before_row, &before));
    }
    const DotSet& dots = there ? p->second : kNone;
    seen.insert(dots.begin(), dots.end());
    RewriteElement(key, element, before, before_row,
                   JoinDotStores(before, header.ctx, dots, page.context), &cardinality);
    if (here) ++h;
    if (there) {
      ++p;
      if (p != page.entries.end() && !page.InRange(p->first)) p = page.entries.end();
    }
  }
  header.ctx.InsertAll(seen);
  return PutSetHeader(key, std::move(header), header_row, cardinality);
}

StatusOr<bool> RocksWriteGroup::JoinInto(std::string_view key, const Crdt& delta) {
  if (auto* set = std::get_if<OrSet>(&delta)) return JoinSet(key, *set);
  if (auto* lww = std::get_if<LwwRegister>(&delta)) store_->clock_->Update(lww->timestamp());
  std::optional<std::string> old;
  GEOKV_ASSIGN_OR_RETURN(Crdt state, reader_.GetObject(key, TypeOf(delta), &old));
  if (auto* lww = std::get_if<LwwRegister>(&delta)) {
    const auto& here = std::get<LwwRegister>(state);
    if (!here.IsBottom() && lww->timestamp() < here.timestamp()) ++lww_overwritten_;
  }
  GEOKV_RETURN_IF_ERROR(geokv::Join(&state, delta));
  PutObject(key, state, old);
  return std::visit(
      [](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, LwwRegister>) {
          return v.value().has_value();
        } else if constexpr (std::is_same_v<T, MvRegister>) {
          return v.sibling_count() > 0;
        } else {
          return !v.IsBottom();
        }
      },
      state);
}

StatusOr<bool> RocksWriteGroup::JoinSet(std::string_view key, const OrSet& delta) {
  SetHeader header;
  std::optional<std::string> header_row;
  GEOKV_RETURN_IF_ERROR(reader_.GetSetHeader(key, &header, &header_row));
  int64_t cardinality = static_cast<int64_t>(header.cardinality);
  auto rewrite = [&](const std::string& element, const DotSet& before,
                     const std::optional<std::string>& before_row, const DotSet& after) {
    RewriteElement(key, element, before, before_row, after, &cardinality);
  };

  // Elements the delta holds: the dot-store join of their two entries.
  for (const auto& [element, dots] : delta.entries()) {
    DotSet before;
    std::optional<std::string> before_row;
    GEOKV_RETURN_IF_ERROR(reader_.GetElementDots(key, element, &before, &before_row));
    rewrite(element, before, before_row,
            JoinDotStores(before, header.ctx, dots, delta.context()));
  }

  // Dots the delta has seen but holds for no element are removals. The dot
  // index finds their elements, at a cost proportional to the delta.
  std::map<std::string, DotSet> removed;
  auto note = [&](const Dot& dot, std::string element) {
    if (!delta.entries().count(element)) removed[std::move(element)].insert(dot);
  };
  for (const auto& [replica, max_counter] : delta.context().vv()) {
    std::string prefix = keys::DotIndexPrefix(key, replica);
    std::unique_ptr<rocksdb::Iterator> it = reader_.NewIterator();
    for (it->Seek(keys::DotIndexRow(key, Dot{replica, 1})); it->Valid(); it->Next()) {
      rocksdb::Slice row = it->key();
      if (!StartsWith(row, prefix) || row.size() != prefix.size() + 8) break;
      uint64_t counter = DecodeBigEndian64(row.data() + prefix.size());
      if (counter > max_counter) break;
      note(Dot{replica, counter}, it->value().ToString());
    }
    GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan dot index"));
  }
  for (const Dot& d : delta.context().cloud()) {
    std::string element;
    bool found;
    GEOKV_RETURN_IF_ERROR(reader_.Get(keys::DotIndexRow(key, d), &element, &found));
    if (found) note(d, std::move(element));
  }
  for (const auto& [element, dots] : removed) {
    DotSet before;
    std::optional<std::string> before_row;
    GEOKV_RETURN_IF_ERROR(reader_.GetElementDots(key, element, &before, &before_row));
    DotSet after;
    std::set_difference(before.begin(), before.end(), dots.begin(), dots.end(),
                        std::inserter(after, after.end()));
    rewrite(element, before, before_row, after);
  }
  header.ctx.Join(delta.context());
  return PutSetHeader(key, std::move(header), header_row, cardinality);
}

void RocksWriteGroup::RewriteElement(std::string_view key, const std::string& element,
                                     const DotSet& before,
                                     const std::optional<std::string>& before_row,
                                     const DotSet& after, int64_t* cardinality) {
  auto* cf = store_->state_;
  for (const Dot& d : before) {
    if (!after.count(d)) batch_.Delete(cf, keys::DotIndexRow(key, d));
  }
  for (const Dot& d : after) {
    if (!before.count(d)) batch_.Put(cf, keys::DotIndexRow(key, d), element);
  }
  if (after.empty()) {
    if (!before.empty()) {
      WriteStateRow(keys::ElementRow(key, element), /*element=*/true, before_row, std::nullopt);
      --*cardinality;
    }
  } else if (before != after) {
    WriteStateRow(keys::ElementRow(key, element), /*element=*/true, before_row, EncodeElementDots(after));
    if (before.empty()) ++*cardinality;
  }
}

StatusOr<bool> RocksWriteGroup::PutSetHeader(std::string_view key, SetHeader header,
                                             const std::optional<std::string>& header_row,
                                             int64_t cardinality) {
  if (cardinality < 0) {
    return Status::Corruption(Describe(key, CrdtType::kOrSet) + ": cardinality below zero");
  }
  header.cardinality = static_cast<uint64_t>(cardinality);
  // An empty context is the bottom set's (elements' dots are in the
  // context): as PutObject, no row for it.
  if (header_row || !header.ctx.empty()) {
    PutObjectRow(key, CrdtType::kOrSet, header_row, EncodeSetHeader(header));
  }
  return cardinality > 0;
}

void RocksWriteGroup::PutObject(std::string_view key, const Crdt& state,
                                const std::optional<std::string>& old) {
  if (!old && IsBottom(state)) return;
  PutObjectRow(key, TypeOf(state), old, EncodeCrdt(state));
}

void RocksWriteGroup::PutObjectRow(std::string_view key, CrdtType type,
                                   const std::optional<std::string>& old, std::string value) {
  if (!old) op_created_ = true;
  WriteStateRow(keys::ObjectRow(key, type), /*element=*/false, old, std::move(value));
}

void RocksWriteGroup::WriteStateRow(const std::string& row, bool element,
                                    const std::optional<std::string>& old,
                                    std::optional<std::string> value) {
  if (value == old) return;  // also spares the write of a join that changed nothing
  uint64_t change = 0;
  if (old) change ^= keys::StateRowHash(row, *old);
  if (value) {
    change ^= keys::StateRowHash(row, *value);
    batch_.Put(store_->state_, row, *value);
  } else {
    batch_.Delete(store_->state_, row);
  }
  op_digest_change_ ^= change;
  if (element) op_element_change_ ^= change;
}

Status RocksWriteGroup::CheckSeen(std::string_view key, const MvRegister& reg,
                                  const CausalContext& seen) const {
  const ReplicaId node = store_->node_id_;
  if (seen.NextDot(node).counter > reg.context().NextDot(node).counter) {
    return Status::InvalidArgument("the context for key '" + PrintableBytes(key) +
                                   "' holds writes this node never made there; pass the "
                                   "context of a read of this key");
  }
  return Status::OK();
}

StatusOr<bool> RocksWriteGroup::Drop(std::string_view key, uint64_t expected_digest) {
  return Atomically(key, [&]() -> StatusOr<bool> {
    GEOKV_ASSIGN_OR_RETURN(uint64_t digest, DigestInGroup(std::string(key)));
    if (digest != expected_digest) return false;
    std::unique_ptr<rocksdb::Iterator> it = reader_.NewIterator();
    // Every row of the key, the derived ones too. Collected first: the
    // iterator reads the batch, which must not change under it.
    const std::string prefix = keys::KeyPrefix(key);
    std::vector<std::string> rows;
    for (it->Seek(prefix); it->Valid() && StartsWith(it->key(), prefix); it->Next()) {
      rows.push_back(it->key().ToString());
    }
    GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan key"));
    it.reset();
    if (rows.empty()) return true;
    for (const std::string& row : rows) batch_.Delete(store_->state_, row);
    // The digest is the XOR of the hashes of exactly the counted rows gone.
    op_digest_change_ = digest;
    op_dropped_ = true;
    SetMask(std::string(key), 0);
    Dropped()[TreeSegmentOf(key)] = true;
    ++size_;
    return true;
  });
}

void RocksWriteGroup::ClearDropped(size_t segment) {
  if (segment < kTreeSegments) Dropped()[segment] = false;
}

std::vector<bool>& RocksWriteGroup::Dropped() {
  if (!dropped_) dropped_ = store_->DroppedSegments();
  return *dropped_;
}

StatusOr<uint64_t> RocksWriteGroup::DigestInGroup(const std::string& key) {
  GEOKV_ASSIGN_OR_RETURN(const uint64_t objects, ObjectsDigestOf(reader_, key));
  auto change = key_changes_.find(key);
  uint64_t digest = objects;
  if (change != key_changes_.end()) digest ^= change->second.element_change;
  if (change != key_changes_.end() && change->second.dropped) return digest;
  // The writer slot keeps the committed row as it was when the group began.
  std::string value;
  rocksdb::Status s = store_->db_->Get(rocksdb::ReadOptions(), store_->tree_,
                                       keys::TreeKeyRow(TreeSegmentOf(key), key), &value);
  if (s.IsNotFound()) return digest;
  GEOKV_RETURN_IF_ERROR(FromRocks(s, "read key digest"));
  GEOKV_ASSIGN_OR_RETURN(uint64_t committed, DecodeTreeValue(value, "key digest"));
  return digest ^ committed;
}

StatusOr<int64_t> RocksWriteGroup::WriteTreeRows() {
  int64_t count_change = 0;
  for (const auto& [key, c] : key_changes_) {
    const std::string row = keys::TreeKeyRow(TreeSegmentOf(key), key);
    const std::string operand = EncodeBigEndian64(c.element_change);
    if (c.created || c.dropped) {
      std::string value;
      rocksdb::Status s = store_->db_->Get(rocksdb::ReadOptions(), store_->tree_, row, &value);
      if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "read key index");
      const bool existed = s.ok();
      const bool exists = c.created || (existed && !c.dropped);
      count_change += int64_t{exists} - int64_t{existed};
    }
    if (c.dropped) {
      if (c.created) {
        batch_.Put(store_->tree_, row, operand);
      } else {
        batch_.Delete(store_->tree_, row);
      }
    } else if (c.created || c.element_change != 0) {
      batch_.Merge(store_->tree_, row, operand);
    }
  }
  if (count_change != 0) {
    batch_.Merge(store_->tree_, keys::kTreeKeyCountRow,
                 EncodeBigEndian64(static_cast<uint64_t>(count_change)));
  }
  return count_change;
}

Status RocksWriteGroup::GetLiveMask(const std::string& key, uint8_t* mask) {
  if (auto it = masks_.find(key); it != masks_.end()) {
    *mask = it->second;
    return Status::OK();
  }
  if (auto cached = store_->live_types_cache_.Lookup(key)) {
    *mask = *cached;
    return Status::OK();
  }
  GEOKV_RETURN_IF_ERROR(reader_.GetLiveMask(key, mask));
  store_->live_types_cache_.Insert(key, *mask);
  return Status::OK();
}

void RocksWriteGroup::RollbackMasks(size_t mark) {
  while (mask_undo_.size() > mark) {
    auto& [key, previous] = mask_undo_.back();
    if (previous) {
      masks_[key] = *previous;
    } else {
      masks_.erase(key);
    }
    mask_undo_.pop_back();
  }
}

void RocksWriteGroup::SetMask(const std::string& key, uint8_t mask) {
  auto it = masks_.find(key);
  mask_undo_.emplace_back(key, it == masks_.end() ? std::nullopt : std::optional(it->second));
  masks_[key] = mask;
}

void RocksWriteGroup::PutLiveMask(const std::string& key, uint8_t mask, CrdtType type,
                                  bool live) {
  uint8_t next = live ? (mask | TypeBit(type)) : (mask & ~TypeBit(type));
  if (next == mask) return;
  SetMask(key, next);
  if (next == 0) {
    batch_.Delete(store_->state_, keys::LiveTypesRow(key));
  } else {
    batch_.Put(store_->state_, keys::LiveTypesRow(key), std::string(1, static_cast<char>(next)));
  }
}

uint64_t RocksWriteGroup::AppendLog(std::string_view key, HlcTimestamp ts, const Crdt& delta) {
  uint64_t seq = next_seq_++;
  batch_.Put(store_->log_, keys::LogRow(seq),
             EncodeLogEntry(seq, store_->node_id_, ts, key, delta));
  ++size_;
  return seq;
}

void RocksWriteGroup::RecordApplied(ReplicaId origin, uint64_t seq) {
  uint64_t& pos = applied_[origin];
  if (seq > pos) pos = seq;
}

Status RocksWriteGroup::Commit() {
  if (spent_) return Status::FailedPrecondition("write group already committed");
  spent_ = true;
  std::unique_lock<std::mutex> slot = std::move(lock_);  // released on return
  const bool dropped_changed = dropped_ && *dropped_ != store_->DroppedSegments();
  if (size_ == 0 && applied_.empty() && !dropped_changed) return Status::OK();
  auto* db = store_->db_.get();
  const uint64_t last_seq = next_seq_ - 1;
  batch_.Put(store_->meta_, keys::kMetaWriter,
             EncodeWriterState(WriterState{last_seq, store_->clock_->Last()}));
  std::map<ReplicaId, uint64_t> advanced;
  {
    std::lock_guard<std::mutex> l(store_->applied_mu_);
    for (const auto& [origin, seq] : applied_) {
      auto it = store_->applied_.find(origin);
      if (it == store_->applied_.end() || it->second < seq) advanced[origin] = seq;
    }
  }
  for (const auto& [origin, seq] : advanced) {
    batch_.Put(store_->meta_, keys::WatermarkRow(origin), EncodeBigEndian64(seq));
  }
  if (dropped_changed) {
    if (std::find(dropped_->begin(), dropped_->end(), true) == dropped_->end()) {
      batch_.Delete(store_->meta_, keys::kMetaDroppedSegments);
    } else {
      batch_.Put(store_->meta_, keys::kMetaDroppedSegments, keys::EncodeDroppedSegments(*dropped_));
    }
  }
  // The tree's changes go in the same batch as the rows they cover, so
  // that no crash leaves the tree out of step with the state.
  GEOKV_ASSIGN_OR_RETURN(const int64_t count_change, WriteTreeRows());
  const std::map<size_t, uint64_t>& changes = segment_changes_;
  const std::string operand = keys::EncodeTreeDigests(changes);
  if (!operand.empty()) batch_.Merge(store_->tree_, keys::kTreeDigestsRow, operand);
  rocksdb::WriteOptions wo;
  wo.sync = store_->options_.durability == Durability::kFsync;
  Status written = FromRocks(db->Write(wo, batch_.GetWriteBatch()), "commit");
  for (const auto& [key, mask] : masks_) {
    if (written.ok()) {
      store_->live_types_cache_.Insert(key, mask);
    } else {
      store_->live_types_cache_.Erase(key);  // the database may hold either value
    }
  }
  GEOKV_RETURN_IF_ERROR(written);
  {
    // Digests first: a reader that sees the new last sequence must also
    // see the digests that cover it.
    std::lock_guard<std::mutex> l(store_->tree_mu_);
    for (const auto& [segment, change] : changes) store_->digests_[segment] ^= change;
    if (dropped_changed) store_->dropped_ = std::move(*dropped_);
  }
  store_->key_count_.fetch_add(static_cast<uint64_t>(count_change));
  store_->last_seq_.store(last_seq);
  store_->lww_overwritten_.fetch_add(lww_overwritten_);
  std::lock_guard<std::mutex> l(store_->applied_mu_);
  for (const auto& [origin, seq] : advanced) store_->applied_[origin] = seq;
  return Status::OK();
}

StatusOr<std::unique_ptr<Store>> RocksStore::OpenImpl(const std::string& dir,
                                                      const StoreOptions& options) {
  std::unique_ptr<RocksStore> store(new RocksStore(options));
  if (options.clock == nullptr) {
    store->owned_clock_ = std::make_unique<HybridClock>(WallClock::System());
    store->clock_ = store->owned_clock_.get();
  } else {
    store->clock_ = options.clock;
  }

  RocksConfig config = MakeRocksConfig(options);
  GEOKV_RETURN_IF_ERROR(CheckFamilies(config, dir).WithContext("open " + dir));
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(config.db, dir, config.families, &store->handles_, &db);
  if (!s.ok()) return FromRocks(s, "open " + dir);
  store->db_.reset(db);
  store->meta_ = store->handles_[0];
  store->state_ = store->handles_[1];
  store->log_ = store->handles_[2];
  store->tree_ = store->handles_[3];
  GEOKV_RETURN_IF_ERROR(store->LoadMeta().WithContext("open " + dir));
  return std::unique_ptr<Store>(std::move(store));
}

Status RocksStore::LoadMeta() {
  rocksdb::ReadOptions ro;
  std::string v;
  rocksdb::Status s = db_->Get(ro, meta_, keys::kMetaFormat, &v);
  if (s.IsNotFound()) {
    // A new store: no row of any family may exist yet.
    for (auto* h : handles_) {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, h));
      it->SeekToFirst();
      if (it->Valid()) return Status::Corruption("data dir has rows but no format marker");
    }
    std::random_device rd;
    while (node_id_ == 0) node_id_ = (uint64_t{rd()} << 32) | rd();
    rocksdb::WriteBatch batch;
    batch.Put(meta_, keys::kMetaFormat, std::string(1, static_cast<char>(keys::kDiskFormat)));
    batch.Put(meta_, keys::kMetaNodeId, EncodeBigEndian64(node_id_));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return FromRocks(db_->Write(wo, &batch), "initialise");
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(s, "read format"));
  GEOKV_RETURN_IF_ERROR(CheckFormat(v));
  if (static_cast<uint8_t>(v[0]) == keys::kMigratedDiskFormat) {
    GEOKV_RETURN_IF_ERROR(Migrate().WithContext(
        "migrate from disk format " + std::to_string(keys::kMigratedDiskFormat)));
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(db_->Get(ro, meta_, keys::kMetaNodeId, &v), "read node id"));
  if (v.size() != 8) return Status::Corruption("bad node id row");
  node_id_ = DecodeBigEndian64(v.data());

  s = db_->Get(ro, meta_, keys::kMetaWriter, &v);
  if (s.ok()) {
    WriterState w;
    GEOKV_RETURN_IF_ERROR(DecodeWriterState(v, &w).WithContext("writer state"));
    last_seq_ = w.last_seq;
    clock_->Update(w.clock);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read writer state");
  }
  s = db_->Get(ro, meta_, keys::kMetaLogTrimmed, &v);
  if (s.ok() && v.size() == 8) {
    trimmed_ = DecodeBigEndian64(v.data());
  } else if (!s.IsNotFound()) {
    return s.ok() ? Status::Corruption("bad log trim row") : FromRocks(s, "read log trim");
  }
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_));
  std::string prefix = keys::kMetaWatermarkPrefix;
  for (it->Seek(prefix); it->Valid() && StartsWith(it->key(), prefix); it->Next()) {
    if (it->key().size() != prefix.size() + 8 || it->value().size() != 8) {
      return Status::Corruption("bad applied-position row");
    }
    applied_[DecodeBigEndian64(it->key().data() + prefix.size())] =
        DecodeBigEndian64(it->value().data());
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "read applied positions"));
  s = db_->Get(ro, meta_, keys::kMetaDroppedSegments, &v);
  if (s.ok()) {
    std::lock_guard<std::mutex> l(tree_mu_);
    if (!keys::DecodeDroppedSegments(v, &dropped_)) {
      return Status::Corruption("bad dropped segments row");
    }
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read dropped segments");
  }
  return LoadDigests();
}

Status RocksStore::LoadDigests() {
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), tree_, keys::kTreeKeyCountRow, &v);
  if (s.ok()) {
    GEOKV_ASSIGN_OR_RETURN(uint64_t count, DecodeTreeValue(v, "key count"));
    key_count_.store(count);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read key count");
  }
  s = db_->Get(rocksdb::ReadOptions(), tree_, keys::kTreeDigestsRow, &v);
  if (s.IsNotFound()) return Status::OK();  // all 0
  GEOKV_RETURN_IF_ERROR(FromRocks(s, "read tree digests"));
  std::lock_guard<std::mutex> l(tree_mu_);
  if (!keys::XorTreeDigests(v, &digests_)) return Status::Corruption("bad tree digests row");
  return Status::OK();
}

Status RocksStore::Migrate() {
  // Iterators read at one implicit snapshot, so the writes below do not
  // disturb them.
  const rocksdb::ReadOptions ro;
  std::unique_ptr<rocksdb::Iterator> index(db_->NewIterator(ro, tree_));
  std::unique_ptr<rocksdb::Iterator> rows(db_->NewIterator(ro, state_));
  const std::string prefix = keys::kTreeKeyIndex;
  const size_t key_at = prefix.size() + 2;  // after the segment
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::WriteBatch batch;
  uint64_t count = 0;
  for (index->Seek(prefix); index->Valid() && StartsWith(index->key(), prefix); index->Next()) {
    const rocksdb::Slice row = index->key();
    if (row.size() < key_at) return Status::Corruption("bad key index row in the tree");
    const std::string_view key(row.data() + key_at, row.size() - key_at);
    GEOKV_ASSIGN_OR_RETURN(uint64_t digest, ElementsDigestOf(rows.get(), key));
    batch.Put(tree_, row, EncodeBigEndian64(digest));
    ++count;
    if (batch.Count() >= 10000) {
      GEOKV_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &batch), "write key digests"));
      batch.Clear();
    }
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(index->status(), "scan tree keys"));
  batch.Put(tree_, keys::kTreeKeyCountRow, EncodeBigEndian64(count));
  batch.Put(meta_, keys::kMetaFormat, std::string(1, static_cast<char>(keys::kDiskFormat)));
  return FromRocks(db_->Write(wo, &batch), "write key count and format");
}

StatusOr<std::optional<Crdt>> RocksStore::Get(std::string_view key, CrdtType type) {
  DbReader reader(db_.get(), state_, /*snapshot=*/type == CrdtType::kOrSet);
  return ReadState(reader, key, type);
}

StatusOr<std::vector<Crdt>> RocksStore::GetStates(std::string_view key) {
  DbReader reader(db_.get(), state_, /*snapshot=*/true);
  std::vector<Crdt> out;
  for (CrdtType type : kAllCrdtTypes) {
    GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> state, ReadState(reader, key, type));
    if (state) out.push_back(std::move(*state));
  }
  return out;
}

StatusOr<std::vector<geokv::KeyDigest>> RocksStore::SegmentKeys(size_t segment) {
  if (segment >= kTreeSegments) {
    return Status::InvalidArgument("tree segment " + std::to_string(segment) + " of " +
                                   std::to_string(kTreeSegments));
  }
  // The index rows and the object rows at one snapshot.
  DbReader reader(db_.get(), state_, /*snapshot=*/true);
  std::unique_ptr<rocksdb::Iterator> index = reader.NewIterator(tree_);
  const std::string prefix = keys::TreeKeyPrefix(segment);
  std::vector<geokv::KeyDigest> out;
  for (index->Seek(prefix); index->Valid() && StartsWith(index->key(), prefix); index->Next()) {
    geokv::KeyDigest k;
    k.key.assign(index->key().data() + prefix.size(), index->key().size() - prefix.size());
    GEOKV_ASSIGN_OR_RETURN(k.digest, DecodeTreeValue(index->value().ToString(), "key digest"));
    GEOKV_ASSIGN_OR_RETURN(const uint64_t objects, ObjectsDigestOf(reader, k.key));
    k.digest ^= objects;
    out.push_back(std::move(k));
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(index->status(), "scan tree keys"));
  return out;
}

StatusOr<uint64_t> RocksStore::KeyDigest(std::string_view key) {
  // The index row and the object rows at one snapshot.
  DbReader reader(db_.get(), state_, /*snapshot=*/true);
  std::string value;
  bool found;
  GEOKV_RETURN_IF_ERROR(
      reader.GetFrom(tree_, keys::TreeKeyRow(TreeSegmentOf(key), key), &value, &found));
  if (!found) return uint64_t{0};  // no object row
  GEOKV_ASSIGN_OR_RETURN(const uint64_t elements, DecodeTreeValue(value, "key digest"));
  GEOKV_ASSIGN_OR_RETURN(const uint64_t objects, ObjectsDigestOf(reader, key));
  return elements ^ objects;
}

StatusOr<std::vector<CrdtType>> RocksStore::LiveTypes(std::string_view key) {
  DbReader reader(db_.get(), state_, false);
  uint8_t mask;
  GEOKV_RETURN_IF_ERROR(reader.GetLiveMask(key, &mask));
  std::vector<CrdtType> out;
  for (CrdtType t : kAllCrdtTypes) {
    if (mask & TypeBit(t)) out.push_back(t);
  }
  return out;
}

StatusOr<bool> RocksStore::SetContains(std::string_view key, std::string_view element) {
  DbReader reader(db_.get(), state_, false);
  std::string v;
  bool found;
  GEOKV_RETURN_IF_ERROR(reader.Get(keys::ElementRow(key, element), &v, &found));
  return found;
}

StatusOr<uint64_t> RocksStore::SetSize(std::string_view key) {
  DbReader reader(db_.get(), state_, false);
  SetHeader header;
  GEOKV_RETURN_IF_ERROR(reader.GetSetHeader(key, &header));
  return header.cardinality;
}

StatusOr<SetPage> RocksStore::SetMembers(std::string_view key,
                                         std::optional<std::string_view> start_after,
                                         size_t limit) {
  DbReader reader(db_.get(), state_, false);
  std::string prefix = keys::ElementPrefix(key);
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator();
  SeekElementsAfter(it.get(), key, start_after);
  SetPage page;
  for (; it->Valid() && StartsWith(it->key(), prefix); it->Next()) {
    if (page.elements.size() == limit) {
      page.more = true;
      break;
    }
    page.elements.push_back(it->key().ToString().substr(prefix.size()));
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan set"));
  return page;
}

StatusOr<OrSetPage> RocksStore::SetStatePage(std::string_view key,
                                             std::optional<std::string_view> start_after,
                                             size_t max_elements, size_t max_bytes) {
  DbReader reader(db_.get(), state_, /*snapshot=*/true);
  SetHeader header;
  GEOKV_RETURN_IF_ERROR(reader.GetSetHeader(key, &header));
  OrSetPage page;
  if (start_after) page.after = std::string(*start_after);
  page.context = std::move(header.ctx);
  const std::string prefix = keys::ElementPrefix(key);
  std::unique_ptr<rocksdb::Iterator> it = reader.NewIterator();
  size_t bytes = 0;
  for (SeekElementsAfter(it.get(), key, start_after);
       it->Valid() && StartsWith(it->key(), prefix); it->Next()) {
    const size_t row_bytes = it->key().size() - prefix.size() + it->value().size();
    if (!page.entries.empty() &&
        (page.entries.size() >= max_elements || bytes + row_bytes > max_bytes)) {
      page.through = page.entries.rbegin()->first;
      break;
    }
    std::string element = it->key().ToString().substr(prefix.size());
    DotSet dots;
    GEOKV_RETURN_IF_ERROR(DecodeElementDots(
        key, element, std::string_view(it->value().data(), it->value().size()), &dots));
    page.entries.emplace_hint(page.entries.end(), std::move(element), std::move(dots));
    bytes += row_bytes;
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan set"));
  return page;
}

StatusOr<std::vector<LogEntry>> RocksStore::ReadLog(uint64_t after_seq, size_t max_entries,
                                                    size_t max_bytes) {
  auto trimmed_error = [after_seq](uint64_t trimmed) {
    return Status::FailedPrecondition("log entries after " + std::to_string(after_seq) +
                                      " are trimmed through " + std::to_string(trimmed));
  };
  if (after_seq < trimmed_.load()) return trimmed_error(trimmed_.load());
  std::vector<LogEntry> out;
  size_t bytes = 0;
  rocksdb::ReadOptions ro;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, log_));
  for (it->Seek(keys::LogRow(after_seq + 1)); it->Valid() && out.size() < max_entries;
       it->Next()) {
    if (!out.empty() && bytes + it->value().size() > max_bytes) break;
    const uint64_t expected = after_seq + 1 + out.size();
    LogEntry e;
    GEOKV_RETURN_IF_ERROR(
        DecodeLogEntry(std::string_view(it->value().data(), it->value().size()), &e)
            .WithContext("log entry " + std::to_string(expected)));
    if (e.seq != expected) {
      // A trim that ran after the check above, or a hole in the log.
      uint64_t trimmed = trimmed_.load();
      if (expected <= trimmed) return trimmed_error(trimmed);
      return Status::Corruption("log entry " + std::to_string(e.seq) + " where " +
                                std::to_string(expected) + " belongs");
    }
    bytes += it->value().size();
    out.push_back(std::move(e));
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan log"));
  if (out.empty() && after_seq < trimmed_.load()) return trimmed_error(trimmed_.load());
  return out;
}

Status RocksStore::TrimLog(uint64_t seq) {
  std::lock_guard<std::mutex> l(trim_mu_);
  if (seq > last_seq_.load()) {
    return Status::InvalidArgument("cannot trim the log through " + std::to_string(seq) +
                                   ": the last entry is " + std::to_string(last_seq_.load()));
  }
  if (seq <= trimmed_.load()) return Status::OK();
  rocksdb::WriteBatch batch;
  batch.DeleteRange(log_, keys::LogRow(0), keys::LogRow(seq + 1));
  batch.Put(meta_, keys::kMetaLogTrimmed, EncodeBigEndian64(seq));
  GEOKV_RETURN_IF_ERROR(FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "trim log"));
  trimmed_.store(seq);
  return Status::OK();
}

uint64_t RocksStore::LogBytesAfter(uint64_t seq) {
  if (seq == std::numeric_limits<uint64_t>::max()) return 0;
  const std::string start = keys::LogRow(seq + 1);
  const std::string limit = keys::LogRow(std::numeric_limits<uint64_t>::max());
  const rocksdb::Range range(start, limit);
  rocksdb::SizeApproximationOptions options;
  options.include_memtables = true;
  options.include_files = true;
  uint64_t bytes = 0;
  if (!db_->GetApproximateSizes(options, log_, &range, 1, &bytes).ok()) return 0;
  return bytes;
}

}  // namespace

CrdtType OperationType(const Operation& op) {
  return std::visit(
      [](const auto& o) {
        using T = std::decay_t<decltype(o)>;
        if constexpr (std::is_same_v<T, LwwSet> || std::is_same_v<T, LwwDelete>) {
          return CrdtType::kLww;
        } else if constexpr (std::is_same_v<T, MvWrite> || std::is_same_v<T, MvClear>) {
          return CrdtType::kMvRegister;
        } else if constexpr (std::is_same_v<T, SetAdd> || std::is_same_v<T, SetRemove>) {
          return CrdtType::kOrSet;
        } else {
          static_assert(std::is_same_v<T, CounterAdd>);
          return CrdtType::kCounter;
        }
      },
      op);
}

StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir, const StoreOptions& options) {
  return RocksStore::OpenImpl(dir, options);
}

}  // namespace geokv

// RocksDB Store: opening, migration, meta and identity, row codecs. Key layout: storage/keys.h.

#include "storage/rocks_store_internal.h"

namespace geokv {
namespace rocks_internal {

std::string Describe(std::string_view key, CrdtType type) {
  return "key '" + PrintableBytes(key) + "' (" + std::string(TypeName(type)) + ")";
}

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
    if (!out->timestamp.IsValid()) {
      return Status::Corruption("log entry " + std::to_string(out->seq) + ": stamp " +
                                DescribeStamp(out->timestamp) + " above the maximum wall " +
                                std::to_string(kMaxHlcWallMs) + " ms");
    }
    auto key = root.getKey();
    out->key.assign(reinterpret_cast<const char*>(key.begin()), key.size());
    GEOKV_ASSIGN_OR_RETURN(out->delta, ReadCrdt(root.getDelta()));
    return Status::OK();
  });
}

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

// Refuses a data dir whose `format` row holds `value` unless it is this
// build's format or one it migrates.
Status CheckFormat(std::string_view value) {
  const uint8_t format = value.size() == 1 ? static_cast<uint8_t>(value[0]) : 0;
  if (format >= keys::kMigratedDiskFormat && format <= keys::kDiskFormat) return Status::OK();
  return Status::FailedPrecondition(
      "data dir format " + std::to_string(format) + " is not supported: this build opens format " +
      std::to_string(keys::kDiskFormat) + " and migrates formats " +
      std::to_string(keys::kMigratedDiskFormat) + " to " +
      std::to_string(keys::kDiskFormat - 1));
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
  GEOKV_RETURN_IF_ERROR(store->CheckIdentity(dir).WithContext("open " + dir));
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
    v[0] = static_cast<char>(keys::kIndexedDiskFormat);
  }
  if (static_cast<uint8_t>(v[0]) == keys::kIndexedDiskFormat) {
    GEOKV_RETURN_IF_ERROR(IndexTombstones().WithContext(
        "migrate from disk format " + std::to_string(keys::kIndexedDiskFormat)));
    v[0] = static_cast<char>(keys::kTombstoneIndexedDiskFormat);
  }
  // After the writer state below: the index's stamps come from the clock.
  const bool index_emptied = static_cast<uint8_t>(v[0]) == keys::kTombstoneIndexedDiskFormat;
  GEOKV_RETURN_IF_ERROR(FromRocks(db_->Get(ro, meta_, keys::kMetaNodeId, &v), "read node id"));
  if (v.size() != 8) return Status::Corruption("bad node id row");
  node_id_ = DecodeBigEndian64(v.data());

  s = db_->Get(ro, meta_, keys::kMetaWriter, &v);
  if (s.ok()) {
    WriterState w;
    GEOKV_RETURN_IF_ERROR(DecodeWriterState(v, &w).WithContext("writer state"));
    last_seq_ = w.last_seq;
    checkpoint_ = LogCheckpoint{w.last_seq, w.clock};
    // This node's own history: honoured even when far ahead of the wall
    // clock (the replicator warns then), so no stamp goes back.
    GEOKV_RETURN_IF_ERROR(clock_->Update(w.clock).WithContext("writer state clock"));
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
  prefix = keys::kMetaFloorPrefix;
  for (it->Seek(prefix); it->Valid() && StartsWith(it->key(), prefix); it->Next()) {
    const auto* at = reinterpret_cast<const unsigned char*>(it->key().data() + prefix.size());
    const size_t segment =
        it->key().size() == prefix.size() + 2 ? size_t{at[0]} << 8 | at[1] : kTreeSegments;
    if (segment >= kTreeSegments || it->value().size() != 8) {
      return Status::Corruption("bad floor row");
    }
    floors_[segment] = DecodeBigEndian64(it->value().data());
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "read floors"));
  if (index_emptied) {
    GEOKV_RETURN_IF_ERROR(IndexEmptied().WithContext(
        "migrate from disk format " + std::to_string(keys::kTombstoneIndexedDiskFormat)));
  }
  s = db_->Get(ro, meta_, keys::kMetaDroppedSegments, &v);
  if (s.ok()) {
    std::lock_guard<std::mutex> l(tree_mu_);
    if (!DecodeSegmentSet(v, &dropped_)) {
      return Status::Corruption("bad dropped segments row");
    }
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read dropped segments");
  }
  s = db_->Get(ro, meta_, keys::kMetaPeerMembers, &v);
  if (s.ok()) {
    std::lock_guard<std::mutex> l(tree_mu_);
    peer_members_ = v;
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read peer members");
  }
  s = db_->Get(ro, meta_, keys::kMetaVouchedSegments, &v);
  if (s.ok()) {
    std::vector<bool> vouched;
    if (!DecodeSegmentSet(v, &vouched)) return Status::Corruption("bad vouched segments row");
    std::lock_guard<std::mutex> l(tree_mu_);
    vouched_ = std::move(vouched);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read vouched segments");
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
  batch.Put(meta_, keys::kMetaFormat,
            std::string(1, static_cast<char>(keys::kIndexedDiskFormat)));
  return FromRocks(db_->Write(wo, &batch), "write key count and format");
}

Status RocksStore::IndexObjects(uint8_t format, std::string_view what, const ObjectIndexer& index) {
  const rocksdb::ReadOptions ro;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, state_));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::WriteBatch batch;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    // K(key) type kObjectRow.
    const rocksdb::Slice row = it->key();
    if (row.size() < 6) continue;
    const size_t key_size = DecodeBigEndian32(row.data());
    if (row.size() != 4 + key_size + 2 || row[5 + key_size] != keys::kObjectRow) continue;
    const auto type = static_cast<CrdtType>(row[4 + key_size]);
    const std::string_view key(row.data() + 4, key_size);
    GEOKV_RETURN_IF_ERROR(index(key, type, std::string_view(it->value().data(), it->value().size()),
                                &batch)
                              .WithContext(Describe(key, type)));
    if (batch.Count() >= 10000) {
      GEOKV_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &batch), "write " + std::string(what)));
      batch.Clear();
    }
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan objects"));
  batch.Put(meta_, keys::kMetaFormat, std::string(1, static_cast<char>(format)));
  return FromRocks(db_->Write(wo, &batch), "write " + std::string(what) + " and format");
}

Status RocksStore::IndexTombstones() {
  return IndexObjects(
      keys::kTombstoneIndexedDiskFormat, "tombstone index",
      [this](std::string_view key, CrdtType type, std::string_view value,
             rocksdb::WriteBatch* batch) -> Status {
        if (type != CrdtType::kLww) return Status::OK();
        GEOKV_ASSIGN_OR_RETURN(Crdt state, DecodeCrdt(value));
        const auto* reg = std::get_if<LwwRegister>(&state);
        if (reg == nullptr || reg->value() || reg->IsBottom()) return Status::OK();
        batch->Put(meta_, keys::TombstoneRow(reg->node(), reg->timestamp(), key), "");
        return Status::OK();
      });
}

Status RocksStore::IndexEmptied() {
  // Every write these states cover is stamped at or below the clock now.
  const HlcTimestamp stamp = clock_->Now();
  return IndexObjects(
      keys::kDiskFormat, "emptied index",
      [this, stamp](std::string_view key, CrdtType type, std::string_view value,
                    rocksdb::WriteBatch* batch) -> Status {
        bool empty = false;
        if (type == CrdtType::kMvRegister || type == CrdtType::kCounter) {
          GEOKV_ASSIGN_OR_RETURN(Crdt state, DecodeCrdt(value));
          empty = IsEmptied(state);
        } else if (type == CrdtType::kOrSet) {
          SetHeader header;
          GEOKV_RETURN_IF_ERROR(DecodeSetHeader(value, &header));
          empty = header.cardinality == 0 && !header.ctx.empty();
        }
        if (!empty) return Status::OK();
        batch->Put(meta_, keys::EmptiedRow(stamp, key), "");
        batch->Put(meta_, keys::EmptiedAtRow(key), keys::EncodeEmptiedAt(stamp));
        return Status::OK();
      });
}

}  // namespace rocks_internal

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
  return rocks_internal::RocksStore::OpenImpl(dir, options);
}

}  // namespace geokv

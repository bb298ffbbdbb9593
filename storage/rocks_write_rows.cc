// RocksWriteGroup's rows: state rows and their tree digests, live-types masks, the log, Commit.

#include "storage/rocks_store_internal.h"

#include <algorithm>

namespace geokv {
namespace rocks_internal {

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
  std::string value = EncodeCrdt(state);
  if (value == old) return;
  if (const auto* reg = std::get_if<LwwRegister>(&state); reg != nullptr && !reg->value()) {
    batch_.Put(store_->meta_, keys::TombstoneRow(reg->node(), reg->timestamp(), key), "");
  }
  PutObjectRow(key, TypeOf(state), old, std::move(value));
}

void RocksWriteGroup::PutObjectRow(std::string_view key, CrdtType type,
                                   const std::optional<std::string>& old, std::string value) {
  if (value == old) return;  // also spares the write of a join that changed nothing
  const std::string row = keys::ObjectRow(key, type);
  WriteObjectRow(key, type, row, old ? std::optional(keys::StateRowHash(row, *old)) : std::nullopt,
                 std::move(value));
}

void RocksWriteGroup::PutLwwRow(std::string_view key, LwwRowFact old, std::string value) {
  WriteObjectRow(key, CrdtType::kLww, keys::ObjectRow(key, CrdtType::kLww),
                 old.present ? std::optional(old.hash) : std::nullopt, std::move(value));
}

void RocksWriteGroup::WriteObjectRow(std::string_view key, CrdtType type, const std::string& row,
                                     std::optional<uint64_t> old_hash, std::string value) {
  if (!old_hash) op_created_ = true;
  const uint64_t hash = WriteCountedRow(row, /*element=*/false, old_hash, std::move(value));
  if (type == CrdtType::kLww) SetLwwRow(std::string(key), {true, hash});
}

void RocksWriteGroup::WriteStateRow(const std::string& row, bool element,
                                    const std::optional<std::string>& old,
                                    std::optional<std::string> value) {
  if (value == old) return;  // also spares the write of a join that changed nothing
  WriteCountedRow(row, element, old ? std::optional(keys::StateRowHash(row, *old)) : std::nullopt,
                  std::move(value));
}

uint64_t RocksWriteGroup::WriteCountedRow(const std::string& row, bool element,
                                          std::optional<uint64_t> old_hash,
                                          std::optional<std::string> value) {
  uint64_t hash = 0;
  if (value) {
    hash = keys::StateRowHash(row, *value);
    batch_.Put(store_->state_, row, *value);
  } else {
    batch_.Delete(store_->state_, row);
  }
  const uint64_t change = old_hash.value_or(0) ^ hash;
  op_digest_change_ ^= change;
  if (element) op_element_change_ ^= change;
  return hash;
}

Status RocksWriteGroup::CheckSeen(std::string_view key, const MvRegister& reg,
                                  const CausalContext& seen) const {
  const ReplicaId node = store_->node_id_;
  if (seen.MaxCounter(node) > std::max(reg.context().MaxCounter(node), Floor(key))) {
    return Status::InvalidArgument("the context for key '" + PrintableBytes(key) +
                                   "' holds writes this node never made there; pass the "
                                   "context of a read of this key");
  }
  return Status::OK();
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
  if (auto cached = store_->key_facts_.Mask(key)) {
    *mask = *cached;
    return Status::OK();
  }
  GEOKV_RETURN_IF_ERROR(reader_.GetLiveMask(key, mask));
  store_->key_facts_.SetMask(key, *mask);
  return Status::OK();
}

Status RocksWriteGroup::GetLwwRow(const std::string& key, LwwRowFact* row) {
  if (auto it = lww_rows_.find(key); it != lww_rows_.end()) {
    *row = it->second;
    return Status::OK();
  }
  if (auto cached = store_->key_facts_.LwwRow(key)) {
    *row = *cached;
    return Status::OK();
  }
  // Not written in this group (every write of the row records it): the
  // batch holds nothing of it, and the database's value is committed.
  const std::string object = keys::ObjectRow(key, CrdtType::kLww);
  std::optional<std::string> value;
  GEOKV_RETURN_IF_ERROR(reader_.GetRow(object, &value));
  *row = value ? LwwRowFact{true, keys::StateRowHash(object, *value)} : LwwRowFact{};
  store_->key_facts_.SetLwwRow(key, *row);
  return Status::OK();
}

void RocksWriteGroup::SetLwwRow(const std::string& key, LwwRowFact row) {
  auto it = lww_rows_.find(key);
  lww_undo_.emplace_back(key, it == lww_rows_.end() ? std::nullopt : std::optional(it->second));
  lww_rows_[key] = row;
}

namespace {

// Undoes the records of `undo` past `mark` in `records`.
template <typename Value>
void Rollback(std::unordered_map<std::string, Value>& records,
              std::vector<std::pair<std::string, std::optional<Value>>>& undo, size_t mark) {
  while (undo.size() > mark) {
    auto& [key, previous] = undo.back();
    if (previous) {
      records[key] = *previous;
    } else {
      records.erase(key);
    }
    undo.pop_back();
  }
}

}  // namespace

void RocksWriteGroup::RollbackFacts(UndoMarks marks) {
  Rollback(masks_, mask_undo_, marks.masks);
  Rollback(lww_rows_, lww_undo_, marks.lww_rows);
}

void RocksWriteGroup::SetMask(const std::string& key, uint8_t mask) {
  auto it = masks_.find(key);
  mask_undo_.emplace_back(key, it == masks_.end() ? std::nullopt : std::optional(it->second));
  masks_[key] = mask;
}

Status RocksWriteGroup::PutLiveMask(const std::string& key, uint8_t mask, CrdtType type,
                                    bool live) {
  // A register, set or counter left without a value is recorded for
  // collection, again each time a write leaves it so.
  if (!live && type != CrdtType::kLww) GEOKV_RETURN_IF_ERROR(NoteEmptied(key));
  uint8_t next = live ? (mask | TypeBit(type)) : (mask & ~TypeBit(type));
  if (next == mask) return Status::OK();
  SetMask(key, next);
  if (next == 0) {
    batch_.Delete(store_->state_, keys::LiveTypesRow(key));
  } else {
    batch_.Put(store_->state_, keys::LiveTypesRow(key), std::string(1, static_cast<char>(next)));
  }
  return Status::OK();
}

uint64_t RocksWriteGroup::AppendLog(std::string_view key, HlcTimestamp ts, const Crdt& delta) {
  uint64_t seq = next_seq_++;
  // No read of the group looks at log rows: they go into the batch's rows
  // without its index (which RollbackToSavePoint rebuilds from the rows, so
  // a rollback takes them back too).
  batch_.GetWriteBatch()->Put(store_->log_, keys::LogRow(seq),
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
  if (size_ == 0 && applied_.empty() && !dropped_changed && !peer_members_ && !vouched_ &&
      raised_floors_.empty()) {
    return Status::OK();
  }
  auto* db = store_->db_.get();
  const uint64_t last_seq = next_seq_ - 1;
  const LogCheckpoint checkpoint{last_seq, store_->clock_->Last()};
  batch_.Put(store_->meta_, keys::kMetaWriter,
             EncodeWriterState(WriterState{checkpoint.seq, checkpoint.stamp}));
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
      batch_.Put(store_->meta_, keys::kMetaDroppedSegments, EncodeSegmentSet(*dropped_));
    }
  }
  for (const auto& [segment, floor] : raised_floors_) {
    batch_.Put(store_->meta_, keys::FloorRow(segment), EncodeBigEndian64(floor));
  }
  if (peer_members_) batch_.Put(store_->meta_, keys::kMetaPeerMembers, *peer_members_);
  if (vouched_) batch_.Put(store_->meta_, keys::kMetaVouchedSegments, EncodeSegmentSet(*vouched_));
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
      store_->key_facts_.SetMask(key, mask);
    } else {
      store_->key_facts_.Erase(key);  // the database may hold either value
    }
  }
  for (const auto& [key, row] : lww_rows_) {
    if (written.ok()) {
      store_->key_facts_.SetLwwRow(key, row);
    } else {
      store_->key_facts_.Erase(key);
    }
  }
  GEOKV_RETURN_IF_ERROR(written);
  {
    // Digests first: a reader that sees the new last sequence must also
    // see the digests that cover it.
    std::lock_guard<std::mutex> l(store_->tree_mu_);
    for (const auto& [segment, change] : changes) store_->digests_[segment] ^= change;
    if (dropped_changed) store_->dropped_ = std::move(*dropped_);
    if (peer_members_) store_->peer_members_ = std::move(*peer_members_);
    if (vouched_) store_->vouched_ = std::move(*vouched_);
  }
  for (const auto& [segment, floor] : raised_floors_) store_->floors_[segment] = floor;
  store_->key_count_.fetch_add(static_cast<uint64_t>(count_change));
  store_->last_seq_.store(last_seq);
  {
    std::lock_guard<std::mutex> l(store_->checkpoint_mu_);
    store_->checkpoint_ = checkpoint;
  }
  store_->lww_overwritten_.fetch_add(lww_overwritten_);
  std::lock_guard<std::mutex> l(store_->applied_mu_);
  for (const auto& [origin, seq] : advanced) store_->applied_[origin] = seq;
  return Status::OK();
}

}  // namespace rocks_internal
}  // namespace geokv

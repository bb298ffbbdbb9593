// RocksWriteGroup's operations: Mutate, Join, set pages and contexts, Drop; each atomic.

#include "storage/rocks_store_internal.h"

namespace geokv {
namespace rocks_internal {

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
  const UndoMarks undo_marks = Marks();
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
    RollbackFacts(undo_marks);
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
  // A delete removes the key's counter as well as its register.
  const bool del = std::holds_alternative<LwwDelete>(op);
  const uint8_t allowed = TypeBit(type) | (del ? TypeBit(CrdtType::kCounter) : 0);
  if ((mask & ~allowed) != 0) {
    std::string holds;
    for (CrdtType t : kAllCrdtTypes) {
      if ((mask & ~allowed & TypeBit(t)) != 0) holds = std::string(TypeName(t));
    }
    return Status::WrongType("key '" + PrintableBytes(key) + "' holds a value of type " + holds +
                             ", not " + std::string(TypeName(type)));
  }
  if (del && (mask & TypeBit(CrdtType::kCounter)) != 0) {
    GEOKV_RETURN_IF_ERROR(ResetCounter(key));
    GEOKV_RETURN_IF_ERROR(GetLiveMask(key_string, &mask));
  }
  GEOKV_ASSIGN_OR_RETURN(std::optional<Change> change, MakeChange(key, op));
  if (!change) return uint64_t{0};
  GEOKV_RETURN_IF_ERROR(PutLiveMask(key_string, mask, type, change->live));
  HlcTimestamp ts = std::holds_alternative<LwwRegister>(change->delta)
                        ? std::get<LwwRegister>(change->delta).timestamp()
                        : store_->clock_->Now();
  return AppendLog(key, ts, change->delta);
}

Status RocksWriteGroup::ResetCounter(std::string_view key) {
  const std::string key_string(key);
  std::optional<std::string> old;
  GEOKV_ASSIGN_OR_RETURN(Crdt state, reader_.GetObject(key, CrdtType::kCounter, &old));
  PnCounter delta = std::get<PnCounter>(state).Reset();
  if (delta.IsBottom()) return Status::OK();
  PutObject(key, state, old);
  uint8_t mask;
  GEOKV_RETURN_IF_ERROR(GetLiveMask(key_string, &mask));
  GEOKV_RETURN_IF_ERROR(PutLiveMask(key_string, mask, CrdtType::kCounter, false));
  AppendLog(key, store_->clock_->Now(), delta);
  return Status::OK();
}

StatusOr<std::optional<RocksWriteGroup::Change>> RocksWriteGroup::MakeChange(
    std::string_view key, const Operation& op) {
  using Result = std::optional<Change>;
  const CrdtType type = OperationType(op);
  const ReplicaId node = store_->node_id_;
  HybridClock* clock = store_->clock_;

  if (type == CrdtType::kLww) {
    // The clock has passed every stamp stored here (Join advances it), so
    // this write's stamp is the greatest and the delta is the state (a new
    // row, never the old one). Of the old row the hash tree needs only its
    // hash, seldom read.
    LwwRowFact old;
    GEOKV_RETURN_IF_ERROR(GetLwwRow(std::string(key), &old));
    // A delete is written even when nothing is live here: the tombstone must
    // also beat older writes still on their way from other regions.
    auto* set = std::get_if<LwwSet>(&op);
    LwwRegister delta(clock->Now(), node,
                      set ? std::optional<std::string>(set->value) : std::nullopt);
    if (!set) {
      batch_.Put(store_->meta_, keys::TombstoneRow(node, delta.timestamp(), key), "");
    }
    PutLwwRow(key, old, EncodeCrdt(Crdt(delta)));
    return Result(Change{std::move(delta), set != nullptr});
  }
  std::optional<std::string> old;
  if (auto* write = std::get_if<MvWrite>(&op)) {
    GEOKV_ASSIGN_OR_RETURN(Crdt state, reader_.GetObject(key, type, &old));
    auto& reg = std::get<MvRegister>(state);
    GEOKV_RETURN_IF_ERROR(CheckSeen(key, reg, write->seen));
    MvRegister delta = reg.Write(write->value, write->seen, node, Floor(key));
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
    OrSet delta = add ? projection.AddAll(elements, node, Floor(key))
                      : projection.RemoveAll(elements);
    if (delta.IsBottom()) return Result();
    GEOKV_ASSIGN_OR_RETURN(bool live, JoinSet(key, delta));
    return Result(Change{std::move(delta), live});
  }
  const auto& inc = std::get<CounterAdd>(op);
  if (inc.delta == 0) return Result();
  GEOKV_ASSIGN_OR_RETURN(Crdt state, reader_.GetObject(key, type, &old));
  auto& counter = std::get<PnCounter>(state);
  // Refused when it would carry the exact value past a limit, or further
  // past it (joins of concurrent increments can): the value saturates there.
  const __int128 next = counter.ExactValue() + inc.delta;
  if ((inc.delta > 0 && next > std::numeric_limits<int64_t>::max()) ||
      (inc.delta < 0 && next < std::numeric_limits<int64_t>::min())) {
    return Status::InvalidArgument("increment would overflow the counter at key '" +
                                   PrintableBytes(key) + "'");
  }
  // Each node's totals only grow; one that wrapped would lose every join.
  // A node without an entry starts it at its segment's floor.
  const uint64_t floor = Floor(key);
  auto mine = counter.entries().find(node);
  const uint64_t magnitude = inc.delta >= 0 ? static_cast<uint64_t>(inc.delta)
                                            : 0 - static_cast<uint64_t>(inc.delta);
  const uint64_t total = mine == counter.entries().end() ? floor
                         : inc.delta >= 0                ? mine->second.added
                                                         : mine->second.subtracted;
  if (total > UINT64_MAX - magnitude) {
    return Status::InvalidArgument("this node's running total for the counter at key '" +
                                   PrintableBytes(key) + "' would overflow");
  }
  PnCounter delta = counter.Increment(node, inc.delta, floor);
  PutObject(key, state, old);
  return Result(Change{std::move(delta), counter.IsLive()});
}

template <typename JoinFn>
Status RocksWriteGroup::JoinAndMark(std::string_view key, CrdtType type, JoinFn&& join) {
  return Atomically(key, [&]() -> Status {
    const std::string key_string(key);
    uint8_t mask;
    GEOKV_RETURN_IF_ERROR(GetLiveMask(key_string, &mask));
    GEOKV_ASSIGN_OR_RETURN(bool live, join());
    GEOKV_RETURN_IF_ERROR(PutLiveMask(key_string, mask, type, live));
    ++size_;
    return Status::OK();
  });
}

Status RocksWriteGroup::Join(std::string_view key, const Crdt& delta, HlcTimestamp* held_above) {
  return JoinAndMark(key, TypeOf(delta), [&] { return JoinInto(key, delta, held_above); });
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

StatusOr<bool> RocksWriteGroup::JoinInto(std::string_view key, const Crdt& delta,
                                          HlcTimestamp* held_above) {
  if (auto* set = std::get_if<OrSet>(&delta)) return JoinSet(key, *set);
  if (auto* lww = std::get_if<LwwRegister>(&delta)) {
    GEOKV_RETURN_IF_ERROR(store_->clock_->Update(lww->timestamp()));
  }
  std::optional<std::string> old;
  GEOKV_ASSIGN_OR_RETURN(Crdt state, reader_.GetObject(key, TypeOf(delta), &old));
  if (auto* lww = std::get_if<LwwRegister>(&delta)) {
    const auto& here = std::get<LwwRegister>(state);
    if (!here.IsBottom() && lww->timestamp() < here.timestamp()) {
      ++lww_overwritten_;
      if (held_above != nullptr) *held_above = here.timestamp();
    }
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
        } else if constexpr (std::is_same_v<T, PnCounter>) {
          return v.IsLive();
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
  Status scan;
  delta.context().ForEachRun([&](ReplicaId replica, uint64_t first, uint64_t last) {
    if (!scan.ok()) return;
    if (first == last) {
      std::string element;
      bool found;
      scan = reader_.Get(keys::DotIndexRow(key, Dot{replica, first}), &element, &found);
      if (scan.ok() && found) note(Dot{replica, first}, std::move(element));
      return;
    }
    std::string prefix = keys::DotIndexPrefix(key, replica);
    std::unique_ptr<rocksdb::Iterator> it = reader_.NewIterator();
    for (it->Seek(keys::DotIndexRow(key, Dot{replica, first})); it->Valid(); it->Next()) {
      rocksdb::Slice row = it->key();
      if (!StartsWith(row, prefix) || row.size() != prefix.size() + 8) break;
      uint64_t counter = DecodeBigEndian64(row.data() + prefix.size());
      if (counter > last) break;
      note(Dot{replica, counter}, it->value().ToString());
    }
    scan = FromRocks(it->status(), "scan dot index");
  });
  GEOKV_RETURN_IF_ERROR(scan);
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

StatusOr<bool> RocksWriteGroup::Drop(std::string_view key, uint64_t expected_digest) {
  return Atomically(key, [&]() -> StatusOr<bool> {
    GEOKV_ASSIGN_OR_RETURN(uint64_t digest, DigestInGroup(std::string(key)));
    if (digest != expected_digest) return false;
    GEOKV_RETURN_IF_ERROR(RemoveKey(key, digest, /*collected=*/false));
    if (op_dropped_) Dropped()[TreeSegmentOf(key)] = true;
    return true;
  });
}

Status RocksWriteGroup::RemoveKey(std::string_view key, uint64_t digest, bool collected) {
  std::unique_ptr<rocksdb::Iterator> it = reader_.NewIterator();
  // Every row of the key, the derived ones too. Collected first: the
  // iterator reads the batch, which must not change under it.
  const std::string prefix = keys::KeyPrefix(key);
  const ReplicaId node = store_->node_id_;
  const std::string mv_row = keys::ObjectRow(key, CrdtType::kMvRegister);
  const std::string set_row = keys::ObjectRow(key, CrdtType::kOrSet);
  const std::string counter_row = keys::ObjectRow(key, CrdtType::kCounter);
  std::vector<std::string> rows;
  for (it->Seek(prefix); it->Valid() && StartsWith(it->key(), prefix); it->Next()) {
    rows.push_back(it->key().ToString());
    // The dots and totals this node made in the key are forgotten with it:
    // the segment's floor keeps them from being made again.
    const std::string_view value(it->value().data(), it->value().size());
    if (rows.back() == mv_row || rows.back() == counter_row) {
      GEOKV_ASSIGN_OR_RETURN(Crdt state, DecodeCrdt(value));
      if (const auto* reg = std::get_if<MvRegister>(&state)) {
        RaiseFloor(key, reg->context().MaxCounter(node));
      } else if (const auto* counter = std::get_if<PnCounter>(&state); counter && collected) {
        // Only a deleted counter starts over: one handed over comes back
        // with its totals before this node writes to it (server/plan.h).
        auto mine = counter->entries().find(node);
        if (mine != counter->entries().end()) {
          RaiseFloor(key, std::max(mine->second.added, mine->second.subtracted));
        }
      }
    } else if (rows.back() == set_row) {
      SetHeader header;
      GEOKV_RETURN_IF_ERROR(DecodeSetHeader(value, &header).WithContext(
          Describe(key, CrdtType::kOrSet)));
      RaiseFloor(key, header.ctx.MaxCounter(node));
    }
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan key"));
  it.reset();
  if (rows.empty()) return Status::OK();
  for (const std::string& row : rows) batch_.Delete(store_->state_, row);
  SetLwwRow(std::string(key), LwwRowFact{});
  // The digest is the XOR of the hashes of exactly the counted rows gone.
  op_digest_change_ = digest;
  op_dropped_ = true;
  SetMask(std::string(key), 0);
  ++size_;
  return Status::OK();
}

uint64_t RocksWriteGroup::Floor(std::string_view key) const {
  const size_t segment = TreeSegmentOf(key);
  auto raised = raised_floors_.find(segment);
  return raised != raised_floors_.end() ? raised->second : store_->floors_[segment];
}

void RocksWriteGroup::RaiseFloor(std::string_view key, uint64_t value) {
  if (value > Floor(key)) raised_floors_[TreeSegmentOf(key)] = value;
}

Status RocksWriteGroup::GetMeta(const std::string& row, std::optional<std::string>* value) {
  std::string v;
  rocksdb::Status s = batch_.GetFromBatchAndDB(store_->db_.get(), rocksdb::ReadOptions(),
                                               store_->meta_, row, &v);
  if (s.IsNotFound()) {
    value->reset();
    return Status::OK();
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(s, "read meta row"));
  *value = std::move(v);
  return Status::OK();
}

Status RocksWriteGroup::NoteEmptied(std::string_view key) {
  const std::string at_row = keys::EmptiedAtRow(key);
  std::optional<std::string> at;
  GEOKV_RETURN_IF_ERROR(GetMeta(at_row, &at));
  HlcTimestamp before;
  if (at && keys::DecodeEmptiedAt(*at, &before)) {
    batch_.Delete(store_->meta_, keys::EmptiedRow(before, key));
  }
  const HlcTimestamp now = store_->clock_->Now();
  batch_.Put(store_->meta_, keys::EmptiedRow(now, key), "");
  batch_.Put(store_->meta_, at_row, keys::EncodeEmptiedAt(now));
  return Status::OK();
}

StatusOr<size_t> RocksWriteGroup::CollectTombstones(HlcTimestamp bound,
                                                    HlcTimestamp emptied_bound, size_t limit) {
  if (spent_) return Status::FailedPrecondition("write group already committed");
  GEOKV_ASSIGN_OR_RETURN(const size_t tombstones,
                         CollectLwwTombstones(bound, emptied_bound, limit));
  if (tombstones >= limit) return tombstones;
  GEOKV_ASSIGN_OR_RETURN(const size_t emptied,
                         CollectEmptied(bound, emptied_bound, limit - tombstones));
  return tombstones + emptied;
}

StatusOr<RocksWriteGroup::Collectable> RocksWriteGroup::CollectKey(const std::string& key,
                                                                   HlcTimestamp bound,
                                                                   HlcTimestamp emptied_bound) {
  uint64_t rows = 0;  // the hash of the object rows read
  bool found = false;
  bool emptied = false;
  bool pending = false;
  for (CrdtType type : kAllCrdtTypes) {
    const std::string object = keys::ObjectRow(key, type);
    std::optional<std::string> row;
    GEOKV_RETURN_IF_ERROR(reader_.GetRow(object, &row));
    if (!row) continue;
    found = true;
    rows ^= keys::StateRowHash(object, *row);
    if (type == CrdtType::kOrSet) {
      SetHeader header;
      GEOKV_RETURN_IF_ERROR(DecodeSetHeader(*row, &header).WithContext(Describe(key, type)));
      if (header.cardinality != 0) return Collectable::kLive;
      emptied = true;
      continue;
    }
    GEOKV_ASSIGN_OR_RETURN(Crdt state, DecodeCrdt(*row));
    if (const auto* reg = std::get_if<LwwRegister>(&state)) {
      if (reg->value()) return Collectable::kLive;
      pending = pending || bound < reg->timestamp();
    } else if (IsEmptied(state)) {
      emptied = true;
    } else {
      return Collectable::kLive;
    }
  }
  if (!found) return Collectable::kLive;  // nothing here
  const std::string at_row = keys::EmptiedAtRow(key);
  if (emptied) {
    std::optional<std::string> at;
    GEOKV_RETURN_IF_ERROR(GetMeta(at_row, &at));
    HlcTimestamp stamp;
    if (!at || !keys::DecodeEmptiedAt(*at, &stamp)) {
      // An emptied state whose record went (the key was live since): it
      // is recorded again, from now.
      GEOKV_RETURN_IF_ERROR(NoteEmptied(key));
      return Collectable::kNotYet;
    }
    pending = pending || emptied_bound < stamp;
  }
  if (pending) return Collectable::kNotYet;
  // Nothing else, no element row among them: the key's digest is theirs.
  GEOKV_ASSIGN_OR_RETURN(uint64_t digest, DigestInGroup(key));
  if (digest != rows) return Collectable::kLive;
  if (emptied) batch_.Delete(store_->meta_, at_row);
  GEOKV_RETURN_IF_ERROR(RemoveKey(key, digest, /*collected=*/true));
  return Collectable::kCollected;
}

StatusOr<size_t> RocksWriteGroup::CollectLwwTombstones(HlcTimestamp bound,
                                                       HlcTimestamp emptied_bound, size_t limit) {
  // The index rows to visit, collected first: the removals below change
  // the batch the iterator reads. Per writer, the rows up to the bound.
  std::vector<keys::TombstoneRef> visit;
  {
    std::unique_ptr<rocksdb::Iterator> it(batch_.NewIteratorWithBase(
        store_->meta_, store_->db_->NewIterator(rocksdb::ReadOptions(), store_->meta_)));
    const std::string prefix = keys::kMetaTombstonePrefix;
    it->Seek(prefix);
    while (it->Valid() && StartsWith(it->key(), prefix) && visit.size() < limit) {
      keys::TombstoneRef ref;
      if (!keys::DecodeTombstoneRow(std::string_view(it->key().data(), it->key().size()), &ref)) {
        return Status::Corruption("bad tombstone index row");
      }
      if (ref.stamp <= bound) {
        visit.push_back(std::move(ref));
        it->Next();
      } else if (ref.writer == UINT64_MAX) {
        break;
      } else {
        it->Seek(keys::TombstonePrefix(ref.writer + 1));
      }
    }
    GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan the tombstone index"));
  }
  size_t removed = 0;
  for (const keys::TombstoneRef& ref : visit) {
    GEOKV_ASSIGN_OR_RETURN(Collectable done, Atomically(ref.key, [&]() -> StatusOr<Collectable> {
      batch_.Delete(store_->meta_, keys::TombstoneRow(ref.writer, ref.stamp, ref.key));
      ++size_;
      return CollectKey(ref.key, bound, emptied_bound);
    }));
    if (done == Collectable::kCollected) ++removed;
  }
  return removed;
}

StatusOr<size_t> RocksWriteGroup::CollectEmptied(HlcTimestamp bound, HlcTimestamp emptied_bound,
                                                 size_t limit) {
  std::vector<keys::EmptiedRef> visit;
  {
    std::unique_ptr<rocksdb::Iterator> it(batch_.NewIteratorWithBase(
        store_->meta_, store_->db_->NewIterator(rocksdb::ReadOptions(), store_->meta_)));
    const std::string prefix = keys::kMetaEmptiedPrefix;
    for (it->Seek(prefix); it->Valid() && StartsWith(it->key(), prefix) && visit.size() < limit;
         it->Next()) {
      keys::EmptiedRef ref;
      if (!keys::DecodeEmptiedRow(std::string_view(it->key().data(), it->key().size()), &ref)) {
        return Status::Corruption("bad emptied index row");
      }
      if (emptied_bound < ref.stamp) break;
      visit.push_back(std::move(ref));
    }
    GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan the emptied index"));
  }
  size_t removed = 0;
  for (const keys::EmptiedRef& ref : visit) {
    GEOKV_ASSIGN_OR_RETURN(Collectable done, Atomically(ref.key, [&]() -> StatusOr<Collectable> {
      batch_.Delete(store_->meta_, keys::EmptiedRow(ref.stamp, ref.key));
      ++size_;
      const std::string at_row = keys::EmptiedAtRow(ref.key);
      std::optional<std::string> at;
      GEOKV_RETURN_IF_ERROR(GetMeta(at_row, &at));
      HlcTimestamp stamp;
      // Only the key's current row counts: an earlier one was replaced.
      if (!at || !keys::DecodeEmptiedAt(*at, &stamp) || stamp != ref.stamp) {
        return Collectable::kNotYet;
      }
      GEOKV_ASSIGN_OR_RETURN(Collectable c, CollectKey(ref.key, bound, emptied_bound));
      // A key written since keeps no record; a tombstone not yet stable
      // leaves it for the tombstone's own visit.
      if (c == Collectable::kLive) batch_.Delete(store_->meta_, at_row);
      return c;
    }));
    if (done == Collectable::kCollected) ++removed;
  }
  return removed;
}

void RocksWriteGroup::ClearDropped(size_t segment) {
  if (segment < kTreeSegments) Dropped()[segment] = false;
}

std::vector<bool>& RocksWriteGroup::Dropped() {
  if (!dropped_) dropped_ = store_->DroppedSegments();
  return *dropped_;
}

}  // namespace rocks_internal
}  // namespace geokv

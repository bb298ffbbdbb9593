// RocksStore's reads: objects, live types, sets, the log and its trim, tree digests, segment keys.

#include "storage/rocks_store_internal.h"

namespace geokv {
namespace rocks_internal {

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

StatusOr<uint64_t> ObjectsDigestOf(rocksdb::Iterator* it, std::string_view key) {
  // The rows of a key, in order: its live types, then per type its object
  // row and (a set's) element and dot index rows.
  const std::string prefix = keys::KeyPrefix(key);
  uint64_t digest = 0;
  it->Seek(prefix);
  while (it->Valid() && StartsWith(it->key(), prefix)) {
    const rocksdb::Slice row = it->key();
    const size_t rest = row.size() - prefix.size();
    if (rest == 2 && row[prefix.size() + 1] == keys::kObjectRow) {
      digest ^= keys::StateRowHash(std::string_view(row.data(), row.size()),
                                   std::string_view(it->value().data(), it->value().size()));
    } else if (rest > 2) {
      // An element or dot index row: on to the next type's rows.
      std::string next = prefix;
      next.push_back(static_cast<char>(row[prefix.size()] + 1));
      it->Seek(next);
      continue;
    }
    it->Next();
  }
  GEOKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan key"));
  return digest;
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
  std::unique_ptr<rocksdb::Iterator> rows = reader.NewIterator();
  const std::string prefix = keys::TreeKeyPrefix(segment);
  std::vector<geokv::KeyDigest> out;
  for (index->Seek(prefix); index->Valid() && StartsWith(index->key(), prefix); index->Next()) {
    geokv::KeyDigest k;
    k.key.assign(index->key().data() + prefix.size(), index->key().size() - prefix.size());
    GEOKV_ASSIGN_OR_RETURN(k.digest, DecodeTreeValue(index->value().ToString(), "key digest"));
    GEOKV_ASSIGN_OR_RETURN(const uint64_t objects, ObjectsDigestOf(rows.get(), k.key));
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

}  // namespace rocks_internal
}  // namespace geokv

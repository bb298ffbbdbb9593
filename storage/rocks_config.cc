#include "storage/rocks_config.h"

#include <rocksdb/cache.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/table.h>

#include <deque>
#include <string>
#include <vector>

#include "storage/keys.h"

namespace geokv {
namespace {

// Merges the rows of the tree family (storage/keys.h), each by its kind:
// TreeDigests XOR segment by segment, key digests XOR, the key count adds.
// Commits write their changes as operands, so that a commit adds one row to
// its batch per changed key however many of the key's rows it changes, and
// never reads a tree row to write it.
class TreeMerge : public rocksdb::MergeOperator {
 public:
  const char* Name() const override { return "geokv.TreeXor"; }

  bool FullMergeV2(const MergeOperationInput& in, MergeOperationOutput* out) const override {
    return Fold(in.key, in.existing_value, in.operand_list.begin(), in.operand_list.end(),
                &out->new_value);
  }

  bool PartialMergeMulti(const rocksdb::Slice& key, const std::deque<rocksdb::Slice>& operands,
                         std::string* out, rocksdb::Logger*) const override {
    return Fold(key, nullptr, operands.begin(), operands.end(), out);
  }

 private:
  enum class Kind { kDigests, kKeyDigest, kKeyCount, kOther };

  static Kind KindOf(const rocksdb::Slice& key) {
    if (key == rocksdb::Slice(storage_keys::kTreeDigestsRow)) return Kind::kDigests;
    if (key == rocksdb::Slice(storage_keys::kTreeKeyCountRow)) return Kind::kKeyCount;
    if (key.starts_with(storage_keys::kTreeKeyIndex)) return Kind::kKeyDigest;
    return Kind::kOther;
  }

  // Folds `existing` (may be null) and the operands [begin, end) into *out.
  template <typename It>
  static bool Fold(const rocksdb::Slice& key, const rocksdb::Slice* existing, It begin, It end,
                   std::string* out) {
    const Kind kind = KindOf(key);
    if (kind == Kind::kOther) return false;
    if (kind == Kind::kDigests) {
      std::vector<uint64_t> digests(kTreeSegments);
      if (existing != nullptr && !XorInto(*existing, &digests)) return false;
      for (It it = begin; it != end; ++it) {
        if (!XorInto(*it, &digests)) return false;
      }
      *out = Encode(digests);
      return true;
    }
    uint64_t value = 0;
    auto fold = [&value, kind](const rocksdb::Slice& bytes) {
      if (bytes.size() != 8) return false;
      const uint64_t x = DecodeBigEndian64(bytes.data());
      value = kind == Kind::kKeyCount ? value + x : value ^ x;
      return true;
    };
    if (existing != nullptr && !fold(*existing)) return false;
    for (It it = begin; it != end; ++it) {
      if (!fold(*it)) return false;
    }
    *out = EncodeBigEndian64(value);
    return true;
  }

  static bool XorInto(const rocksdb::Slice& bytes, std::vector<uint64_t>* digests) {
    return storage_keys::XorTreeDigests(std::string_view(bytes.data(), bytes.size()), digests);
  }

  static std::string Encode(const std::vector<uint64_t>& digests) {
    std::vector<std::pair<size_t, uint64_t>> entries;
    for (size_t segment = 0; segment < digests.size(); ++segment) {
      entries.emplace_back(segment, digests[segment]);
    }
    return storage_keys::EncodeTreeDigests(entries);
  }
};

}  // namespace

RocksConfig MakeRocksConfig(const StoreOptions& options) {
  RocksConfig config;
  config.db.create_if_missing = true;
  config.db.create_missing_column_families = true;
  config.db.max_background_jobs = 2;
  config.db.keep_log_file_num = 4;
  config.db.bytes_per_sync = 1 << 20;
  // The metadata family changes with every commit but fills its memtable
  // slowly; without a cap, WAL files it pins would pile up until it flushed.
  config.db.max_total_wal_size = 256 << 20;

  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  auto family_options = [&cache](bool bloom) {
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = cache;
    if (bloom) table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    rocksdb::ColumnFamilyOptions cf;
    cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    if (bloom) {
      // Most point reads look for rows that are absent (the types a key does
      // not hold, the index rows of new keys): a whole-key filter in the
      // memtable answers those without a search of its skip list.
      cf.memtable_whole_key_filtering = true;
      cf.memtable_prefix_bloom_size_ratio = 0.02;
    }
    return cf;
  };
  // Commits read the key index rows of the keys they create: most are absent.
  rocksdb::ColumnFamilyOptions tree = family_options(true);
  tree.merge_operator = std::make_shared<TreeMerge>();
  // A key written by every commit would pile up operands that each read of
  // its digest folds; past this many in a memtable, the write folds them
  // (one read per that many writes).
  tree.max_successive_merges = 64;
  config.families = {
      {rocksdb::kDefaultColumnFamilyName, family_options(false)},
      {storage_keys::kStateFamily, family_options(true)},
      {storage_keys::kLogFamily, family_options(false)},
      {storage_keys::kTreeFamily, tree},
  };
  return config;
}

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::OK();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNotFound()) return Status::NotFound(std::move(msg));
  if (s.IsCorruption()) return Status::Corruption(std::move(msg));
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) return Status::Unavailable(std::move(msg));
  return Status::IOError(std::move(msg));
}

}  // namespace geokv

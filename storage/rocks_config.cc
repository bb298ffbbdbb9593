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

// Merges TreeDigests (storage/keys.h) by XOR, segment by segment: commits
// write their digest changes as operands, so that a commit adds one row to
// its batch however many segments it changes, and never reads the row.
class TreeDigestsMerge : public rocksdb::MergeOperator {
 public:
  const char* Name() const override { return "geokv.TreeDigestsXor"; }

  bool FullMergeV2(const MergeOperationInput& in, MergeOperationOutput* out) const override {
    std::vector<uint64_t> digests(kTreeSegments);
    if (in.existing_value != nullptr && !XorInto(*in.existing_value, &digests)) return false;
    for (const rocksdb::Slice& operand : in.operand_list) {
      if (!XorInto(operand, &digests)) return false;
    }
    out->new_value = Encode(digests);
    return true;
  }

  bool PartialMergeMulti(const rocksdb::Slice&, const std::deque<rocksdb::Slice>& operands,
                         std::string* out, rocksdb::Logger*) const override {
    std::vector<uint64_t> digests(kTreeSegments);
    for (const rocksdb::Slice& operand : operands) {
      if (!XorInto(operand, &digests)) return false;
    }
    *out = Encode(digests);
    return true;
  }

 private:
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
    return cf;
  };
  rocksdb::ColumnFamilyOptions tree = family_options(false);
  tree.merge_operator = std::make_shared<TreeDigestsMerge>();
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

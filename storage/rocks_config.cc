#include "storage/rocks_config.h"

#include <rocksdb/cache.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>

#include <string>

#include "storage/keys.h"

namespace geokv {

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
  config.families = {
      {rocksdb::kDefaultColumnFamilyName, family_options(false)},
      {storage_keys::kStateFamily, family_options(true)},
      {storage_keys::kLogFamily, family_options(false)},
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

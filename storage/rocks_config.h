// How a store configures RocksDB, shared with tools that open plain RocksDB
// under the same configuration (bench/) so that comparisons are like for like.

#ifndef GEOKV_STORAGE_ROCKS_CONFIG_H_
#define GEOKV_STORAGE_ROCKS_CONFIG_H_

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <string_view>
#include <vector>

#include "storage/store.h"
#include "util/status.h"

namespace geokv {

// A data directory's database options and column families, in the order
// metadata ("default"), "state", "log", "tree" (storage/keys.h).
struct RocksConfig {
  rocksdb::DBOptions db;
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
};

RocksConfig MakeRocksConfig(const StoreOptions& options);

// A RocksDB status as a Status, with `what` (the failed action) in front.
Status FromRocks(const rocksdb::Status& s, std::string_view what);

}  // namespace geokv

#endif  // GEOKV_STORAGE_ROCKS_CONFIG_H_

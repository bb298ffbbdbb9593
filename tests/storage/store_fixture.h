// A store in a fresh directory for the storage tests, with helpers to apply
// operations and to edit its rows behind its back.

#ifndef GEOKV_TESTS_STORAGE_STORE_FIXTURE_H_
#define GEOKV_TESTS_STORAGE_STORE_FIXTURE_H_

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/rocks_config.h"
#include "storage/store.h"
#include "testing/test_dir.h"

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    ::geokv::Status _s = (expr);                            \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.ToString(); \
  } while (0)

namespace geokv::testing {

// The column families of `dir` opened as plain RocksDB, in the order of
// storage/rocks_config.h, configured as the store configures them.
using RawEdit =
    std::function<void(rocksdb::DB* db, const std::vector<rocksdb::ColumnFamilyHandle*>& families)>;

// Runs `edit` on the RocksDB database in `dir`. REQUIRES: no store has it open.
inline void EditRaw(const std::string& dir, const RawEdit& edit) {
  const RocksConfig config = MakeRocksConfig(StoreOptions());
  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s = rocksdb::DB::Open(config.db, dir, config.families, &handles, &raw);
  ASSERT_TRUE(s.ok()) << s.ToString();
  edit(raw, handles);
  for (auto* h : handles) raw->DestroyColumnFamilyHandle(h);
  delete raw;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen(StoreOptions options = StoreOptions()) {
    store_.reset();
    options.durability = Durability::kWal;
    auto s = Store::Open(dir_.Sub("db"), options);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }

  // Closes the store and runs `edit` on its database; Reopen() after.
  void EditRows(const RawEdit& edit) {
    store_.reset();
    EditRaw(dir_.Sub("db"), edit);
  }

  // Applies one operation in its own group; returns its log sequence.
  StatusOr<uint64_t> Apply(std::string_view key, const Operation& op) {
    auto group = store_->BeginGroup();
    StatusOr<uint64_t> seq = group->Mutate(key, op);
    if (!seq.ok()) return seq;
    GEOKV_RETURN_IF_ERROR(group->Commit());
    return seq;
  }

  // Joins one delta or state in its own group.
  Status JoinOne(std::string_view key, const Crdt& delta) {
    auto group = store_->BeginGroup();
    GEOKV_RETURN_IF_ERROR(group->Join(key, delta));
    return group->Commit();
  }

  std::optional<std::string> GetLww(std::string_view key) {
    auto v = store_->Get(key, CrdtType::kLww);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    if (!v.ok() || !v->has_value()) return std::nullopt;
    return std::get<LwwRegister>(**v).value();
  }

  std::vector<std::string> Members(std::string_view key) {
    auto v = store_->Get(key, CrdtType::kOrSet);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    if (!v.ok() || !v->has_value()) return {};
    return std::get<OrSet>(**v).Elements();
  }

  TestDir dir_;
  std::unique_ptr<Store> store_;
};

}  // namespace geokv::testing

#endif  // GEOKV_TESTS_STORAGE_STORE_FIXTURE_H_

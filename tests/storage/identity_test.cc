// The store's identity at open: a log that may have gone back (a machine
// crash in wal mode, a copied data dir, a peer holding more of it, the
// operator's word) continues under a new replica id; otherwise the id stays.

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <filesystem>

#include "storage/keys.h"
#include "storage/store.h"
#include "tests/storage/store_fixture.h"

namespace geokv::testing {
namespace {

namespace keys = storage_keys;

class IdentityTest : public StoreTest {
 protected:
  void Open(Durability durability, const std::string& boot_id, const std::string& dir = "",
            bool new_identity = false) {
    store_.reset();
    StoreOptions options;
    options.durability = durability;
    options.boot_id = boot_id;
    options.new_identity = new_identity;
    auto s = Store::Open(dir.empty() ? dir_.Sub("db") : dir, options);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }

  // Writes `n` keys; returns the last log position.
  uint64_t Write(int n) {
    uint64_t last = 0;
    for (int i = 0; i < n; ++i) {
      auto seq = Apply("k" + std::to_string(i), SetAdd{{"e" + std::to_string(i)}});
      EXPECT_TRUE(seq.ok()) << seq.status().ToString();
      if (seq.ok()) last = *seq;
    }
    return last;
  }

  // Closes the store as a killed process leaves it: the run still open.
  void Crash(Durability durability, const std::string& boot_id) {
    EditRows([&](rocksdb::DB* db, const std::vector<rocksdb::ColumnFamilyHandle*>& f) {
      std::string row(1, durability == Durability::kWal ? 'w' : 'f');
      row += boot_id;
      ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), f[0], keys::kMetaOpenRun, row).ok());
    });
  }

  // The new id's log starts after `last`, the old id is retired with the
  // store holding its log through `last`, and the data is all there.
  void ExpectRetired(ReplicaId old, uint64_t last, int keys_written) {
    EXPECT_NE(store_->node_id(), old);
    EXPECT_FALSE(store_->IdentityChange().empty());
    auto retired = store_->RetiredIds();
    ASSERT_FALSE(retired.empty());
    EXPECT_EQ(retired.back().id, old);
    EXPECT_EQ(retired.back().last_seq, last);
    EXPECT_EQ(store_->AppliedPositions()[old], last);
    EXPECT_EQ(store_->TrimmedThrough(), last);
    EXPECT_EQ(store_->LastSeq(), last);
    auto seq = Apply("after", LwwSet{"v"});
    ASSERT_TRUE(seq.ok()) << seq.status().ToString();
    EXPECT_EQ(*seq, last + 1);
    auto log = store_->ReadLog(last, 10, 1 << 20);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    ASSERT_EQ(log->size(), 1u);
    EXPECT_EQ((*log)[0].origin, store_->node_id());
    EXPECT_FALSE(store_->ReadLog(0, 10, 1 << 20).ok());  // the old id's entries are gone
    for (int i = 0; i < keys_written; ++i) {
      EXPECT_EQ(Members("k" + std::to_string(i)), std::vector<std::string>{"e" + std::to_string(i)});
    }
    // OR-set dots of the new writes are the new id's.
    auto added = Apply("k0", SetAdd{{"again"}});
    ASSERT_TRUE(added.ok());
  }
};

TEST_F(IdentityTest, ACleanRestartAndAProcessCrashKeepTheId) {
  Open(Durability::kWal, "boot-1");
  const ReplicaId id = store_->node_id();
  Write(5);
  Open(Durability::kWal, "boot-2");  // a clean close, then a reboot
  EXPECT_EQ(store_->node_id(), id);
  Crash(Durability::kWal, "boot-2");
  Open(Durability::kWal, "boot-2");  // killed, the machine still up: the WAL is whole
  EXPECT_EQ(store_->node_id(), id);
  Crash(Durability::kFsync, "boot-2");
  Open(Durability::kWal, "boot-3");  // a machine crash in fsync mode loses nothing
  EXPECT_EQ(store_->node_id(), id);
  EXPECT_TRUE(store_->RetiredIds().empty());
  EXPECT_TRUE(store_->IdentityChange().empty());
}

TEST_F(IdentityTest, AMachineCrashInWalModeTakesANewId) {
  Open(Durability::kWal, "boot-1");
  const ReplicaId id = store_->node_id();
  const uint64_t last = Write(5);
  Crash(Durability::kWal, "boot-1");
  Open(Durability::kWal, "boot-2");
  ExpectRetired(id, last, 5);
  // Persisted: the next clean open keeps the new id and the retired one.
  const ReplicaId fresh = store_->node_id();
  Open(Durability::kWal, "boot-2");
  EXPECT_EQ(store_->node_id(), fresh);
  ASSERT_EQ(store_->RetiredIds().size(), 1u);
  EXPECT_EQ(store_->RetiredIds()[0].id, id);
  EXPECT_TRUE(store_->IdentityChange().empty());
}

TEST_F(IdentityTest, ACopyOfTheDirTakesANewIdAndTheOriginalKeepsItsOwn) {
  Open(Durability::kFsync, "boot-1");
  const ReplicaId id = store_->node_id();
  const uint64_t last = Write(4);
  store_.reset();
  const std::string copy = dir_.Sub("copy");
  std::filesystem::copy(dir_.Sub("db"), copy, std::filesystem::copy_options::recursive);
  Open(Durability::kFsync, "boot-1", copy);
  ExpectRetired(id, last, 4);
  Open(Durability::kFsync, "boot-1", copy);  // the copy is now a dir of its own
  EXPECT_EQ(store_->RetiredIds().size(), 1u);
  Open(Durability::kFsync, "boot-1");
  EXPECT_EQ(store_->node_id(), id);
  EXPECT_TRUE(store_->RetiredIds().empty());
}

TEST_F(IdentityTest, RetireAtNextOpenAndTheFlagTakeANewIdEachTime) {
  Open(Durability::kFsync, "boot-1");
  const ReplicaId first = store_->node_id();
  const uint64_t last = Write(3);
  ASSERT_OK(store_->RetireAtNextOpen("a peer holds this node's log through 9"));
  EXPECT_EQ(store_->node_id(), first);  // not before the next open
  Open(Durability::kFsync, "boot-1");
  ExpectRetired(first, last, 3);
  EXPECT_NE(store_->IdentityChange().find("a peer holds"), std::string::npos);
  const ReplicaId second = store_->node_id();
  Open(Durability::kFsync, "boot-1", "", /*new_identity=*/true);
  EXPECT_NE(store_->node_id(), second);
  EXPECT_NE(store_->node_id(), first);
  ASSERT_EQ(store_->RetiredIds().size(), 2u);
  EXPECT_EQ(store_->RetiredIds()[0].id, first);
  EXPECT_EQ(store_->RetiredIds()[1].id, second);
}

}  // namespace
}  // namespace geokv::testing

// The collection of LWW tombstones and of emptied registers and sets
// (WriteGroup::CollectTombstones), the indexes it walks, the dot floors
// that keep a collected key's dots from being made again, and the log
// checkpoint the bounds come from.

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include "storage/keys.h"
#include "storage/store.h"
#include "tests/storage/store_fixture.h"

namespace geokv::testing {
namespace {

class TombstoneTest : public StoreTest {
 protected:
  HlcTimestamp StampOf(std::string_view key) {
    auto state = store_->Get(key, CrdtType::kLww);
    EXPECT_TRUE(state.ok() && state->has_value()) << key;
    if (!state.ok() || !state->has_value()) return {};
    return std::get<LwwRegister>(**state).timestamp();
  }

  size_t Collect(HlcTimestamp bound, size_t limit = 1000) {
    auto group = store_->BeginGroup();
    StatusOr<size_t> removed = group->CollectTombstones(bound, bound, limit);
    EXPECT_TRUE(removed.ok()) << removed.status().ToString();
    Status committed = group->Commit();
    EXPECT_TRUE(committed.ok()) << committed.ToString();
    return removed.ok() ? *removed : 0;
  }

  // The tombstone index rows on disk.
  size_t IndexRows() {
    size_t rows = 0;
    store_.reset();
    EditRaw(dir_.Sub("db"), [&](rocksdb::DB* db, const auto& families) {
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, families[0]));
      const std::string prefix = storage_keys::kMetaTombstonePrefix;
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) ++rows;
    });
    Reopen();
    return rows;
  }

  static HlcTimestamp Before(HlcTimestamp ts) {
    if (ts.logical > 0) return {ts.wall_ms, ts.logical - 1};
    return {ts.wall_ms - 1, UINT32_MAX};
  }
};

TEST_F(TombstoneTest, ADeleteIsCollectedOnceTheBoundReachesItsStamp) {
  ASSERT_TRUE(Apply("k", LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply("k", LwwDelete{}).ok());
  ASSERT_TRUE(Apply("live", LwwSet{"v"}).ok());
  const HlcTimestamp stamp = StampOf("k");
  ASSERT_EQ(*store_->KeyCount(), 2u);

  EXPECT_EQ(Collect(Before(stamp)), 0u);
  EXPECT_NE(*store_->KeyDigest("k"), 0u);
  EXPECT_EQ(IndexRows(), 1u);

  const std::vector<uint64_t> live_only = [&] {
    std::vector<uint64_t> d(kTreeSegments);
    d[TreeSegmentOf("live")] = *store_->KeyDigest("live");
    return d;
  }();
  EXPECT_EQ(Collect(stamp), 1u);
  EXPECT_EQ(*store_->KeyCount(), 1u);
  EXPECT_EQ(*store_->KeyDigest("k"), 0u);
  EXPECT_TRUE(store_->GetStates("k")->empty());
  EXPECT_EQ(store_->TreeDigests(), live_only);
  EXPECT_EQ(GetLww("live"), std::optional<std::string>("v"));
  EXPECT_EQ(IndexRows(), 0u);
  // Not a hand-over: the segment is not marked dropped.
  EXPECT_FALSE(store_->DroppedSegments()[TreeSegmentOf("k")]);
  // Persisted: the count and digests as collected.
  Reopen();
  EXPECT_EQ(*store_->KeyCount(), 1u);
  EXPECT_EQ(store_->TreeDigests(), live_only);
}

TEST_F(TombstoneTest, AKeyWrittenAgainOrDeletedAgainKeepsItsNewState) {
  ASSERT_TRUE(Apply("again", LwwDelete{}).ok());
  ASSERT_TRUE(Apply("again", LwwSet{"back"}).ok());
  ASSERT_TRUE(Apply("twice", LwwDelete{}).ok());
  const HlcTimestamp first = StampOf("twice");
  ASSERT_TRUE(Apply("twice", LwwDelete{}).ok());
  const HlcTimestamp second = StampOf("twice");
  ASSERT_LT(first, second);
  ASSERT_EQ(IndexRows(), 3u);

  // Through the first delete of "twice": its row names an older stamp.
  EXPECT_EQ(Collect(first), 0u);
  EXPECT_EQ(GetLww("again"), std::optional<std::string>("back"));
  EXPECT_NE(*store_->KeyDigest("twice"), 0u);
  EXPECT_EQ(IndexRows(), 1u);  // the stale rows are gone
  EXPECT_EQ(Collect(second), 1u);
  EXPECT_EQ(*store_->KeyDigest("twice"), 0u);
  EXPECT_EQ(GetLww("again"), std::optional<std::string>("back"));
}

TEST_F(TombstoneTest, AJoinedTombstoneIsIndexedAndCollectedWhateverItsWriter) {
  // Writers below and above this node's id, the highest id among them.
  const ReplicaId ids[] = {1, store_->node_id() ^ 0x5a5a, UINT64_MAX};
  std::vector<HlcTimestamp> stamps;
  for (ReplicaId id : ids) {
    stamps.push_back(store_->clock()->Now());
    const std::string key = "k" + std::to_string(stamps.size());
    ASSERT_OK(JoinOne(key, LwwRegister(stamps.back(), id, std::nullopt)));
    // Joined again: nothing changes, no second row.
    ASSERT_OK(JoinOne(key, LwwRegister(stamps.back(), id, std::nullopt)));
  }
  EXPECT_EQ(IndexRows(), 3u);
  EXPECT_EQ(Collect(Before(stamps[0])), 0u);
  EXPECT_EQ(Collect(stamps[1]), 2u);
  EXPECT_EQ(*store_->KeyCount(), 1u);
  EXPECT_EQ(Collect(stamps[2]), 1u);
  EXPECT_EQ(*store_->KeyCount(), 0u);
}

TEST_F(TombstoneTest, AKeyHoldingAnotherTypeKeepsItsTombstone) {
  ASSERT_TRUE(Apply("k", SetAdd{{"a"}}).ok());
  const HlcTimestamp stamp = store_->clock()->Now();
  const ReplicaId other = store_->node_id() ^ 1;
  ASSERT_OK(JoinOne("k", LwwRegister(stamp, other, std::nullopt)));
  const uint64_t digest = *store_->KeyDigest("k");
  EXPECT_EQ(Collect(stamp), 0u);
  EXPECT_EQ(*store_->KeyDigest("k"), digest);
  EXPECT_TRUE(*store_->SetContains("k", "a"));
}

TEST_F(TombstoneTest, CollectionVisitsAtMostTheLimit) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Apply("k" + std::to_string(i), LwwDelete{}).ok());
  const HlcTimestamp all = store_->clock()->Now();
  EXPECT_EQ(Collect(all, 2), 2u);
  EXPECT_EQ(*store_->KeyCount(), 3u);
  EXPECT_EQ(Collect(all, 2), 2u);
  EXPECT_EQ(Collect(all, 2), 1u);
  EXPECT_EQ(*store_->KeyCount(), 0u);
  EXPECT_EQ(Collect(all, 2), 0u);
}

// A directory of format 3 has tombstones but no index: the open indexes
// them, and they are collected as any other.
TEST_F(TombstoneTest, DirOfFormat3GetsItsTombstonesIndexedAtOpen) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Apply("d" + std::to_string(i), LwwDelete{}).ok());
  ASSERT_TRUE(Apply("v", LwwSet{"x"}).ok());
  ASSERT_TRUE(Apply("s", SetAdd{{"a"}}).ok());
  EditRows([](rocksdb::DB* db, const auto& families) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, families[0]));
    const std::string prefix = storage_keys::kMetaTombstonePrefix;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      ASSERT_TRUE(db->Delete({}, families[0], it->key()).ok());
    }
    ASSERT_TRUE(db->Put({}, families[0], storage_keys::kMetaFormat, std::string(1, '\x03')).ok());
  });
  Reopen();
  EXPECT_EQ(IndexRows(), 3u);
  EXPECT_EQ(Collect(store_->clock()->Now()), 3u);
  EXPECT_EQ(*store_->KeyCount(), 2u);
  store_.reset();
  EditRaw(dir_.Sub("db"), [](rocksdb::DB* db, const auto& families) {
    std::string format;
    ASSERT_TRUE(db->Get({}, families[0], storage_keys::kMetaFormat, &format).ok());
    EXPECT_EQ(format, std::string(1, static_cast<char>(storage_keys::kDiskFormat)));
  });
}

// The greatest counter of this node's dots in the set or register at `key`.
uint64_t MaxOwnCounter(Store& store, std::string_view key, CrdtType type) {
  auto state = store.Get(key, type);
  EXPECT_TRUE(state.ok() && state->has_value()) << key;
  if (!state.ok() || !state->has_value()) return 0;
  if (type == CrdtType::kOrSet) return std::get<OrSet>(**state).context().MaxCounter(store.node_id());
  return std::get<MvRegister>(**state).context().MaxCounter(store.node_id());
}

TEST_F(TombstoneTest, AnEmptiedSetIsCollectedOnceTheBoundPassesItsEmptying) {
  ASSERT_TRUE(Apply("s", SetAdd{{"a", "b"}}).ok());
  ASSERT_TRUE(Apply("s", SetRemove{{"a"}}).ok());
  ASSERT_TRUE(Apply("live", SetAdd{{"x"}}).ok());
  const HlcTimestamp before = store_->clock()->Now();
  ASSERT_TRUE(Apply("s", SetRemove{{"b"}}).ok());
  const HlcTimestamp after = store_->clock()->Now();
  ASSERT_EQ(*store_->KeyCount(), 2u);

  EXPECT_EQ(Collect(before), 0u);
  EXPECT_NE(*store_->KeyDigest("s"), 0u);
  EXPECT_EQ(Collect(after), 1u);
  EXPECT_EQ(*store_->KeyDigest("s"), 0u);
  EXPECT_TRUE(store_->GetStates("s")->empty());
  EXPECT_EQ(*store_->KeyCount(), 1u);
  EXPECT_EQ(Members("live"), std::vector<std::string>{"x"});
  // Nothing is left to visit: the index rows went with the key.
  EXPECT_EQ(Collect(store_->clock()->Now()), 0u);
}

TEST_F(TombstoneTest, AnEmptiedRegisterIsCollectedAndASetWrittenAgainIsKept) {
  ASSERT_TRUE(Apply("r", MvWrite{"v", {}}).ok());
  auto reg = store_->Get("r", CrdtType::kMvRegister);
  ASSERT_TRUE(reg.ok() && reg->has_value());
  ASSERT_TRUE(Apply("r", MvClear{std::get<MvRegister>(**reg).context()}).ok());
  ASSERT_TRUE(Apply("s", SetAdd{{"a"}}).ok());
  ASSERT_TRUE(Apply("s", SetRemove{{"a"}}).ok());
  ASSERT_TRUE(Apply("s", SetAdd{{"a"}}).ok());  // live again
  EXPECT_EQ(Collect(store_->clock()->Now()), 1u);
  EXPECT_TRUE(store_->GetStates("r")->empty());
  EXPECT_EQ(Members("s"), std::vector<std::string>{"a"});
  // Emptied again later: collected by its new stamp only.
  const HlcTimestamp before = store_->clock()->Now();
  ASSERT_TRUE(Apply("s", SetRemove{{"a"}}).ok());
  EXPECT_EQ(Collect(before), 0u);
  EXPECT_EQ(Collect(store_->clock()->Now()), 1u);
  EXPECT_EQ(*store_->KeyCount(), 0u);
}

// A node that forgot a set numbers its next adds there above every dot it
// made before, so a node still holding the old context takes them for new.
TEST_F(TombstoneTest, ASetWrittenAgainAfterItsCollectionNeverReusesADot) {
  ASSERT_TRUE(Apply("s", SetAdd{{"a", "b", "c"}}).ok());
  ASSERT_TRUE(Apply("s", SetRemove{{"a", "b", "c"}}).ok());
  auto old = store_->Get("s", CrdtType::kOrSet);
  ASSERT_TRUE(old.ok() && old->has_value());
  const OrSet elsewhere = std::get<OrSet>(**old);  // what another node still holds
  const uint64_t made = elsewhere.context().MaxCounter(store_->node_id());
  ASSERT_EQ(made, 3u);
  ASSERT_EQ(Collect(store_->clock()->Now()), 1u);

  Reopen();  // the floor is persisted
  ASSERT_TRUE(Apply("s", SetAdd{{"d"}}).ok());
  EXPECT_GT(MaxOwnCounter(*store_, "s", CrdtType::kOrSet), made);
  // The old context joined (a repair from a node that has not collected
  // yet) removes nothing written since.
  ASSERT_OK(JoinOne("s", elsewhere));
  EXPECT_EQ(Members("s"), std::vector<std::string>{"d"});
  // And a node holding the old state keeps the new add when it joins it.
  OrSet there = elsewhere;
  auto now = store_->Get("s", CrdtType::kOrSet);
  ASSERT_TRUE(now.ok() && now->has_value());
  there.Join(std::get<OrSet>(**now));
  EXPECT_EQ(there.Elements(), std::vector<std::string>{"d"});
}

TEST_F(TombstoneTest, ARegisterWrittenAgainAfterItsCollectionNeverReusesADot) {
  ASSERT_TRUE(Apply("r", MvWrite{"1", {}}).ok());
  ASSERT_TRUE(Apply("r", MvWrite{"2", {}}).ok());
  auto reg = store_->Get("r", CrdtType::kMvRegister);
  ASSERT_TRUE(reg.ok() && reg->has_value());
  const CausalContext seen = std::get<MvRegister>(**reg).context();
  ASSERT_TRUE(Apply("r", MvClear{seen}).ok());
  auto cleared = store_->Get("r", CrdtType::kMvRegister);
  const MvRegister elsewhere = std::get<MvRegister>(**cleared);
  ASSERT_EQ(Collect(store_->clock()->Now()), 1u);

  ASSERT_TRUE(Apply("r", MvWrite{"3", {}}).ok());
  EXPECT_GT(MaxOwnCounter(*store_, "r", CrdtType::kMvRegister), seen.MaxCounter(store_->node_id()));
  MvRegister there = elsewhere;
  auto now = store_->Get("r", CrdtType::kMvRegister);
  there.Join(std::get<MvRegister>(**now));
  EXPECT_EQ(there.Values(), std::vector<std::string>{"3"});
  // A client's context read before the collection is still taken.
  ASSERT_TRUE(Apply("r", MvWrite{"4", seen}).ok());
}

// A deleted counter's key holds the counter (deleted) and the delete's
// tombstone: it goes once both are stable, and increments made afterwards
// count from the floor, so a node still holding the old counter keeps them.
TEST_F(TombstoneTest, ADeletedCounterIsCollectedAndLaterIncrementsAreKept) {
  ASSERT_TRUE(Apply("c", CounterAdd{5}).ok());
  ASSERT_TRUE(Apply("c", LwwDelete{}).ok());
  auto old = store_->Get("c", CrdtType::kCounter);
  ASSERT_TRUE(old.ok() && old->has_value());
  const PnCounter elsewhere = std::get<PnCounter>(**old);
  ASSERT_EQ(elsewhere.Value(), 0);
  const HlcTimestamp now = store_->clock()->Now();
  // The tombstone alone is stable: the counter holds the key.
  {
    auto group = store_->BeginGroup();
    StatusOr<size_t> removed = group->CollectTombstones(now, HlcTimestamp{1, 0}, 1000);
    ASSERT_TRUE(removed.ok());
    EXPECT_EQ(*removed, 0u);
    ASSERT_OK(group->Commit());
  }
  EXPECT_NE(*store_->KeyDigest("c"), 0u);
  EXPECT_EQ(Collect(store_->clock()->Now()), 1u);
  EXPECT_EQ(*store_->KeyDigest("c"), 0u);

  ASSERT_TRUE(Apply("c", CounterAdd{2}).ok());
  ASSERT_OK(JoinOne("c", elsewhere));
  auto now_state = store_->Get("c", CrdtType::kCounter);
  ASSERT_TRUE(now_state.ok() && now_state->has_value());
  EXPECT_EQ(std::get<PnCounter>(**now_state).Value(), 2);
  PnCounter there = elsewhere;
  there.Join(std::get<PnCounter>(**now_state));
  EXPECT_EQ(there.Value(), 2);
}

// Dropping a key (a hand-over) forgets this node's dots in it too.
TEST_F(TombstoneTest, ADroppedSetRaisesItsSegmentsFloor) {
  ASSERT_TRUE(Apply("s", SetAdd{{"a", "b"}}).ok());
  const uint64_t digest = *store_->KeyDigest("s");
  {
    auto group = store_->BeginGroup();
    StatusOr<bool> dropped = group->Drop("s", digest);
    ASSERT_TRUE(dropped.ok() && *dropped);
    ASSERT_OK(group->Commit());
  }
  ASSERT_TRUE(Apply("s", SetAdd{{"c"}}).ok());
  EXPECT_GT(MaxOwnCounter(*store_, "s", CrdtType::kOrSet), 2u);
}

// A directory of format 4 has emptied sets but no index: the open indexes
// them, and they are collected as any other.
TEST_F(TombstoneTest, DirOfFormat4GetsItsEmptiedSetsIndexedAtOpen) {
  ASSERT_TRUE(Apply("s", SetAdd{{"a"}}).ok());
  ASSERT_TRUE(Apply("s", SetRemove{{"a"}}).ok());
  ASSERT_TRUE(Apply("live", SetAdd{{"a"}}).ok());
  EditRows([](rocksdb::DB* db, const auto& families) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, families[0]));
    for (const std::string prefix :
         {storage_keys::kMetaEmptiedPrefix, storage_keys::kMetaEmptiedAtPrefix}) {
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        ASSERT_TRUE(db->Delete({}, families[0], it->key()).ok());
      }
    }
    ASSERT_TRUE(db->Put({}, families[0], storage_keys::kMetaFormat, std::string(1, '\x04')).ok());
  });
  Reopen();
  EXPECT_EQ(Collect(store_->clock()->Now()), 1u);
  EXPECT_EQ(*store_->KeyCount(), 1u);
}

TEST_F(TombstoneTest, TheCheckpointBoundsTheLogsStampsAndSurvivesAReopen) {
  EXPECT_EQ(store_->LastCheckpoint().seq, 0u);
  ASSERT_TRUE(Apply("a", LwwSet{"1"}).ok());
  ASSERT_TRUE(Apply("b", SetAdd{{"x"}}).ok());
  const LogCheckpoint point = store_->LastCheckpoint();
  EXPECT_EQ(point.seq, store_->LastSeq());
  auto log = store_->ReadLog(0, 100, 1 << 20);
  ASSERT_TRUE(log.ok());
  for (const LogEntry& e : *log) EXPECT_LE(e.timestamp, point.stamp) << e.seq;
  ASSERT_TRUE(Apply("c", LwwSet{"2"}).ok());
  EXPECT_LT(point.stamp, StampOf("c"));
  const LogCheckpoint later = store_->LastCheckpoint();
  Reopen();
  EXPECT_EQ(store_->LastCheckpoint().seq, later.seq);
  EXPECT_EQ(store_->LastCheckpoint().stamp, later.stamp);
}

}  // namespace
}  // namespace geokv::testing

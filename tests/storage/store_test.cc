// The RocksDB store: identity, groups, each type's rows, the log, errors.

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include "crdt/codec.h"
#include "storage/keys.h"
#include "storage/store.h"
#include "tests/storage/store_fixture.h"

namespace geokv::testing {
namespace {

TEST_F(StoreTest, IdentityPersistsAndAWipedDirGetsANewOne) {
  ReplicaId first = store_->node_id();
  EXPECT_NE(first, 0u);
  Reopen();
  EXPECT_EQ(store_->node_id(), first);
  store_.reset();
  std::filesystem::remove_all(dir_.Sub("db"));
  Reopen();
  EXPECT_NE(store_->node_id(), first);
}

// A directory of disk format 1 (without the "tree" family) is refused by its
// format, and left as it was: opening creates no family in it.
TEST_F(StoreTest, DirOfAnOlderFormatIsRefusedUntouched) {
  store_.reset();
  const std::string dir = dir_.Sub("old");
  {
    rocksdb::Options options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    rocksdb::DB* raw;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}},
        {storage_keys::kStateFamily, {}},
        {storage_keys::kLogFamily, {}}};
    ASSERT_TRUE(rocksdb::DB::Open(options, dir, families, &handles, &raw).ok());
    ASSERT_TRUE(raw->Put({}, handles[0], storage_keys::kMetaFormat, std::string(1, '\x01')).ok());
    for (auto* h : handles) raw->DestroyColumnFamilyHandle(h);
    delete raw;
  }
  auto opened = Store::Open(dir, StoreOptions());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(opened.status().message().find(
                "data dir format 1 is not supported: this build opens format 5 and migrates "
                "formats 2 to 4"),
            std::string::npos)
      << opened.status().ToString();
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies({}, dir, &names).ok());
  EXPECT_EQ(names.size(), 3u);

  // A directory of this layout with another format byte, older or newer, is
  // refused the same way.
  for (const char format : {'\x01', '\x06'}) {
    std::filesystem::remove_all(dir_.Sub("db"));
    Reopen();
    EditRows([format](rocksdb::DB* db, const auto& families) {
      ASSERT_TRUE(db->Put({}, families[0], storage_keys::kMetaFormat, std::string(1, format)).ok());
    });
    opened = Store::Open(dir_.Sub("db"), StoreOptions());
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.status().code(), Status::Code::kFailedPrecondition);
    EXPECT_NE(opened.status().message().find("data dir format " + std::to_string(format)),
              std::string::npos)
        << opened.status().ToString();
  }
}

// A directory of format 2 (key index rows without digests, no key count
// row) is migrated at open: every key's digest is rebuilt from its rows.
TEST_F(StoreTest, DirOfFormat2IsMigratedAtOpen) {
  ASSERT_TRUE(Apply("lww", LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply("gone", LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply("gone", LwwDelete{}).ok());
  std::vector<std::string> many;
  for (int i = 0; i < 500; ++i) many.push_back("e" + std::to_string(i));
  ASSERT_TRUE(Apply("set", SetAdd{many}).ok());
  ASSERT_TRUE(Apply("set", SetRemove{{"e7"}}).ok());
  ASSERT_TRUE(Apply("count", CounterAdd{3}).ok());
  ASSERT_TRUE(Apply("mv", MvWrite{"x", {}}).ok());
  {
    auto group = store_->BeginGroup();
    for (int i = 0; i < 30000; ++i) {  // more than one migration batch
      ASSERT_TRUE(group->Mutate("k" + std::to_string(i), LwwSet{"v"}).ok()) << i;
    }
    ASSERT_OK(group->Commit());
  }
  const std::vector<uint64_t> digests = store_->TreeDigests();
  const uint64_t count = *store_->KeyCount();
  ASSERT_EQ(count, 30005u);
  std::vector<std::vector<KeyDigest>> segments;
  for (size_t s = 0; s < kTreeSegments; ++s) segments.push_back(*store_->SegmentKeys(s));
  const uint64_t set_digest = *store_->KeyDigest("set");
  ASSERT_NE(set_digest, 0u);

  // Format 2 as it was written: empty key index rows, no count row.
  EditRows([](rocksdb::DB* db, const auto& families) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, families[3]));
    const std::string prefix = storage_keys::kTreeKeyIndex;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      ASSERT_TRUE(db->Put({}, families[3], it->key(), "").ok());
    }
    ASSERT_TRUE(db->Delete({}, families[3], storage_keys::kTreeKeyCountRow).ok());
    ASSERT_TRUE(db->Put({}, families[0], storage_keys::kMetaFormat, std::string(1, '\x02')).ok());
  });
  Reopen();
  EXPECT_EQ(store_->TreeDigests(), digests);
  EXPECT_EQ(*store_->KeyCount(), count);
  EXPECT_EQ(*store_->KeyDigest("set"), set_digest);
  for (size_t s = 0; s < kTreeSegments; ++s) {
    ASSERT_EQ(*store_->SegmentKeys(s), segments[s]) << s;
  }
  // It is of the new format now, and keeps its digests up to date.
  ASSERT_TRUE(Apply("set", SetRemove{{"e8"}}).ok());
  EXPECT_NE(*store_->KeyDigest("set"), set_digest);
  store_.reset();
  EditRaw(dir_.Sub("db"), [](rocksdb::DB* db, const auto& families) {
    std::string format;
    ASSERT_TRUE(db->Get({}, families[0], storage_keys::kMetaFormat, &format).ok());
    EXPECT_EQ(format, std::string(1, static_cast<char>(storage_keys::kDiskFormat)));
  });
  Reopen();
  EXPECT_EQ(*store_->KeyCount(), count);
}

TEST_F(StoreTest, SecondOpenOfTheSameDirFails) {
  auto second = Store::Open(dir_.Sub("db"), StoreOptions());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kIOError) << second.status().ToString();
}

TEST_F(StoreTest, LwwSetGetDelete) {
  ASSERT_TRUE(Apply("k", LwwSet{"v1"}).ok());
  ASSERT_TRUE(Apply("k", LwwSet{"v2"}).ok());
  EXPECT_EQ(GetLww("k"), std::optional<std::string>("v2"));
  ASSERT_TRUE(Apply("k", LwwDelete{}).ok());
  EXPECT_EQ(GetLww("k"), std::nullopt);
  EXPECT_TRUE(store_->LiveTypes("k")->empty());
  // The tombstone is kept: it must beat older writes still in flight.
  auto reg = store_->Get("k", CrdtType::kLww);
  ASSERT_TRUE(reg.ok() && reg->has_value());
}

TEST_F(StoreTest, UncommittedGroupIsInvisibleAndDiscarded) {
  {
    auto group = store_->BeginGroup();
    ASSERT_TRUE(group->Mutate("k", LwwSet{"v"}).ok());
    EXPECT_EQ(GetLww("k"), std::nullopt);
  }
  EXPECT_EQ(GetLww("k"), std::nullopt);
  EXPECT_EQ(store_->LastSeq(), 0u);
  // The sequence the discarded group used is assigned again.
  auto seq = Apply("k", LwwSet{"w"});
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 1u);
}

TEST_F(StoreTest, OperationsInAGroupSeeEachOther) {
  auto group = store_->BeginGroup();
  auto s1 = group->Mutate("s", SetAdd{{"a"}});
  auto s2 = group->Mutate("s", SetAdd{{"b"}});
  auto s3 = group->Mutate("s", SetRemove{{"a"}});
  auto c1 = group->Mutate("c", CounterAdd{5});
  auto c2 = group->Mutate("c", CounterAdd{-2});
  ASSERT_TRUE(s1.ok() && s2.ok() && s3.ok() && c1.ok() && c2.ok());
  EXPECT_EQ(*s1, 1u);
  EXPECT_EQ(*c2, 5u);
  ASSERT_OK(group->Commit());
  EXPECT_EQ(Members("s"), (std::vector<std::string>{"b"}));
  EXPECT_EQ(*store_->SetSize("s"), 1u);
  auto c = store_->Get("c", CrdtType::kCounter);
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ(std::get<PnCounter>(**c).Value(), 3);
  EXPECT_EQ(store_->LastSeq(), 5u);
}

TEST_F(StoreTest, WrongTypeIsRefusedAndChangesNothing) {
  ASSERT_TRUE(Apply("k", SetAdd{{"x"}}).ok());
  auto group = store_->BeginGroup();
  auto wrong = group->Mutate("k", LwwSet{"v"});
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), Status::Code::kWrongType);
  EXPECT_EQ(wrong.status().message(), "key 'k' holds a value of type orset, not lww");
  // The group goes on; the refused operation left nothing behind.
  ASSERT_TRUE(group->Mutate("other", LwwSet{"v"}).ok());
  ASSERT_OK(group->Commit());
  EXPECT_EQ(GetLww("k"), std::nullopt);
  EXPECT_EQ(store_->LastSeq(), 2u);
  EXPECT_EQ(*store_->LiveTypes("k"), std::vector<CrdtType>{CrdtType::kOrSet});
  // Once the set is empty the key may take another type.
  ASSERT_TRUE(Apply("k", SetRemove{{"x"}}).ok());
  ASSERT_TRUE(Apply("k", LwwSet{"now a register"}).ok());
  EXPECT_EQ(GetLww("k"), std::optional<std::string>("now a register"));
}

TEST_F(StoreTest, RemoteJoinOfAnotherTypeKeepsBothLive) {
  ASSERT_TRUE(Apply("k", LwwSet{"v"}).ok());
  OrSet remote;
  OrSet delta = remote.Add("e", 77);
  auto group = store_->BeginGroup();
  ASSERT_OK(group->Join("k", delta));
  ASSERT_OK(group->Commit());
  EXPECT_EQ(*store_->LiveTypes("k"), (std::vector<CrdtType>{CrdtType::kLww, CrdtType::kOrSet}));
  EXPECT_EQ(store_->LastSeq(), 1u);  // joins are not logged
}

TEST_F(StoreTest, SetMembersArePaged) {
  std::vector<std::string> all;
  for (int i = 0; i < 25; ++i) all.push_back("e" + std::to_string(100 + i));
  ASSERT_TRUE(Apply("s", SetAdd{all}).ok());
  std::vector<std::string> seen;
  std::optional<std::string> cursor;
  for (int pages = 0;; ++pages) {
    ASSERT_LT(pages, 10);
    auto page = store_->SetMembers("s", cursor, 10);
    ASSERT_TRUE(page.ok());
    seen.insert(seen.end(), page->elements.begin(), page->elements.end());
    if (!page->more) break;
    cursor = page->elements.back();
  }
  EXPECT_EQ(seen, all);
  EXPECT_TRUE(*store_->SetContains("s", "e107"));
  EXPECT_FALSE(*store_->SetContains("s", "e99"));
  EXPECT_EQ(*store_->SetSize("s"), 25u);
  // Another key's elements never leak into the page.
  ASSERT_TRUE(Apply("s2", SetAdd{{"zzz"}}).ok());
  auto page = store_->SetMembers("s", std::string("e124"), 10);
  EXPECT_TRUE(page->elements.empty());
  EXPECT_FALSE(page->more);
}

TEST_F(StoreTest, EmptyElementListsAreInvalid) {
  auto s = Apply("s", SetAdd{});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->LastSeq(), 0u);
}

TEST_F(StoreTest, NoOpsAreNotLogged) {
  ASSERT_TRUE(Apply("s", SetAdd{{"a"}}).ok());
  auto seq = Apply("s", SetRemove{{"absent"}});
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 0u);
  seq = Apply("c", CounterAdd{0});
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 0u);
  EXPECT_EQ(store_->LastSeq(), 1u);
}

TEST_F(StoreTest, CounterOverflowIsRefused) {
  ASSERT_TRUE(Apply("c", CounterAdd{std::numeric_limits<int64_t>::max()}).ok());
  auto s = Apply("c", CounterAdd{1});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
  auto c = store_->Get("c", CrdtType::kCounter);
  EXPECT_EQ(std::get<PnCounter>(**c).Value(), std::numeric_limits<int64_t>::max());
}

TEST_F(StoreTest, MvSiblingsAreBounded) {
  StoreOptions options;
  options.max_siblings = 3;
  Reopen(options);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Apply("m", MvWrite{"v" + std::to_string(i), {}}).ok());
  auto refused = Apply("m", MvWrite{"v3", {}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kTooLarge);
  // A write with the context of a read merges them into one.
  auto reg = store_->Get("m", CrdtType::kMvRegister);
  ASSERT_TRUE(Apply("m", MvWrite{"merged", std::get<MvRegister>(**reg).context()}).ok());
  reg = store_->Get("m", CrdtType::kMvRegister);
  EXPECT_EQ(std::get<MvRegister>(**reg).Values(), std::vector<std::string>{"merged"});
}

TEST_F(StoreTest, LogHoldsEveryLocalDeltaInOrder) {
  ASSERT_TRUE(Apply("a", LwwSet{"1"}).ok());
  ASSERT_TRUE(Apply("b", SetAdd{{"x", "y"}}).ok());
  ASSERT_TRUE(Apply("c", CounterAdd{-4}).ok());
  auto log = store_->ReadLog(0, 100, 1 << 20);
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*log)[i].seq, i + 1);
    EXPECT_EQ((*log)[i].origin, store_->node_id());
  }
  EXPECT_EQ((*log)[1].key, "b");
  EXPECT_EQ(std::get<OrSet>((*log)[1].delta).Elements(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(std::get<PnCounter>((*log)[2].delta).Value(), -4);
  // Limits: by count, and by bytes (at least one entry).
  EXPECT_EQ(store_->ReadLog(0, 2, 1 << 20)->size(), 2u);
  EXPECT_EQ(store_->ReadLog(0, 100, 1)->size(), 1u);
  EXPECT_EQ(store_->ReadLog(1, 100, 1 << 20)->front().seq, 2u);
  EXPECT_TRUE(store_->ReadLog(3, 100, 1 << 20)->empty());
}

TEST_F(StoreTest, TrimmedLogKeepsItsSequenceAcrossRestarts) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Apply("k", LwwSet{std::to_string(i)}).ok());
  ASSERT_OK(store_->TrimLog(3));
  EXPECT_EQ(store_->TrimmedThrough(), 3u);
  auto trimmed = store_->ReadLog(1, 10, 1 << 20);
  ASSERT_FALSE(trimmed.ok());
  EXPECT_EQ(trimmed.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(store_->ReadLog(3, 10, 1 << 20)->size(), 2u);
  EXPECT_FALSE(store_->TrimLog(6).ok());
  ASSERT_OK(store_->TrimLog(5));
  Reopen();
  EXPECT_EQ(store_->TrimmedThrough(), 5u);
  EXPECT_EQ(store_->LastSeq(), 5u);
  auto seq = Apply("k", LwwSet{"after"});
  EXPECT_EQ(*seq, 6u);
}

TEST_F(StoreTest, AppliedPositionsPersist) {
  auto group = store_->BeginGroup();
  group->RecordApplied(7, 10);
  group->RecordApplied(7, 4);  // lower: ignored
  group->RecordApplied(9, 2);
  ASSERT_OK(group->Commit());
  group = store_->BeginGroup();
  group->RecordApplied(7, 3);
  ASSERT_OK(group->Commit());
  group.reset();
  Reopen();
  EXPECT_EQ(store_->AppliedPositions(), (std::map<ReplicaId, uint64_t>{{7, 10}, {9, 2}}));
}

// A joined register stamped below the one held says which stamp it lost
// to; one stamped above, or of another type, says nothing.
TEST_F(StoreTest, AJoinedRegisterThatLosesSaysWhichStampItLostTo) {
  auto group = store_->BeginGroup();
  ASSERT_OK(group->Join("k", LwwRegister(HlcTimestamp{2'000, 0}, 7, std::string("held"))));
  HlcTimestamp held_above;
  ASSERT_OK(group->Join("k", LwwRegister(HlcTimestamp{1'000, 0}, 8, std::string("older")),
                        &held_above));
  EXPECT_EQ(held_above, (HlcTimestamp{2'000, 0}));
  HlcTimestamp none;
  ASSERT_OK(group->Join("k", LwwRegister(HlcTimestamp{3'000, 0}, 8, std::string("newer")),
                        &none));
  EXPECT_TRUE(none.IsZero());
  ASSERT_OK(group->Join("c", PnCounter().Increment(9, 1), &none));
  EXPECT_TRUE(none.IsZero());
  ASSERT_OK(group->Commit());
  group.reset();
  EXPECT_EQ(GetLww("k"), std::optional<std::string>("newer"));
}

TEST_F(StoreTest, LocalWriteBeatsAFutureStampEvenAfterRestart) {
  ManualClock wall(1'000'000);
  HybridClock clock(&wall);
  StoreOptions options;
  options.clock = &clock;
  Reopen(options);
  LwwRegister future(HlcTimestamp{5'000'000, 0}, 42, "from the future");
  auto group = store_->BeginGroup();
  ASSERT_OK(group->Join("k", future));
  ASSERT_OK(group->Commit());
  group.reset();
  EXPECT_EQ(GetLww("k"), std::optional<std::string>("from the future"));
  auto stamp = [this] {
    return std::get<LwwRegister>(**store_->Get("k", CrdtType::kLww)).timestamp();
  };
  ASSERT_TRUE(Apply("k", LwwSet{"local"}).ok());
  EXPECT_LT(future.timestamp(), stamp());
  EXPECT_EQ(GetLww("k"), std::optional<std::string>("local"));
  // A restarted node with a fresh clock still writes past the stored stamp.
  HlcTimestamp before_restart = stamp();
  HybridClock fresh(&wall);
  options.clock = &fresh;
  Reopen(options);
  ASSERT_TRUE(Apply("k", LwwSet{"after restart"}).ok());
  EXPECT_LT(before_restart, stamp());
  EXPECT_EQ(GetLww("k"), std::optional<std::string>("after restart"));
}

TEST_F(StoreTest, UndecodableRowIsCorruptionNamingTheKey) {
  ASSERT_TRUE(Apply("bad\x01key", LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply("set", SetAdd{{"elem"}}).ok());
  EditRows([](rocksdb::DB* db, const auto& families) {
    rocksdb::WriteOptions wo;
    ASSERT_TRUE(db->Put(wo, families[1], storage_keys::ObjectRow("bad\x01key", CrdtType::kLww),
                        "garbage").ok());
    ASSERT_TRUE(db->Put(wo, families[1], storage_keys::ElementRow("set", "elem"), "junk!").ok());
  });
  Reopen();
  auto v = store_->Get("bad\x01key", CrdtType::kLww);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(v.status().IsCorruption());
  EXPECT_NE(v.status().message().find("key 'bad\\x01key' (lww)"), std::string::npos)
      << v.status().ToString();
  auto set = store_->Get("set", CrdtType::kOrSet);
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("key 'set' (orset) element 'elem'"), std::string::npos)
      << set.status().ToString();
  // A write that must read the bad row fails and leaves the log as it was.
  auto s = Apply("set", SetRemove{{"elem"}});
  EXPECT_TRUE(!s.ok() && s.status().IsCorruption());
  EXPECT_EQ(store_->LastSeq(), 2u);
}

}  // namespace
}  // namespace geokv::testing

namespace geokv::testing {
namespace {

// The live types that guard WRONG_TYPE are cached in memory; whatever the
// cache's size, a refused, discarded or committed write leaves them true.
class LiveTypesTest : public StoreTest, public ::testing::WithParamInterface<size_t> {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.key_facts_cache_bytes = GetParam();
    Reopen(options);
  }
};

TEST_P(LiveTypesTest, FollowEveryWrite) {
  for (int i = 0; i < 50; ++i) {
    std::string key = "k" + std::to_string(i % 7);
    {
      auto discarded = store_->BeginGroup();
      auto s = discarded->Mutate(key, CounterAdd{1});
      ASSERT_TRUE(s.ok() || s.status().code() == Status::Code::kWrongType);
    }
    auto types = store_->LiveTypes(key);
    ASSERT_TRUE(types.ok());
    if (types->empty()) {
      ASSERT_TRUE(Apply(key, SetAdd{{"e"}}).ok());
    } else {
      ASSERT_EQ(*types, std::vector<CrdtType>{CrdtType::kOrSet});
      EXPECT_EQ(Apply(key, LwwSet{"v"}).status().code(), Status::Code::kWrongType);
      ASSERT_TRUE(Apply(key, SetRemove{{"e"}}).ok());
      EXPECT_TRUE(store_->LiveTypes(key)->empty());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CacheSizes, LiveTypesTest,
                         ::testing::Values(size_t{0}, size_t{200}, size_t{32} << 20));

}  // namespace
}  // namespace geokv::testing

namespace geokv::testing {
namespace {

TEST_F(StoreTest, CounterTotalsThatWouldWrapAreRefused) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (int64_t d : {kMax, -kMax, kMax, -kMax}) ASSERT_TRUE(Apply("c", CounterAdd{d}).ok()) << d;
  // The value (0 + kMax) fits, but this node's added total would pass 2^64.
  auto s = Apply("c", CounterAdd{kMax});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(std::get<PnCounter>(**store_->Get("c", CrdtType::kCounter)).Value(), 0);
}

TEST_F(StoreTest, MvContextWithWritesThisNodeNeverMadeIsRefused) {
  ASSERT_TRUE(Apply("m", MvWrite{"v", {}}).ok());
  CausalContext forged;
  forged.Insert(Dot{store_->node_id(), 1000});
  auto s = Apply("m", MvWrite{"w", forged});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
  // A context read from another key is refused the same way.
  ASSERT_TRUE(Apply("other", MvWrite{"a", {}}).ok());
  ASSERT_TRUE(Apply("other", MvWrite{"b", {}}).ok());
  auto other = store_->Get("other", CrdtType::kMvRegister);
  s = Apply("m", MvWrite{"w", std::get<MvRegister>(**other).context()});
  EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
  auto reg = store_->Get("m", CrdtType::kMvRegister);
  EXPECT_EQ(std::get<MvRegister>(**reg).Values(), std::vector<std::string>{"v"});
}

}  // namespace
}  // namespace geokv::testing

namespace geokv::testing {
namespace {

// Large values span many Cap'n Proto segments; they must round-trip through
// the store and its log like small ones.
TEST_F(StoreTest, LargeValuesAndLargeDeltasRoundTrip) {
  std::string big(8 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 % 251);
  ASSERT_TRUE(Apply("big", LwwSet{big}).ok());
  EXPECT_EQ(GetLww("big"), std::optional<std::string>(big));
  std::vector<std::string> elements;
  for (int i = 0; i < 20000; ++i) elements.push_back("element-" + std::to_string(i));
  ASSERT_TRUE(Apply("set", SetAdd{elements}).ok());
  EXPECT_EQ(*store_->SetSize("set"), 20000u);
  auto log = store_->ReadLog(0, 10, size_t{64} << 20);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ(log->size(), 2u);
  EXPECT_EQ(std::get<LwwRegister>((*log)[0].delta).value(), std::optional<std::string>(big));
  EXPECT_EQ(std::get<OrSet>((*log)[1].delta).size(), 20000u);
  // The whole set as anti-entropy would send it, joined into a fresh store.
  auto full = store_->Get("set", CrdtType::kOrSet);
  ASSERT_TRUE(full.ok() && full->has_value());
  StatusOr<Crdt> decoded = DecodeCrdt(EncodeCrdt(**full));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  store_.reset();
  std::filesystem::remove_all(dir_.Sub("db"));
  Reopen();
  auto group = store_->BeginGroup();
  ASSERT_OK(group->Join("set", *decoded));
  ASSERT_OK(group->Commit());
  EXPECT_EQ(*store_->SetSize("set"), 20000u);
  EXPECT_EQ(std::get<OrSet>(**store_->Get("set", CrdtType::kOrSet)), std::get<OrSet>(*decoded));
}

}  // namespace
}  // namespace geokv::testing

namespace geokv::testing {
namespace {

constexpr ReplicaId kRemote = 77;

// The counter at `key` as stored, bottom when absent.
PnCounter CounterAt(Store& store, std::string_view key) {
  auto c = store.Get(key, CrdtType::kCounter);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  if (!c.ok() || !c->has_value()) return PnCounter();
  return std::get<PnCounter>(**c);
}

TEST_F(StoreTest, DeletedCounterKeyIsReusableAsAString) {
  ASSERT_TRUE(Apply("c", CounterAdd{5}).ok());
  ASSERT_TRUE(Apply("c", CounterAdd{-2}).ok());
  auto del = Apply("c", LwwDelete{});
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  EXPECT_TRUE(store_->LiveTypes("c")->empty());
  EXPECT_FALSE(CounterAt(*store_, "c").IsLive());
  // The reset is logged, to reach the other replicas, before the tombstone.
  auto log = store_->ReadLog(2, 10, 1 << 20);
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 2u);
  EXPECT_EQ(std::get<PnCounter>((*log)[0].delta).entries().at(store_->node_id()),
            (PnCounter::Totals{5, 2, 5, 2}));
  EXPECT_TRUE(std::holds_alternative<LwwRegister>((*log)[1].delta));
  EXPECT_EQ(*del, 4u);

  ASSERT_TRUE(Apply("c", LwwSet{"now a string"}).ok());
  EXPECT_EQ(GetLww("c"), std::optional<std::string>("now a string"));
  ASSERT_TRUE(Apply("c", LwwDelete{}).ok());
  // A counter again, from 0; the floors survive a restart.
  ASSERT_TRUE(Apply("c", CounterAdd{3}).ok());
  Reopen();
  EXPECT_EQ(CounterAt(*store_, "c").Value(), 3);
  EXPECT_EQ(*store_->LiveTypes("c"), std::vector<CrdtType>{CrdtType::kCounter});
}

TEST_F(StoreTest, StrayCounterDeltaOnARegisterKeyCanBeDeleted) {
  ASSERT_TRUE(Apply("k", LwwSet{"v"}).ok());
  // A concurrent increment of the same key elsewhere.
  ASSERT_OK(JoinOne("k", PnCounter().Increment(kRemote, 3)));
  EXPECT_EQ(*store_->LiveTypes("k"), (std::vector<CrdtType>{CrdtType::kLww, CrdtType::kCounter}));
  EXPECT_EQ(Apply("k", LwwSet{"w"}).status().code(), Status::Code::kWrongType);
  auto del = Apply("k", LwwDelete{});
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  EXPECT_TRUE(store_->LiveTypes("k")->empty());
  auto set = Apply("k", LwwSet{"w"});
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(GetLww("k"), std::optional<std::string>("w"));
}

TEST_F(StoreTest, DeleteKeepsAConcurrentIncrement) {
  PnCounter remote;
  ASSERT_OK(JoinOne("c", remote.Increment(kRemote, 4)));
  ASSERT_TRUE(Apply("c", CounterAdd{5}).ok());
  ASSERT_TRUE(Apply("c", LwwDelete{}).ok());
  // The increment the delete saw, delivered again, stays deleted.
  ASSERT_OK(JoinOne("c", remote));
  EXPECT_TRUE(store_->LiveTypes("c")->empty());
  // One it did not see comes back alone.
  ASSERT_OK(JoinOne("c", remote.Increment(kRemote, 3)));
  EXPECT_EQ(*store_->LiveTypes("c"), std::vector<CrdtType>{CrdtType::kCounter});
  EXPECT_EQ(CounterAt(*store_, "c").Value(), 3);
}

TEST_F(StoreTest, ConcurrentIncrementsPastTheLimitSaturate) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  ASSERT_TRUE(Apply("c", CounterAdd{kMax}).ok());
  ASSERT_OK(JoinOne("c", PnCounter().Increment(kRemote, kMax)));
  EXPECT_EQ(CounterAt(*store_, "c").Value(), kMax);
  // Further past the limit: refused; back towards it: taken.
  EXPECT_EQ(Apply("c", CounterAdd{1}).status().code(), Status::Code::kInvalidArgument);
  ASSERT_TRUE(Apply("c", CounterAdd{-1}).ok());
  EXPECT_EQ(CounterAt(*store_, "c").Value(), kMax);
  ASSERT_TRUE(Apply("c", CounterAdd{-kMax}).ok());
  EXPECT_EQ(CounterAt(*store_, "c").Value(), kMax - 1);
}

}  // namespace
}  // namespace geokv::testing

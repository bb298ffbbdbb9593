// What a node needs to hand keys over to their new owners: one key's digest,
// the key count, and WriteGroup::Drop with its record of dropped segments.

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "storage/keys.h"
#include "storage/store.h"
#include "tests/storage/store_fixture.h"
#include "testing/test_dir.h"

namespace geokv::testing {
namespace {

namespace keys = storage_keys;

// What a Drop did: "dropped", "kept", or its error.
std::string Outcome(const StatusOr<bool>& r) {
  if (!r.ok()) return r.status().ToString();
  return *r ? "dropped" : "kept";
}

class HandoffTest : public StoreTest {
 protected:
  uint64_t Digest(const std::string& key) {
    auto d = store_->KeyDigest(key);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return d.ok() ? *d : 0;
  }

  uint64_t Count() {
    auto c = store_->KeyCount();
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? *c : 0;
  }

  std::vector<Crdt> States(const std::string& key) {
    auto s = store_->GetStates(key);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : std::vector<Crdt>();
  }

  // Drops `key` in its own group; returns whether it dropped.
  StatusOr<bool> DropOne(const std::string& key, uint64_t expected) {
    auto group = store_->BeginGroup();
    GEOKV_ASSIGN_OR_RETURN(bool dropped, group->Drop(key, expected));
    GEOKV_RETURN_IF_ERROR(group->Commit());
    return dropped;
  }

  // The digest SegmentKeys reports for `key`, or nullopt when not listed.
  std::optional<uint64_t> Listed(const std::string& key) {
    auto listed = store_->SegmentKeys(TreeSegmentOf(key));
    EXPECT_TRUE(listed.ok());
    for (const KeyDigest& k : *listed) {
      if (k.key == key) return k.digest;
    }
    return std::nullopt;
  }

  // The rows of `key` left on disk: state rows and its tree index row.
  // Closes the store and reopens it.
  size_t RowsOnDisk(const std::string& key) {
    size_t rows = 0;
    EditRows([&](rocksdb::DB* db, const std::vector<rocksdb::ColumnFamilyHandle*>& families) {
      const std::string prefix = keys::KeyPrefix(key);
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, families[1]));
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) ++rows;
      std::string value;
      if (db->Get({}, families[3], keys::TreeKeyRow(TreeSegmentOf(key), key), &value).ok()) {
        ++rows;
      }
    });
    Reopen();
    return rows;
  }

  // Every segment's digest agrees with the XOR of its keys' digests.
  void ExpectTreeConsistent() {
    const std::vector<uint64_t> digests = store_->TreeDigests();
    uint64_t listed = 0;
    for (size_t s = 0; s < kTreeSegments; ++s) {
      auto keys = store_->SegmentKeys(s);
      ASSERT_TRUE(keys.ok());
      uint64_t x = 0;
      for (const KeyDigest& k : *keys) {
        EXPECT_EQ(Digest(k.key), k.digest) << k.key;
        x ^= k.digest;
      }
      EXPECT_EQ(x, digests[s]) << "segment " << s;
      listed += keys->size();
    }
    EXPECT_EQ(Count(), listed);
  }

  // Keys named `base` + a number, all in the segment of `base` + "0".
  static std::vector<std::string> KeysOfOneSegment(const std::string& base, size_t count) {
    std::vector<std::string> out = {base + "0"};
    for (int i = 1; out.size() < count; ++i) {
      const std::string key = base + std::to_string(i);
      if (TreeSegmentOf(key) == TreeSegmentOf(out[0])) out.push_back(key);
    }
    return out;
  }

  static size_t DroppedCount(const std::vector<bool>& dropped) {
    return static_cast<size_t>(std::count(dropped.begin(), dropped.end(), true));
  }
};

TEST_F(HandoffTest, KeyDigestIsTheOneSegmentKeysReports) {
  EXPECT_EQ(Digest("absent"), 0u);
  ASSERT_TRUE(Apply("lww", LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply("gone", LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply("gone", LwwDelete{}).ok());
  ASSERT_TRUE(Apply("set", SetAdd{{"a", "b", "c"}}).ok());
  ASSERT_TRUE(Apply("set", SetRemove{{"b"}}).ok());
  ASSERT_TRUE(Apply("count", CounterAdd{-4}).ok());
  ASSERT_TRUE(Apply("mv", MvWrite{"x", {}}).ok());
  for (const std::string key : {"lww", "gone", "set", "count", "mv"}) {
    EXPECT_NE(Digest(key), 0u) << key;
    EXPECT_EQ(Listed(key), Digest(key)) << key;
  }
  // The digest changes with the state.
  const uint64_t before = Digest("set");
  ASSERT_TRUE(Apply("set", SetAdd{{"d"}}).ok());
  EXPECT_NE(Digest("set"), before);
  EXPECT_EQ(Listed("set"), Digest("set"));
}

TEST_F(HandoffTest, KeyCountCountsKeysWithState) {
  EXPECT_EQ(Count(), 0u);
  ASSERT_TRUE(Apply("a", LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply("b", SetAdd{{"x"}}).ok());
  ASSERT_TRUE(Apply("b", SetAdd{{"y"}}).ok());
  ASSERT_TRUE(Apply("ghost", SetRemove{{"x"}}).ok());  // changes nothing
  EXPECT_EQ(Count(), 2u);
  ASSERT_TRUE(Apply("a", LwwDelete{}).ok());  // the tombstone is state
  EXPECT_EQ(Count(), 2u);
  Reopen();
  EXPECT_EQ(Count(), 2u);
}

TEST_F(HandoffTest, DropRemovesEveryRowAndAJoinRestoresTheDigests) {
  ASSERT_TRUE(Apply("k", SetAdd{{"a", "b"}}).ok());
  ASSERT_TRUE(Apply("k", SetRemove{{"a"}}).ok());
  PnCounter counter;  // another type at the same key, from elsewhere
  ASSERT_OK(JoinOne("k", counter.Increment(77, 5)));
  ASSERT_TRUE(Apply("other", LwwSet{"v"}).ok());
  const std::vector<Crdt> states = States("k");
  ASSERT_EQ(states.size(), 2u);
  const uint64_t digest = Digest("k");
  const std::vector<uint64_t> digests = store_->TreeDigests();
  const uint64_t last_seq = store_->LastSeq();

  EXPECT_EQ(Outcome(DropOne("k", digest)), "dropped");
  EXPECT_TRUE(States("k").empty());
  EXPECT_TRUE(store_->LiveTypes("k")->empty());
  EXPECT_EQ(*store_->SetSize("k"), 0u);
  EXPECT_EQ(Digest("k"), 0u);
  EXPECT_EQ(Listed("k"), std::nullopt);
  EXPECT_EQ(Count(), 1u);
  EXPECT_EQ(store_->LastSeq(), last_seq);  // not logged
  std::vector<uint64_t> expected = digests;
  expected[TreeSegmentOf("k")] ^= digest;
  EXPECT_EQ(store_->TreeDigests(), expected);
  ExpectTreeConsistent();
  EXPECT_EQ(RowsOnDisk("k"), 0u);
  EXPECT_EQ(store_->TreeDigests(), expected);
  EXPECT_EQ(GetLww("other"), "v");

  auto group = store_->BeginGroup();
  for (const Crdt& s : states) ASSERT_OK(group->Join("k", s));
  ASSERT_OK(group->Commit());
  EXPECT_TRUE(States("k") == states);
  EXPECT_EQ(Digest("k"), digest);
  EXPECT_EQ(store_->TreeDigests(), digests);
  EXPECT_EQ(Count(), 2u);
  ExpectTreeConsistent();
}

TEST_F(HandoffTest, DropWithAStaleDigestChangesNothing) {
  ASSERT_TRUE(Apply("k", LwwSet{"one"}).ok());
  const uint64_t stale = Digest("k");
  ASSERT_TRUE(Apply("k", LwwSet{"two"}).ok());  // a write after the digest was read
  const std::vector<uint64_t> digests = store_->TreeDigests();
  EXPECT_EQ(Outcome(DropOne("k", stale)), "kept");
  EXPECT_EQ(Outcome(DropOne("k", 0)), "kept");
  EXPECT_EQ(GetLww("k"), "two");
  EXPECT_EQ(store_->TreeDigests(), digests);
  EXPECT_EQ(Count(), 1u);
  EXPECT_EQ(DroppedCount(store_->DroppedSegments()), 0u);
}

TEST_F(HandoffTest, DropComparesWithTheGroupsEarlierWrites) {
  ASSERT_TRUE(Apply("k", CounterAdd{1}).ok());
  const uint64_t before = Digest("k");
  {
    auto group = store_->BeginGroup();
    ASSERT_TRUE(group->Mutate("k", CounterAdd{1}).ok());
    EXPECT_EQ(Outcome(group->Drop("k", before)), "kept");
    ASSERT_OK(group->Commit());
  }
  ASSERT_EQ(States("k").size(), 1u);

  // A state joined earlier in the group, with the digest it has elsewhere.
  TestDir other_dir;
  StoreOptions options;
  options.durability = Durability::kWal;
  auto b = std::move(Store::Open(other_dir.Sub("db"), options)).value();
  {
    auto group = b->BeginGroup();
    ASSERT_TRUE(group->Mutate("fresh", SetAdd{{"x", "y"}}).ok());
    ASSERT_OK(group->Commit());
  }
  const uint64_t fresh = *b->KeyDigest("fresh");
  const std::vector<Crdt> states = *b->GetStates("fresh");
  const std::vector<uint64_t> digests = store_->TreeDigests();
  {
    auto group = store_->BeginGroup();
    for (const Crdt& s : states) ASSERT_OK(group->Join("fresh", s));
    EXPECT_EQ(Outcome(group->Drop("fresh", fresh)), "dropped");
    ASSERT_OK(group->Commit());
  }
  EXPECT_TRUE(States("fresh").empty());
  EXPECT_EQ(store_->TreeDigests(), digests);
  EXPECT_EQ(RowsOnDisk("fresh"), 0u);
}

TEST_F(HandoffTest, DropOfAnAbsentKeyChangesNothing) {
  ASSERT_TRUE(Apply("k", LwwSet{"v"}).ok());
  const std::vector<uint64_t> digests = store_->TreeDigests();
  EXPECT_EQ(Outcome(DropOne("absent", 0)), "dropped");
  EXPECT_EQ(Outcome(DropOne("absent", 1)), "kept");
  EXPECT_EQ(store_->TreeDigests(), digests);
  EXPECT_EQ(Count(), 1u);
  EXPECT_EQ(DroppedCount(store_->DroppedSegments()), 0u);
}

TEST_F(HandoffTest, DroppingASegmentsKeysZeroesItsDigest) {
  const std::vector<std::string> names = KeysOfOneSegment("key", 4);
  const size_t segment = TreeSegmentOf(names[0]);
  for (const std::string& key : names) ASSERT_TRUE(Apply(key, SetAdd{{key, "e"}}).ok());
  ASSERT_TRUE(Apply("elsewhere", LwwSet{"v"}).ok());
  ASSERT_NE(TreeSegmentOf("elsewhere"), segment);
  EXPECT_NE(store_->TreeDigests()[segment], 0u);
  EXPECT_EQ(Count(), 5u);
  auto group = store_->BeginGroup();
  for (const std::string& key : names) {
    EXPECT_EQ(Outcome(group->Drop(key, Digest(key))), "dropped") << key;
  }
  ASSERT_OK(group->Commit());
  EXPECT_EQ(store_->TreeDigests()[segment], 0u);
  EXPECT_TRUE(store_->SegmentKeys(segment)->empty());
  EXPECT_EQ(Count(), 1u);
  const std::vector<bool> dropped = store_->DroppedSegments();
  EXPECT_TRUE(dropped[segment]);
  EXPECT_EQ(DroppedCount(dropped), 1u);
  Reopen();
  EXPECT_EQ(store_->TreeDigests()[segment], 0u);
  EXPECT_EQ(Count(), 1u);
  ExpectTreeConsistent();
}

TEST_F(HandoffTest, DropSurvivesReopen) {
  ASSERT_TRUE(Apply("k", MvWrite{"v", {}}).ok());
  ASSERT_TRUE(Apply("j", MvWrite{"w", {}}).ok());
  EXPECT_EQ(Outcome(DropOne("k", Digest("k"))), "dropped");
  const std::vector<uint64_t> digests = store_->TreeDigests();
  Reopen();
  EXPECT_TRUE(States("k").empty());
  EXPECT_EQ(States("j").size(), 1u);
  EXPECT_EQ(store_->TreeDigests(), digests);
  EXPECT_EQ(Count(), 1u);
  EXPECT_TRUE(store_->DroppedSegments()[TreeSegmentOf("k")]);
  ExpectTreeConsistent();
}

TEST_F(HandoffTest, DropGoesWithAnUncommittedGroup) {
  ASSERT_TRUE(Apply("k", LwwSet{"v"}).ok());
  const std::vector<uint64_t> digests = store_->TreeDigests();
  {
    auto group = store_->BeginGroup();
    EXPECT_EQ(Outcome(group->Drop("k", Digest("k"))), "dropped");
    group->ClearDropped(3);
  }  // destroyed without Commit()
  EXPECT_EQ(GetLww("k"), "v");
  EXPECT_EQ(store_->TreeDigests(), digests);
  EXPECT_EQ(DroppedCount(store_->DroppedSegments()), 0u);
}

// The live-types cache must not remember the dropped key's type: a write of
// another type is no longer WRONG_TYPE.
TEST_F(HandoffTest, DroppedKeyTakesAnotherType) {
  ASSERT_TRUE(Apply("k", LwwSet{"v"}).ok());
  EXPECT_EQ(Apply("k", CounterAdd{1}).status().code(), Status::Code::kWrongType);
  EXPECT_EQ(Outcome(DropOne("k", Digest("k"))), "dropped");
  ASSERT_TRUE(Apply("k", CounterAdd{1}).ok());
  EXPECT_EQ(*store_->LiveTypes("k"), std::vector<CrdtType>{CrdtType::kCounter});

  // Within one group too.
  auto group = store_->BeginGroup();
  EXPECT_EQ(Outcome(group->Drop("k", Digest("k"))), "dropped");
  ASSERT_TRUE(group->Mutate("k", SetAdd{{"x"}}).ok());
  ASSERT_OK(group->Commit());
  EXPECT_EQ(*store_->LiveTypes("k"), std::vector<CrdtType>{CrdtType::kOrSet});
  EXPECT_EQ(Members("k"), std::vector<std::string>{"x"});
  ExpectTreeConsistent();
}

TEST_F(HandoffTest, VouchedSegmentsAreReplacedAndPersisted) {
  EXPECT_EQ(store_->VouchedSegments(), std::nullopt);
  std::vector<bool> vouched(kTreeSegments, true);
  vouched[3] = vouched[kTreeSegments - 1] = false;
  {
    auto group = store_->BeginGroup();  // a group of nothing else
    group->SetVouchedSegments(vouched);
    ASSERT_OK(group->Commit());
  }
  EXPECT_EQ(store_->VouchedSegments(), vouched);
  Reopen();
  EXPECT_EQ(store_->VouchedSegments(), vouched);
  vouched[3] = true;
  {
    auto group = store_->BeginGroup();
    ASSERT_TRUE(group->Mutate("k", LwwSet{"v"}).ok());
    group->SetVouchedSegments(vouched);
    ASSERT_OK(group->Commit());
  }
  Reopen();
  EXPECT_EQ(store_->VouchedSegments(), vouched);
}

TEST_F(HandoffTest, DroppedSegmentsAreSetClearedAndPersisted) {
  EXPECT_EQ(store_->DroppedSegments(), std::vector<bool>(kTreeSegments, false));
  const std::string a = "a";
  std::string b = "b0";
  for (int i = 1; TreeSegmentOf(b) == TreeSegmentOf(a); ++i) b = "b" + std::to_string(i);
  ASSERT_TRUE(Apply(a, LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply(b, LwwSet{"v"}).ok());
  EXPECT_EQ(Outcome(DropOne(a, Digest(a))), "dropped");
  EXPECT_EQ(Outcome(DropOne(b, Digest(b))), "dropped");
  std::vector<bool> expected(kTreeSegments, false);
  expected[TreeSegmentOf(a)] = expected[TreeSegmentOf(b)] = true;
  EXPECT_EQ(store_->DroppedSegments(), expected);
  Reopen();
  EXPECT_EQ(store_->DroppedSegments(), expected);

  {
    auto group = store_->BeginGroup();  // a group of nothing but a clear
    group->ClearDropped(TreeSegmentOf(a));
    group->ClearDropped(kTreeSegments);  // out of range: ignored
    ASSERT_OK(group->Commit());
  }
  expected[TreeSegmentOf(a)] = false;
  EXPECT_EQ(store_->DroppedSegments(), expected);
  Reopen();
  EXPECT_EQ(store_->DroppedSegments(), expected);

  {
    auto group = store_->BeginGroup();
    group->ClearDropped(TreeSegmentOf(b));
    ASSERT_OK(group->Commit());
  }
  Reopen();
  EXPECT_EQ(store_->DroppedSegments(), std::vector<bool>(kTreeSegments, false));
}

// An OR-set whose elements came from several replicas, with removals: Drop
// leaves no element, header or dot index row, and a join of its state brings
// back exactly the same set.
TEST_F(HandoffTest, DropRemovesALargeSetEntirely) {
  TestDir other_dir;
  StoreOptions options;
  options.durability = Durability::kWal;
  auto b = std::move(Store::Open(other_dir.Sub("db"), options)).value();
  std::vector<std::string> local, remote;
  for (int i = 0; i < 600; ++i) {
    (i % 3 == 0 ? remote : local).push_back("element-" + std::to_string(i));
  }
  ASSERT_TRUE(Apply("set", SetAdd{local}).ok());
  ASSERT_TRUE(Apply("set", SetRemove{{local[0], local[1], local[2]}}).ok());
  {
    auto group = b->BeginGroup();
    ASSERT_TRUE(group->Mutate("set", SetAdd{remote}).ok());
    ASSERT_TRUE(group->Mutate("set", SetAdd{{local[5]}}).ok());  // an element both added
    ASSERT_OK(group->Commit());
  }
  {
    const std::vector<Crdt> theirs = *b->GetStates("set");
    auto group = store_->BeginGroup();
    for (const Crdt& s : theirs) ASSERT_OK(group->Join("set", s));
    ASSERT_OK(group->Commit());
  }
  const std::vector<Crdt> states = States("set");
  ASSERT_EQ(states.size(), 1u);
  const size_t size = std::get<OrSet>(states[0]).size();
  EXPECT_EQ(size, local.size() - 3 + remote.size());
  EXPECT_EQ(*store_->SetSize("set"), size);
  const uint64_t digest = Digest("set");
  const std::vector<uint64_t> digests = store_->TreeDigests();
  EXPECT_GT(RowsOnDisk("set"), 2 * size);  // element and dot index rows

  EXPECT_EQ(Outcome(DropOne("set", digest)), "dropped");
  EXPECT_TRUE(States("set").empty());
  EXPECT_EQ(*store_->SetSize("set"), 0u);
  EXPECT_FALSE(*store_->SetContains("set", remote[0]));
  EXPECT_TRUE(store_->SetMembers("set", std::nullopt, 10)->elements.empty());
  EXPECT_EQ(RowsOnDisk("set"), 0u);
  EXPECT_EQ(store_->TreeDigests()[TreeSegmentOf("set")],
            digests[TreeSegmentOf("set")] ^ digest);

  {
    auto group = store_->BeginGroup();
    ASSERT_OK(group->Join("set", states[0]));
    ASSERT_OK(group->Commit());
  }
  EXPECT_TRUE(States("set") == states);
  EXPECT_EQ(Digest("set"), digest);
  EXPECT_EQ(store_->TreeDigests(), digests);
  EXPECT_EQ(*store_->SetSize("set"), size);
  // The dot index is back too: a removal made elsewhere, which names dots
  // and not elements, finds its element.
  {
    auto group = b->BeginGroup();
    ASSERT_TRUE(group->Mutate("set", SetRemove{{remote[0]}}).ok());
    ASSERT_OK(group->Commit());
  }
  auto removal = b->ReadLog(b->LastSeq() - 1, 1, 1 << 20);
  ASSERT_TRUE(removal.ok());
  ASSERT_EQ(removal->size(), 1u);
  ASSERT_OK(JoinOne("set", removal->front().delta));
  EXPECT_FALSE(*store_->SetContains("set", remote[0]));
  EXPECT_EQ(*store_->SetSize("set"), size - 1);
  ExpectTreeConsistent();
}

}  // namespace
}  // namespace geokv::testing

// The anti-entropy hash tree: Hash64 pinned to its known outputs, and the
// store's incrementally kept digests checked against a from-scratch scan of
// the rows on disk, across groups, rollbacks, joins in any order, reopening.

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/merge_operator.h>

#include <algorithm>
#include <array>
#include <map>
#include <random>
#include <set>

#include "storage/keys.h"
#include "storage/rocks_config.h"
#include "storage/store.h"
#include "tests/crdt/simulation.h"
#include "tests/storage/store_fixture.h"
#include "testing/test_dir.h"
#include "util/coding.h"
#include "util/hash.h"

namespace geokv::testing {
namespace {

// ---- Hash64 ------------------------------------------------------------------

// Computed by an independent implementation of MurmurHash64A; the function
// is a persisted format, so these may never change.
TEST(Hash64, KnownOutputs) {
  EXPECT_EQ(Hash64(""), 0u);
  EXPECT_EQ(Hash64("", 1), 0xc6a4a7935bd064dcULL);
  EXPECT_EQ(Hash64("a"), 0x071717d2d36b6b11ULL);
  EXPECT_EQ(Hash64("abcdefgh"), 0xafdb0257ff41aa98ULL);  // one whole word
  EXPECT_EQ(Hash64("abcdefghi"), 0xc9b9d84356146ac2ULL);  // and a tail
  EXPECT_EQ(Hash64("The quick brown fox jumps over the lazy dog"), 0x5589ca33042a861bULL);
  EXPECT_EQ(Hash64("geokv", 0x9747b28c), 0xc14e080d610a6231ULL);
  EXPECT_EQ(Hash64(std::string_view("\x00\xff\x80", 3)), 0xb9e76380cadc050eULL);
}

// SMHasher's verification value for MurmurHash64A: keys {}, {0}, {0, 1}, ...
// of 0 to 255 bytes, each hashed with seed 256 - length, the 256 hashes
// hashed as little-endian bytes with seed 0; the low 32 bits of that.
TEST(Hash64, SmhasherVerificationValue) {
  std::array<char, 256> key{};
  std::string hashes;
  for (int i = 0; i < 256; ++i) {
    key[i] = static_cast<char>(i);
    uint64_t h = Hash64(std::string_view(key.data(), i), 256 - i);
    for (int b = 0; b < 8; ++b) hashes.push_back(static_cast<char>(h >> (8 * b)));
  }
  EXPECT_EQ(Hash64(hashes) & 0xffffffffu, 0x1f0d3804u);
}

TEST(TreeSegmentOf, IsTheTopBitsOfTheKeysHash) {
  for (const std::string key : {"", "a", "key0000042", "\xff\xfe"}) {
    EXPECT_EQ(TreeSegmentOf(key), Hash64(key) >> (64 - kTreeSegmentBits)) << key;
    EXPECT_LT(TreeSegmentOf(key), kTreeSegments);
  }
}

// The merge operator of the digests row XORs entry by entry, in any
// grouping, and refuses malformed operands.
TEST(TreeDigestsMerge, XorsEntryBySegment) {
  const std::shared_ptr<rocksdb::MergeOperator> merge =
      MakeRocksConfig(StoreOptions()).families[3].options.merge_operator;
  ASSERT_NE(merge, nullptr);
  using Entries = std::map<size_t, uint64_t>;
  const std::string a = storage_keys::EncodeTreeDigests(Entries{{1, 0xaa}, {5, 0xbb}});
  const std::string b = storage_keys::EncodeTreeDigests(Entries{{1, 0xaa}, {1023, 0xcc}});
  const std::string base = storage_keys::EncodeTreeDigests(Entries{{5, 0x0f}});
  const rocksdb::Slice row(storage_keys::kTreeDigestsRow);
  std::string partial;
  ASSERT_TRUE(merge->PartialMergeMulti(row, {a, b}, &partial, nullptr));
  // Segment 1 cancels out and is left out.
  EXPECT_EQ(partial, storage_keys::EncodeTreeDigests(Entries{{5, 0xbb}, {1023, 0xcc}}));

  std::string full;
  rocksdb::Slice existing_operand;
  rocksdb::MergeOperator::MergeOperationOutput out(full, existing_operand);
  const rocksdb::Slice existing(base);
  const std::vector<rocksdb::Slice> operands = {a, b};
  using Input = rocksdb::MergeOperator::MergeOperationInput;
  ASSERT_TRUE(merge->FullMergeV2(Input(row, &existing, operands, nullptr), &out));
  EXPECT_EQ(full, storage_keys::EncodeTreeDigests(Entries{{5, 0xb4}, {1023, 0xcc}}));

  const std::vector<rocksdb::Slice> bad = {a, rocksdb::Slice("short")};
  EXPECT_FALSE(merge->FullMergeV2(Input(row, nullptr, bad, nullptr), &out));
  const std::string too_far = std::string("\x04\x00", 2) + std::string(8, '\x01');  // 1024
  EXPECT_FALSE(merge->PartialMergeMulti(row, {a, too_far}, &partial, nullptr));
}

// A key index row XORs 8-byte digests; the key count row adds 8-byte changes
// in two's complement; any other row, or an operand of another size, fails.
TEST(TreeDigestsMerge, XorsKeyDigestsAndAddsTheKeyCount) {
  const std::shared_ptr<rocksdb::MergeOperator> merge =
      MakeRocksConfig(StoreOptions()).families[3].options.merge_operator;
  using Input = rocksdb::MergeOperator::MergeOperationInput;
  std::string full;
  rocksdb::Slice existing_operand;
  rocksdb::MergeOperator::MergeOperationOutput out(full, existing_operand);
  const std::string key_row = storage_keys::TreeKeyRow(7, "key");
  const std::string existing = EncodeBigEndian64(0xf0f0);
  // The operands' bytes outlive the slices that point at them.
  const std::vector<std::string> digest_bytes = {EncodeBigEndian64(0x0ff0),
                                                 EncodeBigEndian64(0x1)};
  const std::vector<rocksdb::Slice> digests(digest_bytes.begin(), digest_bytes.end());
  const rocksdb::Slice existing_slice(existing);
  ASSERT_TRUE(merge->FullMergeV2(Input(key_row, &existing_slice, digests, nullptr), &out));
  EXPECT_EQ(full, EncodeBigEndian64(0xff01));
  // Absent before: the row comes into being with the operands' XOR.
  ASSERT_TRUE(merge->FullMergeV2(Input(key_row, nullptr, digests, nullptr), &out));
  EXPECT_EQ(full, EncodeBigEndian64(0x0ff1));

  const std::string count_row = storage_keys::kTreeKeyCountRow;
  const std::vector<std::string> change_bytes = {EncodeBigEndian64(5),
                                                 EncodeBigEndian64(uint64_t(-2))};
  const std::vector<rocksdb::Slice> changes(change_bytes.begin(), change_bytes.end());
  std::string partial;
  ASSERT_TRUE(merge->PartialMergeMulti(count_row, {changes[0], changes[1]}, &partial, nullptr));
  EXPECT_EQ(partial, EncodeBigEndian64(3));
  const std::string ten = EncodeBigEndian64(10);
  const rocksdb::Slice ten_slice(ten);
  ASSERT_TRUE(merge->FullMergeV2(Input(count_row, &ten_slice, changes, nullptr), &out));
  EXPECT_EQ(full, EncodeBigEndian64(13));

  const std::vector<rocksdb::Slice> short_operand = {rocksdb::Slice("1234567")};
  EXPECT_FALSE(merge->FullMergeV2(Input(key_row, nullptr, short_operand, nullptr), &out));
  EXPECT_FALSE(merge->FullMergeV2(Input(rocksdb::Slice("x"), nullptr, digests, nullptr), &out));
}

// ---- A from-scratch tree -----------------------------------------------------

// The tree as docs/formats.md defines it, recomputed from the state rows of a
// closed data dir, with nothing of the store's incremental upkeep.
struct ScannedTree {
  std::vector<uint64_t> digests = std::vector<uint64_t>(kTreeSegments);
  std::map<std::string, uint64_t> keys;  // every key with state -> its digest
};

ScannedTree ScanTree(const std::string& dir) {
  ScannedTree tree;
  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  const RocksConfig config = MakeRocksConfig(StoreOptions());
  rocksdb::Status s =
      rocksdb::DB::OpenForReadOnly(config.db, dir, config.families, &handles, &raw);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok()) return tree;
  std::unique_ptr<rocksdb::Iterator> it(raw->NewIterator({}, handles[1]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string row = it->key().ToString();
    const uint32_t len = DecodeBigEndian32(row.data());
    const std::string key = row.substr(4, len);
    const std::string rest = row.substr(4 + len);
    const bool object_row = rest.size() == 2 && rest[1] == 0x00;
    const bool element_row = rest.size() >= 2 && rest[0] == 0x03 && rest[1] == 0x01;
    if (!object_row && !element_row) continue;  // live types, dot index
    const uint64_t h = Hash64(it->value().ToString(), Hash64(row));
    tree.keys[key] ^= h;
    tree.digests[Hash64(key) >> (64 - kTreeSegmentBits)] ^= h;
  }
  EXPECT_TRUE(it->status().ok());
  it.reset();
  for (auto* h : handles) raw->DestroyColumnFamilyHandle(h);
  delete raw;
  return tree;
}

// Every segment's keys from the store, as key -> digest. An error names the
// first segment whose keys are not in byte order, not of the segment, or
// whose digests do not XOR to `digests`' entry.
StatusOr<std::map<std::string, uint64_t>> AllSegmentKeys(Store* store,
                                                         const std::vector<uint64_t>& digests) {
  std::map<std::string, uint64_t> out;
  for (size_t segment = 0; segment < kTreeSegments; ++segment) {
    GEOKV_ASSIGN_OR_RETURN(std::vector<KeyDigest> keys, store->SegmentKeys(segment));
    const std::string where = "segment " + std::to_string(segment);
    uint64_t x = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (TreeSegmentOf(keys[i].key) != segment) return Status::Corruption(where + ": key");
      if (i > 0 && !(keys[i - 1].key < keys[i].key)) return Status::Corruption(where + ": order");
      x ^= keys[i].digest;
      out[keys[i].key] = keys[i].digest;
    }
    if (x != digests[segment]) return Status::Corruption(where + ": digest");
  }
  return out;
}

std::unique_ptr<Store> OpenStore(const std::string& dir, HybridClock* clock) {
  StoreOptions options;
  options.durability = Durability::kWal;
  options.clock = clock;
  options.max_siblings = 1000;
  auto s = Store::Open(dir, options);
  RC_ASSERT(s.ok());
  return std::move(s).value();
}

// Remote replicas of every type, whose deltas and states a test joins into
// keys of its choice.
struct Remotes {
  Simulation<LwwRegister> lww;
  Simulation<MvRegister> mv;
  Simulation<OrSet> set;
  Simulation<PnCounter> counter;

  void Step() {
    switch (*rc::gen::inRange(0, 4)) {
      case 0: lww.Step(); break;
      case 1: mv.Step(); break;
      case 2: set.Step(); break;
      default: counter.Step(); break;
    }
  }

  // A delta one of them made, or the full state of one of them.
  std::optional<Crdt> Pick() {
    std::vector<Crdt> all;
    auto add = [&all](const auto& sim) {
      all.insert(all.end(), sim.deltas.begin(), sim.deltas.end());
      all.insert(all.end(), sim.replicas.begin(), sim.replicas.end());
    };
    add(lww);
    add(mv);
    add(set);
    add(counter);
    if (all.empty()) return std::nullopt;
    return *rc::gen::elementOf(all);
  }
};

const std::vector<std::string> kKeys = {"a", "b", "c", std::string("k\x00z", 3), "set",
                                        "a longer key of the tree test"};

std::vector<std::string> Elements() {
  std::vector<std::string> out(*rc::gen::inRange<size_t>(1, 4));
  for (auto& e : out) e = SmallString();
  return out;
}

// A random client operation of any type on `key`; contexts come from the
// store's committed state, as a client's read would.
Operation RandomOperation(Store* store, const std::string& key) {
  switch (*rc::gen::inRange(0, 8)) {
    case 0: return LwwSet{SmallString()};
    case 1: return LwwDelete{};
    case 2: return MvWrite{SmallString(), CausalContext()};
    case 3:
    case 4: {
      auto reg = store->Get(key, CrdtType::kMvRegister);
      RC_ASSERT(reg.ok());
      CausalContext seen;
      if (reg->has_value()) seen = std::get<MvRegister>(**reg).context();
      if (*rc::gen::inRange(0, 2) == 0) return MvClear{seen};
      return MvWrite{SmallString(), seen};
    }
    case 5: return SetAdd{Elements()};
    case 6: return SetRemove{Elements()};
    default: return CounterAdd{*rc::gen::inRange<int64_t>(-100, 101)};
  }
}

// The store's kept tree (SegmentKeys, KeyDigest, KeyCount, TreeDigests)
// equals the scan of its rows; closes and reopens `store`.
void CheckAgainstScan(const std::string& dir, HybridClock* clock,
                      std::unique_ptr<Store>* store) {
  const std::vector<uint64_t> digests = (*store)->TreeDigests();
  RC_ASSERT(digests.size() == kTreeSegments);
  const auto listed = AllSegmentKeys(store->get(), digests);
  RC_ASSERT(listed.ok());
  for (const std::string& key : kKeys) {
    const auto it = listed->find(key);
    RC_ASSERT(*(*store)->KeyDigest(key) == (it == listed->end() ? 0 : it->second));
  }
  RC_ASSERT(*(*store)->KeyCount() == listed->size());
  store->reset();
  const ScannedTree scanned = ScanTree(dir);
  RC_ASSERT(digests == scanned.digests);
  RC_ASSERT(*listed == scanned.keys);

  *store = OpenStore(dir, clock);
  RC_ASSERT((*store)->TreeDigests() == scanned.digests);
  RC_ASSERT(*(*store)->KeyCount() == scanned.keys.size());
  const auto reopened = AllSegmentKeys(store->get(), (*store)->TreeDigests());
  RC_ASSERT(reopened.ok());
  RC_ASSERT(*reopened == scanned.keys);
}

// ---- Properties --------------------------------------------------------------

TEST(TreeProperties, DigestsMatchAScanOfTheRowsAcrossGroupsAndReopening) {
  EXPECT_TRUE(rc::check([] {
    TestDir dir;
    ManualClock wall(1000);
    HybridClock clock(&wall);
    std::unique_ptr<Store> store = OpenStore(dir.Sub("db"), &clock);
    Remotes remotes;
    auto group = store->BeginGroup();
    const int steps = *rc::gen::inRange(0, 80);
    for (int i = 0; i < steps; ++i) {
      const std::string& key = *rc::gen::elementOf(kKeys);
      switch (*rc::gen::inRange(0, 11)) {
        case 0: case 1: remotes.Step(); break;
        case 2: case 3: case 4: {
          auto seq = group->Mutate(key, RandomOperation(store.get(), key));
          RC_ASSERT(seq.ok() || seq.status().code() == Status::Code::kWrongType);
          break;
        }
        case 5: case 6:
          if (auto remote = remotes.Pick()) RC_ASSERT(group->Join(key, *remote).ok());
          break;
        case 7: {  // a group given up: the digests stay as they were
          const std::vector<uint64_t> before = store->TreeDigests();
          group.reset();
          RC_ASSERT(store->TreeDigests() == before);
          group = store->BeginGroup();
          break;
        }
        case 8: {  // a drop, expecting the committed digest, 0 or another
          const uint64_t committed = *store->KeyDigest(key);
          const uint64_t expected = *rc::gen::element(committed, uint64_t{0}, uint64_t{42});
          RC_ASSERT(group->Drop(key, expected).ok());
          break;
        }
        case 9:
          RC_ASSERT(group->Commit().ok());
          group.reset();
          CheckAgainstScan(dir.Sub("db"), &clock, &store);
          group = store->BeginGroup();
          break;
        default:
          RC_ASSERT(group->Commit().ok());
          group = store->BeginGroup();
          RC_ASSERT(AllSegmentKeys(store.get(), store->TreeDigests()).ok());
      }
    }
    RC_ASSERT(group->Commit().ok());
    group.reset();
    CheckAgainstScan(dir.Sub("db"), &clock, &store);
  }));
}

// Joins `updates` into `store` in groups of random sizes.
void JoinAll(Store* store, const std::vector<std::pair<std::string, Crdt>>& updates) {
  auto group = store->BeginGroup();
  for (const auto& [key, delta] : updates) {
    RC_ASSERT(group->Join(key, delta).ok());
    if (*rc::gen::inRange(0, 4) == 0) {
      RC_ASSERT(group->Commit().ok());
      group = store->BeginGroup();
    }
  }
  RC_ASSERT(group->Commit().ok());
}

TEST(TreeProperties, SameUpdatesInAnyOrderGiveTheSameDigests) {
  EXPECT_TRUE(rc::check([] {
    TestDir dir;
    ManualClock wall(1000);
    HybridClock clock_a(&wall), clock_b(&wall);
    std::unique_ptr<Store> a = OpenStore(dir.Sub("a"), &clock_a);
    std::unique_ptr<Store> b = OpenStore(dir.Sub("b"), &clock_b);
    Remotes remotes;
    const int steps = *rc::gen::inRange(0, 60);
    for (int i = 0; i < steps; ++i) remotes.Step();
    std::vector<std::pair<std::string, Crdt>> updates;
    const int n = *rc::gen::inRange(0, 40);
    for (int i = 0; i < n; ++i) {
      if (auto u = remotes.Pick()) updates.emplace_back(*rc::gen::elementOf(kKeys), *u);
    }
    // B: another order, some updates twice.
    std::vector<std::pair<std::string, Crdt>> again = updates;
    for (const auto& u : updates) {
      if (*rc::gen::inRange(0, 4) == 0) again.push_back(u);
    }
    JoinAll(a.get(), updates);
    JoinAll(b.get(), Shuffled(again));

    RC_ASSERT(a->TreeDigests() == b->TreeDigests());
    for (const std::string& key : kKeys) RC_ASSERT(*a->GetStates(key) == *b->GetStates(key));
    const auto keys_a = AllSegmentKeys(a.get(), a->TreeDigests());
    const auto keys_b = AllSegmentKeys(b.get(), b->TreeDigests());
    RC_ASSERT(keys_a.ok() && keys_b.ok());
    RC_ASSERT(*keys_a == *keys_b);

    // A state B lacks changes that key's segment, and only that one.
    const std::string& key = *rc::gen::elementOf(kKeys);
    auto group = a->BeginGroup();
    const LwwRegister newer(HlcTimestamp{uint64_t{1} << 40, 0}, 0x9999, std::string("newer"));
    RC_ASSERT(group->Join(key, newer).ok());
    RC_ASSERT(group->Commit().ok());
    const std::vector<uint64_t> da = a->TreeDigests();
    const std::vector<uint64_t> db = b->TreeDigests();
    for (size_t s = 0; s < kTreeSegments; ++s) {
      RC_ASSERT((da[s] == db[s]) == (s != TreeSegmentOf(key)));
    }
  }));
}

// ---- Examples ----------------------------------------------------------------

class TreeTest : public StoreTest {
 protected:
  // The digest SegmentKeys gives `key`, or nullopt when it is not listed.
  std::optional<uint64_t> KeyDigestOf(Store* store, const std::string& key) {
    auto keys = store->SegmentKeys(TreeSegmentOf(key));
    EXPECT_TRUE(keys.ok());
    for (const KeyDigest& k : *keys) {
      if (k.key == key) return k.digest;
    }
    return std::nullopt;
  }

  // A key named `base` + a number, in another segment than `other`.
  static std::string KeyOutsideSegmentOf(const std::string& other, const std::string& base) {
    for (int i = 0;; ++i) {
      std::string key = base + std::to_string(i);
      if (TreeSegmentOf(key) != TreeSegmentOf(other)) return key;
    }
  }
};

TEST_F(TreeTest, NewStoreHasAllZeroDigestsAndNoKeys) {
  EXPECT_EQ(store_->TreeDigests(), std::vector<uint64_t>(kTreeSegments, 0));
  for (size_t s = 0; s < kTreeSegments; ++s) EXPECT_TRUE(store_->SegmentKeys(s)->empty());
  EXPECT_EQ(store_->SegmentKeys(kTreeSegments).status().code(),
            Status::Code::kInvalidArgument);
  Reopen();
  EXPECT_EQ(store_->TreeDigests(), std::vector<uint64_t>(kTreeSegments, 0));
}

TEST_F(TreeTest, OperationsThatChangeNothingLeaveNoKey) {
  ASSERT_TRUE(Apply("ghost", SetRemove{{"x"}}).ok());
  ASSERT_TRUE(Apply("ghost", CounterAdd{0}).ok());
  ASSERT_TRUE(Apply("ghost", MvClear{}).ok());
  ASSERT_OK(JoinOne("ghost", OrSet()));        // bottom states
  ASSERT_OK(JoinOne("ghost", PnCounter()));
  ASSERT_OK(JoinOne("ghost", LwwRegister()));
  EXPECT_TRUE(store_->GetStates("ghost")->empty());
  EXPECT_EQ(KeyDigestOf(store_.get(), "ghost"), std::nullopt);
  EXPECT_EQ(store_->TreeDigests(), std::vector<uint64_t>(kTreeSegments, 0));
}

TEST_F(TreeTest, RefusedOperationLeavesTheDigestsAsTheyWere) {
  ASSERT_TRUE(Apply("k", SetAdd{{"x"}}).ok());
  const std::vector<uint64_t> before = store_->TreeDigests();
  const std::string other = KeyOutsideSegmentOf("k", "other");
  auto group = store_->BeginGroup();
  EXPECT_EQ(group->Mutate("k", LwwSet{"v"}).status().code(), Status::Code::kWrongType);
  EXPECT_EQ(group->Mutate("k", CounterAdd{1}).status().code(), Status::Code::kWrongType);
  ASSERT_TRUE(group->Mutate(other, CounterAdd{1}).ok());
  ASSERT_OK(group->Commit());
  const std::vector<uint64_t> after = store_->TreeDigests();
  for (size_t s = 0; s < kTreeSegments; ++s) {
    EXPECT_EQ(after[s] == before[s], s != TreeSegmentOf(other)) << s;
  }
  EXPECT_EQ(after[TreeSegmentOf("k")], *KeyDigestOf(store_.get(), "k"));
}

// A join that fails after writing some rows (a later row of the set does not
// decode) takes its tree changes back with its rows.
TEST_F(TreeTest, FailedJoinRollsBackItsTreeChanges) {
  ASSERT_TRUE(Apply("set", SetAdd{{"a"}}).ok());
  EditRows([](rocksdb::DB* db, const auto& families) {
    ASSERT_TRUE(db->Put({}, families[1], storage_keys::ElementRow("set", "z"), "junk!").ok());
  });
  Reopen();
  const std::vector<uint64_t> before = store_->TreeDigests();
  OrSet remote;
  OrSet delta = remote.Add("b", 77);  // "b" is written before "z" fails
  delta.Join(remote.Add("z", 77));
  const std::string other = KeyOutsideSegmentOf("set", "other");
  auto group = store_->BeginGroup();
  Status failed = group->Join("set", delta);
  EXPECT_TRUE(failed.IsCorruption()) << failed.ToString();
  ASSERT_OK(group->Join(other, LwwRegister(HlcTimestamp{5, 0}, 77, std::string("v"))));
  ASSERT_OK(group->Commit());
  EXPECT_FALSE(*store_->SetContains("set", "b"));
  const std::vector<uint64_t> after = store_->TreeDigests();
  for (size_t s = 0; s < kTreeSegments; ++s) {
    EXPECT_EQ(after[s] == before[s], s != TreeSegmentOf(other)) << s;
  }
  EXPECT_EQ(after[TreeSegmentOf(other)],
            before[TreeSegmentOf(other)] ^ *KeyDigestOf(store_.get(), other));
}

TEST_F(TreeTest, GetStatesHoldsTombstonesAndEveryType) {
  EXPECT_TRUE(store_->GetStates("k")->empty());
  ASSERT_TRUE(Apply("k", LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply("k", LwwDelete{}).ok());
  auto states = store_->GetStates("k");
  ASSERT_TRUE(states.ok());
  ASSERT_EQ(states->size(), 1u);
  const auto& tombstone = std::get<LwwRegister>(states->front());
  EXPECT_EQ(tombstone.value(), std::nullopt);
  EXPECT_FALSE(tombstone.timestamp().IsZero());

  // Concurrent writes of other types elsewhere: all travel, in type order.
  ASSERT_TRUE(Apply("multi", LwwSet{"v"}).ok());
  PnCounter counter;
  ASSERT_OK(JoinOne("multi", counter.Increment(77, 5)));
  OrSet set;
  ASSERT_OK(JoinOne("multi", set.Add("e", 77)));
  ASSERT_OK(JoinOne("multi", set.Remove("e")));  // empty, but its context must travel
  states = store_->GetStates("multi");
  ASSERT_TRUE(states.ok());
  ASSERT_EQ(states->size(), 3u);
  EXPECT_EQ(TypeOf((*states)[0]), CrdtType::kLww);
  EXPECT_EQ(std::get<OrSet>((*states)[1]), set);
  EXPECT_EQ(std::get<PnCounter>((*states)[2]), counter);
}

// Anti-entropy's repair step: a store holding part of another's updates joins
// the other's full states and ends with the same digests.
TEST_F(TreeTest, JoiningAnothersStatesEqualsItsDigests) {
  TestDir other_dir;
  StoreOptions options;
  options.durability = Durability::kWal;
  auto b = std::move(Store::Open(other_dir.Sub("db"), options)).value();
  ASSERT_TRUE(Apply("r", LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply("s", SetAdd{{"x", "y"}}).ok());
  ASSERT_TRUE(Apply("c", CounterAdd{3}).ok());
  ASSERT_TRUE(Apply("r", LwwDelete{}).ok());
  ASSERT_TRUE(Apply("s", SetRemove{{"x"}}).ok());
  ASSERT_TRUE(Apply("m", MvWrite{"one", {}}).ok());
  // B saw the first three deltas only.
  auto log = store_->ReadLog(0, 3, 1 << 20);
  ASSERT_TRUE(log.ok());
  {
    auto group = b->BeginGroup();
    for (const LogEntry& e : *log) ASSERT_OK(group->Join(e.key, e.delta));
    ASSERT_OK(group->Commit());
  }
  EXPECT_NE(b->TreeDigests(), store_->TreeDigests());
  for (const std::string key : {"r", "s", "c", "m"}) {
    auto states = store_->GetStates(key);
    ASSERT_TRUE(states.ok());
    auto group = b->BeginGroup();
    for (const Crdt& state : *states) ASSERT_OK(group->Join(key, state));
    ASSERT_OK(group->Commit());
    EXPECT_EQ(KeyDigestOf(b.get(), key), KeyDigestOf(store_.get(), key)) << key;
    EXPECT_EQ(b->TreeDigests()[TreeSegmentOf(key)], store_->TreeDigests()[TreeSegmentOf(key)]);
  }
  EXPECT_EQ(b->TreeDigests(), store_->TreeDigests());
  EXPECT_EQ(*b->Get("r", CrdtType::kLww), *store_->Get("r", CrdtType::kLww));
}

TEST_F(TreeTest, SegmentKeysListEveryKeyWithStateInByteOrder) {
  std::set<std::string> expected;
  auto group = store_->BeginGroup();
  for (int i = 0; i < 3000; ++i) {
    std::string key = "key" + std::to_string(i);
    if (i % 7 == 0) key.push_back('\0');
    if (i % 11 == 0) key += "\xff";
    expected.insert(key);
    switch (i % 4) {
      case 0: ASSERT_TRUE(group->Mutate(key, LwwSet{"v"}).ok()); break;
      case 1: ASSERT_TRUE(group->Mutate(key, SetAdd{{"e"}}).ok()); break;
      case 2: ASSERT_TRUE(group->Mutate(key, MvWrite{"v", {}}).ok()); break;
      default: ASSERT_OK(group->Join(key, PnCounter().Increment(9, 1))); break;
    }
  }
  ASSERT_OK(group->Commit());
  group.reset();
  auto listed = AllSegmentKeys(store_.get(), store_->TreeDigests());
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  std::set<std::string> keys;
  for (const auto& [key, digest] : *listed) {
    EXPECT_NE(digest, 0u);
    keys.insert(key);
  }
  EXPECT_EQ(keys, expected);
}

TEST_F(TreeTest, LogBytesAfterFollowsTheLog) {
  EXPECT_EQ(store_->LogBytesAfter(0), 0u);
  // Random values, so that compressed table files hold as many bytes as
  // memtables.
  std::mt19937_64 rng(7);
  auto append = [&](int n) {
    for (int i = 0; i < n; i += 10) {
      auto group = store_->BeginGroup();
      for (int j = 0; j < 10; ++j) {
        std::string value(1000, '\0');
        for (char& c : value) c = static_cast<char>(rng());
        ASSERT_TRUE(group->Mutate("k" + std::to_string(i + j), LwwSet{value}).ok());
      }
      ASSERT_OK(group->Commit());
    }
  };
  // Each entry carries its 1000-byte value. Memtables are estimated from a
  // walk down their skip list, which can be off by a factor of 2.
  append(200);
  const uint64_t first = store_->LogBytesAfter(0);
  EXPECT_GT(first, 200u * 1000 / 4);
  append(1000);
  const uint64_t second = store_->LogBytesAfter(0);
  EXPECT_GT(second, first);
  EXPECT_GT(second, 1200u * 1000 / 4);
  EXPECT_LT(store_->LogBytesAfter(store_->LastSeq()), second / 100);
  // Reopening moves the log into table files, estimated closely.
  Reopen();
  const uint64_t reopened = store_->LogBytesAfter(0);
  EXPECT_GT(reopened, 1200u * 1000);
  const uint64_t half = store_->LogBytesAfter(600);
  EXPECT_GT(half, reopened / 4);
  EXPECT_LT(half, reopened / 4 * 3);
  EXPECT_LT(store_->LogBytesAfter(store_->LastSeq()), reopened / 100);
}

// A set changed by thousands of commits: the write path folds the operands
// of its key index row (max_successive_merges), and the digest stays the one
// the rows give, before and after reopening.
TEST_F(TreeTest, HotKeyDigestFollowsItsRows) {
  for (int i = 0; i < 3000; ++i) {
    ASSERT_TRUE(Apply("hot", SetAdd{{"e" + std::to_string(i)}}).ok());
    if (i % 2 == 1) {
      ASSERT_TRUE(Apply("hot", SetRemove{{"e" + std::to_string(i - 1)}}).ok());
    }
    if (i % 10 == 0) {
      ASSERT_TRUE(Apply("warm" + std::to_string(i % 3), CounterAdd{1}).ok());
    }
  }
  const uint64_t digest = *store_->KeyDigest("hot");
  EXPECT_EQ(KeyDigestOf(store_.get(), "hot"), digest);
  const std::vector<uint64_t> digests = store_->TreeDigests();
  store_.reset();
  const ScannedTree scanned = ScanTree(dir_.Sub("db"));
  EXPECT_EQ(scanned.keys.at("hot"), digest);
  EXPECT_EQ(scanned.digests, digests);
  Reopen();
  EXPECT_EQ(*store_->KeyDigest("hot"), digest);
  EXPECT_EQ(*store_->KeyDigest("warm0"), scanned.keys.at("warm0"));
  EXPECT_EQ(*store_->KeyCount(), 4u);
}

// A blind LWW write takes the old row's hash from what the store remembers
// of the key: after the key was dropped (in the same group or an earlier
// one), and after a group that wrote it was given up, what it remembers
// must be what the rows are.
TEST_F(TreeTest, BlindRegisterWritesFollowDropsAndGivenUpGroups) {
  const std::string key = "reg";
  ASSERT_TRUE(Apply(key, LwwSet{"a"}).ok());
  {
    auto group = store_->BeginGroup();
    auto dropped = group->Drop(key, *store_->KeyDigest(key));
    ASSERT_TRUE(dropped.ok() && *dropped);
    ASSERT_TRUE(group->Mutate(key, LwwSet{"b"}).ok());  // the row is gone here
    ASSERT_OK(group->Commit());
  }
  {
    auto group = store_->BeginGroup();
    auto dropped = group->Drop(key, *store_->KeyDigest(key));
    ASSERT_TRUE(dropped.ok() && *dropped);
    ASSERT_OK(group->Commit());
  }
  ASSERT_TRUE(Apply(key, LwwSet{"c"}).ok());  // and gone before this group
  {
    auto given_up = store_->BeginGroup();
    ASSERT_TRUE(given_up->Mutate(key, LwwSet{"d"}).ok());
  }
  ASSERT_TRUE(Apply(key, LwwDelete{}).ok());
  const uint64_t digest = *store_->KeyDigest(key);
  const std::vector<uint64_t> digests = store_->TreeDigests();
  store_.reset();
  const ScannedTree scanned = ScanTree(dir_.Sub("db"));
  EXPECT_EQ(scanned.keys.at(key), digest);
  EXPECT_EQ(scanned.digests, digests);
}

// A key index row holds the digest of the key's element rows only: register
// and counter writes leave it at 0 (they never write it once the key
// exists), and KeyDigest adds the object rows' hashes, for a key with object
// rows of two types too.
TEST_F(TreeTest, KeyIndexRowHoldsTheElementRowsDigest) {
  ASSERT_TRUE(Apply("lww", LwwSet{"a"}).ok());
  ASSERT_TRUE(Apply("lww", LwwSet{"b"}).ok());
  ASSERT_TRUE(Apply("mv", MvWrite{"x", {}}).ok());
  ASSERT_TRUE(Apply("count", CounterAdd{5}).ok());
  ASSERT_TRUE(Apply("set", SetAdd{{"e1", "e2", "e3"}}).ok());
  ASSERT_TRUE(Apply("set", SetRemove{{"e2"}}).ok());
  ASSERT_TRUE(Apply("both", LwwSet{"a"}).ok());
  ASSERT_TRUE(Apply("both", LwwDelete{}).ok());  // a tombstone: the key may be a set now
  ASSERT_TRUE(Apply("both", SetAdd{{"f"}}).ok());
  const std::vector<std::string> names = {"lww", "mv", "count", "set", "both"};
  std::map<std::string, uint64_t> digests;
  for (const std::string& key : names) digests[key] = *store_->KeyDigest(key);
  const std::vector<uint64_t> tree = store_->TreeDigests();
  store_.reset();
  const ScannedTree scanned = ScanTree(dir_.Sub("db"));
  EXPECT_EQ(scanned.digests, tree);
  // Each key's index row, and the XOR of its element rows' hashes.
  std::map<std::string, std::string> index_rows;
  std::map<std::string, uint64_t> element_rows;
  EditRaw(dir_.Sub("db"), [&](rocksdb::DB* db, const auto& families) {
    for (const std::string& key : names) {
      ASSERT_TRUE(db->Get({}, families[3], storage_keys::TreeKeyRow(TreeSegmentOf(key), key),
                          &index_rows[key])
                      .ok())
          << key;
      const std::string prefix = storage_keys::ElementPrefix(key);
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, families[1]));
      uint64_t& x = element_rows[key];
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        x ^= Hash64(it->value().ToString(), Hash64(it->key().ToString()));
      }
    }
  });
  for (const std::string& key : names) {
    EXPECT_EQ(index_rows[key], EncodeBigEndian64(element_rows[key])) << key;
  }
  for (const char* key : {"lww", "mv", "count"}) EXPECT_EQ(element_rows[key], 0u) << key;
  for (const char* key : {"set", "both"}) EXPECT_NE(element_rows[key], 0u) << key;
  for (const std::string& key : names) EXPECT_EQ(scanned.keys.at(key), digests[key]) << key;
  Reopen();
  for (const std::string& key : names) {
    EXPECT_EQ(*store_->KeyDigest(key), digests[key]) << key;
    EXPECT_EQ(KeyDigestOf(store_.get(), key), digests[key]) << key;
  }
}

// The digests are merge operands until a flush or compaction folds them;
// every reopen flushes, and the tree must match the rows after each.
TEST_F(TreeTest, DigestsSurviveReopening) {
  std::vector<uint64_t> digests = store_->TreeDigests();
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 50; ++i) {
      const std::string key = "k" + std::to_string((round * 50 + i) % 70);
      ASSERT_TRUE(Apply(key, SetAdd{{"x" + std::to_string(i % 3)}}).ok());
      if (i % 4 == 0) {
        ASSERT_TRUE(Apply(key, SetRemove{{"x0"}}).ok());
      }
    }
    EXPECT_NE(store_->TreeDigests(), digests);
    digests = store_->TreeDigests();
    store_.reset();
    EXPECT_EQ(ScanTree(dir_.Sub("db")).digests, digests) << round;
    Reopen();
    EXPECT_EQ(store_->TreeDigests(), digests) << round;
  }
}

}  // namespace
}  // namespace geokv::testing

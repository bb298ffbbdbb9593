// The store behaves as one more replica of each CRDT: random local
// operations (in random groups) interleaved with random remote deltas,
// duplicated and reordered, leave the store's state equal to a pure
// in-memory replica that did the same, and the log holds exactly the deltas
// the pure mutators produce.

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "storage/store.h"
#include "tests/crdt/simulation.h"
#include "testing/test_dir.h"

namespace geokv::testing {
namespace {

// Picks a local operation, applies its pure counterpart to `model` and
// returns the operation with the delta the store should log. LWW registers
// return no delta: their stamp comes from the store's clock and is checked
// by joining the logged delta instead.
Operation LocalOp(OrSet& model, ReplicaId node, std::optional<Crdt>* delta) {
  std::vector<std::string> elements(*rc::gen::inRange<size_t>(1, 4));
  for (auto& e : elements) e = SmallString();
  const bool remove = *rc::gen::inRange(0, 3) == 0;
  OrSet joined;
  for (const auto& e : elements) joined.Join(remove ? model.Remove(e) : model.Add(e, node));
  *delta = joined;
  if (remove) return SetRemove{elements};
  return SetAdd{elements};
}

Operation LocalOp(MvRegister& model, ReplicaId node, std::optional<Crdt>* delta) {
  std::string v = SmallString();
  switch (*rc::gen::inRange(0, 4)) {
    case 0:
      *delta = model.Write(v, CausalContext(), node);
      return MvWrite{v, CausalContext()};
    case 1: {
      CausalContext seen = model.context();
      *delta = model.Clear(seen);
      return MvClear{seen};
    }
    default: {
      CausalContext seen = model.context();
      *delta = model.Write(v, seen, node);
      return MvWrite{v, seen};
    }
  }
}

Operation LocalOp(PnCounter& model, ReplicaId node, std::optional<Crdt>* delta) {
  int64_t d = *rc::gen::inRange<int64_t>(-100, 101);
  *delta = model.Increment(node, d);
  return CounterAdd{d};
}

Operation LocalOp(LwwRegister&, ReplicaId, std::optional<Crdt>* delta) {
  delta->reset();
  if (*rc::gen::inRange(0, 4) == 0) return LwwDelete{};
  return LwwSet{SmallString()};
}

template <typename T>
class StoreAsReplica : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TestDir();
    StoreOptions options;
    options.durability = Durability::kWal;
    options.max_siblings = 1000;
    // A wall clock that stands still, so remote replicas' stamps run ahead
    // of the store's and only the clock updates on join keep local writes
    // winning.
    wall_ = new ManualClock(1000);
    clock_ = new HybridClock(wall_);
    options.clock = clock_;
    store_ = std::move(Store::Open(dir_->Sub("db"), options)).value().release();
  }
  static void TearDownTestSuite() {
    delete store_;
    delete clock_;
    delete wall_;
    delete dir_;
  }

  static TestDir* dir_;
  static ManualClock* wall_;
  static HybridClock* clock_;
  static Store* store_;
};
template <typename T>
TestDir* StoreAsReplica<T>::dir_ = nullptr;
template <typename T>
ManualClock* StoreAsReplica<T>::wall_ = nullptr;
template <typename T>
HybridClock* StoreAsReplica<T>::clock_ = nullptr;
template <typename T>
Store* StoreAsReplica<T>::store_ = nullptr;

using AllTypes = ::testing::Types<LwwRegister, MvRegister, OrSet, PnCounter>;
TYPED_TEST_SUITE(StoreAsReplica, AllTypes);

TYPED_TEST(StoreAsReplica, MatchesAPureReplica) {
  Store* store = this->store_;
  int iteration = 0;
  EXPECT_TRUE(rc::check([&] {
    const std::string key = "key" + std::to_string(iteration++);
    const ReplicaId node = store->node_id();
    Simulation<TypeParam> remote;  // three other replicas
    TypeParam model;
    struct Logged {
      uint64_t seq;
      std::optional<Crdt> expected;  // the delta, or nullopt for LWW
      HlcTimestamp model_stamp;      // LWW: the replica's stamp at the write
    };
    std::vector<Logged> logged;

    auto group = store->BeginGroup();
    auto commit = [&] {
      RC_ASSERT(group->Commit().ok());
      for (const auto& [seq, expected, model_stamp] : logged) {
        auto entries = store->ReadLog(seq - 1, 1, 1 << 20);
        RC_ASSERT(entries.ok());
        RC_ASSERT(entries->size() == 1u);
        const LogEntry& e = entries->front();
        RC_ASSERT(e.seq == seq);
        RC_ASSERT(e.key == key);
        RC_ASSERT(e.origin == node);
        if constexpr (std::is_same_v<TypeParam, LwwRegister>) {
          // The store's stamp must beat everything the replica holds.
          const auto& reg = std::get<LwwRegister>(e.delta);
          RC_ASSERT(reg.node() == node);
          RC_ASSERT(model_stamp < reg.timestamp());
          model.Join(reg);
        } else {
          RC_ASSERT(expected.has_value());
          RC_ASSERT(e.delta == *expected);
        }
      }
      logged.clear();
      group = store->BeginGroup();
    };
    auto join_remote = [&](const TypeParam& delta) {
      RC_ASSERT(group->Join(key, delta).ok());
      model.Join(delta);
    };

    int steps = *rc::gen::inRange(0, 60);
    for (int i = 0; i < steps; ++i) {
      switch (*rc::gen::inRange(0, 8)) {
        case 0: case 1: remote.Step(); break;
        case 2: case 3: {
          TypeParam before = model;
          std::optional<Crdt> expected;
          Operation op = LocalOp(model, node, &expected);
          StatusOr<uint64_t> seq = group->Mutate(key, op);
          RC_ASSERT(seq.ok());
          if (*seq == 0) {
            RC_ASSERT(model == before);  // the store skipped a no-op
          } else {
            HlcTimestamp stamp;
            if constexpr (std::is_same_v<TypeParam, LwwRegister>) stamp = model.timestamp();
            logged.push_back(Logged{*seq, expected, stamp});
          }
          break;
        }
        case 4:
          if (!remote.deltas.empty()) join_remote(*rc::gen::elementOf(remote.deltas));
          break;
        case 5:  // a full state, as anti-entropy sends
          join_remote(*rc::gen::elementOf(remote.replicas));
          break;
        default: commit();
      }
    }
    for (const auto& d : Shuffled(remote.deltas)) join_remote(d);
    commit();

    auto stored = store->Get(key, TypeOf(Crdt(model)));
    RC_ASSERT(stored.ok());
    if (model.IsBottom()) {
      RC_ASSERT(!stored->has_value());
    } else {
      RC_ASSERT(stored->has_value());
      RC_ASSERT(std::get<TypeParam>(**stored) == model);
    }
    if constexpr (std::is_same_v<TypeParam, OrSet>) {
      RC_ASSERT(*store->SetSize(key) == model.size());
      auto page = store->SetMembers(key, std::nullopt, 1000);
      RC_ASSERT(page->elements == model.Elements());
      for (const std::string& e : {"a", "b", "c", "d"}) {
        RC_ASSERT(*store->SetContains(key, e) == model.Contains(e));
      }
    }
  }));
}

}  // namespace
}  // namespace geokv::testing

// Lattice laws and convergence, for every CRDT type.

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "tests/crdt/simulation.h"

namespace geokv::testing {
namespace {

template <typename T>
T Joined(T a, const T& b) {
  a.Join(b);
  return a;
}

template <typename T>
class CrdtProperties : public ::testing::Test {};

using AllTypes = ::testing::Types<LwwRegister, MvRegister, OrSet, PnCounter>;
TYPED_TEST_SUITE(CrdtProperties, AllTypes);

TYPED_TEST(CrdtProperties, JoinIsCommutativeAssociativeIdempotent) {
  EXPECT_TRUE(rc::check([] {
    Simulation<TypeParam> sim;
    sim.RunSteps();
    const auto& [a, b, c] = std::tie(sim.replicas[0], sim.replicas[1], sim.replicas[2]);
    RC_ASSERT(Joined(a, b) == Joined(b, a));
    RC_ASSERT(Joined(Joined(a, b), c) == Joined(a, Joined(b, c)));
    RC_ASSERT(Joined(a, a) == a);
    RC_ASSERT(Joined(a, TypeParam()) == a);  // bottom is the identity
  }));
}

TYPED_TEST(CrdtProperties, ReplicasConvergeUnderRandomDelivery) {
  EXPECT_TRUE(rc::check([] {
    Simulation<TypeParam> sim;
    sim.RunSteps();
    sim.DeliverAll();
    RC_ASSERT(sim.replicas[0] == sim.replicas[1]);
    RC_ASSERT(sim.replicas[1] == sim.replicas[2]);
  }));
}

TYPED_TEST(CrdtProperties, DeltasInAnyOrderWithDuplicatesEqualJoinedStates) {
  EXPECT_TRUE(rc::check([] {
    Simulation<TypeParam> sim;
    sim.RunSteps();
    TypeParam full;
    for (const auto& r : sim.replicas) full.Join(r);

    std::vector<TypeParam> deliveries = sim.deltas;
    int dups = *rc::gen::inRange(0, 5);
    for (int i = 0; i < dups && !sim.deltas.empty(); ++i) {
      deliveries.push_back(*rc::gen::elementOf(sim.deltas));
    }
    TypeParam from_deltas;
    for (const auto& d : Shuffled(deliveries)) from_deltas.Join(d);
    RC_ASSERT(from_deltas == full);
  }));
}

TYPED_TEST(CrdtProperties, DeltaIsContainedInTheStateAfterTheMutation) {
  EXPECT_TRUE(rc::check([] {
    Simulation<TypeParam> sim;
    sim.RunSteps();
    TypeParam state = sim.replicas[0];
    TypeParam delta = RandomOp(state, kReplicaIds[0], *sim.clocks[0]);
    RC_ASSERT(Joined(state, delta) == state);
    // Joining the delta into the old state gives the new state: m(X) = X ⊔ mδ(X).
    RC_ASSERT(Joined(sim.replicas[0], delta) == state);
  }));
}

}  // namespace
}  // namespace geokv::testing

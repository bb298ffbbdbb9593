// Random multi-replica executions of every CRDT type, for property tests.
//
// Three replicas apply random operations; every delta goes to the other
// replicas' inboxes and is delivered in random order, sometimes more than
// once. Each replica has its own hybrid clock over one shared manual wall
// clock that RapidCheck moves forwards and backwards.

#ifndef GEOKV_TESTS_CRDT_SIMULATION_H_
#define GEOKV_TESTS_CRDT_SIMULATION_H_

#include <rapidcheck.h>

#include <memory>
#include <string>
#include <vector>

#include "crdt/crdt.h"

namespace geokv::testing {

inline constexpr int kReplicas = 3;
inline constexpr ReplicaId kReplicaIds[kReplicas] = {0x1111, 0x2222, 0x3333};

inline std::string SmallString() {
  static const std::vector<std::string> kPool = {"a", "b", "c", "d", "", "\x00\xff"};
  return *rc::gen::elementOf(kPool);
}

// `v` in an order RapidCheck picks (and shrinks).
template <typename T>
std::vector<T> Shuffled(std::vector<T> v) {
  for (size_t i = v.size(); i > 1; --i) {
    std::swap(v[i - 1], v[*rc::gen::inRange<size_t>(0, i)]);
  }
  return v;
}

// One random mutator call per type; returns the delta.
template <typename T>
T RandomOp(T& state, ReplicaId replica, HybridClock& clock);

template <>
inline LwwRegister RandomOp(LwwRegister& state, ReplicaId replica, HybridClock& clock) {
  if (*rc::gen::inRange(0, 4) == 0) return state.Delete(clock.Now(), replica);
  return state.Set(SmallString(), clock.Now(), replica);
}

template <>
inline MvRegister RandomOp(MvRegister& state, ReplicaId replica, HybridClock&) {
  switch (*rc::gen::inRange(0, 5)) {
    case 0: return state.Write(SmallString(), CausalContext(), replica);  // blind: a sibling
    case 1: return state.Clear(state.context());
    default: return state.Write(SmallString(), state.context(), replica);  // read-modify-write
  }
}

template <>
inline OrSet RandomOp(OrSet& state, ReplicaId replica, HybridClock&) {
  switch (*rc::gen::inRange(0, 8)) {
    case 0: return state.Clear();
    case 1: case 2: case 3: return state.Remove(SmallString());
    default: return state.Add(SmallString(), replica);
  }
}

template <>
inline PnCounter RandomOp(PnCounter& state, ReplicaId replica, HybridClock&) {
  if (*rc::gen::inRange(0, 6) == 0) return state.Reset();
  return state.Increment(replica, *rc::gen::inRange<int64_t>(-100, 101));
}

// What a replica does on receiving a delta: advance its clock past LWW
// stamps (as storage does), then join.
template <typename T>
void Receive(T& state, const T& delta, HybridClock& clock) {
  if constexpr (std::is_same_v<T, LwwRegister>) RC_ASSERT(clock.Update(delta.timestamp()).ok());
  state.Join(delta);
}

template <typename T>
struct Simulation {
  ManualClock wall{1000};
  std::vector<std::unique_ptr<HybridClock>> clocks;
  std::vector<T> replicas = std::vector<T>(kReplicas);
  std::vector<std::vector<T>> inboxes = std::vector<std::vector<T>>(kReplicas);
  std::vector<T> deltas;  // every delta made, in order

  Simulation() {
    for (int i = 0; i < kReplicas; ++i) clocks.push_back(std::make_unique<HybridClock>(&wall));
  }

  // One random step: an operation, a delivery (maybe keeping a duplicate),
  // or a move of the wall clock.
  void Step() {
    int r = *rc::gen::inRange(0, kReplicas);
    int kind = *rc::gen::inRange(0, 10);
    if (kind < 4) {
      T delta = RandomOp(replicas[r], kReplicaIds[r], *clocks[r]);
      deltas.push_back(delta);
      for (int j = 0; j < kReplicas; ++j) {
        if (j != r) inboxes[j].push_back(delta);
      }
    } else if (kind < 9) {
      auto& inbox = inboxes[r];
      if (inbox.empty()) return;
      size_t i = *rc::gen::inRange<size_t>(0, inbox.size());
      Receive(replicas[r], inbox[i], *clocks[r]);
      if (*rc::gen::inRange(0, 4) != 0) inbox.erase(inbox.begin() + static_cast<long>(i));
    } else {
      wall.Advance(*rc::gen::inRange<int64_t>(-50, 100));
    }
  }

  void RunSteps() {
    int steps = *rc::gen::inRange(0, 60);
    for (int i = 0; i < steps; ++i) Step();
  }

  // Delivers every pending delta, in random order.
  void DeliverAll() {
    for (int r = 0; r < kReplicas; ++r) {
      auto order = Shuffled(inboxes[r]);
      for (const T& d : order) Receive(replicas[r], d, *clocks[r]);
      inboxes[r].clear();
    }
  }
};

}  // namespace geokv::testing

#endif  // GEOKV_TESTS_CRDT_SIMULATION_H_

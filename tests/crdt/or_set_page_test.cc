// Paged OR-set transfer: pages of a state joined in any order, with
// duplicates, then the first page's context, equal the join of the whole
// state; any pages joined lie between the receiver and that join, so a
// transfer cut off anywhere loses nothing and brings nothing back.

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <set>

#include "tests/crdt/simulation.h"

namespace geokv::testing {
namespace {

OrSet Joined(OrSet a, const OrSet& b) {
  a.Join(b);
  return a;
}

// Whether `a` is below `b` in the lattice: a ⊔ b = b.
bool Below(const OrSet& a, const OrSet& b) { return Joined(a, b) == b; }

// The pages of `state` that PageAfter cuts, of random sizes.
std::vector<OrSetPage> PagesOf(const OrSet& state) {
  std::vector<OrSetPage> pages;
  std::optional<std::string> after;
  do {
    pages.push_back(state.PageAfter(after, *rc::gen::inRange<size_t>(1, 4)));
    after = pages.back().through;
  } while (pages.back().more());
  return pages;
}

// Pages of `state` cut at random strings, elements or not (a range may be
// empty).
std::vector<OrSetPage> PagesCutAnywhere(const OrSet& state) {
  std::set<std::string> cuts;
  const int n = *rc::gen::inRange(0, 5);
  for (int i = 0; i < n; ++i) cuts.insert(SmallString());
  std::vector<OrSetPage> pages;
  std::optional<std::string> after;
  auto cut = [&](std::optional<std::string> through) {
    OrSetPage page;
    page.after = after;
    page.through = through;
    page.context = state.context();
    for (const auto& [element, dots] : state.entries()) {
      if (page.InRange(element)) page.entries.emplace(element, dots);
    }
    pages.push_back(std::move(page));
    after = through;
  };
  for (const std::string& c : cuts) cut(c);
  cut(std::nullopt);
  return pages;
}

// A sender and a receiver that each saw part of one random execution.
struct Pair {
  OrSet sender;
  OrSet receiver;
};

Pair RandomPair() {
  Simulation<OrSet> sim;
  sim.RunSteps();
  return Pair{sim.replicas[0], sim.replicas[1]};
}

std::vector<OrSetPage> RandomPages(const OrSet& state) {
  return *rc::gen::inRange(0, 2) == 0 ? PagesOf(state) : PagesCutAnywhere(state);
}

TEST(OrSetPageProperties, AllPagesInAnyOrderWithDuplicatesEqualTheJoin) {
  EXPECT_TRUE(rc::check([] {
    const Pair p = RandomPair();
    const std::vector<OrSetPage> pages = RandomPages(p.sender);
    std::vector<OrSetPage> deliveries = pages;
    const int dups = *rc::gen::inRange(0, 4);
    for (int i = 0; i < dups; ++i) deliveries.push_back(*rc::gen::elementOf(pages));
    OrSet received = p.receiver;
    for (const OrSetPage& page : Shuffled(deliveries)) received.JoinPage(page);
    received.JoinPagedContext(pages.front().context);
    RC_ASSERT(received == Joined(p.receiver, p.sender));
  }));
}

TEST(OrSetPageProperties, AnyPagesLieBetweenTheReceiverAndTheJoin) {
  EXPECT_TRUE(rc::check([] {
    const Pair p = RandomPair();
    const std::vector<OrSetPage> pages = RandomPages(p.sender);
    const OrSet full = Joined(p.receiver, p.sender);
    OrSet received = p.receiver;
    const int n = *rc::gen::inRange(0, 6);
    for (int i = 0; i < n; ++i) {
      received.JoinPage(*rc::gen::elementOf(pages));
      RC_ASSERT(Below(p.receiver, received));
      RC_ASSERT(Below(received, full));
    }
    // Spelled out: an element the receiver loses is one the sender removed
    // (it saw every dot and holds none), and none comes back.
    for (const auto& [element, dots] : p.receiver.entries()) {
      if (received.Contains(element)) continue;
      const auto sent = p.sender.entries().find(element);
      for (const Dot& d : dots) {
        RC_ASSERT(p.sender.context().Contains(d));
        const bool held = sent != p.sender.entries().end() && sent->second.count(d) > 0;
        RC_ASSERT(!held);
      }
    }
    for (const auto& [element, dots] : received.entries()) {
      const bool known = p.receiver.Contains(element) || p.sender.Contains(element);
      RC_ASSERT(known);
    }
  }));
}

// Pages read in order while the sender keeps changing, finished with the
// first page's context, stay below the join with the sender's latest state.
TEST(OrSetPageProperties, PagesOfAChangingSenderFinishedWithTheFirstContextAreSafe) {
  EXPECT_TRUE(rc::check([] {
    Simulation<OrSet> sim;
    sim.RunSteps();
    const OrSet receiver = sim.replicas[1];
    OrSet received = receiver;
    std::optional<CausalContext> first;
    std::optional<std::string> after;
    bool more = true;
    while (more) {
      const OrSetPage page = sim.replicas[0].PageAfter(after, *rc::gen::inRange<size_t>(1, 3));
      if (!first) first = page.context;
      received.JoinPage(page);
      after = page.through;
      more = page.more();
      const int steps = *rc::gen::inRange(0, 4);
      for (int i = 0; i < steps; ++i) sim.Step();
    }
    received.JoinPagedContext(*first);
    RC_ASSERT(Below(receiver, received));
    RC_ASSERT(Below(received, Joined(receiver, sim.replicas[0])));
  }));
}

TEST(OrSetPage, PageAfterCutsInByteOrder) {
  OrSet set;
  set.AddAll({"a", "b", "c", "d", "e"}, 7);
  const OrSetPage first = set.PageAfter(std::nullopt, 2);
  EXPECT_EQ(first.after, std::nullopt);
  EXPECT_EQ(first.through, std::optional<std::string>("b"));
  EXPECT_TRUE(first.more());
  EXPECT_EQ(first.entries.size(), 2u);
  EXPECT_EQ(first.context, set.context());
  const OrSetPage second = set.PageAfter(first.through, 3);
  EXPECT_FALSE(second.more());
  EXPECT_EQ(second.entries.begin()->first, "c");
  EXPECT_EQ(second.entries.size(), 3u);
  EXPECT_EQ(set.PageAfter(std::string("e"), 1).entries.size(), 0u);
}

// Why the last step takes the first page's context: an add made between two
// reads, into a range already sent, is in the later pages' context but in
// no page.
TEST(OrSetPage, ContextReadAfterAnEarlierPageWouldRemoveAnAddItMissed) {
  OrSet sender;
  sender.AddAll({"b", "d"}, 1);
  const OrSetPage first = sender.PageAfter(std::nullopt, 1);  // through "b"
  sender.Add("a", 1);                                         // into the range sent
  const OrSetPage second = sender.PageAfter(first.through, 10);

  OrSet safe;
  safe.JoinPage(first);
  safe.JoinPage(second);
  safe.JoinPagedContext(first.context);
  EXPECT_TRUE(Joined(sender, safe).Contains("a"));
  EXPECT_EQ(safe.Elements(), (std::vector<std::string>{"b", "d"}));

  OrSet unsafe;
  unsafe.JoinPage(first);
  unsafe.JoinPage(second);
  unsafe.JoinPagedContext(second.context);
  EXPECT_FALSE(Joined(sender, unsafe).Contains("a"));  // the add would be lost
}

}  // namespace
}  // namespace geokv::testing

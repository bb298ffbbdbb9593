// Paged OR-set state in the store: SetStatePage reads what OrSet::PageAfter
// would, JoinSetPage joins as OrSet::JoinPage does, and a large set paged
// into another store ends with the sender's digest.

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "storage/store.h"
#include "tests/crdt/simulation.h"
#include "tests/storage/store_fixture.h"
#include "testing/test_dir.h"

namespace geokv::testing {
namespace {

std::unique_ptr<Store> OpenIn(const std::string& dir) {
  StoreOptions options;
  options.durability = Durability::kWal;
  auto s = Store::Open(dir, options);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

OrSet SetOf(Store* store, const std::string& key) {
  auto v = store->Get(key, CrdtType::kOrSet);
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  if (!v.ok() || !v->has_value()) return OrSet();
  return std::get<OrSet>(**v);
}

Status JoinState(Store* store, const std::string& key, const OrSet& state) {
  auto group = store->BeginGroup();
  GEOKV_RETURN_IF_ERROR(group->Join(key, state));
  return group->Commit();
}

Status JoinPage(Store* store, const std::string& key, const OrSetPage& page) {
  auto group = store->BeginGroup();
  GEOKV_RETURN_IF_ERROR(group->JoinSetPage(key, page));
  return group->Commit();
}

Status JoinContext(Store* store, const std::string& key, const CausalContext& ctx) {
  auto group = store->BeginGroup();
  GEOKV_RETURN_IF_ERROR(group->JoinSetContext(key, ctx));
  return group->Commit();
}

// Every page of the set at `key` in `store`, read in order.
std::vector<OrSetPage> ReadPages(Store* store, const std::string& key, size_t max_elements,
                                 size_t max_bytes) {
  std::vector<OrSetPage> pages;
  std::optional<std::string> after;
  do {
    std::optional<std::string_view> from;
    if (after) from = *after;
    auto page = store->SetStatePage(key, from, max_elements, max_bytes);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    if (!page.ok()) break;
    pages.push_back(std::move(*page));
    after = pages.back().through;
  } while (pages.back().more());
  return pages;
}

OrSet Joined(OrSet a, const OrSet& b) {
  a.Join(b);
  return a;
}

// Pages read from a sender store, joined into a receiver store in any
// order with duplicates, each checked against OrSet::JoinPage, then the
// first page's context: the receiver holds the join and the digest of a
// store that joined both whole states.
TEST(SetPageProperties, StorePagesJoinAsTheCrdtDoes) {
  EXPECT_TRUE(rc::check([] {
    Simulation<OrSet> sim;
    sim.RunSteps();
    const OrSet& sender = sim.replicas[0];
    const OrSet& receiver = sim.replicas[1];
    TestDir dir;
    auto a = OpenIn(dir.Sub("sender"));
    auto b = OpenIn(dir.Sub("receiver"));
    auto both = OpenIn(dir.Sub("both"));
    RC_ASSERT(a && b && both);
    RC_ASSERT(JoinState(a.get(), "s", sender).ok());
    RC_ASSERT(JoinState(b.get(), "s", receiver).ok());
    RC_ASSERT(JoinState(both.get(), "s", receiver).ok());
    RC_ASSERT(JoinState(both.get(), "s", sender).ok());

    const size_t per_page = *rc::gen::inRange<size_t>(1, 4);
    const std::vector<OrSetPage> pages = ReadPages(a.get(), "s", per_page, 1 << 20);
    // The store cuts the pages PageAfter cuts.
    std::optional<std::string> after;
    for (const OrSetPage& page : pages) {
      RC_ASSERT(page == sender.PageAfter(after, per_page));
      after = page.through;
    }
    std::vector<OrSetPage> deliveries = pages;
    const int dups = *rc::gen::inRange(0, 3);
    for (int i = 0; i < dups; ++i) deliveries.push_back(*rc::gen::elementOf(pages));
    OrSet expected = receiver;
    for (const OrSetPage& page : Shuffled(deliveries)) {
      RC_ASSERT(JoinPage(b.get(), "s", page).ok());
      expected.JoinPage(page);
      RC_ASSERT(SetOf(b.get(), "s") == expected);
    }
    RC_ASSERT(JoinContext(b.get(), "s", pages.front().context).ok());
    RC_ASSERT(SetOf(b.get(), "s") == Joined(receiver, sender));
    RC_ASSERT(*b->KeyDigest("s") == *both->KeyDigest("s"));
    RC_ASSERT(*b->SetSize("s") == Joined(receiver, sender).size());
  }));
}

class SetPageTest : public StoreTest {};

TEST_F(SetPageTest, PagesAreBoundedByCountAndBytes) {
  std::vector<std::string> elements;
  for (int i = 0; i < 100; ++i) elements.push_back("element" + std::to_string(1000 + i));
  ASSERT_TRUE(Apply("s", SetAdd{elements}).ok());
  const OrSet full = SetOf(store_.get(), "s");

  auto page = store_->SetStatePage("s", std::nullopt, 10, 1 << 20);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->entries.size(), 10u);
  EXPECT_EQ(page->through, std::optional<std::string>("element1009"));
  EXPECT_EQ(page->context, full.context());

  // A budget below one row still gives one element; one of a few rows'
  // bytes (each is an 11-byte name and its framed dots, tens of bytes)
  // gives a few.
  page = store_->SetStatePage("s", std::string_view("element1009"), 1000, 1);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->entries.size(), 1u);
  EXPECT_EQ(page->entries.begin()->first, "element1010");
  EXPECT_TRUE(page->more());
  page = store_->SetStatePage("s", std::nullopt, 1000, 300);
  ASSERT_TRUE(page.ok());
  EXPECT_GT(page->entries.size(), 1u);
  EXPECT_LT(page->entries.size(), 20u);
  EXPECT_TRUE(page->more());

  // The last page runs to the end.
  page = store_->SetStatePage("s", std::string_view("element1095"), 1000, 1 << 20);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->entries.size(), 4u);
  EXPECT_FALSE(page->more());

  // An absent set: an empty last page with an empty context.
  page = store_->SetStatePage("absent", std::nullopt, 10, 1 << 20);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->entries.empty());
  EXPECT_TRUE(page->context.empty());
  EXPECT_FALSE(page->more());
}

// A page decides removals inside its range only: the receiver's elements
// outside it stay, even when the page's context has seen their dots.
TEST_F(SetPageTest, APageRemovesOnlyInsideItsRange) {
  OrSet sender;
  sender.AddAll({"a", "b", "c", "d"}, 7);
  OrSet receiver = sender;
  sender.RemoveAll({"a", "d"});
  ASSERT_OK(JoinState(store_.get(), "s", receiver));
  const OrSetPage first = sender.PageAfter(std::nullopt, 1);  // "b": removes "a"
  ASSERT_EQ(first.through, std::optional<std::string>("b"));
  ASSERT_OK(JoinPage(store_.get(), "s", first));
  EXPECT_EQ(Members("s"), (std::vector<std::string>{"b", "c", "d"}));
  EXPECT_EQ(*store_->SetSize("s"), 3u);
  const OrSetPage rest = sender.PageAfter(first.through, 10);  // "c": removes "d"
  ASSERT_OK(JoinPage(store_.get(), "s", rest));
  EXPECT_EQ(Members("s"), (std::vector<std::string>{"b", "c"}));
  ASSERT_OK(JoinContext(store_.get(), "s", first.context));
  EXPECT_EQ(SetOf(store_.get(), "s"), sender);
}

// The size of the set paged below; 1,000,000 moves the same way, in about
// five times as long.
constexpr int kLargeSet = 200000;

// A large set paged into a wiped store and into one holding a stale copy,
// each page a group; the stale one is cut off half-way once and resumed.
// Both end with the sender's digest.
TEST_F(SetPageTest, LargeSetPagedInEqualsTheSender) {
  const auto started = std::chrono::steady_clock::now();
  constexpr int kBatch = 10000;
  TestDir other;
  auto stale = OpenIn(other.Sub("stale"));
  auto wiped = OpenIn(other.Sub("wiped"));
  ASSERT_TRUE(stale && wiped);
  auto name = [](int i) { return "member:" + std::to_string(i); };
  auto add = [&](int from, int to) {
    for (; from < to; from += kBatch) {
      std::vector<std::string> elements;
      for (int i = from; i < from + kBatch; ++i) elements.push_back(name(i));
      auto group = store_->BeginGroup();
      ASSERT_TRUE(group->Mutate("big", SetAdd{elements}).ok());
      ASSERT_OK(group->Commit());
    }
  };
  // The stale copy has the whole state of the first half; then the sender
  // adds the second half and removes some of both.
  add(0, kLargeSet / 2);
  ASSERT_OK(JoinState(stale.get(), "big", SetOf(store_.get(), "big")));
  add(kLargeSet / 2, kLargeSet);
  std::vector<std::string> removed;
  for (int i = 0; i < kLargeSet; i += 97) removed.push_back(name(i));
  ASSERT_TRUE(Apply("big", SetRemove{removed}).ok());
  const auto before_digest = std::chrono::steady_clock::now();
  const uint64_t digest = *store_->KeyDigest("big");
  std::cout << "KeyDigest of a " << kLargeSet << "-element set: "
            << std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() -
                                                         before_digest)
                   .count()
            << " us\n";
  const uint64_t size = *store_->SetSize("big");
  ASSERT_EQ(size, kLargeSet - removed.size());

  const std::vector<OrSetPage> pages = ReadPages(store_.get(), "big", 10000, 1 << 20);
  ASSERT_GT(pages.size(), 10u);
  // Cut off half-way: what the stale copy holds beyond those pages stays,
  // the elements the sender removed there too, until their page comes.
  const size_t cut = pages.size() / 2;
  for (size_t i = 0; i < cut; ++i) ASSERT_OK(JoinPage(stale.get(), "big", pages[i]));
  const std::string& boundary = *pages[cut - 1].through;
  int checked = 0;
  for (int i = 0; i < kLargeSet / 2; ++i) {
    const bool gone = i % 97 == 0;
    const bool decided = name(i) <= boundary;
    EXPECT_EQ(*stale->SetContains("big", name(i)), !(gone && decided)) << name(i);
    checked += gone && !decided;
  }
  EXPECT_GT(checked, 0);
  for (const OrSetPage& page : pages) {  // resumed from the start
    ASSERT_OK(JoinPage(stale.get(), "big", page));
    ASSERT_OK(JoinPage(wiped.get(), "big", page));
  }
  for (Store* store : {stale.get(), wiped.get()}) {
    ASSERT_OK(JoinContext(store, "big", pages.front().context));
    EXPECT_EQ(*store->KeyDigest("big"), digest);
    EXPECT_EQ(*store->SetSize("big"), size);
    EXPECT_EQ(*store->KeyCount(), 1u);
  }
  std::cout << "paged " << kLargeSet << " elements in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()
            << " s\n";
}

}  // namespace
}  // namespace geokv::testing

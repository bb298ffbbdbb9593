#include "storage/async_store.h"

#include <kj/async-io.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "tests/storage/store_fixture.h"

namespace geokv::testing {
namespace {

using AsyncStoreTest = StoreTest;

TEST_F(AsyncStoreTest, ReadsResolveOnTheLoopThreadWithTheStoresAnswers) {
  auto io_ = kj::setupAsyncIo();
  ASSERT_TRUE(Apply("k", LwwSet{"v"}).ok());
  ASSERT_TRUE(Apply("s", SetAdd{{"a", "b", "c"}}).ok());
  AsyncStore reader(*store_, 2);
  const std::thread::id loop = std::this_thread::get_id();

  auto got = reader.Get("k", CrdtType::kLww).wait(io_.waitScope);
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(std::get<LwwRegister>(**got).value(), std::optional<std::string>("v"));

  auto size = reader.SetSize("s").then([loop](StatusOr<uint64_t> n) {
    EXPECT_EQ(std::this_thread::get_id(), loop);
    return n;
  }).wait(io_.waitScope);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 3u);

  auto page = reader.SetMembers("s", std::string("a"), 10).wait(io_.waitScope);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->elements, (std::vector<std::string>{"b", "c"}));

  auto state_page = reader.SetStatePage("s", std::string("a"), 1, 1 << 20).wait(io_.waitScope);
  ASSERT_TRUE(state_page.ok());
  EXPECT_EQ(*state_page, *store_->SetStatePage("s", std::string_view("a"), 1, 1 << 20));
  EXPECT_EQ(state_page->through, std::optional<std::string>("b"));

  auto digest = reader.KeyDigest("k").wait(io_.waitScope);
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(*digest, *store_->KeyDigest("k"));

  auto log = reader.ReadLog(0, 100, 1 << 20).wait(io_.waitScope);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(log->size(), 2u);
}

TEST_F(AsyncStoreTest, TheLoopRunsWhileAReadIsBlocked) {
  auto io_ = kj::setupAsyncIo();
  AsyncStore reader(*store_, 1);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> started{false};
  auto blocked = reader.Run([released, &started](Store&) {
    started = true;
    released.wait();
    return 7;
  });
  // Timers on the loop fire while the reader thread is held.
  int ticks = 0;
  for (int i = 0; i < 5; ++i) {
    io_.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io_.waitScope);
    ++ticks;
  }
  EXPECT_EQ(ticks, 5);
  EXPECT_EQ(reader.pending(), 1u);
  release.set_value();
  EXPECT_EQ(blocked.wait(io_.waitScope), 7);
  EXPECT_TRUE(started);
}

TEST_F(AsyncStoreTest, ForegroundReadsDoNotWaitBehindBackgroundReads) {
  auto io_ = kj::setupAsyncIo();
  AsyncStore reader(*store_, 2);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> started{0};
  // Two long background reads: only one runs, the other thread stays free.
  auto first = reader.RunBackground([released, &started](Store&) {
    ++started;
    released.wait();
    return 1;
  });
  auto second = reader.RunBackground([released, &started](Store&) {
    ++started;
    released.wait();
    return 2;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (started.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_EQ(started.load(), 1);
  EXPECT_EQ(reader.Run([](Store&) { return 3; }).wait(io_.waitScope), 3);
  EXPECT_EQ(started.load(), 1);
  release.set_value();
  EXPECT_EQ(first.wait(io_.waitScope), 1);
  EXPECT_EQ(second.wait(io_.waitScope), 2);
  EXPECT_EQ(started.load(), 2);
}

TEST_F(AsyncStoreTest, AnExceptionInAReadRejectsItsPromise) {
  auto io_ = kj::setupAsyncIo();
  AsyncStore reader(*store_, 1);
  auto failed = reader.Run([](Store&) -> int { KJ_FAIL_REQUIRE("no such row"); });
  EXPECT_THROW(failed.wait(io_.waitScope), kj::Exception);
  // The reader thread keeps serving.
  EXPECT_EQ(reader.Run([](Store&) { return 1; }).wait(io_.waitScope), 1);
}

TEST_F(AsyncStoreTest, ADroppedPromiseDoesNotStopTheReadNorTheStore) {
  auto io_ = kj::setupAsyncIo();
  AsyncStore reader(*store_, 1);
  std::atomic<int> ran{0};
  {
    auto dropped = reader.Run([&ran](Store& s) {
      ++ran;
      return s.LastSeq();
    });
  }
  EXPECT_EQ(reader.Run([&ran](Store&) { return ran.load(); }).wait(io_.waitScope), 1);
}

}  // namespace
}  // namespace geokv::testing

#include "util/buffered_stream.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include <string>
#include <vector>

namespace geokv {
namespace {

// The stream under test's inner end: one end of an in-memory pipe (whose
// writes complete once the other end has read them), counting the reads
// and writes made to it.
class CallCounter final : public StreamWrapper {
 public:
  using StreamWrapper::StreamWrapper;

  int reads = 0;
  int writes = 0;
  bool fail_writes = false;

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    ++reads;
    return inner_->tryRead(buffer, min_bytes, max_bytes);
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    ++writes;
    if (fail_writes) return KJ_EXCEPTION(DISCONNECTED, "write failed");
    return inner_->write(buffer, size);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    ++writes;
    return inner_->write(pieces);
  }
};

class BufferedStreamTest : public ::testing::Test {
 protected:
  BufferedStreamTest() : io_(kj::setupAsyncIo()) {
    auto pipe = kj::newTwoWayPipe();
    auto counter = kj::heap<CallCounter>(kj::mv(pipe.ends[0]));
    counter_ = counter.get();
    far_ = kj::mv(pipe.ends[1]);
    stream_ = kj::heap<BufferedStream>(kj::mv(counter), /*timer=*/nullptr, /*max_buffered=*/64);
  }

  ~BufferedStreamTest() noexcept override {
    stream_ = nullptr;
    far_ = nullptr;
  }

  kj::WaitScope& ws() { return io_.waitScope; }

  // What the far end receives, `n` bytes.
  std::string Receive(size_t n) {
    std::string out(n, '\0');
    far_->read(out.data(), n).wait(ws());
    return out;
  }

  kj::AsyncIoContext io_;
  CallCounter* counter_ = nullptr;
  kj::Own<kj::AsyncIoStream> far_;
  kj::Own<BufferedStream> stream_;
};

kj::ArrayPtr<const kj::byte> Bytes(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

TEST_F(BufferedStreamTest, WritesOfOneTurnGoDownInOneWriteInOrder) {
  const std::string a = "header", b = "body", c = "next message";
  const kj::ArrayPtr<const kj::byte> pieces[] = {Bytes(a), Bytes(b)};
  auto first = stream_->write(kj::arrayPtr(pieces, 2));
  auto second = stream_->write(c.data(), c.size());
  // Done once copied: nothing has gone down yet.
  EXPECT_TRUE(first.poll(ws()));
  EXPECT_TRUE(second.poll(ws()));
  first.wait(ws());
  second.wait(ws());
  EXPECT_EQ(Receive(a.size() + b.size() + c.size()), a + b + c);
  EXPECT_EQ(counter_->writes, 1);
  ws().poll();
  EXPECT_TRUE(stream_->Flushed());
}

TEST_F(BufferedStreamTest, WritesMadeWhileOneIsUnderWayGoDownTogetherInTheNext) {
  auto one = stream_->write("one", 3);
  EXPECT_EQ(counter_->writes, 0);  // not before the loop turns
  ws().poll();
  one.wait(ws());  // "one" handed down; its write waits for the far end
  ASSERT_EQ(counter_->writes, 1);
  EXPECT_FALSE(stream_->Flushed());
  stream_->write("two", 3).wait(ws());
  stream_->write("three", 5).wait(ws());
  ws().poll();
  EXPECT_EQ(counter_->writes, 1);
  EXPECT_EQ(Receive(11), "onetwothree");
  EXPECT_EQ(counter_->writes, 2);
}

TEST_F(BufferedStreamTest, BeyondTheBoundAWriteWaitsUntilTheBytesGoDown) {
  stream_->write("x", 1).wait(ws());
  ws().poll();  // "x" is under way, unread
  const std::string big(100, 'y');  // over max_buffered (64)
  auto waiting = stream_->write(big.data(), big.size());
  EXPECT_FALSE(waiting.poll(ws()));
  EXPECT_EQ(Receive(1), "x");  // the first write completes; the next takes the 100 bytes
  EXPECT_TRUE(waiting.poll(ws()));
  waiting.wait(ws());
  EXPECT_EQ(Receive(big.size()), big);
}

TEST_F(BufferedStreamTest, AFailedWriteBelowFailsTheWritesAfterIt) {
  far_ = nullptr;  // the other end is gone: writes to the pipe fail
  stream_->write("lost", 4).wait(ws());
  ws().poll();
  auto after = stream_->write("more", 4);
  EXPECT_TRUE(kj::runCatchingExceptions([&] { after.wait(ws()); }) != nullptr)
      << "a write after a failed one succeeded";
}

TEST_F(BufferedStreamTest, ShutdownWriteEndsTheStreamAfterWhatWaits) {
  stream_->write("last words", 10).wait(ws());
  stream_->shutdownWrite();
  EXPECT_EQ(Receive(10), "last words");
  char byte;
  EXPECT_EQ(far_->tryRead(&byte, 1, 1).wait(ws()), 0u);  // end of stream
}

}  // namespace
}  // namespace geokv

namespace geokv {
namespace {

TEST_F(BufferedStreamTest, SmallReadsAreServedFromOneReadBelow) {
  const std::string sent = "headertablebody";
  auto written = far_->write(sent.data(), sent.size());
  char header[6], table[5], body[4];
  EXPECT_EQ(stream_->tryRead(header, 6, 6).wait(ws()), 6u);
  EXPECT_EQ(stream_->tryRead(table, 5, 5).wait(ws()), 5u);
  EXPECT_EQ(stream_->tryRead(body, 4, 4).wait(ws()), 4u);
  written.wait(ws());
  EXPECT_EQ(std::string(header, 6) + std::string(table, 5) + std::string(body, 4), sent);
  EXPECT_EQ(counter_->reads, 1);
}

TEST_F(BufferedStreamTest, AReadLargerThanTheBufferGoesStraightToTheCaller) {
  const std::string sent(3 * BufferedStream::kReadBufferBytes, 'z');
  auto written = far_->write(sent.data(), sent.size());
  std::string got(sent.size(), '\0');
  EXPECT_EQ(stream_->tryRead(got.data(), got.size(), got.size()).wait(ws()), got.size());
  written.wait(ws());
  EXPECT_EQ(got, sent);
}

TEST_F(BufferedStreamTest, AReadReturnsWhatIsBufferedAndTheEndOfTheStream) {
  auto written = far_->write("abc", 3);
  char out[16];
  EXPECT_EQ(stream_->tryRead(out, 1, 2).wait(ws()), 2u);
  written.wait(ws());
  far_->shutdownWrite();
  EXPECT_EQ(stream_->tryRead(out + 2, 5, 16).wait(ws()), 1u);  // "c", then the end
  EXPECT_EQ(std::string(out, 3), "abc");
  EXPECT_EQ(stream_->tryRead(out, 1, 16).wait(ws()), 0u);
}

}  // namespace
}  // namespace geokv

namespace geokv {
namespace {

TEST_F(BufferedStreamTest, AFailedWriteEndsTheReadsUnderWay) {
  char byte;
  auto read = stream_->tryRead(&byte, 1, 1);  // nothing comes: it waits
  EXPECT_FALSE(read.poll(ws()));
  counter_->fail_writes = true;
  stream_->write("lost", 4).wait(ws());
  ws().poll();
  EXPECT_TRUE(kj::runCatchingExceptions([&] { read.wait(ws()); }) != nullptr)
      << "a read went on waiting after the writes failed";
  auto later = stream_->tryRead(&byte, 1, 1);
  EXPECT_TRUE(kj::runCatchingExceptions([&] { later.wait(ws()); }) != nullptr);
}

TEST_F(BufferedStreamTest, DrainedResolvesOnceWhatWaitsHasGoneDown) {
  stream_->Drained().wait(ws());  // nothing written: at once
  stream_->write("tail", 4).wait(ws());
  auto drained = stream_->Drained();
  EXPECT_FALSE(drained.poll(ws()));  // the far end has not read it
  EXPECT_EQ(Receive(4), "tail");
  drained.wait(ws());
  EXPECT_TRUE(stream_->Flushed());
}

}  // namespace
}  // namespace geokv

namespace geokv {
namespace {

// Keeps the event queue from running dry until `*stop`.
kj::Promise<void> Spin(const bool* stop) {
  if (*stop) return kj::READY_NOW;
  return kj::evalLater([stop] { return Spin(stop); });
}

TEST_F(BufferedStreamTest, OnALoopThatNeverGoesIdleAWriteGoesDownWithinTheDelay) {
  // A node's loop polls for I/O and timers between turns while busy.
  ws().setBusyPollInterval(8);
  auto pipe = kj::newTwoWayPipe();
  BufferedStream timed(kj::mv(pipe.ends[0]), &io_.provider->getTimer());
  bool stop = false;
  auto spin = Spin(&stop).eagerlyEvaluate(nullptr);
  timed.write("x", 1).wait(ws());
  char got = 0;
  auto read = pipe.ends[1]->read(&got, 1).then([] { return true; });
  auto deadline = io_.provider->getTimer().afterDelay(5 * kj::SECONDS).then([] { return false; });
  EXPECT_TRUE(read.exclusiveJoin(kj::mv(deadline)).wait(ws()))
      << "the write waited for the loop to go idle";
  EXPECT_EQ(got, 'x');
  stop = true;
  spin.wait(ws());
}

}  // namespace
}  // namespace geokv

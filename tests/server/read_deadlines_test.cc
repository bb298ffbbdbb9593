// ReadDeadlines: the framing it follows and the deadlines it gives, over
// real Cap'n Proto messages fed in pieces.

#include "server/read_deadlines.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <string>

#include "schema/kv.capnp.h"

namespace geokv {
namespace {

constexpr kj::TimePoint kStart = kj::origin<kj::TimePoint>() + 1000 * kj::SECONDS;

// A framed message of about `value_bytes`, in as many segments as a first
// segment of `first_words` makes it take.
kj::Array<capnp::word> Message(size_t value_bytes, unsigned first_words) {
  capnp::MallocMessageBuilder builder(first_words, capnp::AllocationStrategy::FIXED_SIZE);
  auto set = builder.initRoot<rpc::SetRequest>();
  set.setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("key"), 3));
  std::string value(value_bytes, 'v');
  set.setValue(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
  return capnp::messageToFlatArray(builder);
}

TEST(ReadDeadlines, BetweenMessagesTheIdleLimitRunsFromTheLastMessagesEnd) {
  ReadDeadlines d(10 * kj::SECONDS, 2 * kj::SECONDS, kStart);
  EXPECT_TRUE(d.between_messages());
  EXPECT_EQ(d.Next(), kStart + 10 * kj::SECONDS);
  auto message = Message(100, 1024);
  auto bytes = message.asBytes();
  d.Arrived(bytes.slice(0, 3), kStart + 5 * kj::SECONDS);
  EXPECT_FALSE(d.between_messages());
  EXPECT_EQ(d.Next(), kStart + 7 * kj::SECONDS);  // its first byte + 2 s
  d.Arrived(bytes.slice(3, bytes.size()), kStart + 6 * kj::SECONDS);
  EXPECT_TRUE(d.between_messages());
  EXPECT_EQ(d.Next(), kStart + 16 * kj::SECONDS);
}

TEST(ReadDeadlines, ABusyConnectionsIdleTimeStartsAgain) {
  ReadDeadlines d(10 * kj::SECONDS, 2 * kj::SECONDS, kStart);
  d.Active(kStart + 8 * kj::SECONDS);
  EXPECT_EQ(d.Next(), kStart + 18 * kj::SECONDS);
  // Within a message the message's own deadline stands.
  d.Arrived(Message(10, 1024).asBytes().slice(0, 4), kStart + 9 * kj::SECONDS);
  d.Active(kStart + 10 * kj::SECONDS);
  EXPECT_EQ(d.Next(), kStart + 11 * kj::SECONDS);
}

TEST(ReadDeadlines, FollowsMessagesOfManySegmentsFedAByteAtATime) {
  ReadDeadlines d(10 * kj::SECONDS, 2 * kj::SECONDS, kStart);
  for (unsigned first_words : {1024u, 4u, 5u}) {  // 1, odd and even segment counts
    auto message = Message(300, first_words);
    auto bytes = message.asBytes();
    for (size_t i = 0; i < bytes.size(); ++i) {
      d.Arrived(bytes.slice(i, i + 1), kStart);
      EXPECT_EQ(d.between_messages(), i + 1 == bytes.size()) << first_words << " at " << i;
    }
  }
  // Two messages and half of a third in one piece.
  auto a = Message(10, 1024), b = Message(20, 4);
  std::string joined(a.asChars().begin(), a.asChars().end());
  joined.append(b.asChars().begin(), b.asChars().end());
  joined.append(a.asChars().begin(), a.asChars().size() / 2);
  d.Arrived(kj::arrayPtr(reinterpret_cast<const kj::byte*>(joined.data()), joined.size()), kStart);
  EXPECT_FALSE(d.between_messages());
}

TEST(ReadDeadlines, ALargeMessageGetsASecondPer64KiB) {
  ReadDeadlines d(10 * kj::SECONDS, 2 * kj::SECONDS, kStart);
  auto message = Message(640 << 10, 1024);
  d.Arrived(message.asBytes().slice(0, 100), kStart);
  EXPECT_EQ(d.Next(), kStart + 12 * kj::SECONDS);
}

TEST(ReadDeadlines, ZeroMeansNoLimitAndAHugeSizeDoesNotOverflow) {
  ReadDeadlines none(0 * kj::SECONDS, 0 * kj::SECONDS, kStart);
  EXPECT_EQ(none.Next(), nullptr);
  none.Arrived(Message(10, 1024).asBytes().slice(0, 4), kStart);
  EXPECT_EQ(none.Next(), nullptr);
  ReadDeadlines d(10 * kj::SECONDS, 2 * kj::SECONDS, kStart);
  // 2^32 segments announced, each of 2^32 - 1 words.
  std::string header("\xff\xff\xff\xff\xff\xff\xff\xff", 8);
  for (int i = 0; i < 100; ++i) header += "\xff\xff\xff\xff";
  d.Arrived(kj::arrayPtr(reinterpret_cast<const kj::byte*>(header.data()), header.size()), kStart);
  EXPECT_FALSE(d.between_messages());
  EXPECT_EQ(d.Next(), kStart + 2 * kj::SECONDS);  // the size is not known yet
}

}  // namespace
}  // namespace geokv

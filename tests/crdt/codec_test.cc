// Encoding round-trips; malformed bytes are errors, never crashes.

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <array>

#include <capnp/message.h>
#include <capnp/schema.h>

#include "crdt/codec.h"
#include "schema/framing.h"
#include "tests/crdt/simulation.h"
#include "util/coding.h"
#include "util/crc32c.h"

namespace geokv::testing {
namespace {

// A random state of a random type, from a random simulated history.
Crdt RandomState() {
  switch (*rc::gen::inRange(0, 4)) {
    case 0: { Simulation<LwwRegister> s; s.RunSteps(); return s.replicas[0]; }
    case 1: { Simulation<MvRegister> s; s.RunSteps(); return s.replicas[1]; }
    case 2: { Simulation<OrSet> s; s.RunSteps(); return s.replicas[2]; }
    default: { Simulation<PnCounter> s; s.RunSteps(); return s.replicas[0]; }
  }
}

// Replaces the frame's checksum so that a mutation reaches the decoder.
std::string Refresh(std::string framed) {
  framed.resize(framed.size() - 4);
  uint32_t crc = crc32c::Value(framed);
  for (int i = 0; i < 4; ++i) framed.push_back(static_cast<char>(crc >> (8 * i)));
  return framed;
}

TEST(Codec, RoundTripsEveryType) {
  EXPECT_TRUE(rc::check([] {
    Crdt state = RandomState();
    std::string bytes = EncodeCrdt(state);
    StatusOr<Crdt> decoded = DecodeCrdt(bytes);
    RC_ASSERT(decoded.ok());
    RC_ASSERT(*decoded == state);
    RC_ASSERT(EncodeCrdt(*decoded) == bytes);  // deterministic
  }));
}

TEST(Codec, RoundTripsContexts) {
  EXPECT_TRUE(rc::check([] {
    Simulation<OrSet> s;
    s.RunSteps();
    StatusOr<CausalContext> decoded = DecodeContext(EncodeContext(s.replicas[0].context()));
    RC_ASSERT(decoded.ok());
    RC_ASSERT(*decoded == s.replicas[0].context());
  }));
}

TEST(Codec, RoundTripsContextsWithRanges) {
  CausalContext c;
  for (uint64_t n = 1; n <= 3; ++n) c.Insert(Dot{7, n});
  for (uint64_t n = 1000; n < 1000 + 3 * CausalContext::kMaxCloudRun; ++n) c.Insert(Dot{7, n});
  c.Insert(Dot{7, 5000});
  c.Insert(Dot{9, 70});
  const std::string bytes = EncodeContext(c);
  StatusOr<CausalContext> decoded = DecodeContext(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, c);
  EXPECT_EQ(EncodeContext(*decoded), bytes);
  EXPECT_EQ(decoded->Encoded().ranges.size(), 1u);
}

TEST(Codec, ContextsWithoutLongRunsKeepTheirOldBytes) {
  // The form builds before ranges wrote: a version vector and a cloud.
  capnp::MallocMessageBuilder message;
  auto ctx = message.initRoot<schema::CausalContext>();
  auto vv = ctx.initVersionVector(1);
  vv[0].setReplica(7);
  vv[0].setCounter(3);
  auto cloud = ctx.initCloud(2);
  cloud[0].setReplica(7);
  cloud[0].setCounter(5);
  cloud[1].setReplica(7);
  cloud[1].setCounter(6);
  CausalContext c;
  for (uint64_t n : {1, 2, 3, 5, 6}) c.Insert(Dot{7, n});
  EXPECT_EQ(EncodeContext(c), FrameMessage(message));
}

TEST(Codec, RandomBytesAreErrors) {
  EXPECT_TRUE(rc::check([](const std::string& bytes) {
    RC_ASSERT(!DecodeCrdt(bytes).ok());
    // The same bytes framed with a valid version and checksum: a structural
    // error, or (rarely) a valid value.
    StatusOr<Crdt> framed = DecodeCrdt(Refresh(std::string(1, '\x01') + bytes + "crc!"));
    RC_ASSERT(framed.ok() || framed.status().IsCorruption());
  }));
}

TEST(Codec, MutatedBytesAreErrors) {
  EXPECT_TRUE(rc::check([] {
    std::string bytes = EncodeCrdt(RandomState());
    size_t i = *rc::gen::inRange<size_t>(0, bytes.size());
    bytes[i] = static_cast<char>(bytes[i] ^ *rc::gen::inRange(1, 256));
    StatusOr<Crdt> decoded = DecodeCrdt(bytes);
    RC_ASSERT(!decoded.ok());
    RC_ASSERT(decoded.status().IsCorruption());
  }));
}

TEST(Codec, TruncatedBytesAreErrors) {
  EXPECT_TRUE(rc::check([] {
    std::string bytes = EncodeCrdt(RandomState());
    size_t len = *rc::gen::inRange<size_t>(0, bytes.size());
    RC_ASSERT(!DecodeCrdt(bytes.substr(0, len)).ok());
  }));
}

// Behind a valid checksum the decoder still meets arbitrary structure: it
// must answer with an error or a valid value, and never crash (the test
// build runs under AddressSanitizer and UndefinedBehaviorSanitizer).
TEST(Codec, MutatedStructureBehindAValidChecksumNeverCrashes) {
  EXPECT_TRUE(rc::check([] {
    std::string bytes = EncodeCrdt(RandomState());
    int flips = *rc::gen::inRange(1, 8);
    for (int f = 0; f < flips; ++f) {
      size_t i = *rc::gen::inRange<size_t>(1, bytes.size() - 4);
      bytes[i] = static_cast<char>(bytes[i] ^ *rc::gen::inRange(1, 256));
    }
    StatusOr<Crdt> decoded = DecodeCrdt(Refresh(bytes));
    if (decoded.ok()) {
      // Whatever decodes is canonical: it re-encodes and decodes to itself.
      StatusOr<Crdt> again = DecodeCrdt(EncodeCrdt(*decoded));
      RC_ASSERT(again.ok());
      RC_ASSERT(*again == *decoded);
    } else {
      RC_ASSERT(decoded.status().IsCorruption());
    }
  }));
}

TEST(Codec, UnknownFormatVersionIsAnError) {
  std::string bytes = EncodeCrdt(PnCounter().Increment(1, 5));
  bytes[0] = static_cast<char>(kFormatVersion + 1);
  StatusOr<Crdt> decoded = DecodeCrdt(Refresh(bytes));
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.status().message().find("unknown format version 2"), std::string::npos)
      << decoded.status().ToString();
}

TEST(Codec, NonCanonicalStatesAreErrors) {
  // A sibling whose dot the context does not hold.
  capnp::MallocMessageBuilder message;
  auto mv = message.initRoot<schema::Value>().initMvRegister();
  auto siblings = mv.initSiblings(1);
  siblings[0].initDot().setReplica(7);
  siblings[0].getDot().setCounter(3);
  mv.initContext();
  StatusOr<Crdt> decoded = DecodeCrdt(FrameMessage(message));
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.status().IsCorruption());
}

TEST(Codec, OneDotUnderTwoElementsIsAnError) {
  capnp::MallocMessageBuilder message;
  auto set = message.initRoot<schema::Value>().initOrSet();
  auto entries = set.initEntries(2);
  for (unsigned i = 0; i < 2; ++i) {
    entries[i].setElement(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(i ? "b" : "a"), 1));
    auto dots = entries[i].initDots(1);
    dots[0].setReplica(7);
    dots[0].setCounter(1);
  }
  auto vv = set.initContext().initVersionVector(1);
  vv[0].setReplica(7);
  vv[0].setCounter(1);
  StatusOr<Crdt> decoded = DecodeCrdt(FrameMessage(message));
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.status().message().find("dot under two elements"), std::string::npos);
}

// A counter's entries in the form written before counters had reset floors.
std::string OldFormCounter(const std::vector<std::array<uint64_t, 3>>& entries) {
  capnp::MallocMessageBuilder message;
  auto list = message.initRoot<schema::Value>().initCounter().initEntries(
      static_cast<unsigned>(entries.size()));
  for (unsigned i = 0; i < entries.size(); ++i) {
    list[i].setReplica(entries[i][0]);
    list[i].setAdded(entries[i][1]);
    list[i].setSubtracted(entries[i][2]);
  }
  return FrameMessage(message);
}

TEST(Codec, CountersWithoutFloorsKeepTheirOldBytes) {
  // Adding the reset form to the union left the layout of a Value as it was:
  // one data word (the union's tag), one pointer shared by the members.
  auto layout = capnp::Schema::from<schema::Value>().getProto().getStruct();
  EXPECT_EQ(layout.getDataWordCount(), 1u);
  EXPECT_EQ(layout.getPointerCount(), 1u);
  PnCounter c;
  c.Increment(3, 5);
  c.Increment(9, -7);
  const std::string old = OldFormCounter({{3, 5, 0}, {9, 0, 7}});
  EXPECT_EQ(EncodeCrdt(c), old);
  // The message's bytes as the build before reset floors wrote them.
  const std::string framed = EncodeCrdt(c);
  EXPECT_EQ(ToHex(framed.substr(1, framed.size() - 5)),
            "000000000b000000000000000100010003000000000000000000000000000100010000003700000008"
            "000000030000000300000000000000050000000000000000000000000000000900000000000000000000"
            "00000000000700000000000000");
  StatusOr<Crdt> decoded = DecodeCrdt(old);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  const auto& entries = std::get<PnCounter>(*decoded).entries();
  EXPECT_EQ(entries.at(3), (PnCounter::Totals{5, 0, 0, 0}));
  EXPECT_EQ(entries.at(9), (PnCounter::Totals{0, 7, 0, 0}));
}

TEST(Codec, CountersWithFloorsRoundTrip) {
  PnCounter c;
  c.Increment(3, 5);
  c.Reset();
  c.Increment(3, 2);
  c.Increment(9, -7);
  StatusOr<Crdt> decoded = DecodeCrdt(EncodeCrdt(c));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(std::get<PnCounter>(*decoded), c);
  EXPECT_EQ(std::get<PnCounter>(*decoded).entries().at(3), (PnCounter::Totals{7, 0, 5, 0}));
}

TEST(Codec, CounterFloorsAboveTheirTotalsAreErrors) {
  auto reset_form = [](uint64_t added, uint64_t reset_added) {
    capnp::MallocMessageBuilder message;
    auto e = message.initRoot<schema::Value>().initResetCounter().initEntries(1)[0];
    e.setReplica(3);
    e.setAdded(added);
    e.setResetAdded(reset_added);
    return DecodeCrdt(FrameMessage(message));
  };
  EXPECT_TRUE(reset_form(5, 5).ok());
  StatusOr<Crdt> above = reset_form(5, 6);
  ASSERT_FALSE(above.ok());
  EXPECT_NE(above.status().message().find("reset floor above its total"), std::string::npos);
  // Without floors, the old form is the only one: equal states, equal bytes.
  StatusOr<Crdt> no_floors = reset_form(5, 0);
  ASSERT_FALSE(no_floors.ok());
  EXPECT_NE(no_floors.status().message().find("reset form without floors"), std::string::npos);
}

TEST(Codec, CountersAtTheLimitAreErrors) {
  EXPECT_FALSE(CausalContext::FromParts({{7, UINT64_MAX}}, {}).ok());
  EXPECT_FALSE(CausalContext::FromParts({{7, UINT64_MAX - 1}}, {Dot{7, 5}}).ok());
  EXPECT_FALSE(CausalContext::FromParts({}, {Dot{7, UINT64_MAX}}).ok());
}

}  // namespace
}  // namespace geokv::testing

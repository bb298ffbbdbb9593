// The decoding of set pages received from a peer: what a lying or broken
// peer sends is refused before anything is joined.

#include "replication/set_paging.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <string>

#include "crdt/codec.h"
#include "schema/crdt.capnp.h"
#include "schema/framing.h"
#include "schema/kv_text.h"

namespace geokv {
namespace {

constexpr size_t kLimit = 1 << 20;

OrSetPage PageOf(const std::vector<std::string>& elements, std::optional<std::string> after,
                 std::optional<std::string> through) {
  OrSet set;
  if (!elements.empty()) set.AddAll(elements, 7);
  OrSetPage page;
  page.after = std::move(after);
  page.through = std::move(through);
  page.entries = set.entries();
  page.context = set.context();
  return page;
}

StatusOr<ReceivedSetPage> RoundTrip(const OrSetPage& page, size_t limit = kLimit) {
  capnp::MallocMessageBuilder message;
  auto wire = message.initRoot<peer::SetPage>();
  EncodeSetPage("k", page, wire);
  return DecodeSetPage(wire.asReader(), limit);
}

TEST(SetPaging, APageRoundTrips) {
  OrSetPage page = PageOf({"b", "c"}, "a", "c");
  auto got = RoundTrip(page);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->key, "k");
  EXPECT_EQ(got->page, page);
  OrSetPage open = PageOf({"x"}, std::nullopt, std::nullopt);
  got = RoundTrip(open);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->page, open);
  EXPECT_FALSE(got->page.more());
}

TEST(SetPaging, RefusesAnElementOutsideTheRange) {
  EXPECT_FALSE(RoundTrip(PageOf({"a", "b"}, "a", "c")).ok());  // after is exclusive
  EXPECT_FALSE(RoundTrip(PageOf({"b", "d"}, "a", "c")).ok());
  EXPECT_FALSE(RoundTrip(PageOf({"a"}, "b", std::nullopt)).ok());
}

TEST(SetPaging, RefusesARangeThatEndsBeforeItStarts) {
  EXPECT_FALSE(RoundTrip(PageOf({}, "c", "b")).ok());
  EXPECT_FALSE(RoundTrip(PageOf({}, "c", "c")).ok());  // no progress
}

TEST(SetPaging, RefusesTooManyElementsOrBytes) {
  std::vector<std::string> many;
  for (size_t i = 0; i <= kSetPageMaxElements; ++i) many.push_back("e" + std::to_string(10000 + i));
  auto got = RoundTrip(PageOf(many, std::nullopt, std::nullopt));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().ToString().find("elements"), std::string::npos);
  many.pop_back();
  EXPECT_TRUE(RoundTrip(PageOf(many, std::nullopt, std::nullopt)).ok());
  got = RoundTrip(PageOf(many, std::nullopt, std::nullopt), 1000);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().ToString().find("bytes"), std::string::npos);
}

TEST(SetPaging, RefusesAStateThatIsNotAnOrSet) {
  capnp::MallocMessageBuilder message;
  auto wire = message.initRoot<peer::SetPage>();
  EncodeSetPage("k", PageOf({"a"}, std::nullopt, std::nullopt), wire);
  std::string counter = EncodeCrdt(Crdt(std::in_place_type<PnCounter>));
  wire.setState(AsData(counter));
  EXPECT_FALSE(DecodeSetPage(wire.asReader(), kLimit).ok());
  std::string garbage = "not a frame";
  wire.setState(AsData(garbage));
  EXPECT_FALSE(DecodeSetPage(wire.asReader(), kLimit).ok());
}

TEST(SetPaging, RefusesElementsOutOfOrder) {
  OrSetPage sorted = PageOf({"a", "b"}, std::nullopt, std::nullopt);
  std::string state =
      EncodeCrdt(Crdt(std::in_place_type<OrSet>, OrSet(sorted.entries, sorted.context)));
  capnp::MallocMessageBuilder swapped;
  ASSERT_TRUE(ReadFramed(state, [&swapped](capnp::MessageReader& m) {
                swapped.setRoot(m.getRoot<schema::Value>());
                return Status::OK();
              }).ok());
  auto entries = swapped.getRoot<schema::Value>().getOrSet().getEntries();
  entries[0].setElement(AsData("b"));
  entries[1].setElement(AsData("a"));
  std::string unsorted = FrameMessage(swapped);
  capnp::MallocMessageBuilder message;
  auto wire = message.initRoot<peer::SetPage>();
  EncodeSetPage("k", PageOf({}, std::nullopt, std::nullopt), wire);
  wire.setState(AsData(unsorted));
  auto got = DecodeSetPage(wire.asReader(), kLimit);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().ToString().find("sorted"), std::string::npos);
}

}  // namespace
}  // namespace geokv

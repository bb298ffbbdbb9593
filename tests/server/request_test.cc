// The client API's parser and encoder: limits, pointers read once, batches
// read whole before anything runs, and forwarding's round trip.

#include "server/wire_request.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "schema/kv_text.h"
#include "server/api_codec.h"

namespace geokv {
namespace {

const RequestLimits kLimits{8, 16};

TEST(ParseRequest, KeysAreCheckedAgainstTheLimit) {
  capnp::MallocMessageBuilder m;
  auto set = m.initRoot<rpc::SetRequest>();
  set.setValue(AsData("v"));
  ParsedRequest empty = ParseRequest(set.asReader(), kLimits);
  EXPECT_EQ(empty.status.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(empty.status.message(), "empty key");
  set.setKey(AsData("12345678"));
  ParsedRequest at_limit = ParseRequest(set.asReader(), kLimits);
  ASSERT_TRUE(at_limit.status.ok());
  EXPECT_EQ(at_limit.kind, RequestKind::kSet);
  EXPECT_EQ(at_limit.key, "12345678");
  EXPECT_EQ(std::get<LwwSet>(at_limit.op).value, "v");
  set.setKey(AsData("123456789"));
  ParsedRequest over = ParseRequest(set.asReader(), kLimits);
  EXPECT_EQ(over.status.code(), Status::Code::kTooLarge);
  EXPECT_EQ(over.status.message(), "key of 9 bytes exceeds max-key-bytes 8");
}

TEST(ParseRequest, ValuesAndElementsAreCheckedAgainstTheirLimits) {
  capnp::MallocMessageBuilder m;
  auto set = m.initRoot<rpc::SetRequest>();
  set.setKey(AsData("k"));
  set.setValue(AsData(std::string(17, 'v')));
  EXPECT_EQ(ParseRequest(set.asReader(), kLimits).status.message(),
            "value of 17 bytes exceeds max-value-bytes 16");

  capnp::MallocMessageBuilder m2;
  auto add = m2.initRoot<rpc::SAddRequest>();
  add.setKey(AsData("s"));
  EXPECT_EQ(ParseRequest(add.asReader(), kLimits).status.message(), "no set elements given");
  auto elements = add.initElements(2);
  elements.set(0, AsData("a"));
  elements.set(1, AsData("123456789"));
  EXPECT_EQ(ParseRequest(add.asReader(), kLimits).status.message(),
            "set element of 9 bytes exceeds max-key-bytes 8");
  elements.set(1, AsData("b"));
  ParsedRequest ok = ParseRequest(add.asReader(), kLimits);
  ASSERT_TRUE(ok.status.ok());
  EXPECT_EQ(std::get<SetAdd>(ok.op).elements, (std::vector<std::string>{"a", "b"}));
}

TEST(ParseRequest, ReadsCarryTheirTokensAndArguments) {
  capnp::MallocMessageBuilder m;
  auto members = m.initRoot<rpc::SMembersRequest>();
  members.setKey(AsData("s"));
  members.getFrom().setAfter(AsData("b"));
  members.setLimit(5000);
  members.setConsistency(rpc::Consistency::ALL);
  members.initTokens(1).set(0, AsData(EncodeToken({7, 3})));
  ParsedRequest p = ParseRequest(members.asReader(), kLimits);
  ASSERT_TRUE(p.status.ok()) << p.status.ToString();
  EXPECT_EQ(p.kind, RequestKind::kSMembers);
  EXPECT_EQ(p.after, std::optional<std::string>("b"));
  EXPECT_EQ(p.limit, kDefaultMembersPage) << "capped";
  EXPECT_EQ(p.consistency, Consistency::kAll);
  ASSERT_EQ(p.tokens.size(), 1u);
  EXPECT_EQ(p.tokens[0], (CausalToken{7, 3}));

  members.setLimit(0);
  EXPECT_EQ(ParseRequest(members.asReader(), kLimits).limit, kDefaultMembersPage);
  members.initTokens(1).set(0, AsData("garbage"));
  EXPECT_EQ(ParseRequest(members.asReader(), kLimits).status.code(),
            Status::Code::kInvalidArgument);
}

TEST(ParseRequest, WritesCarryTokensWithTheirStamps) {
  const CausalToken stamped{7, 3, HlcTimestamp{1'700'000'000'400, 2}};
  const std::string bytes = EncodeToken(stamped);
  EXPECT_EQ(bytes.size(), 29u);
  EXPECT_EQ(EncodeToken({7, 3}).size(), 17u) << "no stamp: the short form";
  capnp::MallocMessageBuilder m;
  auto set = m.initRoot<rpc::SetRequest>();
  set.setKey(AsData("k"));
  set.setValue(AsData("v"));
  auto tokens = set.initTokens(2);
  tokens.set(0, AsData(bytes));
  tokens.set(1, AsData(EncodeToken({8, 1})));
  ParsedRequest p = ParseRequest(set.asReader(), kLimits);
  ASSERT_TRUE(p.status.ok()) << p.status.ToString();
  ASSERT_EQ(p.tokens.size(), 2u);
  EXPECT_EQ(p.tokens[0], stamped);
  EXPECT_EQ(p.tokens[0].stamp, stamped.stamp);
  EXPECT_TRUE(p.tokens[1].stamp.IsZero());
  EXPECT_EQ(MaxStamp(p.tokens), stamped.stamp);

  // Forwarding keeps the stamps.
  capnp::MallocMessageBuilder out;
  auto request = out.initRoot<rpc::Request>();
  EncodeRequest(p, request);
  ParsedRequest back = ParseRequest(request.asReader(), kLimits);
  ASSERT_TRUE(back.status.ok()) << back.status.ToString();
  ASSERT_EQ(back.tokens.size(), 2u);
  EXPECT_EQ(back.tokens[0].stamp, stamped.stamp);

  // A stamp past the valid range, or a zero one in the long form, is not a token.
  std::string beyond = EncodeToken({7, 3, HlcTimestamp{kMaxHlcWallMs + 1, 0}});
  EXPECT_FALSE(DecodeToken(beyond).ok());
  std::string zero = EncodeToken({7, 3}) + std::string(12, '\0');
  EXPECT_FALSE(DecodeToken(zero).ok());
  tokens.set(0, AsData(beyond));
  EXPECT_EQ(ParseRequest(set.asReader(), kLimits).status.code(), Status::Code::kInvalidArgument);
}

TEST(ParseRequest, AContextOfAnotherKeyIsRefused) {
  CausalContext seen;
  seen.Insert(Dot{1, 1});
  capnp::MallocMessageBuilder m;
  auto mv = m.initRoot<rpc::MvSetRequest>();
  mv.setKey(AsData("a"));
  mv.setValue(AsData("v"));
  const std::string context = EncodeClientContext("b", seen);
  mv.setContext(AsData(context));
  EXPECT_EQ(ParseRequest(mv.asReader(), kLimits).status.message(),
            "the multi-value context belongs to another key");
}

TEST(ParseRequest, AnUnknownKindIsInvalid) {
  capnp::MallocMessageBuilder m;
  auto r = m.initRoot<rpc::Request>();
  r.initGet();
  auto data = capnp::AnyStruct::Builder(m.getRoot<rpc::Request>()).getDataSection();
  data[0] = 200;
  data[1] = 0;
  ParsedRequest p = ParseRequest(r.asReader(), kLimits);
  EXPECT_EQ(p.kind, RequestKind::kUnknown);
  EXPECT_EQ(p.status.message(), "unknown request kind 200");
}

// A batch of `reads` gets of key "k" after one increment, read back with a
// traversal limit of `limit_words`.
std::vector<ParsedRequest> ParseFramed(size_t reads, uint64_t limit_words) {
  capnp::MallocMessageBuilder m;
  auto list = m.initRoot<rpc::GeoKv::BatchParams>().initRequests(1 + reads);
  auto incr = list[0].initIncrBy();
  incr.setKey(AsData("c"));
  incr.setDelta(1);
  for (size_t i = 0; i < reads; ++i) list[1 + i].initGet().setKey(AsData("k"));
  kj::Array<capnp::word> words = capnp::messageToFlatArray(m);
  capnp::ReaderOptions options;
  options.traversalLimitInWords = limit_words;
  capnp::FlatArrayMessageReader reader(words, options);
  return ParseBatch(reader.getRoot<rpc::GeoKv::BatchParams>().getRequests(), kLimits);
}

TEST(ParseBatch, ReadsTheWholeBatchOrThrows) {
  std::vector<ParsedRequest> parsed = ParseFramed(3, 1 << 20);
  ASSERT_EQ(parsed.size(), 4u);
  EXPECT_EQ(parsed[0].kind, RequestKind::kIncrBy);
  for (size_t i = 1; i < parsed.size(); ++i) EXPECT_EQ(parsed[i].kind, RequestKind::kGet);
  // Past the limit the parse throws: it returns nothing for the front end
  // to run, not the requests it read before.
  EXPECT_THROW(ParseFramed(1000, 2000), kj::Exception);
}

TEST(ParseBatch, EachPointerIsReadOnce) {
  // The limit in words that a batch of 100 reads needs, read once: a parse
  // that read any pointer twice would need more.
  capnp::MallocMessageBuilder m;
  auto list = m.initRoot<rpc::GeoKv::BatchParams>().initRequests(100);
  for (uint32_t i = 0; i < 100; ++i) {
    auto get = list[i].initGet();
    get.setKey(AsData("key"));
    get.initTokens(1).set(0, AsData(EncodeToken({1, i})));
  }
  kj::Array<capnp::word> words = capnp::messageToFlatArray(m);
  capnp::ReaderOptions options;
  options.traversalLimitInWords = words.size();
  capnp::FlatArrayMessageReader reader(words, options);
  std::vector<ParsedRequest> parsed =
      ParseBatch(reader.getRoot<rpc::GeoKv::BatchParams>().getRequests(), kLimits);
  ASSERT_EQ(parsed.size(), 100u);
  EXPECT_EQ(parsed[99].tokens[0].seq, 99u);
}

// `r` encoded as a batch member and parsed back.
ParsedRequest RoundTrip(const ParsedRequest& r) {
  capnp::MallocMessageBuilder m;
  auto out = m.initRoot<rpc::Request>();
  EncodeRequest(r, out);
  return ParseRequest(out.asReader(), RequestLimits{});
}

TEST(EncodeRequest, ForwardingCarriesWhatWasParsed) {
  ParsedRequest add;
  add.kind = RequestKind::kSAdd;
  add.key = "s";
  add.consistency = Consistency::kOne;
  add.op = SetAdd{{"x", "y"}};
  ParsedRequest back = RoundTrip(add);
  ASSERT_TRUE(back.status.ok());
  EXPECT_EQ(back.kind, RequestKind::kSAdd);
  EXPECT_EQ(back.key, "s");
  EXPECT_EQ(back.consistency, Consistency::kOne);
  EXPECT_EQ(std::get<SetAdd>(back.op).elements, (std::vector<std::string>{"x", "y"}));

  ParsedRequest mv;
  mv.kind = RequestKind::kMvSet;
  mv.key = "m";
  CausalContext seen;
  seen.Insert(Dot{4, 2});
  mv.op = MvWrite{"v", seen};
  back = RoundTrip(mv);
  ASSERT_TRUE(back.status.ok()) << back.status.ToString();
  EXPECT_EQ(std::get<MvWrite>(back.op).value, "v");
  EXPECT_EQ(std::get<MvWrite>(back.op).seen, seen);

  ParsedRequest members;
  members.kind = RequestKind::kSMembers;
  members.key = "s";
  members.after = "b";
  members.limit = 7;
  members.tokens = {{9, 4}};
  back = RoundTrip(members);
  EXPECT_EQ(back.after, std::optional<std::string>("b"));
  EXPECT_EQ(back.limit, 7u);
  ASSERT_EQ(back.tokens.size(), 1u);
  EXPECT_EQ(back.tokens[0], (CausalToken{9, 4}));

  ParsedRequest incr;
  incr.kind = RequestKind::kIncrBy;
  incr.key = "c";
  incr.op = CounterAdd{-5};
  EXPECT_EQ(std::get<CounterAdd>(RoundTrip(incr).op).delta, -5);
}

TEST(DecodeReply, AnOwnersReplyBecomesTheResult) {
  capnp::MallocMessageBuilder m;
  auto reply = m.initRoot<rpc::Reply>();
  Result mv;
  mv.status = Status::TooLarge("big");
  mv.context = "ctx";
  EncodeReply(RequestKind::kMvGet, mv, reply);
  StatusOr<Result> back = DecodeReply(RequestKind::kMvGet, reply.asReader());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->status.code(), Status::Code::kTooLarge);
  EXPECT_EQ(back->status.message(), "big");
  EXPECT_EQ(back->context, "ctx");
  EXPECT_FALSE(DecodeReply(RequestKind::kGet, reply.asReader()).ok())
      << "another kind of reply";
}

}  // namespace
}  // namespace geokv

#include "server/wire_request.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <string>
#include <utility>

#include "schema/kv_text.h"
#include "server/api_codec.h"

namespace geokv {
namespace {

Status CheckValue(capnp::Data::Reader value, const RequestLimits& limits) {
  return CheckValue(View(value), limits);
}

// Elements are stored as parts of row keys, so they share the key limit.
StatusOr<std::vector<std::string>> ReadElements(capnp::List<capnp::Data>::Reader elements,
                                                const RequestLimits& limits) {
  if (elements.size() == 0) return Status::InvalidArgument("no set elements given");
  std::vector<std::string> out;
  out.reserve(elements.size());
  for (auto e : elements) {
    GEOKV_RETURN_IF_ERROR(CheckElement(View(e), limits));
    out.push_back(String(e));
  }
  return out;
}

// The fields every request has: its kind, key (checked), level and tokens.
template <typename Reader>
ParsedRequest Start(RequestKind kind, Reader r, const RequestLimits& limits) {
  ParsedRequest p;
  p.kind = kind;
  p.status = CheckConsistency(r.getConsistency());
  if (!p.status.ok()) return p;
  p.consistency = PlainConsistency(r.getConsistency());
  auto key = r.getKey();
  p.status = CheckKey(key, limits);
  if (!p.status.ok()) return p;
  p.key = String(key);
  auto tokens = DecodeTokens(r.getTokens());
  if (!tokens.ok()) {
    p.status = tokens.status();
  } else {
    p.tokens = std::move(tokens).value();
  }
  return p;
}

template <typename SetOperation, typename Reader>
ParsedRequest ParseElements(RequestKind kind, Reader r, const RequestLimits& limits) {
  ParsedRequest p = Start(kind, r, limits);
  if (!p.status.ok()) return p;
  auto elements = ReadElements(r.getElements(), limits);
  if (!elements.ok()) {
    p.status = elements.status();
  } else {
    p.op = SetOperation{std::move(elements).value()};
  }
  return p;
}

// The client context of a multi-value write, decoded against its key.
StatusOr<CausalContext> ReadContext(const ParsedRequest& p, capnp::Data::Reader context) {
  return DecodeClientContext(p.key, View(context));
}

}  // namespace

rpc::Outcome::Code OutcomeCode(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk: return rpc::Outcome::Code::OK;
    case Status::Code::kNotFound: return rpc::Outcome::Code::NOT_FOUND;
    case Status::Code::kWrongType: return rpc::Outcome::Code::WRONG_TYPE;
    case Status::Code::kTooLarge: return rpc::Outcome::Code::TOO_LARGE;
    case Status::Code::kInvalidArgument: return rpc::Outcome::Code::INVALID;
    case Status::Code::kUnavailable: return rpc::Outcome::Code::UNAVAILABLE;
    case Status::Code::kTimeout: return rpc::Outcome::Code::TIMEOUT;
    case Status::Code::kUnauthenticated: return rpc::Outcome::Code::UNAUTHENTICATED;
    case Status::Code::kPermissionDenied: return rpc::Outcome::Code::PERMISSION_DENIED;
    case Status::Code::kCorruption:
    case Status::Code::kIOError:
    case Status::Code::kFailedPrecondition: return rpc::Outcome::Code::INTERNAL;
  }
  return rpc::Outcome::Code::INTERNAL;
}

namespace {

Status StatusOf(rpc::Outcome::Reader outcome) {
  std::string message = outcome.getMessage();
  switch (outcome.getCode()) {
    case rpc::Outcome::Code::OK: return Status::OK();
    case rpc::Outcome::Code::NOT_FOUND: return Status::NotFound(std::move(message));
    case rpc::Outcome::Code::WRONG_TYPE: return Status::WrongType(std::move(message));
    case rpc::Outcome::Code::TOO_LARGE: return Status::TooLarge(std::move(message));
    case rpc::Outcome::Code::INVALID: return Status::InvalidArgument(std::move(message));
    case rpc::Outcome::Code::UNAVAILABLE: return Status::Unavailable(std::move(message));
    case rpc::Outcome::Code::TIMEOUT: return Status::Timeout(std::move(message));
    case rpc::Outcome::Code::UNAUTHENTICATED: return Status::Unauthenticated(std::move(message));
    case rpc::Outcome::Code::PERMISSION_DENIED:
      return Status::PermissionDenied(std::move(message));
    case rpc::Outcome::Code::INTERNAL: break;
  }
  return Status::IOError(std::move(message));
}

void SetValues(const std::vector<std::string>& values, capnp::List<capnp::Data>::Builder out) {
  for (size_t i = 0; i < values.size(); ++i) out.set(i, AsData(values[i]));
}

std::vector<std::string> Strings(capnp::List<capnp::Data>::Reader list) {
  std::vector<std::string> out;
  out.reserve(list.size());
  for (auto e : list) out.push_back(String(e));
  return out;
}

template <typename Builder>
void SetTokens(const ParsedRequest& r, Builder b) {
  b.setKey(AsData(r.key));
  b.setConsistency(WireConsistency(r.consistency));
  auto tokens = b.initTokens(r.tokens.size());
  for (size_t i = 0; i < r.tokens.size(); ++i) tokens.set(i, AsData(EncodeToken(r.tokens[i])));
}

}  // namespace

Status CheckKey(capnp::Data::Reader key, const RequestLimits& limits) {
  return CheckKey(View(key), limits);
}

rpc::Consistency WireConsistency(Consistency level) {
  switch (level) {
    case Consistency::kDefault: return rpc::Consistency::DEFAULT;
    case Consistency::kOne: return rpc::Consistency::ONE;
    case Consistency::kQuorum: return rpc::Consistency::QUORUM;
    case Consistency::kAll: return rpc::Consistency::ALL;
  }
  return rpc::Consistency::DEFAULT;
}

Status CheckConsistency(rpc::Consistency level) {
  if (static_cast<uint16_t>(level) <= static_cast<uint16_t>(rpc::Consistency::ALL)) {
    return Status::OK();
  }
  return Status::InvalidArgument("consistency " + std::to_string(static_cast<uint16_t>(level)) +
                                 " is none of default (0), one (1), quorum (2), all (3)");
}

Consistency PlainConsistency(rpc::Consistency level) {
  switch (level) {
    case rpc::Consistency::DEFAULT: return Consistency::kDefault;
    case rpc::Consistency::ONE: return Consistency::kOne;
    case rpc::Consistency::QUORUM: return Consistency::kQuorum;
    case rpc::Consistency::ALL: return Consistency::kAll;
  }
  return Consistency::kDefault;
}

ParsedRequest ParseRequest(rpc::SetRequest::Reader r, const RequestLimits& limits) {
  ParsedRequest p = Start(RequestKind::kSet, r, limits);
  auto value = r.getValue();
  if (p.status.ok()) p.status = CheckValue(value, limits);
  if (p.status.ok()) p.op = LwwSet{String(value)};
  return p;
}

ParsedRequest ParseRequest(rpc::DelRequest::Reader r, const RequestLimits& limits) {
  ParsedRequest p = Start(RequestKind::kDel, r, limits);
  p.op = LwwDelete{};
  return p;
}

ParsedRequest ParseRequest(rpc::MvSetRequest::Reader r, const RequestLimits& limits) {
  ParsedRequest p = Start(RequestKind::kMvSet, r, limits);
  auto value = r.getValue();
  if (p.status.ok()) p.status = CheckValue(value, limits);
  if (!p.status.ok()) return p;
  auto seen = ReadContext(p, r.getContext());
  if (!seen.ok()) {
    p.status = seen.status();
  } else {
    p.op = MvWrite{String(value), std::move(seen).value()};
  }
  return p;
}

ParsedRequest ParseRequest(rpc::MvDelRequest::Reader r, const RequestLimits& limits) {
  ParsedRequest p = Start(RequestKind::kMvDel, r, limits);
  if (!p.status.ok()) return p;
  auto seen = ReadContext(p, r.getContext());
  if (!seen.ok()) {
    p.status = seen.status();
  } else {
    p.op = MvClear{std::move(seen).value()};
  }
  return p;
}

ParsedRequest ParseRequest(rpc::SAddRequest::Reader r, const RequestLimits& limits) {
  return ParseElements<SetAdd>(RequestKind::kSAdd, r, limits);
}

ParsedRequest ParseRequest(rpc::SRemRequest::Reader r, const RequestLimits& limits) {
  return ParseElements<SetRemove>(RequestKind::kSRem, r, limits);
}

ParsedRequest ParseRequest(rpc::IncrByRequest::Reader r, const RequestLimits& limits) {
  ParsedRequest p = Start(RequestKind::kIncrBy, r, limits);
  p.op = CounterAdd{r.getDelta()};
  return p;
}

ParsedRequest ParseRequest(rpc::GetRequest::Reader r, const RequestLimits& limits) {
  return Start(RequestKind::kGet, r, limits);
}

ParsedRequest ParseRequest(rpc::MvGetRequest::Reader r, const RequestLimits& limits) {
  return Start(RequestKind::kMvGet, r, limits);
}

ParsedRequest ParseRequest(rpc::SIsMemberRequest::Reader r, const RequestLimits& limits) {
  ParsedRequest p = Start(RequestKind::kSIsMember, r, limits);
  if (p.status.ok()) p.element = String(r.getElement());
  return p;
}

ParsedRequest ParseRequest(rpc::SMembersRequest::Reader r, const RequestLimits& limits) {
  ParsedRequest p = Start(RequestKind::kSMembers, r, limits);
  if (!p.status.ok()) return p;
  auto from = r.getFrom();
  if (from.isAfter()) p.after = String(from.getAfter());
  const uint32_t limit = r.getLimit();
  p.limit = limit == 0 ? kDefaultMembersPage : std::min(limit, kDefaultMembersPage);
  return p;
}

ParsedRequest ParseRequest(rpc::SCardRequest::Reader r, const RequestLimits& limits) {
  return Start(RequestKind::kSCard, r, limits);
}

ParsedRequest ParseRequest(rpc::CounterGetRequest::Reader r, const RequestLimits& limits) {
  return Start(RequestKind::kCounterGet, r, limits);
}

ParsedRequest ParseRequest(rpc::TypeRequest::Reader r, const RequestLimits& limits) {
  return Start(RequestKind::kType, r, limits);
}

ParsedRequest ParseRequest(rpc::Request::Reader r, const RequestLimits& limits) {
  switch (r.which()) {
    case rpc::Request::SET: return ParseRequest(r.getSet(), limits);
    case rpc::Request::GET: return ParseRequest(r.getGet(), limits);
    case rpc::Request::DEL: return ParseRequest(r.getDel(), limits);
    case rpc::Request::MV_SET: return ParseRequest(r.getMvSet(), limits);
    case rpc::Request::MV_GET: return ParseRequest(r.getMvGet(), limits);
    case rpc::Request::MV_DEL: return ParseRequest(r.getMvDel(), limits);
    case rpc::Request::S_ADD: return ParseRequest(r.getSAdd(), limits);
    case rpc::Request::S_REM: return ParseRequest(r.getSRem(), limits);
    case rpc::Request::S_IS_MEMBER: return ParseRequest(r.getSIsMember(), limits);
    case rpc::Request::S_MEMBERS: return ParseRequest(r.getSMembers(), limits);
    case rpc::Request::S_CARD: return ParseRequest(r.getSCard(), limits);
    case rpc::Request::INCR_BY: return ParseRequest(r.getIncrBy(), limits);
    case rpc::Request::COUNTER_GET: return ParseRequest(r.getCounterGet(), limits);
    case rpc::Request::TYPE: return ParseRequest(r.getType(), limits);
  }
  ParsedRequest p;
  p.status = Status::InvalidArgument("unknown request kind " +
                                     std::to_string(static_cast<int>(r.which())));
  return p;
}

std::vector<ParsedRequest> ParseBatch(capnp::List<rpc::Request>::Reader requests,
                                      const RequestLimits& limits) {
  if (requests.size() > limits.max_batch_requests) {
    kj::throwFatalException(KJ_EXCEPTION(
        FAILED, kj::str("a batch of ", requests.size(), " requests; at most --max-batch-requests (",
                        limits.max_batch_requests, ")")));
  }
  std::vector<ParsedRequest> out;
  out.reserve(requests.size());
  for (auto r : requests) out.push_back(ParseRequest(r, limits));
  return out;
}

void EncodeRequest(const ParsedRequest& r, rpc::Request::Builder out) {
  switch (r.kind) {
    case RequestKind::kSet: {
      auto b = out.initSet();
      SetTokens(r, b);
      b.setValue(AsData(std::get<LwwSet>(r.op).value));
      return;
    }
    case RequestKind::kDel: SetTokens(r, out.initDel()); return;
    case RequestKind::kMvSet: {
      auto b = out.initMvSet();
      SetTokens(r, b);
      const auto& write = std::get<MvWrite>(r.op);
      b.setValue(AsData(write.value));
      b.setContext(AsData(EncodeClientContext(r.key, write.seen)));
      return;
    }
    case RequestKind::kMvDel: {
      auto b = out.initMvDel();
      SetTokens(r, b);
      b.setContext(AsData(EncodeClientContext(r.key, std::get<MvClear>(r.op).seen)));
      return;
    }
    case RequestKind::kSAdd: {
      auto b = out.initSAdd();
      SetTokens(r, b);
      const auto& elements = std::get<SetAdd>(r.op).elements;
      SetValues(elements, b.initElements(elements.size()));
      return;
    }
    case RequestKind::kSRem: {
      auto b = out.initSRem();
      SetTokens(r, b);
      const auto& elements = std::get<SetRemove>(r.op).elements;
      SetValues(elements, b.initElements(elements.size()));
      return;
    }
    case RequestKind::kIncrBy: {
      auto b = out.initIncrBy();
      SetTokens(r, b);
      b.setDelta(std::get<CounterAdd>(r.op).delta);
      return;
    }
    case RequestKind::kGet: SetTokens(r, out.initGet()); return;
    case RequestKind::kMvGet: SetTokens(r, out.initMvGet()); return;
    case RequestKind::kSIsMember: {
      auto b = out.initSIsMember();
      SetTokens(r, b);
      b.setElement(AsData(r.element));
      return;
    }
    case RequestKind::kSMembers: {
      auto b = out.initSMembers();
      SetTokens(r, b);
      if (r.after) b.getFrom().setAfter(AsData(*r.after));
      b.setLimit(r.limit);
      return;
    }
    case RequestKind::kSCard: SetTokens(r, out.initSCard()); return;
    case RequestKind::kCounterGet: SetTokens(r, out.initCounterGet()); return;
    case RequestKind::kType: SetTokens(r, out.initType()); return;
    case RequestKind::kUnknown: break;
  }
  KJ_FAIL_REQUIRE("cannot forward a request of an unknown kind");
}

void SetOutcome(const Status& status, rpc::Outcome::Builder out) {
  out.setCode(OutcomeCode(status));
  if (!status.ok()) out.setMessage(status.message());
  if (OutcomeCode(status) == rpc::Outcome::Code::INTERNAL) {
    spdlog::error("request failed: {}", status.ToString());
  }
}

void EncodeReply(const Result& r, rpc::WriteReply::Builder out) {
  if (!r.token.empty()) out.setToken(AsData(r.token));
  SetOutcome(r.status, out.initOutcome());
}

void EncodeReply(const Result& r, rpc::ValueReply::Builder out) {
  if (r.value) out.setValue(AsData(*r.value));
  SetOutcome(r.status, out.initOutcome());
}

void EncodeReply(const Result& r, rpc::MvReply::Builder out) {
  if (!r.context.empty()) out.setContext(AsData(r.context));
  if (!r.values.empty()) SetValues(r.values, out.initValues(r.values.size()));
  SetOutcome(r.status, out.initOutcome());
}

void EncodeReply(const Result& r, rpc::BoolReply::Builder out) {
  out.setValue(r.member);
  SetOutcome(r.status, out.initOutcome());
}

void EncodeReply(const Result& r, rpc::MembersReply::Builder out) {
  SetValues(r.elements, out.initElements(r.elements.size()));
  out.setMore(r.more);
  SetOutcome(r.status, out.initOutcome());
}

void EncodeReply(const Result& r, rpc::CountReply::Builder out) {
  out.setCount(r.count);
  SetOutcome(r.status, out.initOutcome());
}

void EncodeReply(const Result& r, rpc::CounterReply::Builder out) {
  out.setValue(r.counter);
  SetOutcome(r.status, out.initOutcome());
}

void EncodeReply(const Result& r, rpc::TypeReply::Builder out) {
  auto types = out.initTypes(r.types.size());
  for (size_t i = 0; i < r.types.size(); ++i) {
    types.set(i, static_cast<rpc::Type>(static_cast<uint16_t>(r.types[i])));
  }
  SetOutcome(r.status, out.initOutcome());
}

void EncodeReply(RequestKind kind, const Result& r, rpc::Reply::Builder out) {
  if (IsWrite(kind)) {
    EncodeReply(r, out.initWrite());
    return;
  }
  switch (kind) {
    case RequestKind::kGet: EncodeReply(r, out.initValue()); return;
    case RequestKind::kMvGet: EncodeReply(r, out.initMv()); return;
    case RequestKind::kSIsMember: EncodeReply(r, out.initBoolean()); return;
    case RequestKind::kSMembers: EncodeReply(r, out.initMembers()); return;
    case RequestKind::kSCard: EncodeReply(r, out.initCount()); return;
    case RequestKind::kCounterGet: EncodeReply(r, out.initCounter()); return;
    case RequestKind::kType: EncodeReply(r, out.initType()); return;
    default: break;
  }
  SetOutcome(r.status, out.initUnknown());
}

namespace {

// The fields of each reply kind, as EncodeReply wrote them.
void Fill(rpc::WriteReply::Reader w, Result& r) { r.token = String(w.getToken()); }
void Fill(rpc::ValueReply::Reader v, Result& r) {
  if (v.hasValue()) r.value = String(v.getValue());
}
void Fill(rpc::MvReply::Reader m, Result& r) {
  r.values = Strings(m.getValues());
  r.context = String(m.getContext());
}
void Fill(rpc::BoolReply::Reader b, Result& r) { r.member = b.getValue(); }
void Fill(rpc::MembersReply::Reader m, Result& r) {
  r.elements = Strings(m.getElements());
  r.more = m.getMore();
}
void Fill(rpc::CountReply::Reader c, Result& r) { r.count = c.getCount(); }
void Fill(rpc::CounterReply::Reader c, Result& r) { r.counter = c.getValue(); }
void Fill(rpc::TypeReply::Reader t, Result& r) {
  for (auto type : t.getTypes()) r.types.push_back(static_cast<CrdtType>(type));
}

template <typename Reader>
Result Decoded(Reader reader) {
  Result r;
  r.status = StatusOf(reader.getOutcome());
  Fill(reader, r);
  return r;
}

}  // namespace

StatusOr<Result> DecodeReply(RequestKind kind, rpc::Reply::Reader reply) {
  if (IsWrite(kind) && reply.isWrite()) return Decoded(reply.getWrite());
  switch (kind) {
    case RequestKind::kGet:
      if (reply.isValue()) return Decoded(reply.getValue());
      break;
    case RequestKind::kMvGet:
      if (reply.isMv()) return Decoded(reply.getMv());
      break;
    case RequestKind::kSIsMember:
      if (reply.isBoolean()) return Decoded(reply.getBoolean());
      break;
    case RequestKind::kSMembers:
      if (reply.isMembers()) return Decoded(reply.getMembers());
      break;
    case RequestKind::kSCard:
      if (reply.isCount()) return Decoded(reply.getCount());
      break;
    case RequestKind::kCounterGet:
      if (reply.isCounter()) return Decoded(reply.getCounter());
      break;
    case RequestKind::kType:
      if (reply.isType()) return Decoded(reply.getType());
      break;
    default: break;
  }
  return Status::Unavailable("the owner answered another kind of reply");
}

}  // namespace geokv

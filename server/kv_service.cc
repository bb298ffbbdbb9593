#include "server/kv_service.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "schema/kv_text.h"
#include "server/api_codec.h"
#include "util/coding.h"

namespace geokv {
namespace {


rpc::Outcome::Code CodeOf(const Status& s) {
  switch (s.code()) {
    case Status::Code::kOk: return rpc::Outcome::Code::OK;
    case Status::Code::kNotFound: return rpc::Outcome::Code::NOT_FOUND;
    case Status::Code::kWrongType: return rpc::Outcome::Code::WRONG_TYPE;
    case Status::Code::kTooLarge: return rpc::Outcome::Code::TOO_LARGE;
    case Status::Code::kInvalidArgument: return rpc::Outcome::Code::INVALID;
    case Status::Code::kUnavailable: return rpc::Outcome::Code::UNAVAILABLE;
    case Status::Code::kCorruption:
    case Status::Code::kIOError:
    case Status::Code::kFailedPrecondition: return rpc::Outcome::Code::INTERNAL;
  }
  return rpc::Outcome::Code::INTERNAL;
}

}  // namespace

KvService::KvService(Store& store, GroupCommitter& committer, KvServiceOptions options)
    : store_(store), committer_(committer), options_(std::move(options)) {}

void KvService::CheckServing() const {
  if (!serving_) kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "node is shutting down"));
}

kj::Promise<void> KvService::Overloaded() {
  return KJ_EXCEPTION(OVERLOADED, "too many writes waiting to commit; retry later");
}

void KvService::SetOutcome(rpc::Outcome::Builder out, const Status& status) {
  out.setCode(CodeOf(status));
  if (!status.ok()) out.setMessage(status.message());
  if (CodeOf(status) == rpc::Outcome::Code::INTERNAL) {
    spdlog::error("request failed: {}", status.ToString());
  }
}

Status KvService::CheckKey(capnp::Data::Reader key) const {
  if (key.size() == 0) return Status::InvalidArgument("empty key");
  if (key.size() > options_.max_key_bytes) {
    return Status::TooLarge("key of " + std::to_string(key.size()) +
                            " bytes exceeds max-key-bytes " +
                            std::to_string(options_.max_key_bytes));
  }
  return Status::OK();
}

Status KvService::CheckValue(capnp::Data::Reader value) const {
  if (value.size() > options_.max_value_bytes) {
    return Status::TooLarge("value of " + std::to_string(value.size()) +
                            " bytes exceeds max-value-bytes " +
                            std::to_string(options_.max_value_bytes));
  }
  return Status::OK();
}

StatusOr<std::vector<std::string>> KvService::ReadElements(
    capnp::List<capnp::Data>::Reader elements) const {
  if (elements.size() == 0) return Status::InvalidArgument("no set elements given");
  std::vector<std::string> out;
  out.reserve(elements.size());
  // Elements are stored as parts of row keys, so they share the key limit.
  for (auto e : elements) {
    if (e.size() > options_.max_key_bytes) {
      return Status::TooLarge("set element of " + std::to_string(e.size()) +
                              " bytes exceeds max-key-bytes " +
                              std::to_string(options_.max_key_bytes));
    }
    out.push_back(String(e));
  }
  return out;
}

Status KvService::Spend(const std::vector<std::string>& values) {
  size_t bytes = 0;
  for (const auto& v : values) bytes += v.size();
  return Spend(bytes);
}

Status KvService::Spend(size_t reply_bytes) {
  if (reply_bytes > reply_budget_) {
    return Status::TooLarge("the reply would exceed max-message-bytes " +
                            std::to_string(options_.max_message_bytes) +
                            "; read fewer or smaller values per call");
  }
  reply_budget_ -= reply_bytes;
  return Status::OK();
}

Status KvService::CheckTokens(capnp::List<capnp::Data>::Reader tokens) {
  if (tokens.size() == 0) return Status::OK();
  std::optional<std::map<ReplicaId, uint64_t>> applied;
  for (auto bytes : tokens) {
    GEOKV_ASSIGN_OR_RETURN(CausalToken token, DecodeToken(View(bytes)));
    uint64_t visible;
    if (token.origin == store_.node_id()) {
      visible = store_.LastSeq();
    } else {
      if (!applied) applied = store_.AppliedPositions();
      auto it = applied->find(token.origin);
      visible = it == applied->end() ? 0 : it->second;
    }
    if (token.seq > visible) {
      return Status::Unavailable("the write " + std::to_string(token.seq) + " of node " +
                                 std::to_string(token.origin) + " is not visible here yet");
    }
  }
  return Status::OK();
}

Status KvService::EmptySet(std::string_view key) {
  Status absent = Absent(key, CrdtType::kOrSet);
  return absent.IsNotFound() ? Status::OK() : absent;
}

Status KvService::Absent(std::string_view key, CrdtType wanted) {
  GEOKV_ASSIGN_OR_RETURN(std::vector<CrdtType> live, store_.LiveTypes(key));
  for (CrdtType t : live) {
    if (t != wanted) {
      return Status::WrongType("key '" + PrintableBytes(key) + "' holds a value of type " +
                               std::string(TypeName(t)) +
                               ", not " + std::string(TypeName(wanted)));
    }
  }
  return Status::NotFound("key not found");
}

// ---- writes ----------------------------------------------------------------

// Each getter below is called once per request: Cap'n Proto counts every
// pointer read against the message's traversal limit, which is the message
// size limit, so reading a large value twice would exceed it.

KvService::ParsedWrite KvService::Parse(rpc::SetRequest::Reader r) const {
  auto key = r.getKey();
  auto value = r.getValue();
  Status s = CheckKey(key);
  if (s.ok()) s = CheckValue(value);
  if (!s.ok()) return {s, {}, {}};
  return {s, String(key), LwwSet{String(value)}};
}

KvService::ParsedWrite KvService::Parse(rpc::DelRequest::Reader r) const {
  auto key = r.getKey();
  return {CheckKey(key), String(key), LwwDelete{}};
}

KvService::ParsedWrite KvService::Parse(rpc::MvSetRequest::Reader r) const {
  auto key = r.getKey();
  auto value = r.getValue();
  Status s = CheckKey(key);
  if (s.ok()) s = CheckValue(value);
  if (!s.ok()) return {s, {}, {}};
  auto seen = DecodeClientContext(View(key), View(r.getContext()));
  if (!seen.ok()) return {seen.status(), {}, {}};
  return {s, String(key), MvWrite{String(value), std::move(seen).value()}};
}

KvService::ParsedWrite KvService::Parse(rpc::MvDelRequest::Reader r) const {
  auto key = r.getKey();
  Status s = CheckKey(key);
  if (!s.ok()) return {s, {}, {}};
  auto seen = DecodeClientContext(View(key), View(r.getContext()));
  if (!seen.ok()) return {seen.status(), {}, {}};
  return {s, String(key), MvClear{std::move(seen).value()}};
}

template <typename SetOperation, typename Request>
KvService::ParsedWrite KvService::ParseElements(Request r) const {
  auto key = r.getKey();
  Status s = CheckKey(key);
  if (!s.ok()) return {s, {}, {}};
  auto elements = ReadElements(r.getElements());
  if (!elements.ok()) return {elements.status(), {}, {}};
  return {s, String(key), SetOperation{std::move(elements).value()}};
}

KvService::ParsedWrite KvService::Parse(rpc::SAddRequest::Reader r) const {
  return ParseElements<SetAdd>(r);
}

KvService::ParsedWrite KvService::Parse(rpc::SRemRequest::Reader r) const {
  return ParseElements<SetRemove>(r);
}

KvService::ParsedWrite KvService::Parse(rpc::IncrByRequest::Reader r) const {
  auto key = r.getKey();
  return {CheckKey(key), String(key), CounterAdd{r.getDelta()}};
}

kj::Promise<void> KvService::Write(ParsedWrite parsed, rpc::WriteReply::Builder reply) {
  if (!parsed.status.ok()) {
    SetOutcome(reply.initOutcome(), parsed.status);
    return kj::READY_NOW;
  }
  return committer_.Submit(std::move(parsed.key), std::move(parsed.op))
      .then([this, reply](WriteResult result) mutable {
        SetOutcome(reply.initOutcome(), result.status);
        if (result.status.ok()) {
          reply.setToken(AsData(EncodeToken({store_.node_id(), result.seq})));
        }
      });
}

// ---- reads -----------------------------------------------------------------

Status KvService::Read(std::string_view key, rpc::GetRequest::Reader,
                       rpc::ValueReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> state, store_.Get(key, CrdtType::kLww));
  if (state) {
    const auto& value = std::get<LwwRegister>(*state).value();
    if (value) {
      GEOKV_RETURN_IF_ERROR(Spend(value->size()));
      reply.setValue(AsData(*value));
      return Status::OK();
    }
  }
  return Absent(key, CrdtType::kLww);
}

Status KvService::Read(std::string_view key, rpc::MvGetRequest::Reader,
                       rpc::MvReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> state, store_.Get(key, CrdtType::kMvRegister));
  if (!state) return Absent(key, CrdtType::kMvRegister);
  const auto& reg = std::get<MvRegister>(*state);
  reply.setContext(AsData(EncodeClientContext(key, reg.context())));
  std::vector<std::string> values = reg.Values();
  if (values.empty()) return Absent(key, CrdtType::kMvRegister);
  // Too large to answer: the context alone still lets a write merge them.
  GEOKV_RETURN_IF_ERROR(Spend(values));
  auto out = reply.initValues(values.size());
  for (size_t i = 0; i < values.size(); ++i) out.set(i, AsData(values[i]));
  return Status::OK();
}

Status KvService::Read(std::string_view key, rpc::SIsMemberRequest::Reader r,
                       rpc::BoolReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(bool member, store_.SetContains(key, View(r.getElement())));
  reply.setValue(member);
  if (member) return Status::OK();
  return EmptySet(key);
}

Status KvService::Read(std::string_view key, rpc::SMembersRequest::Reader r,
                       rpc::MembersReply::Builder reply) {
  std::optional<std::string_view> after;
  auto from = r.getFrom();
  if (from.isAfter()) after = View(from.getAfter());
  uint32_t limit = r.getLimit() == 0 ? kDefaultMembersPage
                                     : std::min(r.getLimit(), kDefaultMembersPage);
  GEOKV_ASSIGN_OR_RETURN(SetPage page, store_.SetMembers(key, after, limit));
  GEOKV_RETURN_IF_ERROR(Spend(page.elements));
  auto out = reply.initElements(page.elements.size());
  for (size_t i = 0; i < page.elements.size(); ++i) out.set(i, AsData(page.elements[i]));
  reply.setMore(page.more);
  if (!page.elements.empty() || after) return Status::OK();
  return EmptySet(key);
}

Status KvService::Read(std::string_view key, rpc::SCardRequest::Reader,
                       rpc::CountReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(uint64_t size, store_.SetSize(key));
  reply.setCount(size);
  if (size > 0) return Status::OK();
  return EmptySet(key);
}

Status KvService::Read(std::string_view key, rpc::CounterGetRequest::Reader,
                       rpc::CounterReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> state, store_.Get(key, CrdtType::kCounter));
  if (!state) return Absent(key, CrdtType::kCounter);
  reply.setValue(std::get<PnCounter>(*state).Value());
  return Status::OK();
}

Status KvService::Read(std::string_view key, rpc::TypeRequest::Reader,
                       rpc::TypeReply::Builder reply) {
  GEOKV_ASSIGN_OR_RETURN(std::vector<CrdtType> live, store_.LiveTypes(key));
  auto out = reply.initTypes(live.size());
  for (size_t i = 0; i < live.size(); ++i) {
    out.set(i, static_cast<rpc::Type>(static_cast<uint16_t>(live[i])));
  }
  return Status::OK();
}

// ---- batches ---------------------------------------------------------------

kj::Promise<void> KvService::batch(BatchContext context) {
  CheckServing();
  auto requests = context.getParams().getRequests();
  auto replies = context.getResults().initReplies(requests.size());

  // Every request is read and checked before any write is queued, so a
  // batch that fails (a malformed message throws while it is read) or is
  // refused leaves nothing applied: retrying it cannot apply an increment
  // twice.
  std::vector<std::pair<ParsedWrite, rpc::WriteReply::Builder>> parsed;
  std::vector<uint32_t> reads;
  for (uint32_t i = 0; i < requests.size(); ++i) {
    auto r = requests[i];
    auto reply = replies[i];
    switch (r.which()) {
      case rpc::Request::SET: parsed.emplace_back(Parse(r.getSet()), reply.initWrite()); break;
      case rpc::Request::DEL: parsed.emplace_back(Parse(r.getDel()), reply.initWrite()); break;
      case rpc::Request::MV_SET:
        parsed.emplace_back(Parse(r.getMvSet()), reply.initWrite());
        break;
      case rpc::Request::MV_DEL:
        parsed.emplace_back(Parse(r.getMvDel()), reply.initWrite());
        break;
      case rpc::Request::S_ADD: parsed.emplace_back(Parse(r.getSAdd()), reply.initWrite()); break;
      case rpc::Request::S_REM: parsed.emplace_back(Parse(r.getSRem()), reply.initWrite()); break;
      case rpc::Request::INCR_BY:
        parsed.emplace_back(Parse(r.getIncrBy()), reply.initWrite());
        break;
      default:
        reads.push_back(i);
        break;
    }
  }
  if (parsed.size() > committer_.max_pending()) {
    // It could never fit: refusing each write is final, not OVERLOADED.
    Status refused = Status::TooLarge("a batch of " + std::to_string(parsed.size()) +
                                      " writes exceeds max-pending-writes " +
                                      std::to_string(committer_.max_pending()));
    for (auto& [write, reply] : parsed) write.status = refused;
  } else if (!committer_.HasRoom(parsed.size())) {
    return Overloaded();
  }

  kj::Vector<kj::Promise<void>> writes;
  for (auto& [write, reply] : parsed) writes.add(Write(std::move(write), reply));
  auto run_reads = [this, requests, replies, reads = std::move(reads)]() mutable {
    reply_budget_ = ReplyBudget();
    for (uint32_t i : reads) BatchRead(requests[i], replies[i]);
  };
  if (writes.empty()) {
    run_reads();
    return kj::READY_NOW;
  }
  return kj::joinPromises(writes.releaseAsArray()).then(kj::mv(run_reads));
}

void KvService::BatchRead(rpc::Request::Reader request, rpc::Reply::Builder reply) {
  switch (request.which()) {
    case rpc::Request::GET: Answer(request.getGet(), reply.initValue()); return;
    case rpc::Request::MV_GET: Answer(request.getMvGet(), reply.initMv()); return;
    case rpc::Request::S_IS_MEMBER: Answer(request.getSIsMember(), reply.initBoolean()); return;
    case rpc::Request::S_MEMBERS: Answer(request.getSMembers(), reply.initMembers()); return;
    case rpc::Request::S_CARD: Answer(request.getSCard(), reply.initCount()); return;
    case rpc::Request::COUNTER_GET: Answer(request.getCounterGet(), reply.initCounter()); return;
    case rpc::Request::TYPE: Answer(request.getType(), reply.initType()); return;
    default:
      SetOutcome(reply.initUnknown(),
                 Status::InvalidArgument("unknown request kind " +
                                         std::to_string(static_cast<int>(request.which()))));
      return;
  }
}

kj::Promise<void> KvService::info(InfoContext context) {
  CheckServing();
  auto out = context.getResults();
  out.setName(options_.name);
  out.setRegion(options_.region);
  out.setReplicaId(store_.node_id());
  out.setVersion(GEOKV_VERSION);
  out.setApiVersion(1);
  return kj::READY_NOW;
}

}  // namespace geokv

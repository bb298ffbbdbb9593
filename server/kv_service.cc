#include "server/kv_service.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "schema/kv_text.h"
#include "replication/causal_token.h"
#include "server/api_codec.h"
#include "util/coding.h"
#include "util/hash.h"

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
    case Status::Code::kTimeout: return rpc::Outcome::Code::TIMEOUT;
    case Status::Code::kCorruption:
    case Status::Code::kIOError:
    case Status::Code::kFailedPrecondition: return rpc::Outcome::Code::INTERNAL;
  }
  return rpc::Outcome::Code::INTERNAL;
}

}  // namespace

KvService::KvService(Store& store, GroupCommitter& committer, Replicator& replicator,
                     KvServiceOptions options)
    : store_(store), committer_(committer), replicator_(replicator), options_(std::move(options)) {}

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

kj::Promise<Status> KvService::TokensVisible(capnp::List<capnp::Data>::Reader list) {
  auto tokens = DecodeTokens(list);
  if (!tokens.ok()) return tokens.status();
  return replicator_.WaitVisible(std::move(tokens).value(), replicator_.token_wait());
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
  if (parsed.status.ok()) parsed.status = replicator_.WritesAllowed();
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
  // The reads run after the writes, and once the tokens of all of them are
  // visible (or --token-wait ran out: then each read whose own tokens are
  // not visible answers timeout).
  std::vector<CausalToken> tokens;
  for (uint32_t i : reads) {
    auto decoded = DecodeTokens(TokensOf(requests[i]));
    if (decoded.ok()) tokens.insert(tokens.end(), decoded->begin(), decoded->end());
  }
  kj::Promise<void> ready = writes.empty() ? kj::Promise<void>(kj::READY_NOW)
                                           : kj::joinPromises(writes.releaseAsArray());
  if (!tokens.empty()) {
    ready = ready.then([this, tokens = std::move(tokens)]() mutable {
      return replicator_.WaitVisible(std::move(tokens), replicator_.token_wait()).ignoreResult();
    });
  }
  return ready.then([this, requests, replies, reads = std::move(reads)]() mutable {
    reply_budget_ = ReplyBudget();
    for (uint32_t i : reads) BatchRead(requests[i], replies[i]);
  });
}

capnp::List<capnp::Data>::Reader KvService::TokensOf(rpc::Request::Reader request) {
  switch (request.which()) {
    case rpc::Request::GET: return request.getGet().getTokens();
    case rpc::Request::MV_GET: return request.getMvGet().getTokens();
    case rpc::Request::S_IS_MEMBER: return request.getSIsMember().getTokens();
    case rpc::Request::S_MEMBERS: return request.getSMembers().getTokens();
    case rpc::Request::S_CARD: return request.getSCard().getTokens();
    case rpc::Request::COUNTER_GET: return request.getCounterGet().getTokens();
    case rpc::Request::TYPE: return request.getType().getTokens();
    default: return {};
  }
}

Status KvService::TokensNow(capnp::List<capnp::Data>::Reader list) const {
  GEOKV_ASSIGN_OR_RETURN(std::vector<CausalToken> tokens, DecodeTokens(list));
  if (replicator_.Visible(tokens)) return Status::OK();
  return Status::Timeout("the tokens' writes did not become visible here within --token-wait (" +
                         std::to_string(replicator_.token_wait().count()) + " ms)");
}

void KvService::BatchRead(rpc::Request::Reader request, rpc::Reply::Builder reply) {
  Status tokens = TokensNow(TokensOf(request));
  switch (request.which()) {
    case rpc::Request::GET: Answer(request.getGet(), reply.initValue(), tokens); return;
    case rpc::Request::MV_GET: Answer(request.getMvGet(), reply.initMv(), tokens); return;
    case rpc::Request::S_IS_MEMBER:
      Answer(request.getSIsMember(), reply.initBoolean(), tokens);
      return;
    case rpc::Request::S_MEMBERS: Answer(request.getSMembers(), reply.initMembers(), tokens); return;
    case rpc::Request::S_CARD: Answer(request.getSCard(), reply.initCount(), tokens); return;
    case rpc::Request::COUNTER_GET:
      Answer(request.getCounterGet(), reply.initCounter(), tokens);
      return;
    case rpc::Request::TYPE: Answer(request.getType(), reply.initType(), tokens); return;
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
  std::vector<uint64_t> digests = store_.TreeDigests();
  out.setStateDigest(Hash64(std::string_view(reinterpret_cast<const char*>(digests.data()),
                                             digests.size() * sizeof(uint64_t))));
  out.setLastSeq(store_.LastSeq());
  out.setClockOffsetMs(replicator_.ClockOffsetMs());
  Status writes = replicator_.WritesAllowed();
  if (!writes.ok()) out.setWritesRefused(writes.message());
  std::vector<PeerStatus> peers = replicator_.Peers();
  auto list = out.initPeers(peers.size());
  for (size_t i = 0; i < peers.size(); ++i) {
    const PeerStatus& p = peers[i];
    auto info = list[i];
    info.setRegion(p.address.region);
    info.setAddress(p.address.address);
    info.setName(p.name);
    info.setConnected(p.connected);
    info.setRepairing(p.repairing);
    info.setAcked(p.acked);
    info.setBacklogBytes(p.backlog_bytes);
    info.setClockOffsetMs(p.clock_offset_ms.value_or(0));
  }
  return kj::READY_NOW;
}

kj::Promise<void> KvService::waitReplicated(WaitReplicatedContext context) {
  CheckServing();
  auto request = context.getParams();
  auto reply = context.getResults();
  auto tokens = DecodeTokens(request.getTokens());
  if (!tokens.ok()) {
    SetOutcome(reply.initOutcome(), tokens.status());
    return kj::READY_NOW;
  }
  std::vector<std::string> regions;
  for (auto r : request.getRegions()) regions.emplace_back(r.cStr());
  auto timeout = request.getTimeoutMs() == 0 ? replicator_.token_wait()
                                             : std::chrono::milliseconds(request.getTimeoutMs());
  return replicator_.WaitReplicated(std::move(tokens).value(), std::move(regions), timeout)
      .then([this, reply, timeout](StatusOr<std::vector<std::string>> missing) mutable {
        if (!missing.ok()) {
          SetOutcome(reply.initOutcome(), missing.status());
          return;
        }
        if (missing->empty()) {
          SetOutcome(reply.initOutcome(), Status::OK());
          return;
        }
        std::string names;
        auto list = reply.initMissing(missing->size());
        for (size_t i = 0; i < missing->size(); ++i) {
          list.set(i, (*missing)[i]);
          names += (i ? ", " : "") + (*missing)[i];
        }
        SetOutcome(reply.initOutcome(),
                   Status::Timeout("not replicated to " + names + " within " +
                                   std::to_string(timeout.count()) + " ms"));
      });
}

}  // namespace geokv

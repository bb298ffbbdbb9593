// The client API (schema/kv.capnp) of one node: validates each request
// against the limits, sends writes through the group committer and answers
// reads from the store on the event loop's thread.

#ifndef GEOKV_SERVER_KV_SERVICE_H_
#define GEOKV_SERVER_KV_SERVICE_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "schema/kv.capnp.h"
#include "schema/kv_text.h"
#include "replication/group_commit.h"
#include "replication/replicator.h"
#include "storage/store.h"

namespace geokv {

struct KvServiceOptions {
  std::string name;    // the node's name
  std::string region;
  size_t max_key_bytes = 4 << 10;    // keys and set elements
  size_t max_value_bytes = 8 << 20;  // register values
  // The largest message; replies are kept below it (see ReplyBudget).
  size_t max_message_bytes = 64 << 20;
};

// Default page of sMembers when the request's limit is 0, and its largest.
inline constexpr uint32_t kDefaultMembersPage = 1000;

// Lives on the event loop's thread, like the committer and every call.
class KvService final : public rpc::GeoKv::Server {
 public:
  // `store`, `committer` and `replicator` must outlive the service.
  KvService(Store& store, GroupCommitter& committer, Replicator& replicator,
            KvServiceOptions options);

  // From now on every call fails with DISCONNECTED ("shutting down"); calls
  // already accepted run to the end.
  void StopServing() { serving_ = false; }

  kj::Promise<void> set(SetContext context) override { return WriteCall(context); }
  kj::Promise<void> get(GetContext context) override { return ReadCall(context); }
  kj::Promise<void> del(DelContext context) override { return WriteCall(context); }
  kj::Promise<void> mvSet(MvSetContext context) override { return WriteCall(context); }
  kj::Promise<void> mvGet(MvGetContext context) override { return ReadCall(context); }
  kj::Promise<void> mvDel(MvDelContext context) override { return WriteCall(context); }
  kj::Promise<void> sAdd(SAddContext context) override { return WriteCall(context); }
  kj::Promise<void> sRem(SRemContext context) override { return WriteCall(context); }
  kj::Promise<void> sIsMember(SIsMemberContext context) override { return ReadCall(context); }
  kj::Promise<void> sMembers(SMembersContext context) override { return ReadCall(context); }
  kj::Promise<void> sCard(SCardContext context) override { return ReadCall(context); }
  kj::Promise<void> incrBy(IncrByContext context) override { return WriteCall(context); }
  kj::Promise<void> counterGet(CounterGetContext context) override { return ReadCall(context); }
  kj::Promise<void> type(TypeContext context) override { return ReadCall(context); }
  kj::Promise<void> batch(BatchContext context) override;
  kj::Promise<void> info(InfoContext context) override;
  kj::Promise<void> waitReplicated(WaitReplicatedContext context) override;

 private:
  // A write request turned into what the store applies, or why it is refused.
  struct ParsedWrite {
    Status status;
    std::string key;
    Operation op;
  };

  template <typename Context>
  kj::Promise<void> WriteCall(Context& context) {
    CheckServing();
    ParsedWrite parsed = Parse(context.getParams());
    if (parsed.status.ok() && !committer_.HasRoom(1)) return Overloaded();
    return Write(std::move(parsed), context.getResults());
  }

  // Answers at once, or once the request's tokens are visible here.
  template <typename Context>
  kj::Promise<void> ReadCall(Context& context) {
    CheckServing();
    auto request = context.getParams();
    if (request.getTokens().size() == 0) {
      reply_budget_ = ReplyBudget();
      Answer(request, context.getResults(), Status::OK());
      return kj::READY_NOW;
    }
    return TokensVisible(request.getTokens()).then([this, context](Status s) mutable {
      reply_budget_ = ReplyBudget();
      Answer(context.getParams(), context.getResults(), s);
    });
  }

  // Answers a read request whose tokens ended as `tokens` says.
  template <typename Request, typename Reply>
  void Answer(Request request, Reply reply, Status tokens) {
    auto key = request.getKey();
    Status s = CheckKey(key);
    if (s.ok()) s = tokens;
    if (s.ok()) s = Read(View(key), request, reply);
    SetOutcome(reply.initOutcome(), s);
  }

  void CheckServing() const;
  static kj::Promise<void> Overloaded();
  static void SetOutcome(rpc::Outcome::Builder out, const Status& status);

  Status CheckKey(capnp::Data::Reader key) const;
  Status CheckValue(capnp::Data::Reader value) const;
  // The elements, each checked against the limit, read once (every read
  // counts against the message's traversal limit).
  StatusOr<std::vector<std::string>> ReadElements(
      capnp::List<capnp::Data>::Reader elements) const;

  // Bytes of values one call's reply may carry: a reply, like a request,
  // must fit in max-message-bytes, with room for its structure.
  size_t ReplyBudget() const { return options_.max_message_bytes / 2; }
  // Takes `reply_bytes` from the current call's budget, or TooLarge.
  Status Spend(size_t reply_bytes);
  Status Spend(const std::vector<std::string>& values);
  // Resolves OK once every token's write is visible here, Timeout after
  // --token-wait, InvalidArgument for a token that does not decode.
  kj::Promise<Status> TokensVisible(capnp::List<capnp::Data>::Reader tokens);
  // For a set read with an empty answer: OK, or WrongType when another
  // type is live at `key`.
  Status EmptySet(std::string_view key);
  // NotFound, or WrongType when another type is live at `key`.
  Status Absent(std::string_view key, CrdtType wanted);

  ParsedWrite Parse(rpc::SetRequest::Reader r) const;
  ParsedWrite Parse(rpc::DelRequest::Reader r) const;
  ParsedWrite Parse(rpc::MvSetRequest::Reader r) const;
  ParsedWrite Parse(rpc::MvDelRequest::Reader r) const;
  ParsedWrite Parse(rpc::SAddRequest::Reader r) const;
  ParsedWrite Parse(rpc::SRemRequest::Reader r) const;
  ParsedWrite Parse(rpc::IncrByRequest::Reader r) const;
  // sAdd and sRem: a key and a non-empty list of elements.
  template <typename SetOperation, typename Request>
  ParsedWrite ParseElements(Request r) const;
  kj::Promise<void> Write(ParsedWrite parsed, rpc::WriteReply::Builder reply);

  // Fill the reply's fields but the outcome; return the outcome. `key` is
  // the request's key, already checked.
  Status Read(std::string_view key, rpc::GetRequest::Reader r,
              rpc::ValueReply::Builder reply);
  Status Read(std::string_view key, rpc::MvGetRequest::Reader r,
              rpc::MvReply::Builder reply);
  Status Read(std::string_view key, rpc::SIsMemberRequest::Reader r,
              rpc::BoolReply::Builder reply);
  Status Read(std::string_view key, rpc::SMembersRequest::Reader r,
              rpc::MembersReply::Builder reply);
  Status Read(std::string_view key, rpc::SCardRequest::Reader r,
              rpc::CountReply::Builder reply);
  Status Read(std::string_view key, rpc::CounterGetRequest::Reader r,
              rpc::CounterReply::Builder reply);
  Status Read(std::string_view key, rpc::TypeRequest::Reader r,
              rpc::TypeReply::Builder reply);
  // One read of a batch.
  void BatchRead(rpc::Request::Reader request, rpc::Reply::Builder reply);
  // The tokens of a read request (empty for a write or unknown kind).
  static capnp::List<capnp::Data>::Reader TokensOf(rpc::Request::Reader request);
  // OK when the tokens' writes are visible now, else Timeout (after the
  // batch waited) or InvalidArgument.
  Status TokensNow(capnp::List<capnp::Data>::Reader tokens) const;

  Store& store_;
  GroupCommitter& committer_;
  Replicator& replicator_;
  const KvServiceOptions options_;
  bool serving_ = true;
  // What the reply being built may still carry; reset by every call (reads
  // run synchronously on the loop thread, one call at a time).
  size_t reply_budget_ = 0;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_KV_SERVICE_H_

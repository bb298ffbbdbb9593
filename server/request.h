// Client requests and their results as plain values, whatever front end
// (the Cap'n Proto client API, a Redis protocol server) they came from. A
// front end parses its wire form into a ParsedRequest, has the Coordinator
// run it and encodes the Result it gets back; nothing here knows a wire
// format.

#ifndef GEOKV_SERVER_REQUEST_H_
#define GEOKV_SERVER_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crdt/crdt.h"
#include "replication/causal_token.h"
#include "storage/store.h"
#include "util/status.h"

namespace geokv {

// How many of a key's owners in this region an operation waits for (see
// schema/kv.capnp Consistency). kDefault takes the node's configured level.
enum class Consistency : uint8_t { kDefault, kOne, kQuorum, kAll };

// "ONE", "QUORUM" (also for kDefault), "ALL": as messages name them.
const char* ConsistencyName(Consistency level);

// The operations of the client API, one per typed call; kUnknown is a
// batch member of a kind this server does not know (a newer client).
enum class RequestKind : uint8_t {
  kSet, kGet, kDel, kMvSet, kMvGet, kMvDel, kSAdd, kSRem, kSIsMember, kSMembers, kSCard,
  kIncrBy, kCounterGet, kType, kUnknown,
};

// Whether `kind` is a write (set, del, mvSet, mvDel, sAdd, sRem, incrBy).
bool IsWrite(RequestKind kind);

// Default page of sMembers when the request's limit is 0, and its largest.
inline constexpr uint32_t kDefaultMembersPage = 1000;

// The sizes a request is checked against, whatever its wire form.
struct RequestLimits {
  size_t max_key_bytes = 4 << 10;    // keys and set elements
  size_t max_value_bytes = 8 << 20;  // register values
  size_t max_batch_requests = 10000;  // requests of one batch call
};

// OK, or why `key` is refused: empty (InvalidArgument) or over
// max_key_bytes (TooLarge).
Status CheckKey(std::string_view key, const RequestLimits& limits);
// OK, or TooLarge when `value` exceeds max_value_bytes.
Status CheckValue(std::string_view value, const RequestLimits& limits);
// OK, or TooLarge: elements are parts of row keys, so they share the key
// limit.
Status CheckElement(std::string_view element, const RequestLimits& limits);

// One request, read once from its wire form and checked against the limits.
struct ParsedRequest {
  RequestKind kind = RequestKind::kUnknown;
  // Not OK: the request is refused with it as parsed (a key, value or
  // element over its limit, an empty key, a bad token or context, an
  // unknown kind); the fields below may be partly set.
  Status status;
  std::string key;
  Consistency consistency = Consistency::kDefault;
  // Writes: what the store applies.
  Operation op;
  // Reads: the tokens to wait for. Writes: the tokens of earlier writes
  // this one is stamped above (their stamps; a write does not wait).
  std::vector<CausalToken> tokens;
  // The arguments of the set reads.
  std::string element;                // sIsMember
  std::optional<std::string> after;   // sMembers: from the first element past it
  uint32_t limit = kDefaultMembersPage;  // sMembers, already capped
};

// How one request ended, with what its reply carries. Which fields count
// follows from the request's kind, as its reply in schema/kv.capnp.
struct Result {
  Status status;
  std::string token;                // writes: the write's causal token, when OK
  std::optional<std::string> value;  // get
  std::vector<std::string> values;   // mvGet: siblings
  std::string context;              // mvGet: client context, even when not OK
  bool member = false;              // sIsMember
  std::vector<std::string> elements;  // sMembers: the page
  bool more = false;                // sMembers
  uint64_t count = 0;               // sCard
  int64_t counter = 0;              // counterGet
  std::vector<CrdtType> types;      // type
  // A write forwarded to its owner, which shed it (too many writes waiting
  // to commit there): nothing was applied, and `status` is Unavailable. A
  // single call answers it as this node's own overload (Answer::overloaded).
  bool owner_overloaded = false;

  // Bytes of values this result carries, for the reply budget.
  size_t ValueBytes() const;
  // Leaves the values, siblings and elements out (a reply over its budget);
  // keeps the multi-value context, which lets a write merge siblings too
  // large to read.
  void DropValues();
};

// A Result carrying only `status`.
inline Result ResultOf(Status status) {
  Result r;
  r.status = std::move(status);
  return r;
}

}  // namespace geokv

#endif  // GEOKV_SERVER_REQUEST_H_

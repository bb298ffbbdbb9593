// What the files of the Redis session (server/resp_session*.cc) share: the
// command table, reply helpers, argument parsing, and a session's steps and
// batches. Not for other units.

#ifndef GEOKV_SERVER_RESP_SESSION_INTERNAL_H_
#define GEOKV_SERVER_RESP_SESSION_INTERNAL_H_

#include <cctype>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <kj/async.h>

#include "server/resp_protocol.h"
#include "server/resp_session.h"

namespace geokv {

// How a step joins a batch (see the header): reads with reads, writes with
// writes, a step that touches the store no way at all with either, and an
// alone step by itself.
enum class StepClass { kAny, kRead, kWrite };

// What a Redis client is told the server is; clients pick features by it.
inline constexpr const char* kRedisVersion = "7.0.0";

// Arity as Redis counts it (the name included; negative: at least), and
// the flags and key positions COMMAND reports.
struct CommandSpec {
  const char* name;
  int arity;
  const char* flags;
  int first_key, last_key, step;
};

inline constexpr CommandSpec kCommands[] = {
    {"ping", -1, "fast", 0, 0, 0},
    {"echo", 2, "fast", 0, 0, 0},
    {"hello", -1, "fast noscript loading stale", 0, 0, 0},
    {"auth", -2, "fast noscript loading stale", 0, 0, 0},
    {"select", 2, "fast loading stale", 0, 0, 0},
    {"quit", -1, "fast noscript loading stale", 0, 0, 0},
    {"reset", 1, "fast noscript loading stale", 0, 0, 0},
    {"client", -2, "admin noscript loading stale", 0, 0, 0},
    {"command", -1, "loading stale", 0, 0, 0},
    {"info", -1, "loading stale", 0, 0, 0},
    {"dbsize", 1, "readonly fast", 0, 0, 0},
    {"time", 1, "loading stale fast", 0, 0, 0},
    {"get", 2, "readonly fast", 1, 1, 1},
    {"set", -3, "write denyoom", 1, 1, 1},
    {"mget", -2, "readonly fast", 1, -1, 1},
    {"mset", -3, "write denyoom", 1, -1, 2},
    {"del", -2, "write", 1, -1, 1},
    {"unlink", -2, "write fast", 1, -1, 1},
    {"exists", -2, "readonly fast", 1, -1, 1},
    {"type", 2, "readonly fast", 1, 1, 1},
    {"strlen", 2, "readonly fast", 1, 1, 1},
    {"incr", 2, "write denyoom fast", 1, 1, 1},
    {"incrby", 3, "write denyoom fast", 1, 1, 1},
    {"decr", 2, "write denyoom fast", 1, 1, 1},
    {"decrby", 3, "write denyoom fast", 1, 1, 1},
    {"sadd", -3, "write denyoom fast", 1, 1, 1},
    {"srem", -3, "write fast", 1, 1, 1},
    {"smembers", 2, "readonly", 1, 1, 1},
    {"sismember", 3, "readonly fast", 1, 1, 1},
    {"smismember", -3, "readonly fast", 1, 1, 1},
    {"scard", 2, "readonly fast", 1, 1, 1},
    {"sscan", -3, "readonly", 1, 1, 1},
    {"scan", -2, "readonly", 0, 0, 0},
    {"geokv.token", 1, "fast", 0, 0, 0},
    {"geokv.after", -1, "fast", 0, 0, 0},
    {"geokv.consistency", -1, "fast", 0, 0, 0},
    {"geokv.waitreplicated", -2, "", 0, 0, 0},
    {"geokv.mvget", 2, "readonly fast", 1, 1, 1},
    {"geokv.mvset", -3, "write denyoom", 1, 1, 1},
};

inline const CommandSpec* FindCommand(const std::string& lower) {
  for (const CommandSpec& c : kCommands) {
    if (lower == c.name) return &c;
  }
  return nullptr;
}

inline std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

inline std::string ErrorReply(std::string_view message) {
  std::string out;
  AppendError(out, message);
  return out;
}

inline std::string BulkReply(std::string_view s) {
  std::string out;
  AppendBulk(out, s);
  return out;
}

inline std::string IntegerReply(int64_t n) {
  std::string out;
  AppendInteger(out, n);
  return out;
}

inline constexpr char kOk[] = "+OK\r\n";
inline constexpr char kNotInteger[] = "ERR value is not an integer or out of range";
inline constexpr char kOverloaded[] = "OVERLOADED too many writes waiting to commit; retry later";

// A decimal int64 of the whole of `s`, as Redis's string2ll accepts.
inline bool ParseInt(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  uint64_t n = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    const uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (n > (UINT64_MAX - d) / 10) return false;
    n = n * 10 + d;
  }
  if (s[0] == '-') {
    if (n > uint64_t{1} << 63) return false;
    *out = static_cast<int64_t>(0 - n);
  } else {
    if (n > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = static_cast<int64_t>(n);
  }
  return true;
}

// The Redis TYPE of a key's live types.
inline const char* RedisType(const std::vector<CrdtType>& types) {
  if (types.empty()) return "none";
  switch (types.front()) {
    case CrdtType::kLww:
    case CrdtType::kCounter: return "string";
    case CrdtType::kOrSet: return "set";
    case CrdtType::kMvRegister: return "mvregister";
  }
  return "none";
}

// What the SADDs and SREMs of a batch have made of each (key, element)
// so far, for their replies.
using Membership = std::map<std::pair<std::string, std::string>, bool>;

struct RespSession::Step {
  StepClass cls = StepClass::kAny;
  // Runs by itself, after every earlier step and before every later one.
  bool alone = false;
  std::vector<std::string> keys;   // written, for a batch's conflicts
  std::vector<ParsedRequest> pre;  // reads before the batch's writes
  std::vector<ParsedRequest> requests;
  // Turns the pre-read results into `requests`; not OK refuses the step
  // (its reply the error) with nothing written.
  std::function<Status(std::vector<Result>& pre, std::vector<ParsedRequest>& requests,
                       Membership& members)>
      gate;
  // SADD and SREM: several may write one key in a batch, their replies
  // following from the members before it and each earlier one's change.
  bool shares_key = false;
  // The reply from the results; empty: `reply`.
  std::function<kj::Promise<std::string>(std::vector<Result>& pre, std::vector<Result>& results)>
      finish;
  std::string reply;
};

struct RespSession::Batch {
  std::vector<Step> steps;
  std::vector<std::vector<Result>> pre, results;
};

}  // namespace geokv

#endif  // GEOKV_SERVER_RESP_SESSION_INTERNAL_H_

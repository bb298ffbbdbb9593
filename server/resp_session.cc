#include "server/resp_session.h"

#include <capnp/message.h>
#include <fmt/format.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <iterator>
#include <set>
#include <utility>

#include "server/api_codec.h"
#include "server/resp_protocol.h"
#include "util/coding.h"

namespace geokv {
namespace {

// How a step joins a batch (see the header): reads with reads, writes with
// writes, a step that touches the store no way at all with either, and an
// alone step by itself.
enum class StepClass { kAny, kRead, kWrite };

// What a Redis client is told the server is; clients pick features by it.
constexpr const char* kRedisVersion = "7.0.0";

// Arity as Redis counts it (the name included; negative: at least), and
// the flags and key positions COMMAND reports.
struct CommandSpec {
  const char* name;
  int arity;
  const char* flags;
  int first_key, last_key, step;
};

constexpr CommandSpec kCommands[] = {
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

const CommandSpec* FindCommand(const std::string& lower) {
  for (const CommandSpec& c : kCommands) {
    if (lower == c.name) return &c;
  }
  return nullptr;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string ErrorReply(std::string_view message) {
  std::string out;
  AppendError(out, message);
  return out;
}

std::string BulkReply(std::string_view s) {
  std::string out;
  AppendBulk(out, s);
  return out;
}

std::string IntegerReply(int64_t n) {
  std::string out;
  AppendInteger(out, n);
  return out;
}

const char kOk[] = "+OK\r\n";
const char kNotInteger[] = "ERR value is not an integer or out of range";
const char kOverloaded[] = "OVERLOADED too many writes waiting to commit; retry later";

// A decimal int64 of the whole of `s`, as Redis's string2ll accepts.
bool ParseInt(const std::string& s, int64_t* out) {
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

std::string Hex(std::string_view bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

bool Unhex(std::string_view hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    int v = 0;
    for (size_t j = i; j < i + 2; ++j) {
      const char c = hex[j];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return false;
      v = v * 16 + d;
    }
    out->push_back(static_cast<char>(v));
  }
  return true;
}

// The Redis TYPE of a key's live types.
const char* RedisType(const std::vector<CrdtType>& types) {
  if (types.empty()) return "none";
  switch (types.front()) {
    case CrdtType::kLww:
    case CrdtType::kCounter: return "string";
    case CrdtType::kOrSet: return "set";
    case CrdtType::kMvRegister: return "mvregister";
  }
  return "none";
}

}  // namespace

std::string RespError(const Status& status) {
  switch (status.code()) {
    case Status::Code::kWrongType:
      return "WRONGTYPE Operation against a key holding the wrong kind of value";
    case Status::Code::kTooLarge: return "TOOLARGE " + status.message();
    case Status::Code::kInvalidArgument:
    case Status::Code::kNotFound: return "ERR " + status.message();
    case Status::Code::kUnavailable: return "UNAVAILABLE " + status.message();
    case Status::Code::kTimeout: return "TIMEOUT " + status.message();
    case Status::Code::kOk:
    case Status::Code::kCorruption:
    case Status::Code::kIOError:
    case Status::Code::kFailedPrecondition: break;
  }
  spdlog::error("redis command failed: {}", status.ToString());
  return "ERR internal error: " + status.message();
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

RespSession::RespSession(RespNode& node, uint64_t id, std::string peer)
    : node_(node), id_(id), peer_(std::move(peer)), opened_(std::chrono::steady_clock::now()) {}

RespSession::~RespSession() = default;

std::string RespSession::Describe() const {
  const auto age = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::steady_clock::now() - opened_)
                       .count();
  return fmt::format("id={} addr={} name={} age={} db=0 resp={} lib-name={} lib-ver={} cmd={}",
                     id_, peer_, name_, age, resp3_ ? 3 : 2, lib_name_, lib_version_,
                     last_command_);
}

ParsedRequest RespSession::Request(RequestKind kind, std::string key) const {
  ParsedRequest p;
  p.kind = kind;
  p.consistency = consistency_;
  p.status = CheckKey(key, node_.limits);
  p.key = std::move(key);
  if (!IsWrite(kind)) p.tokens = after_;
  return p;
}

RespSession::Step RespSession::Refused(std::string_view message) {
  Step step;
  step.reply = ErrorReply(message);
  return step;
}

kj::Promise<Result> RespSession::RunOne(ParsedRequest request) {
  return node_.coordinator.Run(std::move(request), false).then([](Answer a) {
    if (a.overloaded) return ResultOf(Status::Unavailable("overloaded"));
    return std::move(a.results.front());
  });
}

kj::Promise<std::string> RespSession::Execute(std::vector<std::vector<std::string>> commands,
                                              Flush flush) {
  std::vector<Step> steps;
  steps.reserve(commands.size());
  for (auto& args : commands) {
    if (closing_) break;
    steps.push_back(Build(args));
  }
  return RunSteps(std::move(steps), 0, std::string(), std::move(flush));
}

kj::Promise<std::string> RespSession::RunSteps(std::vector<Step> steps, size_t from,
                                               std::string out, Flush flush) {
  if (from == steps.size()) return out;
  // The longest run of steps from `from` that can share one batch.
  size_t end = from;
  StepClass cls = StepClass::kAny;
  std::map<std::string_view, bool> written;  // key: whether all its writers share it
  for (; end < steps.size(); ++end) {
    Step& s = steps[end];
    if (s.alone) {
      if (end == from) ++end;
      break;
    }
    if (s.cls == StepClass::kAny) continue;
    if (cls == StepClass::kAny) cls = s.cls;
    if (s.cls != cls || (cls == StepClass::kRead && end - from >= kMaxReadBatch)) break;
    if (s.cls == StepClass::kWrite) {
      bool conflict = false;
      for (const std::string& k : s.keys) {
        auto it = written.find(k);
        conflict |= it != written.end() && !(it->second && s.shares_key);
      }
      if (conflict) break;
      for (const std::string& k : s.keys) written.emplace(k, s.shares_key);
    }
  }
  auto batch = std::make_shared<Batch>();
  for (size_t i = from; i < end; ++i) batch->steps.push_back(std::move(steps[i]));
  auto rest = std::make_shared<std::vector<Step>>(std::move(steps));
  const size_t n = batch->steps.size();
  batch->pre.resize(n);
  batch->results.resize(n);

  std::vector<ParsedRequest> pre;
  for (Step& s : batch->steps) {
    for (ParsedRequest& r : s.pre) pre.push_back(std::move(r));
  }
  kj::Promise<Answer> pre_done = pre.empty() ? kj::Promise<Answer>(Answer())
                                             : node_.coordinator.RunBatch(std::move(pre));
  return pre_done
      .then([this, batch](Answer answer) {
        size_t j = 0;
        std::vector<ParsedRequest> requests;
        Membership members;
        for (size_t i = 0; i < batch->steps.size(); ++i) {
          Step& s = batch->steps[i];
          for (size_t k = 0; k < s.pre.size(); ++k) {
            batch->pre[i].push_back(answer.overloaded ? ResultOf(Status::Unavailable("overloaded"))
                                                      : std::move(answer.results[j++]));
          }
          if (s.gate) {
            Status allowed = s.gate(batch->pre[i], s.requests, members);
            if (!allowed.ok()) {
              s.requests.clear();
              s.finish = nullptr;
              s.reply = ErrorReply(RespError(allowed));
            }
          }
          for (const ParsedRequest& r : s.requests) requests.push_back(r);
        }
        if (requests.empty()) return kj::Promise<Answer>(Answer());
        if (IsWrite(requests.front().kind)) {
          return node_.coordinator.RunBatch(std::move(requests));
        }
        // Reads one by one, at once: each gets the whole reply budget, where
        // a batch would share one among all its values.
        kj::Vector<kj::Promise<Result>> reads;
        for (ParsedRequest& r : requests) reads.add(RunOne(std::move(r)));
        return kj::joinPromises(reads.releaseAsArray()).then([](kj::Array<Result> results) {
          Answer a;
          for (Result& r : results) a.results.push_back(std::move(r));
          return a;
        });
      })
      .then([this, batch](Answer answer) {
        size_t j = 0;
        kj::Vector<kj::Promise<std::string>> replies;
        for (size_t i = 0; i < batch->steps.size(); ++i) {
          Step& s = batch->steps[i];
          if (answer.overloaded && !s.requests.empty()) {
            replies.add(ErrorReply(kOverloaded));
            continue;
          }
          for (size_t k = 0; k < s.requests.size(); ++k) {
            batch->results[i].push_back(std::move(answer.results[j++]));
          }
          if (s.finish) {
            replies.add(kj::evalNow([&] { return s.finish(batch->pre[i], batch->results[i]); }));
          } else {
            replies.add(std::move(s.reply));
          }
        }
        return kj::joinPromises(replies.releaseAsArray());
      })
      .then([this, batch, rest, end, out = std::move(out),
             flush](kj::Array<std::string> replies) mutable -> kj::Promise<std::string> {
        for (auto& r : replies) out += r;
        if (out.size() < kFlushBytes || end == rest->size()) {
          return RunSteps(std::move(*rest), end, std::move(out), std::move(flush));
        }
        return flush(std::move(out)).then([this, rest, end, flush]() mutable {
          return RunSteps(std::move(*rest), end, std::string(), std::move(flush));
        });
      });
}

RespSession::Step RespSession::Build(std::vector<std::string>& args) {
  const std::string name = Lower(args[0]);
  last_command_ = name;
  const CommandSpec* spec = FindCommand(name);
  Step step;
  if (spec == nullptr) {
    std::string message = "ERR unknown command '" + PrintableBytes(args[0], 128) +
                          "', with args beginning with: ";
    for (size_t i = 1; i < args.size() && message.size() < 256; ++i) {
      message += "'" + PrintableBytes(args[i], 64) + "' ";
    }
    return Refused(message);
  }
  const int n = static_cast<int>(std::min<size_t>(args.size(), INT32_MAX));
  if ((spec->arity > 0 && n != spec->arity) || (spec->arity < 0 && n < -spec->arity)) {
    return Refused("ERR wrong number of arguments for '" + name + "' command");
  }
  if (name.rfind("geokv.", 0) == 0) return Own(args, name);
  if (name == "get" || name == "set" || name == "mget" || name == "mset" || name == "strlen" ||
      name == "incr" || name == "incrby" || name == "decr" || name == "decrby") {
    return Strings(args, name);
  }
  if (name[0] == 's' && name != "select" && name != "scan") return Sets(args, name);
  if (name == "del" || name == "unlink" || name == "exists" || name == "type" ||
      name == "scan") {
    return Keys(args, name);
  }
  return Connection(args, name);
}

RespSession::Step RespSession::Connection(std::vector<std::string>& args,
                                          const std::string& name) {
  Step step;
  const bool resp3 = resp3_;
  if (name == "ping") {
    if (args.size() > 2) {
      step.reply = ErrorReply("ERR wrong number of arguments for 'ping' command");
    } else {
      step.reply = args.size() == 2 ? BulkReply(args[1]) : "+PONG\r\n";
    }
  } else if (name == "echo") {
    step.reply = BulkReply(args[1]);
  } else if (name == "hello") {
    return Hello(args);
  } else if (name == "auth") {
    step.reply = ErrorReply(
        "ERR AUTH is not supported: geokv has no users or passwords yet (see docs/resp.md)");
  } else if (name == "select") {
    step.reply = args[1] == "0" ? kOk
                                : ErrorReply("ERR DB index is out of range: geokv has one "
                                             "database, 0");
  } else if (name == "quit") {
    closing_ = true;
    step.reply = kOk;
  } else if (name == "reset") {
    resp3_ = false;
    name_.clear();
    consistency_ = Consistency::kDefault;
    after_.clear();
    cursors_.clear();
    step.reply = "+RESET\r\n";
  } else if (name == "client") {
    return ClientCommand(args);
  } else if (name == "command") {
    const std::string sub = args.size() > 1 ? Lower(args[1]) : "";
    auto describe = [resp3](std::string& out, const CommandSpec& c) {
      AppendArray(out, 6);
      AppendBulk(out, c.name);
      AppendInteger(out, c.arity);
      std::vector<std::string> flags;
      std::string f = c.flags;
      for (size_t pos = 0; pos < f.size();) {
        size_t space = std::min(f.find(' ', pos), f.size());
        if (space > pos) flags.push_back(f.substr(pos, space - pos));
        pos = space + 1;
      }
      AppendSet(out, flags.size(), resp3);
      for (const auto& flag : flags) AppendSimple(out, flag);
      AppendInteger(out, c.first_key);
      AppendInteger(out, c.last_key);
      AppendInteger(out, c.step);
    };
    if (sub.empty()) {
      AppendArray(step.reply, std::size(kCommands));
      for (const CommandSpec& c : kCommands) describe(step.reply, c);
    } else if (sub == "count") {
      step.reply = IntegerReply(static_cast<int64_t>(std::size(kCommands)));
    } else if (sub == "docs") {
      AppendMap(step.reply, 0, resp3);
    } else if (sub == "info") {
      AppendArray(step.reply, args.size() - 2);
      for (size_t i = 2; i < args.size(); ++i) {
        const CommandSpec* c = FindCommand(Lower(args[i]));
        if (c == nullptr) {
          AppendNull(step.reply, resp3);
        } else {
          describe(step.reply, *c);
        }
      }
    } else {
      step.reply = ErrorReply("ERR unknown subcommand '" + PrintableBytes(args[1]) +
                              "'. Try COMMAND HELP.");
    }
  } else if (name == "info") {
    return Info(args);
  } else if (name == "dbsize") {
    step.finish = [this](std::vector<Result>&, std::vector<Result>&) -> kj::Promise<std::string> {
      auto keys = node_.store.store().KeyCount();
      if (!keys.ok()) return ErrorReply(RespError(keys.status()));
      return IntegerReply(static_cast<int64_t>(*keys));
    };
  } else if (name == "time") {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    const int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
    AppendArray(step.reply, 2);
    AppendBulk(step.reply, std::to_string(us / 1000000));
    AppendBulk(step.reply, std::to_string(us % 1000000));
  }
  return step;
}

RespSession::Step RespSession::Hello(std::vector<std::string>& args) {
  Step step;
  bool resp3 = resp3_;
  if (args.size() >= 2) {
    int64_t version = 0;
    if (!ParseInt(args[1], &version)) {
      return Refused("ERR Protocol version is not an integer or out of range");
    }
    if (version != 2 && version != 3) {
      return Refused("NOPROTO unsupported protocol version");
    }
    resp3 = version == 3;
  }
  std::string setname;
  for (size_t i = 2; i < args.size(); ++i) {
    const std::string opt = Lower(args[i]);
    if (opt == "auth" && i + 2 < args.size()) {
      return Refused(
          "ERR AUTH is not supported: geokv has no users or passwords yet (see docs/resp.md)");
    } else if (opt == "setname" && i + 1 < args.size()) {
      setname = args[++i];
    } else {
      return Refused("ERR Syntax error in HELLO option '" + PrintableBytes(args[i]) + "'");
    }
  }
  resp3_ = resp3;
  if (!setname.empty()) name_ = setname;
  std::string& out = step.reply;
  AppendMap(out, 7, resp3);
  AppendBulk(out, "server");
  AppendBulk(out, "redis");
  AppendBulk(out, "version");
  AppendBulk(out, kRedisVersion);
  AppendBulk(out, "proto");
  AppendInteger(out, resp3 ? 3 : 2);
  AppendBulk(out, "id");
  AppendInteger(out, static_cast<int64_t>(id_));
  AppendBulk(out, "mode");
  AppendBulk(out, "standalone");
  AppendBulk(out, "role");
  AppendBulk(out, "master");
  AppendBulk(out, "modules");
  AppendArray(out, 0);
  return step;
}

RespSession::Step RespSession::ClientCommand(std::vector<std::string>& args) {
  Step step;
  const std::string sub = Lower(args[1]);
  auto wrong = [&] {
    step.reply = ErrorReply("ERR wrong number of arguments for 'client|" + sub + "' command");
  };
  if (sub == "setname") {
    if (args.size() != 3) {
      wrong();
    } else if (args[2].find_first_of(" \n\r") != std::string::npos) {
      step.reply = ErrorReply("ERR Client names cannot contain spaces, newlines or special "
                              "characters.");
    } else {
      name_ = args[2];
      step.reply = kOk;
    }
  } else if (sub == "getname") {
    if (name_.empty()) {
      AppendNull(step.reply, resp3_);
    } else {
      step.reply = BulkReply(name_);
    }
  } else if (sub == "id") {
    step.reply = IntegerReply(static_cast<int64_t>(id_));
  } else if (sub == "setinfo") {
    if (args.size() != 4) {
      wrong();
    } else if (Lower(args[2]) == "lib-name") {
      lib_name_ = args[3];
      step.reply = kOk;
    } else if (Lower(args[2]) == "lib-ver") {
      lib_version_ = args[3];
      step.reply = kOk;
    } else {
      step.reply = ErrorReply("ERR Unrecognized option '" + PrintableBytes(args[2]) + "'");
    }
  } else if (sub == "info") {
    AppendVerbatim(step.reply, Describe() + "\n", resp3_);
  } else if (sub == "list") {
    const bool resp3 = resp3_;
    step.finish = [this, resp3](std::vector<Result>&, std::vector<Result>&)
        -> kj::Promise<std::string> {
      std::string out;
      AppendVerbatim(out, node_.client_list ? node_.client_list() : Describe() + "\n", resp3);
      return out;
    };
  } else {
    step.reply = ErrorReply("ERR unknown subcommand '" + PrintableBytes(args[1]) +
                            "'. Try CLIENT HELP.");
  }
  return step;
}

RespSession::Step RespSession::Info(std::vector<std::string>& args) {
  Step step;
  std::set<std::string> sections;
  for (size_t i = 1; i < args.size(); ++i) sections.insert(Lower(args[i]));
  const bool all = sections.empty() || sections.count("all") || sections.count("everything") ||
                   sections.count("default");
  const bool resp3 = resp3_;
  step.finish = [this, sections, all, resp3](std::vector<Result>&, std::vector<Result>&)
      -> kj::Promise<std::string> {
    auto message = std::make_shared<capnp::MallocMessageBuilder>();
    auto info = message->initRoot<rpc::NodeInfo>();
    return node_.admin.Info(info).then([this, message, info, sections, all, resp3]() mutable {
      auto want = [&](const char* s) { return all || sections.count(s) > 0; };
      std::string text;
      if (want("server")) {
        text += fmt::format(
            "# Server\r\nredis_version:{}\r\ngeokv_version:{}\r\nredis_mode:standalone\r\n"
            "process_id:{}\r\ngeokv_node:{}\r\ngeokv_region:{}\r\ngeokv_replica_id:{:016x}\r\n"
            "geokv_state_digest:{:016x}\r\n\r\n",
            kRedisVersion, info.getVersion().cStr(), static_cast<long>(getpid()),
            info.getName().cStr(), info.getRegion().cStr(), info.getReplicaId(),
            info.getStateDigest());
      }
      if (want("clients")) {
        text += fmt::format("# Clients\r\nconnected_clients:{}\r\n\r\n",
                            node_.connections ? node_.connections() : 1);
      }
      if (want("replication")) {
        auto peers = info.getPeers();
        text += fmt::format(
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\ngeokv_last_seq:{}\r\n"
            "geokv_clock_offset_ms:{}\r\ngeokv_writes_refused:{}\r\ngeokv_peers:{}\r\n",
            info.getLastSeq(), info.getClockOffsetMs(), info.getWritesRefused().cStr(),
            peers.size());
        for (size_t i = 0; i < peers.size(); ++i) {
          auto p = peers[i];
          text += fmt::format(
              "geokv_peer{}:region={},address={},name={},connected={},repairing={},acked={},"
              "backlog_bytes={},lag_seq={},clock_offset_ms={}\r\n",
              i, p.getRegion().cStr(), p.getAddress().cStr(), p.getName().cStr(),
              p.getConnected() ? 1 : 0, p.getRepairing() ? 1 : 0, p.getAcked(),
              p.getBacklogBytes(),
              info.getLastSeq() > p.getAcked() ? info.getLastSeq() - p.getAcked() : 0,
              p.getClockOffsetMs());
        }
        text += "\r\n";
      }
      if (want("keyspace")) {
        text += fmt::format("# Keyspace\r\ndb0:keys={},expires=0,avg_ttl=0\r\n\r\n",
                            info.getKeyCount());
      }
      std::string out;
      AppendVerbatim(out, text, resp3);
      return out;
    });
  };
  return step;
}

namespace {

// The value GET answers from a register read: the value, nullopt for none,
// or an error; a counter key (WrongType against the register) answers the
// counter's value, as Redis keeps integers in strings.
using Value = StatusOr<std::optional<std::string>>;

}  // namespace

RespSession::Step RespSession::Strings(std::vector<std::string>& args, const std::string& name) {
  Step step;
  const bool resp3 = resp3_;
  // GET's answer, reading the counter when the key holds one.
  auto value_of = [this](Result r, std::string key) -> kj::Promise<Value> {
    if (r.status.ok()) return Value(std::optional<std::string>(std::move(r.value)));
    if (r.status.IsNotFound()) return Value(std::optional<std::string>());
    if (r.status.code() != Status::Code::kWrongType) return Value(std::move(r.status));
    return RunOne(Request(RequestKind::kCounterGet, std::move(key)))
        .then([wrong = std::move(r.status)](Result c) -> Value {
          if (c.status.ok()) return std::optional<std::string>(std::to_string(c.counter));
          return wrong;
        });
  };
  if (name == "get" || name == "strlen") {
    step.cls = StepClass::kRead;
    step.requests.push_back(Request(RequestKind::kGet, args[1]));
    const bool strlen = name == "strlen";
    step.finish = [value_of, key = args[1], resp3, strlen](std::vector<Result>&,
                                                           std::vector<Result>& r) {
      return value_of(std::move(r[0]), key).then([resp3, strlen](Value v) {
        if (!v.ok()) return ErrorReply(RespError(v.status()));
        if (strlen) return IntegerReply(v->has_value() ? static_cast<int64_t>((*v)->size()) : 0);
        std::string out;
        if (v->has_value()) {
          AppendBulk(out, **v);
        } else {
          AppendNull(out, resp3);
        }
        return out;
      });
    };
  } else if (name == "mget") {
    step.cls = StepClass::kRead;
    for (size_t i = 1; i < args.size(); ++i) {
      step.requests.push_back(Request(RequestKind::kGet, args[i]));
    }
    std::vector<std::string> keys(args.begin() + 1, args.end());
    step.finish = [value_of, keys, resp3](std::vector<Result>&, std::vector<Result>& r) {
      kj::Vector<kj::Promise<Value>> values;
      for (size_t i = 0; i < r.size(); ++i) values.add(value_of(std::move(r[i]), keys[i]));
      return kj::joinPromises(values.releaseAsArray()).then([resp3](kj::Array<Value> vs) {
        std::string out;
        AppendArray(out, vs.size());
        for (auto& v : vs) {
          // A key of another type is nil in MGET, as Redis.
          if (v.ok() && v->has_value()) {
            AppendBulk(out, **v);
          } else {
            AppendNull(out, resp3);
          }
        }
        return out;
      });
    };
  } else if (name == "set" || name == "mset") {
    const bool mset = name == "mset";
    bool get = false;
    if (mset && args.size() % 2 == 0) {
      return Refused("ERR wrong number of arguments for 'mset' command");
    }
    for (size_t i = 3; !mset && i < args.size(); ++i) {
      const std::string opt = Lower(args[i]);
      if (opt == "get") {
        get = true;
      } else if (opt == "nx" || opt == "xx") {
        return Refused(
            "ERR SET " + Lower(args[i]) +
            " is not supported: whether a key exists differs between regions until they "
            "converge, so a conditional write cannot be honoured in a multi-leader store");
      } else if (opt == "ex" || opt == "px" || opt == "exat" || opt == "pxat" ||
                 opt == "keepttl") {
        step.reply = ErrorReply("ERR SET " + Lower(args[i]) +
                                " is not supported: geokv has no expiry; a TTL needs a clock "
                                "all regions agree on to expire a key the same everywhere");
        return step;
      } else {
        return Refused("ERR syntax error");
      }
    }
    step.cls = StepClass::kWrite;
    const size_t end = mset ? args.size() : 3;
    for (size_t i = 1; i + 1 < end; i += 2) {
      Status value = CheckValue(args[i + 1], node_.limits);
      ParsedRequest p = Request(RequestKind::kSet, args[i]);
      if (p.status.ok()) p.status = value;
      // Refused whole: none of the pairs before this one is written.
      if (!p.status.ok()) return Refused(RespError(p.status));
      p.op = LwwSet{std::move(args[i + 1])};
      step.keys.push_back(args[i]);
      step.requests.push_back(std::move(p));
    }
    if (get) {
      step.pre.push_back(Request(RequestKind::kGet, args[1]));
      step.gate = [](std::vector<Result>& pre, std::vector<ParsedRequest>&, Membership&) {
        if (pre[0].status.ok() || pre[0].status.IsNotFound()) return Status::OK();
        return pre[0].status;
      };
    }
    step.finish = [this, get, resp3](std::vector<Result>& pre,
                                     std::vector<Result>& r) -> kj::Promise<std::string> {
      for (const Result& w : r) {
        if (!w.status.ok()) return ErrorReply(RespError(w.status));
        last_token_ = w.token;
      }
      if (!get) return std::string(kOk);
      std::string out;
      if (pre[0].value) {
        AppendBulk(out, *pre[0].value);
      } else {
        AppendNull(out, resp3);
      }
      return out;
    };
  } else {  // incr, incrby, decr, decrby
    int64_t delta = name == "incr" ? 1 : -1;
    if (args.size() == 3) {
      int64_t by = 0;
      if (!ParseInt(args[2], &by) || (name == "decrby" && by == INT64_MIN)) {
        return Refused(kNotInteger);
      }
      delta = name == "decrby" ? -by : by;
    }
    ParsedRequest p = Request(RequestKind::kIncrBy, args[1]);
    if (!p.status.ok()) {
      return Refused(RespError(p.status));
    }
    p.op = CounterAdd{delta};
    step.cls = StepClass::kWrite;
    step.keys.push_back(args[1]);
    step.requests.push_back(std::move(p));
    step.finish = [this, key = args[1]](std::vector<Result>&,
                                        std::vector<Result>& r) -> kj::Promise<std::string> {
      if (!r[0].status.ok()) return ErrorReply(RespError(r[0].status));
      last_token_ = r[0].token;
      // The value after this write, where the write is visible (its token):
      // ONE, as a quorum read of a hot counter would repair it each time.
      ParsedRequest read = Request(RequestKind::kCounterGet, key);
      read.consistency = Consistency::kOne;
      auto token = DecodeToken(r[0].token);
      if (token.ok()) read.tokens.push_back(*token);
      return RunOne(std::move(read)).then([](Result c) {
        if (!c.status.ok()) return ErrorReply(RespError(c.status));
        return IntegerReply(c.counter);
      });
    };
  }
  return step;
}

kj::Promise<std::string> RespSession::Members(std::string key, Result first, bool resp3) {
  auto elements = std::make_shared<std::vector<std::string>>(std::move(first.elements));
  if (!first.status.ok()) return ErrorReply(RespError(first.status));
  auto reply = [elements, resp3] {
    std::string out;
    AppendSet(out, elements->size(), resp3);
    for (const auto& e : *elements) AppendBulk(out, e);
    return out;
  };
  if (!first.more) return reply();
  size_t bytes = 0;
  for (const auto& e : *elements) bytes += e.size();
  if (bytes > node_.max_reply_bytes) {
    return ErrorReply("TOOLARGE the set is larger than a reply may be; read it with SSCAN");
  }
  ParsedRequest next = Request(RequestKind::kSMembers, key);
  next.after = elements->back();
  return RunOne(std::move(next))
      .then([this, key, elements, resp3](Result page) mutable {
        if (!page.status.ok()) return kj::Promise<std::string>(ErrorReply(RespError(page.status)));
        for (auto& e : page.elements) elements->push_back(std::move(e));
        page.elements = std::move(*elements);
        return Members(std::move(key), std::move(page), resp3);
      });
}

RespSession::Step RespSession::Sets(std::vector<std::string>& args, const std::string& name) {
  Step step;
  const bool resp3 = resp3_;
  const std::string& key = args[1];
  if (name == "sadd" || name == "srem") {
    const bool add = name == "sadd";
    std::vector<std::string> elements;
    ParsedRequest p = Request(add ? RequestKind::kSAdd : RequestKind::kSRem, key);
    for (size_t i = 2; i < args.size() && p.status.ok(); ++i) {
      p.status = CheckElement(args[i], node_.limits);
      elements.push_back(args[i]);
    }
    if (!p.status.ok()) {
      return Refused(RespError(p.status));
    }
    std::sort(elements.begin(), elements.end());
    elements.erase(std::unique(elements.begin(), elements.end()), elements.end());
    // Which elements are members before: SADD and SREM answer how many
    // changed.
    for (const std::string& e : elements) {
      ParsedRequest member = Request(RequestKind::kSIsMember, key);
      member.element = e;
      // Only for the count: this node's view is enough, and a quorum read
      // of a hot set would compare and repair it on every command.
      member.consistency = Consistency::kOne;
      step.pre.push_back(std::move(member));
    }
    if (add) {
      p.op = SetAdd{elements};
    } else {
      p.op = SetRemove{elements};
    }
    step.cls = StepClass::kWrite;
    step.keys.push_back(key);
    step.requests.push_back(std::move(p));
    step.shares_key = true;
    auto changed = std::make_shared<int64_t>(0);
    step.gate = [key, elements, add, changed](std::vector<Result>& pre,
                                              std::vector<ParsedRequest>&, Membership& members) {
      for (const Result& r : pre) {
        if (!r.status.ok()) return r.status;
      }
      for (size_t i = 0; i < elements.size(); ++i) {
        // The first SADD or SREM of the batch at this element sees the
        // store; later ones, what the earlier ones left.
        auto it = members.emplace(std::make_pair(key, elements[i]), pre[i].member).first;
        *changed += it->second != add ? 1 : 0;
        it->second = add;
      }
      return Status::OK();
    };
    step.finish = [this, changed](std::vector<Result>&,
                                  std::vector<Result>& r) -> kj::Promise<std::string> {
      if (!r[0].status.ok()) return ErrorReply(RespError(r[0].status));
      last_token_ = r[0].token;
      return IntegerReply(*changed);
    };
    return step;
  }
  step.cls = StepClass::kRead;
  if (name == "smembers") {
    ParsedRequest p = Request(RequestKind::kSMembers, key);
    p.limit = kDefaultMembersPage;
    step.requests.push_back(std::move(p));
    step.finish = [this, key, resp3](std::vector<Result>&, std::vector<Result>& r) {
      return Members(key, std::move(r[0]), resp3);
    };
  } else if (name == "sismember" || name == "smismember") {
    for (size_t i = 2; i < args.size(); ++i) {
      ParsedRequest p = Request(RequestKind::kSIsMember, key);
      p.element = args[i];
      step.requests.push_back(std::move(p));
    }
    const bool many = name == "smismember";
    step.finish = [many](std::vector<Result>&, std::vector<Result>& r) -> kj::Promise<std::string> {
      std::string out;
      if (many) AppendArray(out, r.size());
      for (const Result& m : r) {
        if (!m.status.ok()) return ErrorReply(RespError(m.status));
        AppendInteger(out, m.member ? 1 : 0);
      }
      return out;
    };
  } else if (name == "scard") {
    step.requests.push_back(Request(RequestKind::kSCard, key));
    step.finish = [](std::vector<Result>&, std::vector<Result>& r) -> kj::Promise<std::string> {
      if (!r[0].status.ok()) return ErrorReply(RespError(r[0].status));
      return IntegerReply(static_cast<int64_t>(r[0].count));
    };
  } else {
    return SScan(args);
  }
  return step;
}

namespace {

// MATCH, COUNT and TYPE of SCAN and SSCAN, from args[from].
struct ScanOptions {
  std::string match;
  size_t count = 10;
  std::string type;
};

std::optional<std::string> ParseScanOptions(const std::vector<std::string>& args, size_t from,
                                            bool allow_type, ScanOptions* o) {
  for (size_t i = from; i < args.size(); i += 2) {
    const std::string opt = Lower(args[i]);
    if (i + 1 >= args.size()) return "ERR syntax error";
    if (opt == "match") {
      o->match = args[i + 1];
    } else if (opt == "count") {
      int64_t n = 0;
      if (!ParseInt(args[i + 1], &n)) return std::string(kNotInteger);
      if (n < 1) return "ERR syntax error";
      // A bound on the work of one call, whatever the client asks.
      o->count = static_cast<size_t>(std::min<int64_t>(n, 10000));
    } else if (opt == "type" && allow_type) {
      o->type = Lower(args[i + 1]);
    } else {
      return "ERR syntax error";
    }
  }
  return std::nullopt;
}

std::string ScanReply(const std::string& cursor, const std::vector<std::string>& items) {
  std::string out;
  AppendArray(out, 2);
  AppendBulk(out, cursor);
  AppendArray(out, items.size());
  for (const auto& i : items) AppendBulk(out, i);
  return out;
}

}  // namespace

RespSession::Step RespSession::SScan(std::vector<std::string>& args) {
  Step step;
  ScanOptions o;
  if (auto error = ParseScanOptions(args, 3, false, &o)) {
    return Refused(*error);
  }
  ParsedRequest p = Request(RequestKind::kSMembers, args[1]);
  if (args[2] != "0") {
    int64_t cursor = 0;
    auto it = cursors_.end();
    if (ParseInt(args[2], &cursor)) it = cursors_.find(static_cast<uint64_t>(cursor));
    if (it == cursors_.end()) {
      return Refused("ERR invalid cursor");
    }
    p.after = it->second;
    cursors_.erase(it);
  }
  p.limit = static_cast<uint32_t>(std::min<size_t>(o.count, kDefaultMembersPage));
  step.cls = StepClass::kRead;
  step.requests.push_back(std::move(p));
  step.finish = [this, o](std::vector<Result>&, std::vector<Result>& r) -> kj::Promise<std::string> {
    if (!r[0].status.ok()) return ErrorReply(RespError(r[0].status));
    std::string cursor = "0";
    if (r[0].more && !r[0].elements.empty()) {
      // A connection keeps a few cursors; the oldest go first.
      if (cursors_.size() >= 64) cursors_.erase(cursors_.begin());
      cursors_[next_cursor_] = r[0].elements.back();
      cursor = std::to_string(next_cursor_++);
    }
    std::vector<std::string> items;
    for (auto& e : r[0].elements) {
      if (o.match.empty() || GlobMatch(o.match, e)) items.push_back(std::move(e));
    }
    return ScanReply(cursor, items);
  };
  return step;
}

RespSession::Step RespSession::Scan(std::vector<std::string>& args) {
  Step step;
  ScanOptions o;
  int64_t cursor = 0;
  if (!ParseInt(args[1], &cursor) || cursor < 0 ||
      static_cast<uint64_t>(cursor) >= kTreeSegments) {
    return Refused("ERR invalid cursor");
  }
  if (auto error = ParseScanOptions(args, 2, true, &o)) {
    return Refused(*error);
  }
  step.cls = StepClass::kRead;
  step.finish = [this, o, cursor](std::vector<Result>&, std::vector<Result>&) {
    struct Page {
      Status status;
      std::vector<std::string> keys;
      size_t next = 0;
    };
    // The cursor is a segment of the key index: each call reads whole
    // segments (on the reader pool) until it has COUNT keys.
    return node_.store
        .Run([o, first = static_cast<size_t>(cursor)](Store& store) {
          Page page;
          size_t segment = first;
          while (segment < kTreeSegments && page.keys.size() < o.count) {
            auto keys = store.SegmentKeys(segment++);
            if (!keys.ok()) {
              page.status = keys.status();
              return page;
            }
            for (auto& k : *keys) {
              if (!o.match.empty() && !GlobMatch(o.match, k.key)) continue;
              auto types = store.LiveTypes(k.key);
              if (!types.ok() || types->empty()) continue;
              if (!o.type.empty() && o.type != RedisType(*types)) continue;
              page.keys.push_back(std::move(k.key));
            }
          }
          page.next = segment < kTreeSegments ? segment : 0;
          return page;
        })
        .then([](Page page) {
          if (!page.status.ok()) return ErrorReply(RespError(page.status));
          return ScanReply(std::to_string(page.next), page.keys);
        });
  };
  return step;
}

RespSession::Step RespSession::Keys(std::vector<std::string>& args, const std::string& name) {
  if (name == "del" || name == "unlink") return Del(args);
  if (name == "scan") return Scan(args);
  Step step;
  step.cls = StepClass::kRead;
  for (size_t i = 1; i < args.size(); ++i) {
    step.requests.push_back(Request(RequestKind::kType, args[i]));
  }
  const bool exists = name == "exists";
  step.finish = [exists](std::vector<Result>&, std::vector<Result>& r) -> kj::Promise<std::string> {
    int64_t found = 0;
    for (const Result& t : r) {
      if (!t.status.ok()) return ErrorReply(RespError(t.status));
      found += t.types.empty() ? 0 : 1;
    }
    if (exists) return IntegerReply(found);
    std::string out;
    AppendSimple(out, RedisType(r[0].types));
    return out;
  };
  return step;
}

RespSession::Step RespSession::Del(std::vector<std::string>& args) {
  Step step;
  std::vector<std::string> keys(args.begin() + 1, args.end());
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  // What each key holds, of every type, read before the batch's writes:
  // a delete removes what it observed (docs/resp.md).
  for (const std::string& key : keys) {
    for (RequestKind kind : {RequestKind::kType, RequestKind::kSMembers, RequestKind::kCounterGet,
                             RequestKind::kMvGet}) {
      ParsedRequest p = Request(kind, key);
      if (!p.status.ok()) return Refused(RespError(p.status));
      step.pre.push_back(std::move(p));
    }
  }
  step.cls = StepClass::kWrite;
  step.keys = keys;
  auto deleted = std::make_shared<int64_t>(0);
  step.gate = [this, keys, deleted](std::vector<Result>& pre, std::vector<ParsedRequest>& requests,
                                    Membership&) -> Status {
    for (size_t i = 0; i < keys.size(); ++i) {
      Result* r = &pre[4 * i];
      if (!r[0].status.ok()) return r[0].status;
      if (!r[0].types.empty()) ++*deleted;
      for (CrdtType type : r[0].types) {
        switch (type) {
          case CrdtType::kLww: {
            ParsedRequest p = Request(RequestKind::kDel, keys[i]);
            p.op = LwwDelete{};
            requests.push_back(std::move(p));
            break;
          }
          case CrdtType::kOrSet: {
            if (!r[1].status.ok()) return r[1].status;
            if (r[1].more) {
              return Status::TooLarge("DEL of a set of more than " +
                                      std::to_string(kDefaultMembersPage) +
                                      " members is not supported yet; SREM its members");
            }
            if (r[1].elements.empty()) break;
            ParsedRequest p = Request(RequestKind::kSRem, keys[i]);
            p.op = SetRemove{std::move(r[1].elements)};
            requests.push_back(std::move(p));
            break;
          }
          case CrdtType::kCounter: {
            if (!r[2].status.ok()) return r[2].status;
            if (r[2].counter == INT64_MIN) return Status::InvalidArgument("counter at its minimum");
            if (r[2].counter == 0) break;
            ParsedRequest p = Request(RequestKind::kIncrBy, keys[i]);
            p.op = CounterAdd{-r[2].counter};
            requests.push_back(std::move(p));
            break;
          }
          case CrdtType::kMvRegister: {
            if (!r[3].status.ok()) return r[3].status;
            auto seen = DecodeClientContext(keys[i], r[3].context);
            if (!seen.ok()) return seen.status();
            ParsedRequest p = Request(RequestKind::kMvDel, keys[i]);
            p.op = MvClear{std::move(seen).value()};
            requests.push_back(std::move(p));
            break;
          }
        }
      }
    }
    return Status::OK();
  };
  step.finish = [this, deleted](std::vector<Result>&,
                                std::vector<Result>& r) -> kj::Promise<std::string> {
    for (const Result& w : r) {
      if (!w.status.ok()) return ErrorReply(RespError(w.status));
      last_token_ = w.token;
    }
    return IntegerReply(*deleted);
  };
  return step;
}

RespSession::Step RespSession::Own(std::vector<std::string>& args, const std::string& name) {
  Step step;
  const bool resp3 = resp3_;
  if (name == "geokv.token") {
    step.finish = [this, resp3](std::vector<Result>&, std::vector<Result>&)
        -> kj::Promise<std::string> {
      std::string out;
      if (last_token_.empty()) {
        AppendNull(out, resp3);
      } else {
        AppendBulk(out, Hex(last_token_));
      }
      return out;
    };
  } else if (name == "geokv.after") {
    std::vector<CausalToken> tokens;
    for (size_t i = 1; i < args.size(); ++i) {
      std::string bytes;
      StatusOr<CausalToken> token = Status::InvalidArgument("not hex");
      if (Unhex(args[i], &bytes)) token = DecodeToken(bytes);
      if (!token.ok()) {
        return Refused("ERR invalid token '" + PrintableBytes(args[i]) +
                                "': " + token.status().message());
      }
      tokens.push_back(*token);
    }
    after_ = std::move(tokens);
    step.reply = kOk;
  } else if (name == "geokv.consistency") {
    if (args.size() == 1) {
      AppendSimple(step.reply, consistency_ == Consistency::kDefault
                                   ? "default"
                                   : Lower(ConsistencyName(consistency_)));
    } else {
      const std::string level = Lower(args[1]);
      if (args.size() > 2) {
        step.reply = ErrorReply("ERR wrong number of arguments for 'geokv.consistency' command");
      } else if (level == "one" || level == "quorum" || level == "all" || level == "default") {
        consistency_ = level == "one"      ? Consistency::kOne
                       : level == "quorum" ? Consistency::kQuorum
                       : level == "all"    ? Consistency::kAll
                                           : Consistency::kDefault;
        step.reply = kOk;
      } else {
        step.reply = ErrorReply("ERR consistency must be one, quorum, all or default");
      }
    }
  } else if (name == "geokv.waitreplicated") {
    int64_t ms = 0;
    if (!ParseInt(args[1], &ms) || ms < 0 || ms > 3600000) {
      return Refused("ERR timeout is not an integer or out of range");
    }
    std::vector<std::string> regions(args.begin() + 2, args.end());
    step.cls = StepClass::kRead;
    step.finish = [this, ms, regions](std::vector<Result>&,
                                      std::vector<Result>&) -> kj::Promise<std::string> {
      auto token = DecodeToken(last_token_);
      if (!token.ok()) return ErrorReply("ERR no write on this connection to wait for");
      const auto timeout = ms == 0 ? node_.replicator.token_wait() : std::chrono::milliseconds(ms);
      return node_.replicator.WaitReplicated({*token}, regions, timeout)
          .then([timeout](StatusOr<std::vector<std::string>> missing) {
            if (!missing.ok()) return ErrorReply(RespError(missing.status()));
            if (missing->empty()) return std::string(kOk);
            std::string names;
            for (const auto& m : *missing) names += (names.empty() ? "" : ", ") + m;
            return ErrorReply("TIMEOUT not replicated to " + names + " within " +
                              std::to_string(timeout.count()) + " ms");
          });
    };
  } else if (name == "geokv.mvget") {
    step.cls = StepClass::kRead;
    step.requests.push_back(Request(RequestKind::kMvGet, args[1]));
    step.finish = [](std::vector<Result>&, std::vector<Result>& r) -> kj::Promise<std::string> {
      const Result& m = r[0];
      if (!m.status.ok() && !m.status.IsNotFound()) return ErrorReply(RespError(m.status));
      std::string out;
      AppendArray(out, 2);
      AppendArray(out, m.values.size());
      for (const auto& v : m.values) AppendBulk(out, v);
      AppendBulk(out, Hex(m.context));
      return out;
    };
  } else if (name == "geokv.mvset") {
    if (args.size() > 4) {
      return Refused("ERR wrong number of arguments for 'geokv.mvset' command");
    }
    ParsedRequest p = Request(RequestKind::kMvSet, args[1]);
    if (p.status.ok()) p.status = CheckValue(args[2], node_.limits);
    std::string context;
    if (p.status.ok() && args.size() == 4 && !Unhex(args[3], &context)) {
      p.status = Status::InvalidArgument("the context is not hex (from GEOKV.MVGET)");
    }
    StatusOr<CausalContext> seen = Status::InvalidArgument("no context");
    if (p.status.ok()) {
      seen = DecodeClientContext(args[1], context);
      if (!seen.ok()) p.status = seen.status();
    }
    if (!p.status.ok()) {
      return Refused(RespError(p.status));
    }
    p.op = MvWrite{std::move(args[2]), std::move(seen).value()};
    step.cls = StepClass::kWrite;
    step.keys.push_back(args[1]);
    step.requests.push_back(std::move(p));
    step.finish = [this](std::vector<Result>&, std::vector<Result>& r) -> kj::Promise<std::string> {
      if (!r[0].status.ok()) return ErrorReply(RespError(r[0].status));
      last_token_ = r[0].token;
      return std::string(kOk);
    };
  }
  return step;
}

}  // namespace geokv

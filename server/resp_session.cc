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
#include "server/resp_session_internal.h"

namespace geokv {

std::string RespError(const Status& status) {
  switch (status.code()) {
    case Status::Code::kWrongType:
      return "WRONGTYPE Operation against a key holding the wrong kind of value";
    case Status::Code::kTooLarge: return "TOOLARGE " + status.message();
    case Status::Code::kInvalidArgument:
    case Status::Code::kNotFound: return "ERR " + status.message();
    case Status::Code::kUnavailable: return "UNAVAILABLE " + status.message();
    case Status::Code::kTimeout: return "TIMEOUT " + status.message();
    case Status::Code::kUnauthenticated: return "NOAUTH " + status.message();
    case Status::Code::kPermissionDenied: return "NOPERM " + status.message();
    case Status::Code::kOk:
    case Status::Code::kCorruption:
    case Status::Code::kIOError:
    case Status::Code::kFailedPrecondition: break;
  }
  spdlog::error("redis command failed: {}", status.ToString());
  return "ERR internal error: " + status.message();
}

RespSession::RespSession(RespNode& node, uint64_t id, std::string peer,
                         std::optional<std::string> certified)
    : node_(node), id_(id), peer_(std::move(peer)), opened_(std::chrono::steady_clock::now()) {
  if (node_.users == nullptr) {
    certified_role_ = Role::kAdmin;
  } else if (certified) {
    certified_role_ = node_.users->CertifiedRole(*certified);
  }
  role_ = certified_role_;
}

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
  p.tokens = after_;
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
  return ExecuteFrom(std::make_shared<std::vector<std::vector<std::string>>>(std::move(commands)),
                     0, std::string(), std::move(flush));
}

kj::Promise<std::string> RespSession::ExecuteFrom(
    std::shared_ptr<std::vector<std::vector<std::string>>> commands, size_t from,
    std::string out, Flush flush) {
  std::vector<Step> steps;
  size_t next = from;
  while (next < commands->size() && !closing_) {
    std::vector<std::string>& args = (*commands)[next++];
    const std::string name = Lower(args[0]);
    steps.push_back(Build(args));
    if (name == "auth" || name == "hello" || name == "reset") break;
  }
  auto ran = RunSteps(std::move(steps), 0, std::move(out), flush);
  if (next == commands->size() || closing_) return ran;
  return ran.then([this, commands, next, flush](std::string out) mutable {
    return ExecuteFrom(commands, next, std::move(out), std::move(flush));
  });
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
          // The connection is a session: its writes are ordered after its
          // last write, which earlier batches answered.
          if (auto last = DecodeToken(last_token_); last.ok()) {
            for (ParsedRequest& r : requests) r.tokens.push_back(*last);
          }
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
  if (!role_ && name != "auth" && name != "hello" && name != "quit" && name != "reset") {
    return Refused("NOAUTH Authentication required.");
  }
  if (std::string_view(spec->flags).find("write") != std::string_view::npos) {
    Status allowed = CheckRole(*role_, Role::kWrite, "'" + name + "'");
    if (!allowed.ok()) return Refused(RespError(allowed));
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

}  // namespace geokv

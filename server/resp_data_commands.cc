// The Redis session's commands on strings, counters and sets.

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
        // No counter: adding 0 to none, or a delete that saw this write.
        if (c.status.IsNotFound()) return IntegerReply(0);
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

}  // namespace geokv

// The Redis session's key commands (SCAN, SSCAN, EXISTS, TYPE, DEL) and
// geokv's own (GEOKV.*).

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
    // segments (on the reader pool, as a bulk read, so a large SCAN does not
    // hold up other clients' gets) until it has COUNT keys.
    return node_.store
        .RunBackground([o, first = static_cast<size_t>(cursor)](Store& store) {
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
    for (RequestKind kind : {RequestKind::kType, RequestKind::kSMembers, RequestKind::kMvGet}) {
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
      Result* r = &pre[3 * i];
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
            // The register's delete resets the counter too (observed reset).
            if (std::count(r[0].types.begin(), r[0].types.end(), CrdtType::kLww) != 0) break;
            ParsedRequest p = Request(RequestKind::kDel, keys[i]);
            p.op = LwwDelete{};
            requests.push_back(std::move(p));
            break;
          }
          case CrdtType::kMvRegister: {
            if (!r[2].status.ok()) return r[2].status;
            auto seen = DecodeClientContext(keys[i], r[2].context);
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
        AppendBulk(out, ToHex(last_token_));
      }
      return out;
    };
  } else if (name == "geokv.after") {
    std::vector<CausalToken> tokens;
    for (size_t i = 1; i < args.size(); ++i) {
      StatusOr<CausalToken> token = Status::InvalidArgument("not hex");
      if (std::optional<std::string> bytes = FromHex(args[i])) token = DecodeToken(*bytes);
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
    if (!ParseInt(args[1], &ms) || ms < 0) {
      return Refused("ERR timeout is not an integer or out of range");
    }
    if (ms > kMaxReplicationWait.count()) {
      return Refused("ERR timeout " + std::to_string(ms) + " ms is over the limit of " +
                     std::to_string(kMaxReplicationWait.count()) + " ms");
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
      AppendBulk(out, ToHex(m.context));
      return out;
    };
  } else if (name == "geokv.mvset") {
    if (args.size() > 4) {
      return Refused("ERR wrong number of arguments for 'geokv.mvset' command");
    }
    ParsedRequest p = Request(RequestKind::kMvSet, args[1]);
    if (p.status.ok()) p.status = CheckValue(args[2], node_.limits);
    std::string context;
    if (p.status.ok() && args.size() == 4) {
      std::optional<std::string> bytes = FromHex(args[3]);
      if (bytes) {
        context = std::move(*bytes);
      } else {
        p.status = Status::InvalidArgument("the context is not hex (from GEOKV.MVGET)");
      }
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

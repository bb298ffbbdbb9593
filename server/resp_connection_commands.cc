// The Redis session's connection and server commands: PING, ECHO, HELLO,
// AUTH, SELECT, QUIT, RESET, CLIENT, COMMAND, INFO, DBSIZE, TIME.

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
    return Auth(args);
  } else if (name == "select") {
    step.reply = args[1] == "0" ? kOk
                                : ErrorReply("ERR DB index is out of range: geokv has one "
                                             "database, 0");
  } else if (name == "quit") {
    closing_ = true;
    step.reply = kOk;
  } else if (name == "reset") {
    role_ = certified_role_;
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
  std::optional<std::pair<std::string, std::string>> auth;
  for (size_t i = 2; i < args.size(); ++i) {
    const std::string opt = Lower(args[i]);
    if (opt == "auth" && i + 2 < args.size()) {
      auth.emplace(args[i + 1], args[i + 2]);
      i += 2;
    } else if (opt == "setname" && i + 1 < args.size()) {
      setname = args[++i];
    } else {
      return Refused("ERR Syntax error in HELLO option '" + PrintableBytes(args[i]) + "'");
    }
  }
  if (!auth && !role_) {
    return Refused("NOAUTH HELLO must be called with the client already authenticated, "
                   "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                   "authenticate the client and select the RESP protocol version at the same "
                   "time");
  }
  auto greet = [this, resp3, setname] {
    resp3_ = resp3;
    if (!setname.empty()) name_ = setname;
    std::string out;
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
    return out;
  };
  if (auth) return Login(std::move(auth->first), std::move(auth->second), greet);
  Step step;
  step.reply = greet();
  return step;
}

RespSession::Step RespSession::Auth(std::vector<std::string>& args) {
  if (args.size() > 3) return Refused("ERR syntax error");
  // AUTH SECRET names the user "default", as Redis does.
  std::string user = args.size() == 3 ? args[1] : "default";
  return Login(std::move(user), std::move(args.back()), [] { return std::string(kOk); });
}

RespSession::Step RespSession::Login(std::string user, std::string secret,
                                     std::function<std::string()> then) {
  if (node_.users == nullptr) {
    return Refused("ERR AUTH called without any users configured on this node (--users); "
                   "every connection may run every command without it");
  }
  Step step;
  step.alone = true;
  step.finish = [this, user = std::move(user), secret = std::move(secret), then = std::move(then)](
                    std::vector<Result>&, std::vector<Result>&) mutable -> kj::Promise<std::string> {
    return node_.users->Login(std::move(user), std::move(secret))
        .then([this, then = std::move(then)](StatusOr<Role> role) -> std::string {
          if (role.ok()) {
            role_ = *role;
            return then();
          }
          if (role.status().code() == Status::Code::kUnauthenticated) {
            return ErrorReply("WRONGPASS invalid username-password pair or user is disabled.");
          }
          return ErrorReply(RespError(role.status()));
        });
  };
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
    Status allowed = CheckRole(*role_, Role::kAdmin, "'client list'");
    if (!allowed.ok()) return Refused(RespError(allowed));
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
    return node_.admin.Info(info, role_ == Role::kAdmin).then([this, message, info, sections, all, resp3]() mutable {
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
            "geokv_clock_offset_ms:{}\r\ngeokv_clock_samples:{}\r\ngeokv_writes_refused:{}\r\n"
            "geokv_peers:{}\r\n",
            info.getLastSeq(), info.getClockOffsetMs(), info.getClockSamples(),
            info.getWritesRefused().cStr(), peers.size());
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

}  // namespace geokv

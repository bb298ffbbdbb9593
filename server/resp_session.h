// The Redis commands of one connection, over the Coordinator: a second
// front end beside the Cap'n Proto client API (server/kv_service.h), with
// the same parsed requests (server/request.h) and limits. Strings are LWW
// registers, INCR* PN counters, sets add-wins OR-sets, and GEOKV.* carry
// tokens, consistency and multi-value registers; docs/resp.md has the
// command table and the conflict rules.
//
// Execute takes the commands of one socket read and answers with their
// replies, in order, in one string (a long one in pieces). Consecutive writes run as one
// Coordinator batch (one group commit) and consecutive reads as another; a
// read after a write, a write after a read, or a second write to a key
// already written in the batch starts a new batch, so each command sees the
// effect of every command before it on the connection, as Redis promises.
// A command refused by its arguments changes nothing.
//
// Thread safety: lives on the KJ event loop's thread, like the coordinator.

#ifndef GEOKV_SERVER_RESP_SESSION_H_
#define GEOKV_SERVER_RESP_SESSION_H_

#include <kj/async.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "replication/replicator.h"
#include "server/admin.h"
#include "server/coordinator.h"
#include "server/request.h"
#include "server/users.h"
#include "storage/async_store.h"

namespace geokv {

// What every connection of a node shares. The references must outlive the
// sessions.
struct RespNode {
  Coordinator& coordinator;
  Admin& admin;
  Replicator& replicator;
  AsyncStore& store;
  RequestLimits limits;
  // The most value bytes one command's reply may carry (SMEMBERS of a large
  // set); beyond, the command gets an error.
  size_t max_reply_bytes = 32 << 20;
  // The lines of CLIENT LIST, one per open connection. May be empty.
  std::function<std::string()> client_list;
  // Connections open on the Redis port, for INFO clients. May be empty.
  std::function<size_t()> connections;
  // Where AUTH is checked; nullptr: the node has no users, and every
  // connection may run every command.
  Authenticator* users = nullptr;
};

class RespSession {
 public:
  // `id` is CLIENT ID's answer; `peer` the client's address; `certified`
  // the name its client certificate carries, if any (on a node with users,
  // a certificate naming a user logs the connection in as that user).
  RespSession(RespNode& node, uint64_t id, std::string peer,
              std::optional<std::string> certified = std::nullopt);
  ~RespSession();

  RespSession(const RespSession&) = delete;
  RespSession& operator=(const RespSession&) = delete;

  // Writes replies to the client; resolves once they are written.
  using Flush = std::function<kj::Promise<void>(std::string replies)>;

  // Runs `commands` (each non-empty: a name and its arguments) in order and
  // resolves with their replies. Once the replies held pass kFlushBytes they
  // go to `flush` between batches (and the next batch waits for it), so one
  // call holds at most about kFlushBytes and one batch's replies.
  // REQUIRES: the previous Execute resolved.
  kj::Promise<std::string> Execute(std::vector<std::vector<std::string>> commands, Flush flush);

  static constexpr size_t kFlushBytes = 256 << 10;
  // Reads in one batch at most: a batch's values are held until it ends.
  static constexpr size_t kMaxReadBatch = 64;

  // QUIT was run: close once its reply is sent; later commands are ignored.
  bool closing() const { return closing_; }
  // For CLIENT LIST.
  std::string Describe() const;

 private:
  struct Step;
  struct Batch;

  // The step that runs `args`; a refusal is a step with its error reply.
  Step Build(std::vector<std::string>& args);
  kj::Promise<std::string> RunBatch(std::vector<Step> steps);
  // Builds and runs commands[from...]: up to and including the next that
  // may change the connection's user, then the rest, so that each command
  // is checked against the user it runs as.
  kj::Promise<std::string> ExecuteFrom(std::shared_ptr<std::vector<std::vector<std::string>>> commands,
                                       size_t from, std::string out, Flush flush);
  kj::Promise<std::string> RunSteps(std::vector<Step> steps, size_t from, std::string out,
                                    Flush flush);

  // A step that only answers `message` as an error: nothing runs.
  static Step Refused(std::string_view message);
  // The commands by group.
  Step Connection(std::vector<std::string>& args, const std::string& name);
  Step Strings(std::vector<std::string>& args, const std::string& name);
  Step Sets(std::vector<std::string>& args, const std::string& name);
  Step Keys(std::vector<std::string>& args, const std::string& name);
  Step Own(std::vector<std::string>& args, const std::string& name);
  Step Hello(std::vector<std::string>& args);
  Step Auth(std::vector<std::string>& args);
  // Logs in as `user`; on success the connection runs as that user from the
  // next command, and the reply is `then()`'s; else WRONGPASS.
  Step Login(std::string user, std::string secret, std::function<std::string()> then);
  Step ClientCommand(std::vector<std::string>& args);
  Step Info(std::vector<std::string>& args);
  Step Del(std::vector<std::string>& args);
  Step Scan(std::vector<std::string>& args);
  Step SScan(std::vector<std::string>& args);

  // A request of `kind` for `key` at the connection's level, its key
  // checked; reads wait for the connection's GEOKV.AFTER tokens, and writes
  // are stamped above them (and above the connection's last write, added
  // when they run).
  ParsedRequest Request(RequestKind kind, std::string key) const;
  // A read of one request's answer, now, through the coordinator.
  kj::Promise<Result> RunOne(ParsedRequest request);
  // The whole set at `key` from a first page, a page at a time.
  kj::Promise<std::string> Members(std::string key, Result first, bool resp3);

  RespNode& node_;
  const uint64_t id_;
  const std::string peer_;
  const std::chrono::steady_clock::time_point opened_;
  std::string name_;
  std::string lib_name_, lib_version_;
  bool resp3_ = false;
  bool closing_ = false;
  // The role commands run with; nullopt: not logged in (a node with users,
  // before AUTH). `certified_role_` is the role a client certificate gave,
  // restored by RESET.
  std::optional<Role> certified_role_;
  std::optional<Role> role_;
  Consistency consistency_ = Consistency::kDefault;
  std::string last_token_;           // of the connection's last write
  std::vector<CausalToken> after_;   // GEOKV.AFTER
  // SSCAN cursors: a number the client may hold, to the last element given.
  std::map<uint64_t, std::string> cursors_;
  uint64_t next_cursor_ = 1;
  std::string last_command_;
};

// The Redis error reply (without '-' and CRLF) for a geokv outcome:
// WRONGTYPE for kWrongType, TOOLARGE, UNAVAILABLE, TIMEOUT, ERR for the
// rest; docs/resp.md lists them.
std::string RespError(const Status& status);

}  // namespace geokv

#endif  // GEOKV_SERVER_RESP_SESSION_H_

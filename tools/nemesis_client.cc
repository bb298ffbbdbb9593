#include "tools/nemesis_client.h"

#include <chrono>
#include <set>
#include <thread>

#include "schema/kv_text.h"

namespace geokv::nemesis {

namespace {

using Code = rpc::Outcome::Code;

// What a write's outcome says about whether it was applied.
WriteResult Classify(Code code) {
  switch (code) {
    case Code::OK:
      return WriteResult::kAcked;
    case Code::TIMEOUT:
      // Durable on one owner (token set) or lost in forwarding: either way
      // it may be there.
      return WriteResult::kUnknown;
    default:
      // unavailable, invalid, wrongType, tooLarge, internal: nothing applied.
      return WriteResult::kFailed;
  }
}

// Sends `req` for `key` at `level` (after `fill` sets the rest); the reply.
template <typename Request, typename Fill>
auto Send(Connections::Connection& c, Request req, const std::string& key,
          rpc::Consistency level, Fill fill) {
  req.setKey(AsData(key));
  req.setConsistency(level);
  fill(req);
  return Call(c, req);
}

// How a write ended, and the token of the write when the reply carries one.
template <typename Reply>
WriteResult Ended(const Reply& reply, std::string* token) {
  if (reply.hasToken() && reply.getToken().size() > 0) *token = String(reply.getToken());
  return Classify(reply.getOutcome().getCode());
}

// Sends `w` at QUORUM, ordered after the session's earlier writes: it
// presents `*session`, the token of the client's latest write that has
// one, and replaces it with this write's token. Every write presents its
// predecessor's, so the latest token bounds them all (docs/api.md, Tokens).
WriteResult SendWrite(Connections::Connection& c, const Write& w, std::string* session) {
  const auto quorum = rpc::Consistency::QUORUM;
  auto present = [&](auto& req) {
    if (!session->empty()) req.initTokens(1).set(0, AsData(*session));
  };
  switch (w.type) {
    case OpType::kSetAdd:
      return Ended(Send(c, c.kv.sAddRequest(), w.key, quorum,
                        [&](auto& req) {
                          req.initElements(1).set(0, AsData(w.value));
                          present(req);
                        }),
                   session);
    case OpType::kIncrement:
      return Ended(Send(c, c.kv.incrByRequest(), w.key, quorum,
                        [&](auto& req) {
                          req.setDelta(w.delta);
                          present(req);
                        }),
                   session);
    case OpType::kRegisterSet:
      return Ended(Send(c, c.kv.setRequest(), w.key, quorum,
                        [&](auto& req) {
                          req.setValue(AsData(w.value));
                          present(req);
                        }),
                   session);
  }
  return WriteResult::kUnknown;
}

// Whether a read's outcome is an answer: notFound is one (the key holds
// nothing).
bool Answered(Code code) { return code == Code::OK || code == Code::NOT_FOUND; }

// Reads r->key at `level` into *r; false when the read did not answer.
bool SendRead(Connections::Connection& c, rpc::Consistency level, Read* r) {
  auto none = [](auto&) {};
  switch (r->type) {
    case OpType::kSetAdd: {
      auto reply = Send(c, c.kv.sIsMemberRequest(), r->key, level,
                        [&](auto& req) { req.setElement(AsData(r->element)); });
      r->present = reply.getOutcome().getCode() == Code::OK && reply.getValue();
      return Answered(reply.getOutcome().getCode());
    }
    case OpType::kIncrement: {
      auto reply = Send(c, c.kv.counterGetRequest(), r->key, level, none);
      r->count = reply.getOutcome().getCode() == Code::OK ? reply.getValue() : 0;
      return Answered(reply.getOutcome().getCode());
    }
    case OpType::kRegisterSet: {
      auto reply = Send(c, c.kv.getRequest(), r->key, level, none);
      r->value.reset();
      if (reply.getOutcome().getCode() == Code::OK) r->value = String(reply.getValue());
      return Answered(reply.getOutcome().getCode());
    }
  }
  return false;
}

// Every element of the set at `key` on this node (ONE), page by page.
bool ReadSet(Connections::Connection& c, const std::string& key, std::set<std::string>* out) {
  std::optional<std::string> after;
  while (true) {
    auto reply = Send(c, c.kv.sMembersRequest(), key, rpc::Consistency::ONE, [&](auto& req) {
      if (after) req.getFrom().setAfter(AsData(*after));
    });
    Code code = reply.getOutcome().getCode();
    if (code == Code::NOT_FOUND) return true;
    if (code != Code::OK) return false;
    for (auto e : reply.getElements()) out->insert(String(e));
    if (!reply.getMore() || reply.getElements().size() == 0) return true;
    after = String(reply.getElements()[reply.getElements().size() - 1]);
  }
}

}  // namespace

void Directory::Set(int i, Node node) {
  std::lock_guard<std::mutex> lock(mu_);
  nodes_[i] = std::move(node);
}

void Directory::SetMember(int i, bool member) {
  std::lock_guard<std::mutex> lock(mu_);
  nodes_[i].member = member;
}

void Directory::SetAddress(int i, std::string address) {
  std::lock_guard<std::mutex> lock(mu_);
  nodes_[i].address = std::move(address);
}

std::optional<std::pair<Directory::Node, Directory::Node>> Directory::PickTwo(
    int region, std::mt19937_64& rng) const {
  std::vector<Node> members;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [i, node] : nodes_) {
      if (node.member && node.region == region) members.push_back(node);
    }
  }
  if (members.size() < 2) return std::nullopt;
  size_t a = rng() % members.size();
  size_t b = rng() % (members.size() - 1);
  if (b >= a) ++b;
  return std::make_pair(members[a], members[b]);
}

Connections::Connection& Connections::Get(const std::string& address) {
  auto it = connections_.find(address);
  if (it == connections_.end()) {
    auto ez = std::make_unique<capnp::EzRpcClient>(address);
    auto kv = ez->getMain<rpc::GeoKv>();
    it = connections_.emplace(address, Connection{std::move(ez), std::move(kv)}).first;
  }
  return it->second;
}

void RunClient(const ClientOptions& options, const Directory& directory, History& history,
               const std::atomic<bool>& stop) {
  std::mt19937_64 rng(options.seed);
  Connections connections;
  const std::string me = "c" + std::to_string(options.id);
  uint64_t seq = 0;
  std::string session;  // the token of the latest write that returned one
  while (!stop.load()) {
    auto nodes = directory.PickTwo(options.region, rng);
    if (!nodes) {
      // Only while a region is down to one member; the nemesis changes that.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    const auto& [writer, reader] = *nodes;
    Write w;
    w.type = static_cast<OpType>(rng() % kOpTypes);
    w.client = options.id;
    w.region = options.region;
    w.node = writer.name;
    switch (w.type) {
      case OpType::kSetAdd:
        w.key = "set-" + std::to_string(rng() % kSetKeys);
        w.value = me + "-" + std::to_string(++seq);
        break;
      case OpType::kIncrement:
        w.key = "ctr-" + std::to_string(rng() % kCounterKeys);
        w.delta = 1 + static_cast<int64_t>(rng() % 5);
        break;
      case OpType::kRegisterSet:
        w.key = "reg-" + me + "-" + std::to_string(rng() % kRegisterKeysPerClient);
        w.value = me + "-" + std::to_string(++seq);
        break;
    }
    w.start = Clock::now();
    try {
      w.result = SendWrite(connections.Get(writer.address), w, &session);
    } catch (const kj::Exception&) {
      connections.Drop(writer.address);
      w.result = WriteResult::kUnknown;
    }
    w.end = Clock::now();
    history.AddWrite(w);
    if (w.result != WriteResult::kAcked) continue;

    Read r;
    r.type = w.type;
    r.client = options.id;
    r.region = options.region;
    r.key = w.key;
    r.node = reader.name;
    r.element = w.value;
    r.written_through = writer.name;
    r.start = Clock::now();
    bool answered = false;
    // No token: the read checks that QUORUM reads meet QUORUM writes, which
    // a token's wait for the write on the reading node would hide.
    try {
      answered = SendRead(connections.Get(reader.address), rpc::Consistency::QUORUM, &r);
    } catch (const kj::Exception&) {
      connections.Drop(reader.address);
    }
    r.end = Clock::now();
    if (answered) {
      history.CheckRead(r);
    } else {
      history.ReadFailed(r.type);
    }
  }
}

bool ReadNodeState(const std::string& address, const History& history, NodeState* state,
                   std::string* why) {
  Connections connections;
  try {
    Connections::Connection& c = connections.Get(address);
    auto info = c.kv.infoRequest();
    state->digest = Call(c, info).getStateDigest();
    for (const std::string& key : history.Keys(OpType::kSetAdd)) {
      if (!ReadSet(c, key, &state->sets[key])) {
        *why = "reading set " + key + " failed";
        return false;
      }
    }
    for (OpType type : {OpType::kIncrement, OpType::kRegisterSet}) {
      for (const std::string& key : history.Keys(type)) {
        Read r;
        r.type = type;
        r.key = key;
        if (!SendRead(c, rpc::Consistency::ONE, &r)) {
          *why = std::string("reading ") + OpName(type) + " key " + key + " failed";
          return false;
        }
        if (type == OpType::kIncrement) {
          state->counters[key] = r.count;
        } else {
          state->registers[key] = r.value;
        }
      }
    }
  } catch (const kj::Exception& e) {
    *why = e.getDescription().cStr();
    return false;
  }
  return true;
}

}  // namespace geokv::nemesis

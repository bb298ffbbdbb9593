// The clients of a nemesis run (tools/nemesis.cc): threads that write and
// read through the client API only, each with its own connections, and the
// final reads of every node's state.

#ifndef GEOKV_TOOLS_NEMESIS_CLIENT_H_
#define GEOKV_TOOLS_NEMESIS_CLIENT_H_

#include <capnp/ez-rpc.h>
#include <kj/async-io.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "schema/kv.capnp.h"
#include "tools/nemesis_history.h"

namespace geokv::nemesis {

// Keys per group: OR-sets and counters shared by every client, registers
// per client.
inline constexpr int kSetKeys = 8;
inline constexpr int kCounterKeys = 8;
inline constexpr int kRegisterKeysPerClient = 4;

// How long a client waits for any one answer before it gives up on the
// call (the server's own request timeout is shorter).
inline constexpr kj::Duration kCallTimeout = 10 * kj::SECONDS;

// Where the cluster's nodes can be reached now: the nemesis updates it as
// nodes restart (on new client ports), join and leave. Thread-safe.
class Directory {
 public:
  struct Node {
    int region = 0;
    std::string name;
    std::string address;
    bool member = false;  // started and not leaving or left
  };

  // Adds or updates node `i`.
  void Set(int i, Node node);
  void SetMember(int i, bool member);
  void SetAddress(int i, std::string address);

  // Two distinct members of `region` at random: the first to write
  // through, the second to read through. nullopt with fewer than two.
  std::optional<std::pair<Node, Node>> PickTwo(int region, std::mt19937_64& rng) const;

 private:
  mutable std::mutex mu_;
  std::map<int, Node> nodes_;
};

// Connections of one thread to nodes by address, made on first use and
// dropped after a failed call (a node that was killed or paused is dialled
// afresh). Not thread-safe.
class Connections {
 public:
  struct Connection {
    std::unique_ptr<capnp::EzRpcClient> ez;
    rpc::GeoKv::Client kv;
  };

  Connection& Get(const std::string& address);
  void Drop(const std::string& address) { connections_.erase(address); }

 private:
  std::map<std::string, Connection> connections_;
};

// Sends `request` and waits for the answer at most kCallTimeout; throws
// kj::Exception on a transport failure or the timeout.
template <typename Request>
auto Call(Connections::Connection& c, Request& request) {
  auto promise = request.send();
  using Response = decltype(promise.wait(c.ez->getWaitScope()));
  kj::Promise<Response> plain = kj::mv(promise);
  return c.ez->getIoProvider()
      .getTimer()
      .timeoutAfter(kCallTimeout, kj::mv(plain))
      .wait(c.ez->getWaitScope());
}

struct ClientOptions {
  int id = 0;
  int region = 0;
  uint64_t seed = 0;
};

// Writes, and reads each acknowledged write back through another node of
// its region, until `stop`; records both in `history`. The client is one
// session: each write presents the token of its latest earlier write, so
// its writes are ordered (its later LWW write wins) whatever the clocks.
void RunClient(const ClientOptions& options, const Directory& directory, History& history,
               const std::atomic<bool>& stop);

// Reads every key `history` saw written from the node at `address` at ONE,
// with its state digest. False (and the error in *why) when a read fails.
bool ReadNodeState(const std::string& address, const History& history, NodeState* state,
                   std::string* why);

}  // namespace geokv::nemesis

#endif  // GEOKV_TOOLS_NEMESIS_CLIENT_H_

// A connection to a node's client API, plain TCP or TLS, for geokv-cli, tests
// and benchmarks. It runs on the calling thread's event loop, the one
// capnp::EzRpcClient keeps per thread, so it can be used next to those.
//
// Not thread-safe; use it on the thread that made it.

#ifndef GEOKV_CLIENT_CONNECTION_H_
#define GEOKV_CLIENT_CONNECTION_H_

#include <capnp/ez-rpc.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <string>

#include "schema/kv.capnp.h"

namespace geokv {

struct ClientTlsOptions {
  // PEM certificates trusted to sign the node's certificate; empty: no TLS.
  std::string ca;
  // This client's certificate chain and key (PEM), for a node that asks
  // for one (--client-ca); both or neither.
  std::string cert;
  std::string key;
  // The name the node's certificate must carry (a DNS name among its
  // subject alternative names). Default (empty): the host of the address.
  std::string name;
};

// A user to log in as, on a node with users (--users); an empty user: none.
struct ClientLogin {
  std::string user;
  std::string secret;
};

class ClientConnection {
 public:
  // Connects to HOST:PORT, shaking hands first with TLS. Throws
  // kj::Exception: DISCONNECTED when the node cannot be reached or the
  // handshake fails (a certificate that does not verify among the causes),
  // FAILED when the TLS files are unusable.
  ClientConnection(const std::string& address, const ClientTlsOptions& tls,
                   capnp::ReaderOptions reader = capnp::ReaderOptions());
  ~ClientConnection();

  ClientConnection(const ClientConnection&) = delete;
  ClientConnection& operator=(const ClientConnection&) = delete;

  kj::WaitScope& ws() { return loop_->getWaitScope(); }
  // The thread's I/O, for other connections on the same loop.
  kj::AsyncIoProvider& io() { return loop_->getIoProvider(); }
  // The node's client API; with `login.user`, as that user, after logging
  // in (throws kj::Exception FAILED saying why when the node refuses).
  rpc::GeoKv::Client Main(const ClientLogin& login = {});

 private:
  // An idle EzRpcClient over a socket pair: it holds the thread's event
  // loop for as long as this connection lives.
  int pair_[2] = {-1, -1};
  kj::Own<capnp::EzRpcClient> loop_;
  kj::Own<kj::TlsContext> tls_;
  kj::Own<kj::AsyncIoStream> stream_;
  kj::Own<capnp::TwoPartyVatNetwork> network_;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc_;
};

}  // namespace geokv

#endif  // GEOKV_CLIENT_CONNECTION_H_

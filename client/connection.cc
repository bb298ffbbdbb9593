#include "client/connection.h"

#include <kj/debug.h>
#include <sys/socket.h>
#include <unistd.h>

#include "schema/kv_text.h"
#include "util/buffered_stream.h"
#include "util/tls.h"

namespace geokv {

ClientConnection::ClientConnection(const std::string& address, const ClientTlsOptions& tls,
                                   capnp::ReaderOptions reader) {
  KJ_SYSCALL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair_));
  loop_ = kj::heap<capnp::EzRpcClient>(pair_[0]);
  kj::WaitScope& ws = loop_->getWaitScope();
  kj::Own<kj::AsyncIoStream> stream =
      loop_->getIoProvider().getNetwork().parseAddress(address).wait(ws)->connect().wait(ws);
  if (!tls.ca.empty()) {
    auto made = MakeTlsContext(TlsContextOptions{TlsFiles{tls.cert, tls.key, tls.ca}});
    if (!made.ok()) {
      kj::throwFatalException(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                                            kj::heapString(made.status().message().c_str())));
    }
    tls_ = std::move(made).value();
    const std::string name = tls.name.empty() ? address.substr(0, address.rfind(':')) : tls.name;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
      stream = tls_->wrapClient(kj::mv(stream), name.c_str()).wait(ws);
    })) {
      kj::throwFatalException(KJ_EXCEPTION(
          DISCONNECTED, kj::str("TLS handshake failed: ", e->getDescription())));
    }
  }
  stream_ = kj::heap<BufferedStream>(kj::mv(stream));
  network_ = kj::heap<capnp::TwoPartyVatNetwork>(*stream_, capnp::rpc::twoparty::Side::CLIENT,
                                                 reader);
  rpc_ = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
      capnp::makeRpcClient(*network_));
}

ClientConnection::~ClientConnection() {
  rpc_ = nullptr;
  network_ = nullptr;
  stream_ = nullptr;
  loop_ = nullptr;
  for (int fd : pair_) {
    if (fd >= 0) close(fd);
  }
}

rpc::GeoKv::Client ClientConnection::Main(const ClientLogin& login) {
  capnp::word scratch[4] = {};
  capnp::MallocMessageBuilder message(scratch);
  auto host = message.getRoot<capnp::rpc::twoparty::VatId>();
  host.setSide(capnp::rpc::twoparty::Side::SERVER);
  capnp::Capability::Client bootstrap = rpc_->bootstrap(host);
  if (login.user.empty()) return bootstrap.castAs<rpc::GeoKv>();
  auto request = bootstrap.castAs<rpc::Login>().loginRequest();
  request.setUser(login.user);
  request.setSecret(login.secret);
  auto reply = request.send().wait(ws());
  auto outcome = reply.getOutcome();
  if (outcome.getCode() != rpc::Outcome::Code::OK) {
    kj::throwFatalException(KJ_EXCEPTION(FAILED, kj::str("login as ", login.user.c_str(),
                                                         " refused: ", OutcomeName(outcome.getCode()),
                                                         ": ", outcome.getMessage())));
  }
  return reply.getKv();
}

}  // namespace geokv

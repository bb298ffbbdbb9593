// A RespClient over TLS, as a Redis client with TLS speaks to a node's
// Redis port (--resp-listen with --tls-cert): OpenSSL directly, blocking,
// not geokv's own TLS code. Links OpenSSL::SSL. Not thread-safe.

#ifndef GEOKV_TESTS_RESP_TLS_RESP_CLIENT_H_
#define GEOKV_TESTS_RESP_TLS_RESP_CLIENT_H_

#include <openssl/ssl.h>

#include <algorithm>
#include <climits>
#include <string>

#include "client/connection.h"
#include "tests/resp/resp_client.h"

namespace geokv::testing {

class TlsRespClient : public RespClient {
 public:
  // Connects to 127.0.0.1:port and shakes hands, trusting the node's
  // certificate when `tls.ca` signed it and it carries the DNS name
  // `tls.name`; presents `tls.cert` and `tls.key` when given. connected()
  // says whether all that worked.
  TlsRespClient(int port, const ClientTlsOptions& tls) : RespClient(port) {
    const bool tcp = connected_;
    connected_ = false;
    context_ = SSL_CTX_new(TLS_client_method());
    if (!tcp || context_ == nullptr) return;
    SSL_CTX_set_min_proto_version(context_, TLS1_2_VERSION);
    SSL_CTX_set_verify(context_, SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_load_verify_locations(context_, tls.ca.c_str(), nullptr) != 1) return;
    if (!tls.cert.empty() &&
        (SSL_CTX_use_certificate_chain_file(context_, tls.cert.c_str()) != 1 ||
         SSL_CTX_use_PrivateKey_file(context_, tls.key.c_str(), SSL_FILETYPE_PEM) != 1)) {
      return;
    }
    ssl_ = SSL_new(context_);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd()) != 1 ||
        SSL_set_tlsext_host_name(ssl_, tls.name.c_str()) != 1 ||
        SSL_set1_host(ssl_, tls.name.c_str()) != 1) {
      return;
    }
    connected_ = SSL_connect(ssl_) == 1;
  }
  ~TlsRespClient() override {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (context_ != nullptr) SSL_CTX_free(context_);
  }

 protected:
  // A write after the node closed the connection raises SIGPIPE: OpenSSL
  // writes to the socket without MSG_NOSIGNAL.
  ssize_t SendSome(const char* data, size_t size) override {
    return connected_ ? SSL_write(ssl_, data, static_cast<int>(std::min<size_t>(size, INT_MAX)))
                      : -1;
  }
  ssize_t ReceiveSome(char* buffer, size_t size) override {
    return connected_ ? SSL_read(ssl_, buffer, static_cast<int>(std::min<size_t>(size, INT_MAX)))
                      : -1;
  }

 private:
  SSL_CTX* context_ = nullptr;
  SSL* ssl_ = nullptr;
};

}  // namespace geokv::testing

#endif  // GEOKV_TESTS_RESP_TLS_RESP_CLIENT_H_

// TLS for geokv's TCP ports and the identity a node's certificate binds
// (docs/operations.md#certificates). Over kj/compat/tls.h (OpenSSL): TLS
// 1.2 at least (1.3 when both ends have it), certificates verified against
// the given CA only, never the system's trust store.
//
// A node's certificate names it twice: its subject common name is
// NAME.REGION (the node's --node-id and --region), which the other end of a
// peer connection compares with what the node says in its hello; and one
// of its DNS subject alternative names is REGION, the name a node dialling
// any node of a region (a seed, whose name it does not know yet) asks the
// TLS handshake to verify.

#ifndef GEOKV_UTIL_TLS_H_
#define GEOKV_UTIL_TLS_H_

#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "util/status.h"

namespace geokv {

// PEM files; an empty path is "not given".
struct TlsFiles {
  std::string cert;  // this end's certificate chain, leaf first
  std::string key;   // its private key (unencrypted)
  std::string ca;    // the certificates trusted to sign the other end's (one or more)
};

struct TlsContextOptions {
  TlsFiles files;
  // As a server, require the client to present a certificate signed by
  // `files.ca`. Default: false (a client certificate is not asked for).
  bool require_client_certificate = false;
  // Check at load that `files.cert` is signed by `files.ca` (a node's own
  // certificate against its cluster's CA). Default: false (a client's
  // certificate answers to the node's CA, not to the one it trusts).
  bool certificate_from_ca = false;
  // As a server, how long a handshake may take; needs `timer`, which must
  // outlive the context. Default: no limit.
  kj::Timer* timer = nullptr;
  kj::Duration handshake_timeout = 10 * kj::SECONDS;
};

// A context to wrap streams in, both ways, after checking the files: each
// readable, the certificate and key PEM that parse and belong together, the
// certificate signed by the CA and valid now (with certificate_from_ca),
// the CA holding at least one certificate. REQUIRES: cert and key given together;
// a server needs them. The error names the file and what is wrong with it.
StatusOr<kj::Own<kj::TlsContext>> MakeTlsContext(const TlsContextOptions& options);

// The TLS context in force on a port or for dialling, replaced whole when
// the files are read again (a reload on SIGHUP). A handshake uses the
// context current when it starts, and the connection keeps that context
// until it closes: replacing it drops no connection. Not thread-safe: one
// event loop's.
class TlsContextHolder {
 public:
  explicit TlsContextHolder(kj::Own<kj::TlsContext> context);

  // New handshakes use `context` from now on.
  void Replace(kj::Own<kj::TlsContext> context);

  kj::Promise<kj::AuthenticatedStream> WrapServer(kj::AuthenticatedStream stream);
  // `expected_server_hostname` must be one of the other end's names.
  kj::Promise<kj::AuthenticatedStream> WrapClient(kj::AuthenticatedStream stream,
                                                  kj::StringPtr expected_server_hostname);

 private:
  std::shared_ptr<kj::Own<kj::TlsContext>> current_;
};

// The identity a node's certificate names.
struct NodeIdentity {
  std::string name;
  std::string region;
  bool operator==(const NodeIdentity& o) const { return name == o.name && region == o.region; }
};

// NAME.REGION.
std::string NodeCommonName(const NodeIdentity& node);
// Splits a common name at its last dot; nullopt when either side is empty.
std::optional<NodeIdentity> ParseNodeCommonName(std::string_view common_name);

// OK when `node` can be named by a certificate: the region a DNS label
// (letters, digits, '-', at most 63), the name letters, digits, '-', '_'
// and '.' (at most 200).
Status CheckNodeNames(const NodeIdentity& node);

// OK when the certificate file names `node` as described above.
Status CheckNodeCertificate(const std::string& cert_file, const NodeIdentity& node);

// The common name of the certificate the other end presented and the TLS
// handshake verified; nullopt when the stream is not TLS or the other end
// presented none.
std::optional<std::string> CertifiedName(kj::PeerIdentity& identity);

}  // namespace geokv

#endif  // GEOKV_UTIL_TLS_H_

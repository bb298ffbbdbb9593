#include "util/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

namespace geokv {
namespace {

// Certificate and key files are small; a larger one is not one.
constexpr std::streamsize kMaxPemBytes = 1 << 20;

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::InvalidArgument(flag + ": cannot read " + path + ": " + std::strerror(errno));
  }
  std::string bytes(static_cast<size_t>(kMaxPemBytes) + 1, '\0');
  in.read(bytes.data(), kMaxPemBytes + 1);
  if (in.bad()) return Status::InvalidArgument(flag + ": cannot read " + path);
  bytes.resize(static_cast<size_t>(in.gcount()));
  if (bytes.size() > static_cast<size_t>(kMaxPemBytes)) {
    return Status::InvalidArgument(flag + ": " + path + " is larger than 1 MiB");
  }
  return bytes;
}

std::string OpensslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no detail";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

// Every certificate of a PEM text, in order.
std::vector<X509Ptr> ParseCertificates(const std::string& pem) {
  std::vector<X509Ptr> out;
  std::unique_ptr<BIO, int (*)(BIO*)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                          BIO_free);
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();  // the end of the text reads as an error
  return out;
}

PkeyPtr ParseKey(const std::string& pem) {
  std::unique_ptr<BIO, int (*)(BIO*)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())),
                                          BIO_free);
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

// The PEM text of each certificate, for kj (which trusts only the first
// certificate of each TlsCertificate it is given).
std::string ToPem(X509* x) {
  std::unique_ptr<BIO, int (*)(BIO*)> bio(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_X509(bio.get(), x);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Status VerifyAgainst(X509* leaf, const std::vector<X509Ptr>& chain,
                     const std::vector<X509Ptr>& cas) {
  std::unique_ptr<X509_STORE, void (*)(X509_STORE*)> store(X509_STORE_new(), X509_STORE_free);
  for (const X509Ptr& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> untrusted(
      sk_X509_new_null(), [](STACK_OF(X509)* s) { sk_X509_free(s); });
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted.get(), chain[i].get());
  std::unique_ptr<X509_STORE_CTX, void (*)(X509_STORE_CTX*)> ctx(X509_STORE_CTX_new(),
                                                                 X509_STORE_CTX_free);
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf, untrusted.get());
  if (X509_verify_cert(ctx.get()) == 1) return Status::OK();
  std::string why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
  ERR_clear_error();
  return Status::InvalidArgument(why);
}

bool IsLabelChar(char c, bool name) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || (name && (c == '_' || c == '.'));
}

}  // namespace

StatusOr<kj::Own<kj::TlsContext>> MakeTlsContext(const TlsContextOptions& options) {
  const TlsFiles& f = options.files;
  if (f.cert.empty() != f.key.empty()) {
    return Status::InvalidArgument("--tls-cert and --tls-key: give both or neither");
  }
  std::vector<X509Ptr> chain, cas;
  std::string cert_pem, key_pem;
  if (!f.cert.empty()) {
    auto read = ReadPem("--tls-cert", f.cert);
    if (!read.ok()) return read.status();
    cert_pem = std::move(read).value();
    chain = ParseCertificates(cert_pem);
    if (chain.empty()) {
      return Status::InvalidArgument("--tls-cert: " + f.cert + " holds no PEM certificate");
    }
    auto key_read = ReadPem("--tls-key", f.key);
    if (!key_read.ok()) return key_read.status();
    key_pem = std::move(key_read).value();
    PkeyPtr key = ParseKey(key_pem);
    if (!key) {
      return Status::InvalidArgument("--tls-key: " + f.key +
                                     " holds no unencrypted PEM private key: " + OpensslError());
    }
    if (X509_check_private_key(chain[0].get(), key.get()) != 1) {
      ERR_clear_error();
      return Status::InvalidArgument("--tls-key: " + f.key +
                                     " is not the key of the certificate in " + f.cert);
    }
  }
  if (!f.ca.empty()) {
    auto read = ReadPem("CA file", f.ca);
    if (!read.ok()) return read.status();
    cas = ParseCertificates(*read);
    if (cas.empty()) {
      return Status::InvalidArgument("CA file " + f.ca + " holds no PEM certificate");
    }
    if (options.certificate_from_ca && !chain.empty()) {
      Status verified = VerifyAgainst(chain[0].get(), chain, cas);
      if (!verified.ok()) {
        return Status::InvalidArgument("--tls-cert: " + f.cert + " does not verify against " +
                                       f.ca + ": " + verified.message());
      }
    }
  }
  kj::Own<kj::TlsContext> context;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    kj::TlsContext::Options o;
    o.useSystemTrustStore = false;
    o.minVersion = kj::TlsVersion::TLS_1_2;
    o.verifyClients = options.require_client_certificate;
    std::vector<kj::TlsCertificate> trusted;
    for (const X509Ptr& ca : cas) trusted.emplace_back(kj::StringPtr(ToPem(ca.get()).c_str()));
    o.trustedCertificates = kj::arrayPtr(trusted.data(), trusted.size());
    std::optional<kj::TlsKeypair> keypair;
    if (!cert_pem.empty()) {
      keypair.emplace(kj::TlsKeypair{kj::TlsPrivateKey(kj::StringPtr(key_pem.c_str())),
                                     kj::TlsCertificate(kj::StringPtr(cert_pem.c_str()))});
      o.defaultKeypair = *keypair;
    }
    if (options.timer != nullptr) {
      o.timer = *options.timer;
      o.acceptTimeout = options.handshake_timeout;
    }
    context = kj::heap<kj::TlsContext>(kj::mv(o));
  })) {
    return Status::InvalidArgument(std::string("cannot set up TLS: ") + e->getDescription().cStr());
  }
  return context;
}

namespace {

// The connection holds `context` as long as it lives.
kj::AuthenticatedStream Holding(kj::AuthenticatedStream secured,
                                std::shared_ptr<kj::Own<kj::TlsContext>> context) {
  secured.stream = secured.stream.attach(kj::mv(context));
  return secured;
}

}  // namespace

TlsContextHolder::TlsContextHolder(kj::Own<kj::TlsContext> context)
    : current_(std::make_shared<kj::Own<kj::TlsContext>>(kj::mv(context))) {}

void TlsContextHolder::Replace(kj::Own<kj::TlsContext> context) {
  current_ = std::make_shared<kj::Own<kj::TlsContext>>(kj::mv(context));
}

kj::Promise<kj::AuthenticatedStream> TlsContextHolder::WrapServer(
    kj::AuthenticatedStream stream) {
  auto context = current_;
  return (*context)->wrapServer(kj::mv(stream)).then(
      [context](kj::AuthenticatedStream secured) mutable {
        return Holding(kj::mv(secured), kj::mv(context));
      });
}

kj::Promise<kj::AuthenticatedStream> TlsContextHolder::WrapClient(
    kj::AuthenticatedStream stream, kj::StringPtr expected_server_hostname) {
  auto context = current_;
  return (*context)->wrapClient(kj::mv(stream), expected_server_hostname).then(
      [context](kj::AuthenticatedStream secured) mutable {
        return Holding(kj::mv(secured), kj::mv(context));
      });
}

std::string NodeCommonName(const NodeIdentity& node) { return node.name + "." + node.region; }

std::optional<NodeIdentity> ParseNodeCommonName(std::string_view common_name) {
  size_t dot = common_name.rfind('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == common_name.size()) {
    return std::nullopt;
  }
  return NodeIdentity{std::string(common_name.substr(0, dot)),
                      std::string(common_name.substr(dot + 1))};
}

Status CheckNodeNames(const NodeIdentity& node) {
  if (node.region.empty() || node.region.size() > 63 || node.region.front() == '-' ||
      node.region.back() == '-') {
    return Status::InvalidArgument("--region: '" + node.region +
                                   "' must be a DNS label to be named by a certificate");
  }
  for (char c : node.region) {
    if (!IsLabelChar(c, false)) {
      return Status::InvalidArgument("--region: '" + node.region +
                                     "' must be a DNS label (letters, digits, '-') to be named by "
                                     "a certificate");
    }
  }
  if (node.name.empty() || node.name.size() > 200) {
    return Status::InvalidArgument("--node-id: must be given (1 to 200 characters) with TLS: the "
                                   "node's certificate names it");
  }
  for (char c : node.name) {
    if (!IsLabelChar(c, true)) {
      return Status::InvalidArgument("--node-id: '" + node.name +
                                     "' may hold only letters, digits, '-', '_' and '.' with TLS");
    }
  }
  return Status::OK();
}

Status CheckNodeCertificate(const std::string& cert_file, const NodeIdentity& node) {
  auto read = ReadPem("--tls-cert", cert_file);
  if (!read.ok()) return read.status();
  std::vector<X509Ptr> chain = ParseCertificates(*read);
  if (chain.empty()) {
    return Status::InvalidArgument("--tls-cert: " + cert_file + " holds no PEM certificate");
  }
  X509* leaf = chain[0].get();
  char cn[256] = {0};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof(cn));
  const std::string want = NodeCommonName(node);
  if (n < 0 || want != cn) {
    const std::string named = n < 0 ? "no common name" : "CN=" + std::string(cn);
    return Status::InvalidArgument("--tls-cert: " + cert_file + " names " + named +
                                   ", this node is CN=" + want + " (--node-id.--region)");
  }
  if (X509_check_host(leaf, node.region.data(), node.region.size(), 0, nullptr) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument("--tls-cert: " + cert_file + " lacks the DNS name " +
                                   node.region + " (the region) among its subject alternative "
                                   "names");
  }
  return Status::OK();
}

std::optional<std::string> CertifiedName(kj::PeerIdentity& identity) {
  auto* tls = dynamic_cast<kj::TlsPeerIdentity*>(&identity);
  if (tls == nullptr || !tls->hasCertificate()) return std::nullopt;
  std::optional<std::string> name;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { name = tls->getCommonName().cStr(); })) {
    return std::nullopt;  // a certificate without a common name
  }
  return name;
}

}  // namespace geokv

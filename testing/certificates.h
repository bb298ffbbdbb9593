// Certificates for tests, made with the openssl command line as
// docs/operations.md#certificates shows: a CA, and certificates it signs.
// Both are valid from an hour before they are made when libfaketime is
// there (FaketimeLibrary), for nodes whose clock is behind; else from now.

#ifndef GEOKV_TESTING_CERTIFICATES_H_
#define GEOKV_TESTING_CERTIFICATES_H_

#include <string>
#include <vector>

namespace geokv::testing {

// Makes `dir`/NAME.pem and `dir`/NAME.key, a self-signed CA certificate
// and its key. False (and why) when openssl fails.
bool MakeCa(const std::string& dir, const std::string& name, std::string* why);

// Makes `dir`/NAME.pem and `dir`/NAME.key: a certificate with subject
// CN=`common_name` and the DNS subject alternative names `dns_names`,
// signed by the CA `dir`/CA.pem and `dir`/CA.key, valid for a year.
bool MakeCertificate(const std::string& dir, const std::string& ca, const std::string& name,
                     const std::string& common_name, const std::vector<std::string>& dns_names,
                     std::string* why);

}  // namespace geokv::testing

#endif  // GEOKV_TESTING_CERTIFICATES_H_

#include "testing/certificates.h"

#include "testing/process.h"

namespace geokv::testing {
namespace {

bool Openssl(const std::string& dir, const std::vector<std::string>& args, std::string* why) {
  // env finds openssl on the PATH (RunCommand runs a path). Under
  // libfaketime it runs an hour back, so that what it signs is valid from
  // an hour ago, as CAs backdate theirs: a node whose clock is behind
  // (FaketimeWrapper) takes a certificate made just before it starts.
  // Without libfaketime, valid from now.
  std::vector<std::string> argv =
      FaketimeLibrary().empty() ? std::vector<std::string>{"/usr/bin/env"} : FaketimeWrapper("-1h");
  argv.push_back("openssl");
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = RunCommand(argv, dir);
  if (r.exit_code == 0) return true;
  *why = "openssl " + args[0] + " failed (exit " + std::to_string(r.exit_code) + "): " + r.err;
  return false;
}

std::vector<std::string> NewKey(const std::string& dir, const std::string& name) {
  return {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout",  dir + "/" + name + ".key", "-out", dir + "/" + name + ".pem"};
}

}  // namespace

bool MakeCa(const std::string& dir, const std::string& name, std::string* why) {
  std::vector<std::string> args{"req", "-x509", "-days", "3650", "-subj", "/CN=" + name};
  for (std::string& a : NewKey(dir, name)) args.push_back(std::move(a));
  return Openssl(dir, args, why);
}

bool MakeCertificate(const std::string& dir, const std::string& ca, const std::string& name,
                     const std::string& common_name, const std::vector<std::string>& dns_names,
                     std::string* why) {
  std::string san = "subjectAltName=";
  for (size_t i = 0; i < dns_names.size(); ++i) san += (i ? ",DNS:" : "DNS:") + dns_names[i];
  std::vector<std::string> args{"req", "-x509", "-days", "365", "-subj", "/CN=" + common_name,
                                "-addext", "basicConstraints=critical,CA:FALSE",
                                "-CA", dir + "/" + ca + ".pem", "-CAkey", dir + "/" + ca + ".key"};
  if (!dns_names.empty()) args.insert(args.end(), {"-addext", san});
  for (std::string& a : NewKey(dir, name)) args.push_back(std::move(a));
  return Openssl(dir, args, why);
}

}  // namespace geokv::testing

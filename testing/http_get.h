// A plain HTTP/1.0 GET, for tests and benchmarks that read /metrics or a
// Prometheus server's API.

#ifndef GEOKV_TESTING_HTTP_GET_H_
#define GEOKV_TESTING_HTTP_GET_H_

#include <string>

namespace geokv::testing {

// GET http://`address``path` (address "HOST:PORT"); the body, or "" when the
// request failed.
std::string HttpGet(const std::string& address, const std::string& path);

}  // namespace geokv::testing

#endif  // GEOKV_TESTING_HTTP_GET_H_

// Whole-file reads for tools, benchmarks and tests (logs, journals).

#ifndef GEOKV_UTIL_FILE_H_
#define GEOKV_UTIL_FILE_H_

#include <fstream>
#include <sstream>
#include <string>

namespace geokv {

// The file's bytes; empty when it cannot be read.
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace geokv

#endif  // GEOKV_UTIL_FILE_H_

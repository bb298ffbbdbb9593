// Writing JSON text (the CLI's and the benchmarks' --json output).

#ifndef GEOKV_UTIL_JSON_H_
#define GEOKV_UTIL_JSON_H_

#include <cstdio>
#include <string>
#include <string_view>

namespace geokv {

// `s` as a quoted JSON string: quotes, backslashes and control characters
// escaped; other bytes as they are.
inline std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(ch);
        }
    }
  }
  return out + "\"";
}

}  // namespace geokv

#endif  // GEOKV_UTIL_JSON_H_

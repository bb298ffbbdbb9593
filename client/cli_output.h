// How geokv-cli prints: JSON objects, hex ids, and the node's info.

#ifndef GEOKV_CLIENT_CLI_OUTPUT_H_
#define GEOKV_CLIENT_CLI_OUTPUT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "schema/kv.capnp.h"
#include "util/coding.h"
#include "util/json.h"

namespace geokv {

// Whether `s` is UTF-8 by its byte structure (overlong forms pass).
bool IsUtf8(std::string_view s);

// One JSON object, built field by field. Byte strings that are not UTF-8 go
// out as "<name>_hex" fields, so every output is valid JSON.
class JsonObject {
 public:
  void Bytes(std::string_view name, std::string_view value) {
    if (IsUtf8(value)) {
      Raw(name, JsonString(value));
    } else {
      Raw(std::string(name) + "_hex", JsonString(ToHex(value)));
    }
  }
  void BytesList(std::string_view name, const std::vector<std::string>& values) {
    bool utf8 = true;
    for (const auto& v : values) utf8 = utf8 && IsUtf8(v);
    std::string list = "[";
    for (size_t i = 0; i < values.size(); ++i) {
      if (i > 0) list += ",";
      list += JsonString(utf8 ? values[i] : ToHex(values[i]));
    }
    Raw(utf8 ? std::string(name) : std::string(name) + "_hex", list + "]");
  }
  void Text(std::string_view name, std::string_view value) { Raw(name, JsonString(value)); }
  void Number(std::string_view name, long long value) { Raw(name, std::to_string(value)); }
  void Unsigned(std::string_view name, unsigned long long value) {
    Raw(name, std::to_string(value));
  }
  void Bool(std::string_view name, bool value) { Raw(name, value ? "true" : "false"); }
  void Raw(std::string_view name, std::string_view json) {
    if (!body_.empty()) body_ += ",";
    body_ += JsonString(name) + ":" + std::string(json);
  }
  std::string str() const { return "{" + body_ + "}"; }

 private:
  std::string body_;
};

// `v` as 16 hex digits, as the CLI shows replica ids and digests.
std::string Hex64(uint64_t v);

// The `info` command's output: the node, its log, its clock, its peers; one
// JSON object with `json`, else "field: value" lines.
void PrintInfo(rpc::NodeInfo::Reader reply, bool json);

}  // namespace geokv

#endif  // GEOKV_CLIENT_CLI_OUTPUT_H_

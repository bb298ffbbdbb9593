#include "server/request.h"

namespace geokv {

namespace {

Status CheckSize(const char* what, size_t size, const char* limit_name, size_t limit) {
  if (size <= limit) return Status::OK();
  return Status::TooLarge(std::string(what) + " of " + std::to_string(size) +
                          " bytes exceeds " + limit_name + " " + std::to_string(limit));
}

}  // namespace

Status CheckKey(std::string_view key, const RequestLimits& limits) {
  if (key.empty()) return Status::InvalidArgument("empty key");
  return CheckSize("key", key.size(), "max-key-bytes", limits.max_key_bytes);
}

Status CheckValue(std::string_view value, const RequestLimits& limits) {
  return CheckSize("value", value.size(), "max-value-bytes", limits.max_value_bytes);
}

Status CheckElement(std::string_view element, const RequestLimits& limits) {
  return CheckSize("set element", element.size(), "max-key-bytes", limits.max_key_bytes);
}

const char* ConsistencyName(Consistency level) {
  switch (level) {
    case Consistency::kOne: return "ONE";
    case Consistency::kAll: return "ALL";
    case Consistency::kQuorum:
    case Consistency::kDefault: break;
  }
  return "QUORUM";
}

bool IsWrite(RequestKind kind) {
  switch (kind) {
    case RequestKind::kSet:
    case RequestKind::kDel:
    case RequestKind::kMvSet:
    case RequestKind::kMvDel:
    case RequestKind::kSAdd:
    case RequestKind::kSRem:
    case RequestKind::kIncrBy: return true;
    default: return false;
  }
}

size_t Result::ValueBytes() const {
  size_t bytes = value ? value->size() : 0;
  for (const auto& v : values) bytes += v.size();
  for (const auto& e : elements) bytes += e.size();
  return bytes;
}

void Result::DropValues() {
  value.reset();
  values.clear();
  elements.clear();
  more = false;
}

}  // namespace geokv

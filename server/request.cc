#include "server/request.h"

namespace geokv {

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

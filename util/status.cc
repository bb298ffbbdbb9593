#include "util/status.h"

namespace geokv {

std::string_view CodeName(Status::Code code) {
  switch (code) {
    case Status::Code::kOk: return "OK";
    case Status::Code::kNotFound: return "NOT_FOUND";
    case Status::Code::kCorruption: return "CORRUPTION";
    case Status::Code::kInvalidArgument: return "INVALID";
    case Status::Code::kWrongType: return "WRONG_TYPE";
    case Status::Code::kTooLarge: return "TOO_LARGE";
    case Status::Code::kIOError: return "IO_ERROR";
    case Status::Code::kUnavailable: return "UNAVAILABLE";
    case Status::Code::kTimeout: return "TIMEOUT";
    case Status::Code::kFailedPrecondition: return "FAILED_PRECONDITION";
    case Status::Code::kUnauthenticated: return "UNAUTHENTICATED";
    case Status::Code::kPermissionDenied: return "PERMISSION_DENIED";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(CodeName(code_));
  if (!message_.empty()) {
    s += ": ";
    s += message_;
  }
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Status(code_, std::move(msg));
}

}  // namespace geokv

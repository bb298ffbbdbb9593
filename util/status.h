// Status and StatusOr<T>: how every fallible call in geokv reports failure.
// Errors are values; only the RPC edge turns them into exceptions.

#ifndef GEOKV_UTIL_STATUS_H_
#define GEOKV_UTIL_STATUS_H_

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace geokv {

class [[nodiscard]] Status {
 public:
  enum class Code : uint8_t {
    kOk = 0,
    kNotFound,
    kCorruption,       // stored or received bytes fail to decode
    kInvalidArgument,  // the caller's input is malformed
    kWrongType,        // the key holds a live value of another type
    kTooLarge,         // a configured limit would be exceeded
    kIOError,          // the disk or the OS failed
    kUnavailable,      // retry later (shutting down, peer unreachable)
    kFailedPrecondition,  // the state does not allow the call
    kTimeout,          // a bounded wait ran out
    kUnauthenticated,  // no login, or a user and secret that do not match
    kPermissionDenied,  // the caller's role does not allow the call
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, std::move(msg)); }
  static Status InvalidArgument(std::string msg) {
    return Status(Code::kInvalidArgument, std::move(msg));
  }
  static Status WrongType(std::string msg) { return Status(Code::kWrongType, std::move(msg)); }
  static Status TooLarge(std::string msg) { return Status(Code::kTooLarge, std::move(msg)); }
  static Status IOError(std::string msg) { return Status(Code::kIOError, std::move(msg)); }
  static Status Unavailable(std::string msg) { return Status(Code::kUnavailable, std::move(msg)); }
  static Status FailedPrecondition(std::string msg) {
    return Status(Code::kFailedPrecondition, std::move(msg));
  }
  static Status Timeout(std::string msg) { return Status(Code::kTimeout, std::move(msg)); }
  static Status Unauthenticated(std::string msg) {
    return Status(Code::kUnauthenticated, std::move(msg));
  }
  static Status PermissionDenied(std::string msg) {
    return Status(Code::kPermissionDenied, std::move(msg));
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }

  // "OK", or the code's name, a colon and the message.
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context` and ": ".
  Status WithContext(std::string_view context) const;

  bool operator==(const Status& o) const { return code_ == o.code_ && message_ == o.message_; }

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}

  Code code_ = Code::kOk;
  std::string message_;
};

std::string_view CodeName(Status::Code code);

// Either a value or a non-OK status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  // REQUIRES: !status.ok(); an OK status without a value becomes an error.
  StatusOr(Status status) : status_(std::move(status)) {
    if (status_.ok()) status_ = Status::FailedPrecondition("StatusOr built from an OK status");
  }
  StatusOr(T value) : value_(std::move(value)) {}

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  // REQUIRES: ok()
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

#define GEOKV_CONCAT_INNER(a, b) a##b
#define GEOKV_CONCAT(a, b) GEOKV_CONCAT_INNER(a, b)

#define GEOKV_RETURN_IF_ERROR(expr)            \
  do {                                         \
    ::geokv::Status _geokv_status = (expr);    \
    if (!_geokv_status.ok()) return _geokv_status; \
  } while (0)

#define GEOKV_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

// GEOKV_ASSIGN_OR_RETURN(auto x, Foo()); returns Foo()'s status on error.
#define GEOKV_ASSIGN_OR_RETURN(lhs, expr) \
  GEOKV_ASSIGN_OR_RETURN_IMPL(GEOKV_CONCAT(_geokv_statusor_, __LINE__), lhs, expr)

}  // namespace geokv

#endif  // GEOKV_UTIL_STATUS_H_

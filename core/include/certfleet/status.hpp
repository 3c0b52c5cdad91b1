// certfleet/status.hpp - the error vocabulary shared by the core and every plugin.
//
// Expected failures are values, never exceptions. A function that can fail returns a
// `Status` (nothing else to return) or a `Result<T>` (a value or the failure). Each code
// carries a retry rule, so a caller can decide without parsing messages:
//
//   kInvalidArgument  bad configuration or input; retrying the same call cannot help
//   kNotFound         the thing asked for does not exist; do not retry
//   kPermissionDenied refused by the other side's policy (TSIG, SSH auth); do not retry
//   kUnavailable      a server could not be reached or answered 5xx; retry with backoff
//   kDeadlineExceeded the run's or the stage's deadline passed; retry on the next run
//   kFailedPrecondition the world is not as required (host key changed); a human must act
//   kInternal         a bug or a protocol violation by the other side; do not retry
//
// Messages are lower case, without a final period, outer context first:
//
//   certfleet::Status status = uploadFile(path);
//   if (!status.ok()) {
//     return status.withContext("deploy.sftp");  // "deploy.sftp: rename x: permission denied"
//   }
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace certfleet {

enum class StatusCode : std::uint32_t {
  kOk = 0,
  kInvalidArgument = 1,
  kNotFound = 2,
  kPermissionDenied = 3,
  kUnavailable = 4,
  kDeadlineExceeded = 5,
  kFailedPrecondition = 6,
  kInternal = 7,
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status okStatus() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes the message with where the failure happened: "context: message".
  Status withContext(const std::string& context) const {
    if (ok()) {
      return *this;
    }
    return {code_, context + ": " + message_};
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalidArgument(std::string message) {
  return {StatusCode::kInvalidArgument, std::move(message)};
}
inline Status notFound(std::string message) {
  return {StatusCode::kNotFound, std::move(message)};
}
inline Status permissionDenied(std::string message) {
  return {StatusCode::kPermissionDenied, std::move(message)};
}
inline Status unavailable(std::string message) {
  return {StatusCode::kUnavailable, std::move(message)};
}
inline Status deadlineExceeded(std::string message) {
  return {StatusCode::kDeadlineExceeded, std::move(message)};
}
inline Status failedPrecondition(std::string message) {
  return {StatusCode::kFailedPrecondition, std::move(message)};
}
inline Status internalError(std::string message) {
  return {StatusCode::kInternal, std::move(message)};
}

// A value or the Status that explains its absence.
//
//   certfleet::Result<std::string> pem = readFile(path);
//   if (!pem.ok()) {
//     return pem.status();
//   }
//   use(*pem);
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (status_.ok()) {
      status_ = internalError("result built from an ok status without a value");
    }
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T&& operator*() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace certfleet

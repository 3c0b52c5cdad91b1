// common/subprocess.hpp - runs one local program to completion without a shell, for the
// plugins that drive OpenSSH's and rsync's command-line tools (deploy/rsync).
//
// The program gets argv exactly as given (no shell, so no quoting to get wrong), stdin
// from /dev/null, only the environment passed in, no descriptor of ours beyond 0-2, and
// default signal handling (the core ignores SIGPIPE; the child must not inherit that). It
// runs in a process group of its own, so a timeout kills it together with whatever it
// started (rsync starts ssh).
//
//   certfleet::Result<certfleet::process::ProcessResult> result = certfleet::process::run(
//       {"/usr/bin/rsync", "--version"}, {"PATH=/usr/bin:/bin", "LC_ALL=C"},
//       std::chrono::seconds(10));
//   if (!result.ok()) {
//     return result.status();  // could not start, or kDeadlineExceeded
//   }
//   if (result->exit_status != 0) { ... result->stderr_tail ... }
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "certfleet/status.hpp"

namespace certfleet::process {

// Output is captured up to this many bytes per stream: the first bytes of stdout (the
// answer a caller parses), the last bytes of stderr (where a failure's reason usually is).
inline constexpr std::size_t kMaxCapturedBytes = 64 * 1024;

struct ProcessResult {
  int exit_status = -1;  // -1 when ended by a signal
  int signal = 0;        // the signal that ended it, else 0
  std::string stdout_head;
  std::string stderr_tail;
  bool stdout_truncated = false;
};

// Starts argv[0] (an absolute path) and waits for it. Fails with kInvalidArgument when it
// cannot be started, kDeadlineExceeded when it outlives `timeout` (it and its process group
// are then sent SIGKILL), kInternal when the system refuses pipes or processes. Whatever
// the program itself does is a result, not an error.
Result<ProcessResult> run(const std::vector<std::string>& argv,
                          const std::vector<std::string>& environment,
                          std::chrono::milliseconds timeout);

}  // namespace certfleet::process

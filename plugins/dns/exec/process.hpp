// Runs one program to completion without a shell: argv as given, stdin from /dev/null,
// stdout and stderr captured (their last bytes only), killed with its whole process group
// when it outlives its timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "certfleet/plugin.hpp"

namespace certfleet::exec {

// A program that prints more than this keeps running; only the last bytes are kept, since
// the end of the output is where the reason for a failure usually is.
inline constexpr std::size_t kMaxCapturedBytes = 4096;

struct ProcessOutcome {
  bool timed_out = false;
  bool exited = false;  // false: ended by a signal (see `signal`)
  int exit_status = 0;
  int signal = 0;
  std::string stdout_tail;
  std::string stderr_tail;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
};

// Starts argv[0] (an absolute path) with `environment` ("NAME=value" entries) and kills it
// once `deadline()` has passed. `deadline` is asked again every few dozen milliseconds, so
// it may move closer while the program runs (an interrupted run). Fails only when the
// program cannot be started; whatever the program does is reported in the outcome.
Result<ProcessOutcome> runProcess(
    const std::vector<std::string>& argv,
    const std::vector<std::string>& environment,
    const std::function<std::chrono::steady_clock::time_point()>& deadline);

}  // namespace certfleet::exec

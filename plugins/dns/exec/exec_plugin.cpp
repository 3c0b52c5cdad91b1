// The dns stage plugin `exec`: hands every DNS-01 record to a program of the user's, for
// DNS providers certfleet has no plugin for. The program runs once per record as
//
//   PROGRAM [ARGS...] present|cleanup FQDN VALUE
//
// without a shell, so neither the record nor the settings are ever parsed as shell text.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "certfleet/plugin.hpp"

#include "process.hpp"
#include <sys/stat.h>

namespace certfleet::exec {
namespace {

constexpr const char* kContext = "dns.exec";

// How much of the program's last output an error message quotes; the rest of the captured
// tail goes to the debug log.
constexpr std::size_t kQuotedOutput = 1000;

const char* const kActionVariable = "CERTFLEET_DNS_ACTION";
const char* const kFqdnVariable = "CERTFLEET_DNS_FQDN";
const char* const kValueVariable = "CERTFLEET_DNS_VALUE";

std::string durationText(std::chrono::milliseconds duration) {
  if (duration.count() % 1000 == 0) {
    return std::to_string(duration.count() / 1000) + "s";
  }
  return std::to_string(duration.count()) + "ms";
}

// The output's last `limit` bytes on one line, for a message or a log record.
std::string quoted(const std::string& output, bool truncated, std::size_t limit = kQuotedOutput) {
  std::string text = output;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ' ||
                           text.back() == '\t')) {
    text.pop_back();
  }
  bool cut = truncated;
  if (text.size() > limit) {
    text.erase(0, text.size() - limit);
    cut = true;
  }
  std::string line;
  for (char c : text) {
    if (c == '\n') {
      line += " | ";
    } else if (c == '\r' || c == '\t') {
      line += ' ';
    } else {
      line += c;
    }
  }
  return cut ? "..." + line : line;
}

std::string plural(std::size_t count, const char* word) {
  return std::to_string(count) + " " + word + (count == 1 ? "" : "s");
}

bool startsWith(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

Status unexpected(const char* what) {
  return internalError(std::string(kContext) + ": unexpected error: " + what);
}

}  // namespace

class ExecPlugin final : public DnsPlugin {
 public:
  Status configure(const Settings& settings, Services& services) override {
    try {
      return configureOrFail(settings, services);
    } catch (const std::exception& error) {
      return unexpected(error.what());
    } catch (...) {
      return unexpected("unknown exception");
    }
  }

  Status present(const std::vector<TxtRecord>& records) override {
    return guarded([&] { return presentAll(records); });
  }

  Status cleanup(const std::vector<TxtRecord>& records) override {
    return guarded([&] { return cleanupAll(records); });
  }

 private:
  Status configureOrFail(const Settings& settings, Services& services);
  Status presentAll(const std::vector<TxtRecord>& records);
  Status cleanupAll(const std::vector<TxtRecord>& records);
  Status runFor(const char* action, const TxtRecord& record);
  std::vector<std::string> environmentFor(const char* action, const TxtRecord& record) const;

  template <typename Call>
  Status guarded(Call&& call) {
    if (services_ == nullptr) {
      return failedPrecondition(std::string(kContext) + ": used before configure()");
    }
    try {
      return call();
    } catch (const std::exception& error) {
      return unexpected(error.what());
    } catch (...) {
      return unexpected("unknown exception");
    }
  }

  Services* services_ = nullptr;
  std::string program_;
  std::vector<std::string> args_;
  std::chrono::milliseconds timeout_{60000};
};

Status ExecPlugin::configureOrFail(const Settings& settings, Services& services) {
  services_ = &services;
  for (const auto& [key, entry] : settings.entries()) {
    if (key == "args") {
      return settings.error(key, "'args' must be a list, such as [--zone, example.com]");
    }
    if (key != "program" && key != "timeout" && !startsWith(key, "args.")) {
      return settings.error(key, "unknown setting '" + key + "' (known: program, args, timeout)");
    }
  }

  Result<std::string> program = settings.require("program");
  if (!program.ok()) {
    return program.status();
  }
  if (program->front() != '/') {
    // A relative path would depend on the orchestrator's working directory and PATH.
    return settings.error("program", "'program' must be an absolute path, got '" + *program + "'");
  }
  struct stat info {};
  if (::stat(program->c_str(), &info) != 0 || !S_ISREG(info.st_mode)) {
    return settings.error("program", "program '" + *program + "' is not a file");
  }
  if (::access(program->c_str(), X_OK) != 0) {
    return settings.error("program", "program '" + *program + "' is not executable");
  }
  program_ = *program;
  args_ = settings.getList("args");

  Result<std::chrono::milliseconds> timeout =
      settings.getDuration("timeout", std::chrono::milliseconds(60000));
  if (!timeout.ok()) {
    return timeout.status();
  }
  if (timeout->count() <= 0) {
    return settings.error("timeout", "'timeout' must be longer than zero");
  }
  timeout_ = *timeout;
  return {};
}

Status ExecPlugin::presentAll(const std::vector<TxtRecord>& records) {
  for (std::size_t i = 0; i < records.size(); ++i) {
    Status added = runFor("present", records[i]);
    if (added.ok()) {
      continue;
    }
    // The core cleans up only what present reported as added: take back what this call did
    // add, so that a failed batch leaves no record behind.
    for (std::size_t j = 0; j < i; ++j) {
      Status removed = runFor("cleanup", records[j]);
      if (!removed.ok()) {
        services_->log(LogLevel::kWarn, "taking back after a failed present: " +
                                            removed.withContext(kContext).message());
      }
    }
    return added.withContext(kContext);
  }
  return {};
}

Status ExecPlugin::cleanupAll(const std::vector<TxtRecord>& records) {
  // Every record gets its cleanup even when an earlier one failed.
  Status first_failure;
  std::size_t failures = 0;
  for (const TxtRecord& record : records) {
    Status removed = runFor("cleanup", record);
    if (!removed.ok() && failures++ == 0) {
      first_failure = removed;
    }
  }
  if (failures > 1) {
    first_failure =
        Status(first_failure.code(), first_failure.message() + " (and " +
                                         plural(failures - 1, "more record") + " failed)");
  }
  return first_failure.withContext(kContext);
}

std::vector<std::string> ExecPlugin::environmentFor(const char* action,
                                                    const TxtRecord& record) const {
  std::vector<std::string> environment;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string text(*entry);
    if (startsWith(text, std::string(kActionVariable) + "=") ||
        startsWith(text, std::string(kFqdnVariable) + "=") ||
        startsWith(text, std::string(kValueVariable) + "=")) {
      continue;
    }
    environment.push_back(std::move(text));
  }
  environment.push_back(std::string(kActionVariable) + "=" + action);
  environment.push_back(std::string(kFqdnVariable) + "=" + record.fqdn);
  environment.push_back(std::string(kValueVariable) + "=" + record.value);
  return environment;
}

Status ExecPlugin::runFor(const char* action, const TxtRecord& record) {
  const std::string what = std::string(action) + " " + record.fqdn;
  const auto start = std::chrono::steady_clock::now();
  if (services_->deadline() <= start) {
    return deadlineExceeded(what + ": the run's deadline passed before " + program_ + " ran");
  }
  const auto own_limit = start + timeout_;

  std::vector<std::string> argv;
  argv.reserve(args_.size() + 4);
  argv.push_back(program_);
  argv.insert(argv.end(), args_.begin(), args_.end());
  argv.emplace_back(action);
  argv.push_back(record.fqdn);
  argv.push_back(record.value);

  services_->log(LogLevel::kDebug, "running " + program_ + " " + what);
  // The run's deadline is asked while the program runs: an interrupted run moves it to now.
  Result<ProcessOutcome> outcome = runProcess(argv, environmentFor(action, record), [&] {
    return std::min(own_limit, services_->deadline());
  });
  if (!outcome.ok()) {
    return outcome.status().withContext(what);
  }
  if (!outcome->stdout_tail.empty()) {
    services_->log(LogLevel::kDebug,
                   program_ + " " + what + " stdout: " +
                       quoted(outcome->stdout_tail, outcome->stdout_truncated, kMaxCapturedBytes));
  }
  if (!outcome->stderr_tail.empty()) {
    services_->log(LogLevel::kDebug,
                   program_ + " " + what + " stderr: " +
                       quoted(outcome->stderr_tail, outcome->stderr_truncated, kMaxCapturedBytes));
  }

  // The end of stderr says why; a program that reports on stdout only is quoted from there.
  std::string said;
  if (!outcome->stderr_tail.empty()) {
    said = ": " + quoted(outcome->stderr_tail, outcome->stderr_truncated);
  } else if (!outcome->stdout_tail.empty()) {
    said = ": (stdout) " + quoted(outcome->stdout_tail, outcome->stdout_truncated);
  }

  if (outcome->timed_out) {
    if (services_->deadline() < own_limit) {
      auto ran = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
      return deadlineExceeded(what + ": " + program_ +
                              " killed when the run's deadline came, after " + durationText(ran) +
                              said);
    }
    return deadlineExceeded(what + ": " + program_ + " killed after its timeout of " +
                            durationText(timeout_) + said);
  }
  if (outcome->exited && outcome->exit_status == 0) {
    return {};
  }
  // A hook usually fails because the provider it talks to did; the next run may succeed.
  if (outcome->exited) {
    return unavailable(what + ": " + program_ + " exited with status " +
                       std::to_string(outcome->exit_status) + said);
  }
  if (outcome->signal != 0) {
    return unavailable(what + ": " + program_ + " killed by signal " +
                       std::to_string(outcome->signal) + said);
  }
  return internalError(what + ": " + program_ + " ended with an unknown status" + said);
}

}  // namespace certfleet::exec

CERTFLEET_PLUGIN("exec", certfleet::Stage::kDns, "0.1.0", certfleet::exec::ExecPlugin)

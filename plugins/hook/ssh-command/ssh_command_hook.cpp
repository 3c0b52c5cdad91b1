// hook.ssh-command: runs one command on the host over SSH, typically the reload of the
// server that uses the new key and chain. A non-zero exit fails the hook.
#include <algorithm>
#include <chrono>
#include <string>

#include "certfleet/plugin.hpp"
#include "certfleet/status.hpp"

#include "common/ssh_connection.hpp"

namespace {

using certfleet::CertificateBundle;
using certfleet::HostTarget;
using certfleet::LogLevel;
using certfleet::Result;
using certfleet::Settings;
using certfleet::Status;

constexpr std::chrono::milliseconds kDefaultTimeout = std::chrono::seconds(60);

// How much of the command's standard error an error message quotes.
constexpr std::size_t kQuotedStderrBytes = 512;

struct CommandSettings {
  std::string command;
  std::chrono::milliseconds timeout = kDefaultTimeout;
  certfleet::ssh::SshOptions ssh;
};

// `configure` sees the stage's settings without the hosts' overrides, so it passes
// `per_host` false: then required settings may be absent (a host may give them), but any
// that is given must be valid.
Result<CommandSettings> parseCommandSettings(const Settings& settings, bool per_host) {
  CommandSettings parsed;

  Result<certfleet::ssh::SshOptions> ssh = certfleet::ssh::parseSshOptions(settings, per_host);
  if (!ssh.ok()) {
    return ssh.status();
  }
  parsed.ssh = *ssh;

  if (per_host || settings.has("command")) {
    Result<std::string> command = settings.require("command");
    if (!command.ok()) {
      return command.status();
    }
    parsed.command = *command;
  }

  Result<std::chrono::milliseconds> timeout = settings.getDuration("timeout", kDefaultTimeout);
  if (!timeout.ok()) {
    return timeout.status();
  }
  if (timeout->count() <= 0) {
    return settings.error("timeout", "'timeout' must be longer than 0");
  }
  parsed.timeout = *timeout;
  return parsed;
}

// The end of the command's output on one line, where the reason for a failure usually is.
std::string oneLineTail(const std::string& output) {
  std::string tail = output.size() > kQuotedStderrBytes
                         ? "..." + output.substr(output.size() - kQuotedStderrBytes)
                         : output;
  std::string line;
  line.reserve(tail.size());
  for (char c : tail) {
    if (c == '\n') {
      line += "; ";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      line += ' ';
    } else {
      line += c;
    }
  }
  auto is_filler = [](char c) { return c == ' ' || c == ';'; };
  while (!line.empty() && is_filler(line.back())) {
    line.pop_back();
  }
  return line.empty() ? "(no error output)" : line;
}

class SshCommandHook final : public certfleet::HookPlugin {
 public:
  Status configure(const Settings& settings, certfleet::Services& services) override {
    if (Status known = settings.onlyKnown(
            {"command", "timeout", "known_hosts", "identity_file", "connect_timeout"});
        !known.ok()) {
      return known;
    }
    services_ = &services;
    if (!settings.prefix().empty()) {
      context_ = settings.prefix();
    }
    return parseCommandSettings(settings, /*per_host=*/false).status();
  }

  Status checkHost(const HostTarget& host, const Settings& settings) override {
    if (Status known = settings.onlyKnown(
            {"command", "timeout", "known_hosts", "identity_file", "connect_timeout"});
        !known.ok()) {
      return known;
    }
    if (host.address.empty() || host.user.empty()) {
      return certfleet::invalidArgument(context_ + ": host " + host.name +
                                        " needs an ssh address and user");
    }
    return parseCommandSettings(settings, /*per_host=*/true).status();
  }

  Status run(const HostTarget& host,
             const Settings& settings,
             const CertificateBundle& /*bundle*/) override {
    Result<CommandSettings> parsed = parseCommandSettings(settings, /*per_host=*/true);
    if (!parsed.ok()) {
      return parsed.status();
    }
    return runCommand(host, *parsed).withContext(context_);
  }

 private:
  Status runCommand(const HostTarget& host, const CommandSettings& settings) {
    // The run's deadline wins over a longer per-command timeout.
    auto until_deadline = std::chrono::duration_cast<std::chrono::milliseconds>(
        services_->deadline() - std::chrono::steady_clock::now());
    std::chrono::milliseconds timeout =
        std::max(std::chrono::milliseconds(1), std::min(settings.timeout, until_deadline));

    auto connection = certfleet::ssh::SshConnection::open(host, settings.ssh);
    if (!connection.ok()) {
      return connection.status();
    }
    services_->log(LogLevel::kDebug,
                   "running on " + (*connection)->endpoint() + ": " + settings.command);
    Result<certfleet::ssh::CommandResult> result = (*connection)->run(settings.command, timeout);
    if (!result.ok()) {
      return result.status();
    }
    if (!result->stdout_tail.empty()) {
      services_->log(LogLevel::kDebug, "command output: " + oneLineTail(result->stdout_tail));
    }
    if (!result->exit_signal.empty()) {
      return certfleet::failedPrecondition("command killed by signal " + result->exit_signal +
                                           ": " + oneLineTail(result->stderr_tail));
    }
    if (result->exit_status != 0) {
      return certfleet::failedPrecondition("command exited " + std::to_string(result->exit_status) +
                                           ": " + oneLineTail(result->stderr_tail));
    }
    return {};
  }

  certfleet::Services* services_ = nullptr;
  std::string context_ = "hook.ssh-command";
};

}  // namespace

CERTFLEET_PLUGIN("ssh-command", certfleet::Stage::kHook, "0.1.0", SshCommandHook)

// common/ssh_connection.hpp - one authenticated SSH session to a host, for the plugins that
// reach hosts over SSH (deploy sftp, hook ssh-command).
//
// The host key is checked against the pipeline's own known_hosts file and nothing else
// (no ~/.ssh, no /etc/ssh, no ssh_config), and authentication uses the configured
// identity file alone (no agent, no password), so a run behaves the same on every
// orchestrator whatever its user's SSH set-up.
//
//   namespace ssh = certfleet::ssh;
//   certfleet::Result<ssh::SshOptions> options = ssh::parseSshOptions(settings);
//   if (!options.ok()) {
//     return options.status();
//   }
//   auto connection = ssh::SshConnection::open(host, *options);
//   if (!connection.ok()) {
//     return connection.status();  // "ssh 127.0.0.1:2222: connect: connection refused"
//   }
//   auto result = (*connection)->run("systemctl reload nginx", std::chrono::seconds(60));
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <libssh/libssh.h>

#include "certfleet/plugin.hpp"
#include "certfleet/status.hpp"

#include "common/ssh_options.hpp"

namespace certfleet::ssh {

// What a remote command left behind. Output is kept up to a bound, newest bytes last.
struct CommandResult {
  int exit_status = -1;     // -1 when the command was ended by a signal
  std::string exit_signal;  // "KILL" when ended by a signal, else empty
  std::string stdout_tail;  // the last bytes of standard output
  std::string stderr_tail;  // the last bytes of standard error
};

// At most this many bytes of each output stream are kept.
inline constexpr std::size_t kOutputTailBytes = 4096;

class SshConnection {
 public:
  // Connects to host.address:host.port as host.user, checks the host key and logs in.
  // Fails with kUnavailable when the host cannot be reached, kFailedPrecondition when its
  // key is unknown or has changed, kPermissionDenied when the identity is refused.
  static Result<std::unique_ptr<SshConnection>> open(const HostTarget& host,
                                                     const SshOptions& options);

  ~SshConnection();
  SshConnection(const SshConnection&) = delete;
  SshConnection& operator=(const SshConnection&) = delete;

  // "127.0.0.1:2222", "[::1]:22": how errors name the host.
  const std::string& endpoint() const { return endpoint_; }

  ssh_session session() const { return session_; }

  // Runs `command` through the login shell of the user and waits for it to end. A command
  // still running after `timeout` is sent SIGKILL (where the server honours signal
  // requests), its channel closed, and kDeadlineExceeded returned. A non-zero exit is a
  // result, not an error: the caller decides what it means.
  Result<CommandResult> run(const std::string& command, std::chrono::milliseconds timeout);

  // "ssh 127.0.0.1:2222: WHAT: <libssh's last error>".
  Status failure(StatusCode code, const std::string& what) const;

 private:
  SshConnection(ssh_session session, std::string endpoint);

  Status verifyHostKey(const std::string& known_hosts);
  Status authenticate(const std::string& identity_file, const std::string& user);

  ssh_session session_;
  std::string endpoint_;
};

}  // namespace certfleet::ssh

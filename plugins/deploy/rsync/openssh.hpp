// deploy/rsync/openssh.hpp - the OpenSSH client command line deploy/rsync runs, alone for
// remote commands and under rsync as its remote shell, and what its failures mean.
//
// The options give the command-line client the policy libssh has in deploy/sftp: host keys
// checked against the pipeline's known_hosts alone (unknown and changed keys refused,
// nothing ever written back to the file), login with the configured identity alone (no
// agent, no password, no prompt), and no ssh_config of the orchestrator's user.
//
//   OpenSsh ssh{"/usr/bin/ssh", options, host};
//   std::vector<std::string> argv = ssh.commandArgv("id -u");
//   ... run it ...
//   if (result.exit_status == 255) {
//     return ssh.classify(result.stderr_tail);  // "ssh 127.0.0.1:22: host key changed: ..."
//   }
#pragma once

#include <string>
#include <vector>

#include "certfleet/plugin.hpp"
#include "certfleet/status.hpp"

#include "common/ssh_options.hpp"

namespace certfleet::rsync {

class OpenSsh {
 public:
  OpenSsh(std::string ssh_path, ssh::SshOptions options, HostTarget host);

  // Refuses what the command line cannot carry safely: a path with white space or quotes
  // (rsync splits its --rsh string on spaces), an address or user that ssh could read as
  // an option.
  static Status checkUsable(const std::string& ssh_path, const ssh::SshOptions& options);
  static Status checkHost(const HostTarget& host);

  // ssh_path with every option, ready for rsync's --rsh: ends before the destination.
  std::string rshString() const;

  // The argv that runs `command` on the host through the user's login shell.
  std::vector<std::string> commandArgv(const std::string& command) const;

  // rsync's view of the host: "127.0.0.1" or "[::1]".
  std::string rsyncHost() const;

  const std::string& endpoint() const { return endpoint_; }

  // What a failed ssh said, as a Status: kFailedPrecondition for an unknown or changed host
  // key (saying which), kUnavailable when the host cannot be reached, kPermissionDenied
  // when the identity is refused. Nothing recognised: an empty (ok) Status.
  Status classify(const std::string& stderr_text) const;

 private:
  std::vector<std::string> options() const;

  std::string ssh_path_;
  ssh::SshOptions options_;
  HostTarget host_;
  std::string endpoint_;
};

// The last line of `text` that says something, on one line and bounded: what an error
// message quotes of a program's error output.
std::string lastLines(const std::string& text, std::size_t max_bytes = 400);

// `text` as one word of a POSIX shell command: 'a'\''b'.
std::string shellQuote(const std::string& text);

}  // namespace certfleet::rsync

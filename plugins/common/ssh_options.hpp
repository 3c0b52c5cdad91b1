// common/ssh_options.hpp - the settings every plugin that reaches hosts over SSH shares,
// whichever SSH it speaks (libssh in deploy/sftp and hook/ssh-command, the OpenSSH client
// under rsync in deploy/rsync). Parsing them touches no network and needs no SSH library.
//
//   certfleet::Result<certfleet::ssh::SshOptions> options =
//       certfleet::ssh::parseSshOptions(settings);
//   if (!options.ok()) {
//     return options.status();  // "pipeline.yaml:9:7: deploy.sftp: missing setting 'known_hosts'"
//   }
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "certfleet/plugin.hpp"
#include "certfleet/status.hpp"

namespace certfleet::ssh {

// The settings every SSH-based plugin shares.
struct SshOptions {
  std::string known_hosts;    // the only file host keys are checked against
  std::string identity_file;  // private key, unencrypted (there is no agent to ask)
  std::chrono::milliseconds connect_timeout{10000};
};

// Reads `known_hosts` (required), `identity_file` (required) and `connect_timeout`
// (default 10s), and checks that both files are readable. Touches no network.
// `configure` sees the stage's settings without the hosts' overrides, so it passes
// `require_files` false: then a missing file setting is no error (a host may give it), but
// one that is given must be readable.
Result<SshOptions> parseSshOptions(const Settings& settings, bool require_files = true);

// "127.0.0.1:22", or "[::1]:22" for an IPv6 literal.
std::string formatEndpoint(const std::string& address, std::uint16_t port);

// libssh and strerror capitalise their messages; ours are lower case. Acronyms ("SFTP")
// stay as they are.
std::string lowerFirst(std::string text);

}  // namespace certfleet::ssh

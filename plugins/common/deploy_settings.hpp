// common/deploy_settings.hpp - the settings the deploy plugins share (deploy/sftp,
// deploy/rsync): where the key and chain go on the host, their modes and owners, whether
// the previous pair stays beside them, and how long the work may take.
//
// Both plugins read exactly these keys the same way, so a pipeline can switch transport by
// changing `plugin:` alone:
//
//   certfleet::Result<certfleet::deploy::DeploySettings> parsed =
//       certfleet::deploy::parseDeploySettings(settings, /*per_host=*/true);
//   if (!parsed.ok()) {
//     return parsed.status();  // "pipeline.yaml:14:9: deploy.sftp: 'key_mode' 0644 would ..."
//   }
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "certfleet/plugin.hpp"
#include "certfleet/status.hpp"

#include "common/ssh_options.hpp"

namespace certfleet::deploy {

inline constexpr std::uint32_t kDefaultKeyMode = 0600;
inline constexpr std::uint32_t kDefaultChainMode = 0644;
inline constexpr std::chrono::milliseconds kDefaultTimeout = std::chrono::seconds(60);

// The name the previous copy of each file gets beside it: "key.pem" -> "key.pem.previous".
inline constexpr std::string_view kPreviousSuffix = ".previous";

// The most isInPlace reads of a host's file; a key or chain is a few kilobytes, so a file
// beyond this cannot be the bundle.
inline constexpr std::size_t kMaxCompareBytes = std::size_t{1} << 20;

// Who a placed file should belong to. Each part is a user or group name, or a numeric id,
// or empty to leave it as the host makes it (the deploy user and its primary group).
struct Ownership {
  std::string owner;
  std::string group;

  bool empty() const { return owner.empty() && group.empty(); }
  bool operator==(const Ownership&) const = default;
};

struct DeploySettings {
  std::string key_path;
  std::string chain_path;
  std::uint32_t key_mode = kDefaultKeyMode;
  std::uint32_t chain_mode = kDefaultChainMode;
  Ownership key_ownership;
  Ownership chain_ownership;
  bool keep_previous = true;
  std::chrono::milliseconds timeout = kDefaultTimeout;
  ssh::SshOptions ssh;
};

// Reads key_path, chain_path, key_mode, chain_mode, key_owner, key_group, chain_owner,
// chain_group, keep_previous, timeout and the SSH settings. `configure` sees the stage's
// settings without the hosts' overrides, so it passes `per_host` false: then required
// settings may be absent (a host may give them), but any that is given must be valid.
Result<DeploySettings> parseDeploySettings(const Settings& settings, bool per_host);

// "0600".
std::string formatMode(std::uint32_t mode);

// The id an owner or group setting names when it is all digits ("1000"), else nothing:
// then it is a name the host resolves.
std::optional<std::uint32_t> numericId(const std::string& text);

// Whether `a` and `b` hold the same bytes, in a time that depends on their lengths only,
// so that comparing a private key leaks nothing of where it differs.
bool constantTimeEquals(std::string_view a, std::string_view b);

}  // namespace certfleet::deploy

// deploy.sftp: places a host's private key and full chain over SFTP, each file replaced in
// one atomic step, the key never readable beyond its configured mode.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "certfleet/plugin.hpp"
#include "certfleet/status.hpp"

#include "common/sftp_client.hpp"
#include "common/ssh_connection.hpp"

namespace {

using certfleet::CertificateBundle;
using certfleet::HostTarget;
using certfleet::LogLevel;
using certfleet::Result;
using certfleet::Settings;
using certfleet::Status;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kDefaultKeyMode = 0600;
constexpr std::uint32_t kDefaultChainMode = 0644;
constexpr std::chrono::milliseconds kDefaultTimeout = std::chrono::seconds(60);

struct DeploySettings {
  std::string key_path;
  std::string chain_path;
  std::uint32_t key_mode = kDefaultKeyMode;
  std::uint32_t chain_mode = kDefaultChainMode;
  std::chrono::milliseconds timeout = kDefaultTimeout;
  certfleet::ssh::SshOptions ssh;
};

// One file to place: where, with which mode, and the temporary name it is written under.
struct RemoteFile {
  std::string_view what;  // "key" or "chain", for messages
  std::string path;
  std::uint32_t mode = 0;
  std::string_view contents;
  std::string temp_path;
};

std::string formatMode(std::uint32_t mode) {
  char text[16];
  std::snprintf(text, sizeof(text), "%04o", mode);
  return text;
}

Result<std::uint32_t> parseMode(const Settings& settings,
                                const std::string& key,
                                std::uint32_t fallback) {
  if (!settings.has(key)) {
    return fallback;
  }
  const std::string text = settings.getOr(key, "");
  bool octal = !text.empty() && text.size() <= 4 &&
               std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '7'; });
  if (!octal) {
    return settings.error(key,
                          "'" + key + "' must be an octal mode such as 0640, got '" + text + "'");
  }
  std::uint32_t mode = static_cast<std::uint32_t>(std::stoul(text, nullptr, 8));
  if (mode > 0777) {
    return settings.error(
        key, "'" + key + "' may hold permission bits only (at most 0777), got '" + text + "'");
  }
  return mode;
}

Status checkRemotePath(const Settings& settings, const std::string& key, const std::string& path) {
  if (path.empty() || path.front() != '/') {
    return settings.error(key, "'" + key + "' must be an absolute path, got '" + path + "'");
  }
  std::string base = path.substr(path.rfind('/') + 1);
  if (base.empty() || base == "." || base == "..") {
    return settings.error(key, "'" + key + "' must name a file, got '" + path + "'");
  }
  return {};
}

// `configure` sees the stage's settings without the hosts' overrides, so it passes
// `per_host` false: then required settings may be absent (a host may give them), but any
// that is given must be valid.
Result<DeploySettings> parseDeploySettings(const Settings& settings, bool per_host) {
  DeploySettings parsed;

  Result<certfleet::ssh::SshOptions> ssh = certfleet::ssh::parseSshOptions(settings, per_host);
  if (!ssh.ok()) {
    return ssh.status();
  }
  parsed.ssh = *ssh;

  for (const char* key : {"key_path", "chain_path"}) {
    if (!per_host && !settings.has(key)) {
      continue;
    }
    Result<std::string> path = settings.require(key);
    if (!path.ok()) {
      return path.status();
    }
    if (Status valid = checkRemotePath(settings, key, *path); !valid.ok()) {
      return valid;
    }
    (std::string_view(key) == "key_path" ? parsed.key_path : parsed.chain_path) = *path;
  }
  if (!parsed.key_path.empty() && parsed.key_path == parsed.chain_path) {
    return settings.error("chain_path", "'chain_path' must differ from 'key_path'");
  }

  Result<std::uint32_t> key_mode = parseMode(settings, "key_mode", kDefaultKeyMode);
  if (!key_mode.ok()) {
    return key_mode.status();
  }
  if ((*key_mode & 0007) != 0) {
    return settings.error("key_mode", "'key_mode' " + formatMode(*key_mode) +
                                          " would let every user on the host read the private key");
  }
  parsed.key_mode = *key_mode;

  Result<std::uint32_t> chain_mode = parseMode(settings, "chain_mode", kDefaultChainMode);
  if (!chain_mode.ok()) {
    return chain_mode.status();
  }
  parsed.chain_mode = *chain_mode;

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

// A hidden sibling of `path`: same folder, hence same file system, so the final rename is
// atomic; the random part keeps two runs (or a stale leftover) from colliding.
std::string tempPathFor(const std::string& path) {
  std::size_t slash = path.rfind('/');
  std::random_device random;
  char suffix[17];
  std::snprintf(suffix, sizeof(suffix), "%08x%08x", random(), random());
  return path.substr(0, slash + 1) + "." + path.substr(slash + 1) + ".certfleet-" + suffix;
}

class SftpDeploy final : public certfleet::DeployPlugin {
 public:
  Status configure(const Settings& settings, certfleet::Services& services) override {
    services_ = &services;
    if (!settings.prefix().empty()) {
      context_ = settings.prefix();
    }
    return parseDeploySettings(settings, /*per_host=*/false).status();
  }

  Status checkHost(const HostTarget& host, const Settings& settings) override {
    if (host.address.empty() || host.user.empty()) {
      return certfleet::invalidArgument(context_ + ": host " + host.name +
                                        " needs an ssh address and user");
    }
    return parseDeploySettings(settings, /*per_host=*/true).status();
  }

  Status deploy(const HostTarget& host,
                const Settings& settings,
                const CertificateBundle& bundle) override {
    Result<DeploySettings> parsed = parseDeploySettings(settings, /*per_host=*/true);
    if (!parsed.ok()) {
      return parsed.status();
    }
    if (bundle.key_pem.empty() || bundle.fullchain_pem.empty()) {
      return certfleet::invalidArgument(context_ + ": nothing to deploy: empty key or chain");
    }
    return deployFiles(host, *parsed, bundle).withContext(context_);
  }

 private:
  Status deployFiles(const HostTarget& host,
                     const DeploySettings& settings,
                     const CertificateBundle& bundle) {
    Clock::time_point deadline = std::min(Clock::now() + settings.timeout, services_->deadline());

    auto connection = certfleet::ssh::SshConnection::open(host, settings.ssh);
    if (!connection.ok()) {
      return connection.status();
    }
    auto sftp = certfleet::ssh::SftpClient::open(**connection, deadline);
    if (!sftp.ok()) {
      return sftp.status();
    }
    const std::string& endpoint = (*connection)->endpoint();
    if (!(*sftp)->hasExtension(certfleet::ssh::kPosixRename, "1")) {
      return certfleet::failedPrecondition(
          "sftp server at " + endpoint +
          " does not offer posix-rename@openssh.com, so the files cannot be replaced "
          "atomically; refusing to deploy");
    }
    bool can_fsync = (*sftp)->hasExtension(certfleet::ssh::kFsync, "1");
    if (!can_fsync) {
      services_->log(LogLevel::kWarn, "sftp server at " + endpoint +
                                          " does not offer fsync@openssh.com; a crash of the "
                                          "host right after the deploy may lose the new files");
    }

    // Key first: a reader that catches the moment between the two renames sees a
    // mismatched pair whichever file goes first (nginx then refuses the reload and keeps
    // the pair it has loaded), so the order is chosen for failures instead. The key's
    // folder is the one most often locked down (root-owned, 0700), so its rename is the
    // likelier to be refused, and refusing it first leaves the old pair whole.
    std::array<RemoteFile, 2> files{{
        {"key", settings.key_path, settings.key_mode, bundle.key_pem.reveal(),
         tempPathFor(settings.key_path)},
        {"chain", settings.chain_path, settings.chain_mode, bundle.fullchain_pem,
         tempPathFor(settings.chain_path)},
    }};

    std::vector<std::string> leftovers;  // temporary files on the host, to remove on failure
    for (const RemoteFile& file : files) {
      Status uploaded = upload(**sftp, file, can_fsync, leftovers);
      if (!uploaded.ok()) {
        removeLeftovers(**sftp, leftovers);
        return uploaded;
      }
    }

    for (std::size_t i = 0; i < files.size(); ++i) {
      Status renamed = (*sftp)->posixRename(files[i].temp_path, files[i].path);
      if (!renamed.ok()) {
        removeLeftovers(**sftp, leftovers);
        if (i > 0) {
          return Status(renamed.code(), renamed.message() +
                                            "; the new key is in place but not its chain, "
                                            "so the previous pair must be deployed again");
        }
        return renamed;
      }
      std::erase(leftovers, files[i].temp_path);
    }

    services_->log(LogLevel::kInfo, "placed key " + settings.key_path + " (" +
                                        formatMode(settings.key_mode) + ") and chain " +
                                        settings.chain_path + " (" +
                                        formatMode(settings.chain_mode) + ") on " + endpoint);
    return {};
  }

  // Writes one file under its temporary name, complete, durable and with its exact mode.
  Status upload(certfleet::ssh::SftpClient& sftp,
                const RemoteFile& file,
                bool can_fsync,
                std::vector<std::string>& leftovers) {
    // Created exclusively with the final mode, so no one can have opened it before us
    // and the key is never more readable than key_mode, not even while it is written.
    Result<std::string> handle = sftp.create(file.temp_path, file.mode);
    if (!handle.ok()) {
      return handle.status();
    }
    leftovers.push_back(file.temp_path);

    Status status = sftp.write(*handle, 0, file.contents);
    // The server's umask may have narrowed the mode at creation; set it exactly, on the
    // handle rather than the path so that no file swapped in at that name is touched,
    // and before the fsync so that the mode is as durable as the bytes.
    if (status.ok()) {
      status = sftp.setMode(*handle, file.mode);
    }
    if (status.ok() && can_fsync) {
      status = sftp.fsync(*handle);
    }
    Status closed = sftp.close(*handle);
    if (status.ok()) {
      status = closed;
    }
    if (!status.ok()) {
      return status.withContext("upload " + std::string(file.what) + " to " + file.temp_path);
    }
    services_->log(LogLevel::kDebug, "wrote " + std::to_string(file.contents.size()) +
                                         " bytes to " + file.temp_path + " (" +
                                         formatMode(file.mode) + ")");
    return {};
  }

  void removeLeftovers(certfleet::ssh::SftpClient& sftp, std::vector<std::string>& leftovers) {
    for (const std::string& path : leftovers) {
      Status removed = sftp.remove(path);
      if (!removed.ok()) {
        services_->log(LogLevel::kWarn, "could not remove temporary file: " + removed.message());
      }
    }
    leftovers.clear();
  }

  certfleet::Services* services_ = nullptr;
  std::string context_ = "deploy.sftp";
};

}  // namespace

CERTFLEET_PLUGIN("sftp", certfleet::Stage::kDeploy, "0.1.0", SftpDeploy)

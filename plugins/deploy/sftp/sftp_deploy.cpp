// deploy.sftp: places a host's private key and full chain over SFTP, each file replaced in
// one atomic step, the key never readable beyond its configured mode or by another group
// than its configured one, the previous pair kept beside it.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "certfleet/plugin.hpp"
#include "certfleet/status.hpp"

#include "common/deploy_settings.hpp"
#include "common/sftp_client.hpp"
#include "common/ssh_connection.hpp"

namespace {

using certfleet::CertificateBundle;
using certfleet::HostTarget;
using certfleet::LogLevel;
using certfleet::Result;
using certfleet::Settings;
using certfleet::Status;
using certfleet::StatusCode;
using certfleet::deploy::DeploySettings;
using certfleet::deploy::formatMode;
using certfleet::deploy::Ownership;
using certfleet::ssh::SftpClient;
using certfleet::ssh::SshConnection;
using Clock = std::chrono::steady_clock;

// How long one name lookup on the host (`id -u`, `getent group`) may take.
constexpr std::chrono::milliseconds kLookupTimeout = std::chrono::seconds(10);

// Owner and group as numeric ids on the host; empty where the settings leave it alone.
struct NumericOwnership {
  std::optional<std::uint32_t> uid;
  std::optional<std::uint32_t> gid;
  std::string description;  // "owner www-data (33), group ssl-cert (108)", for messages

  bool empty() const { return !uid && !gid; }
};

// One file to place: where, with which mode and owner, and the temporary name it is
// written under.
struct RemoteFile {
  std::string_view what;  // "key" or "chain", for messages
  std::string path;
  std::uint32_t mode = 0;
  NumericOwnership ownership;
  std::string_view contents;
  std::string temp_path;
};

// A hidden sibling of `path`: same folder, hence same file system, so the final rename is
// atomic; the random part keeps two runs (or a stale leftover) from colliding.
// TODO: remove the temporary files of a deploy killed mid-upload (hours old, matching this
// pattern); no service reads them, but they stay on the host until someone deletes them.
std::string tempPathFor(const std::string& path) {
  std::size_t slash = path.rfind('/');
  std::random_device random;
  char suffix[17];
  std::snprintf(suffix, sizeof(suffix), "%08x%08x", random(), random());
  return path.substr(0, slash + 1) + "." + path.substr(slash + 1) + ".certfleet-" + suffix;
}

std::string previousPathFor(const std::string& path) {
  return path + std::string(certfleet::deploy::kPreviousSuffix);
}

// The first line of a command's output without its line break: what `id -u` printed.
std::string firstLine(const std::string& text) {
  return text.substr(0, text.find('\n'));
}

// The permission bits a copy may keep when its group could not be made the original's:
// the group may read no more than everyone else already could.
std::uint32_t withoutGroupBeyondOthers(std::uint32_t mode) {
  std::uint32_t others_as_group = (mode & 0007) << 3;
  return (mode & ~0070U) | (mode & others_as_group);
}

class SftpDeploy final : public certfleet::DeployPlugin {
 public:
  Status configure(const Settings& settings, certfleet::Services& services) override {
    if (Status known =
            settings.onlyKnown({"key_path", "chain_path", "key_mode", "chain_mode", "key_owner",
                                "key_group", "chain_owner", "chain_group", "keep_previous",
                                "timeout", "known_hosts", "identity_file", "connect_timeout"});
        !known.ok()) {
      return known;
    }
    services_ = &services;
    if (!settings.prefix().empty()) {
      context_ = settings.prefix();
    }
    return certfleet::deploy::parseDeploySettings(settings, /*per_host=*/false).status();
  }

  Status checkHost(const HostTarget& host, const Settings& settings) override {
    if (Status known =
            settings.onlyKnown({"key_path", "chain_path", "key_mode", "chain_mode", "key_owner",
                                "key_group", "chain_owner", "chain_group", "keep_previous",
                                "timeout", "known_hosts", "identity_file", "connect_timeout"});
        !known.ok()) {
      return known;
    }
    if (host.address.empty() || host.user.empty()) {
      return certfleet::invalidArgument(context_ + ": host " + host.name +
                                        " needs an ssh address and user");
    }
    return certfleet::deploy::parseDeploySettings(settings, /*per_host=*/true).status();
  }

  Status deploy(const HostTarget& host,
                const Settings& settings,
                const CertificateBundle& bundle) override {
    Result<DeploySettings> parsed = certfleet::deploy::parseDeploySettings(settings, true);
    if (!parsed.ok()) {
      return parsed.status();
    }
    if (bundle.key_pem.empty() || bundle.fullchain_pem.empty()) {
      return certfleet::invalidArgument(context_ + ": nothing to deploy: empty key or chain");
    }
    return deployFiles(host, *parsed, bundle).withContext(context_);
  }

  Result<bool> isInPlace(const HostTarget& host,
                         const Settings& settings,
                         const CertificateBundle& bundle) override {
    Result<DeploySettings> parsed = certfleet::deploy::parseDeploySettings(settings, true);
    if (!parsed.ok()) {
      return parsed.status();
    }
    Result<bool> same = compareFiles(host, *parsed, bundle);
    if (!same.ok()) {
      return same.status().withContext(context_);
    }
    return same;
  }

 private:
  Status deployFiles(const HostTarget& host,
                     const DeploySettings& settings,
                     const CertificateBundle& bundle) {
    Clock::time_point deadline = std::min(Clock::now() + settings.timeout, services_->deadline());

    auto connection = SshConnection::open(host, settings.ssh);
    if (!connection.ok()) {
      return connection.status();
    }
    auto sftp = SftpClient::open(**connection, deadline);
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
    bool can_hardlink = (*sftp)->hasExtension(certfleet::ssh::kHardlink, "1");

    // Names are resolved before anything is written, so an unknown one leaves the host as
    // it was.
    Lookups lookups;
    Result<NumericOwnership> key_owner =
        resolve(**connection, host, settings.key_ownership, lookups, deadline);
    if (!key_owner.ok()) {
      return key_owner.status().withContext("key");
    }
    Result<NumericOwnership> chain_owner =
        resolve(**connection, host, settings.chain_ownership, lookups, deadline);
    if (!chain_owner.ok()) {
      return chain_owner.status().withContext("chain");
    }

    // Key first: a reader that catches the moment between the two renames sees a
    // mismatched pair whichever file goes first (nginx then refuses the reload and keeps
    // the pair it has loaded), so the order is chosen for failures instead. The key's
    // folder is the one most often locked down (root-owned, 0700), so its rename is the
    // likelier to be refused, and refusing it first leaves the old pair whole.
    std::array<RemoteFile, 2> files{{
        {"key", settings.key_path, settings.key_mode, *key_owner, bundle.key_pem.reveal(),
         tempPathFor(settings.key_path)},
        {"chain", settings.chain_path, settings.chain_mode, *chain_owner, bundle.fullchain_pem,
         tempPathFor(settings.chain_path)},
    }};

    std::vector<std::string> leftovers;  // temporary files on the host, to remove on failure
    for (const RemoteFile& file : files) {
      Status uploaded = upload(**sftp, host, file, can_fsync, leftovers);
      if (!uploaded.ok()) {
        removeLeftovers(**sftp, leftovers);
        return uploaded;
      }
    }

    // The previous pair is kept only once the new one is fully on the host, so a failed
    // upload leaves the older `.previous` copies alone.
    if (settings.keep_previous) {
      for (const RemoteFile& file : files) {
        Status kept = keepPrevious(**sftp, file, can_hardlink, can_fsync, leftovers);
        if (!kept.ok()) {
          removeLeftovers(**sftp, leftovers);
          return kept.withContext("keep the previous " + std::string(file.what));
        }
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

  // Writes one file under its temporary name, complete, durable, with its exact owner and
  // mode.
  Status upload(SftpClient& sftp,
                const HostTarget& host,
                const RemoteFile& file,
                bool can_fsync,
                std::vector<std::string>& leftovers) {
    // Created exclusively, so no one can have opened it before us, and with the owner's
    // bits alone: until its group is the configured one, no group may read it.
    Result<std::string> handle = sftp.create(file.temp_path, file.mode & 0700);
    if (!handle.ok()) {
      return handle.status();
    }
    leftovers.push_back(file.temp_path);

    Status status = sftp.write(*handle, 0, file.contents);
    // Owner before mode: chown(2) may clear mode bits, and the group bits must not open
    // up while the file still has the deploy user's group.
    if (status.ok() && !file.ownership.empty()) {
      status = setOwnership(sftp, *handle, host, file.ownership, file.temp_path);
    }
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

  Status setOwnership(SftpClient& sftp,
                      const std::string& handle,
                      const HostTarget& host,
                      const NumericOwnership& ownership,
                      const std::string& path) {
    // SFTP sets owner and group together: the one not configured keeps its current value.
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    if (!ownership.uid || !ownership.gid) {
      Result<certfleet::ssh::FileAttributes> attributes = sftp.fstat(handle);
      if (!attributes.ok()) {
        return attributes.status();
      }
      if (!attributes->uid || !attributes->gid) {
        return certfleet::internalError("stat " + path + ": the server reports no owner");
      }
      uid = *attributes->uid;
      gid = *attributes->gid;
    }
    uid = ownership.uid.value_or(uid);
    gid = ownership.gid.value_or(gid);

    Status owned = sftp.setOwner(handle, uid, gid);
    if (owned.code() == StatusCode::kPermissionDenied) {
      return certfleet::permissionDenied(
          "give " + path + " to " + ownership.description + ": permission denied: " + host.user +
          " may give a file only to a group it is a member of, and only root may change a "
          "file's owner; fix key_owner/key_group/chain_owner/chain_group or the deploy user's "
          "groups");
    }
    return owned;
  }

  // Makes `<path>.previous` the file now at `path`, replacing an older copy in one step.
  Status keepPrevious(SftpClient& sftp,
                      const RemoteFile& file,
                      bool can_hardlink,
                      bool can_fsync,
                      std::vector<std::string>& leftovers) {
    std::string previous = previousPathFor(file.path);
    std::string temp = tempPathFor(previous);

    // A second name for the current file: no key bytes travel, and the copy keeps the
    // file's mode and owner exactly, because it is the same file.
    if (can_hardlink) {
      Status linked = sftp.hardlink(file.path, temp);
      if (linked.code() == StatusCode::kNotFound) {
        return {};  // nothing in place yet: a first deploy
      }
      if (linked.ok()) {
        leftovers.push_back(temp);
        return replacePrevious(sftp, temp, previous, leftovers);
      }
      // Some file systems and the kernel's protected_hardlinks (a file the deploy user
      // does not own) refuse links; a copy does the same job.
      services_->log(LogLevel::kDebug, "cannot link " + file.path + " (" + linked.message() +
                                           "); copying it to " + previous + " instead");
    }
    return copyPrevious(sftp, file, temp, previous, can_fsync, leftovers);
  }

  Status copyPrevious(SftpClient& sftp,
                      const RemoteFile& file,
                      const std::string& temp,
                      const std::string& previous,
                      bool can_fsync,
                      std::vector<std::string>& leftovers) {
    certfleet::ssh::FileAttributes original;
    Result<std::string> read =
        sftp.readFile(file.path, certfleet::deploy::kMaxCompareBytes, &original);
    if (read.status().code() == StatusCode::kNotFound) {
      return {};
    }
    if (!read.ok()) {
      return Status(read.status().code(),
                    read.status().message() + "; set keep_previous: false to deploy without it");
    }
    // Held as a Secret so that the key's bytes are wiped when the copy is done.
    certfleet::Secret contents(std::move(*read));
    std::uint32_t mode = original.permissions.value_or(0600) & 0777;

    Result<std::string> handle = sftp.create(temp, mode & 0700);
    if (!handle.ok()) {
      return handle.status();
    }
    leftovers.push_back(temp);
    Status status = sftp.write(*handle, 0, contents.reveal());
    if (status.ok() && original.uid && original.gid) {
      Status owned = sftp.setOwner(*handle, *original.uid, *original.gid);
      if (!owned.ok()) {
        // Only root can give the copy the original's owner; with the deploy user's group
        // instead, that group must not read what only the original's group could.
        mode = withoutGroupBeyondOthers(mode);
      }
    }
    if (status.ok()) {
      status = sftp.setMode(*handle, mode);
    }
    if (status.ok() && can_fsync) {
      status = sftp.fsync(*handle);
    }
    Status closed = sftp.close(*handle);
    if (status.ok()) {
      status = closed;
    }
    if (!status.ok()) {
      return status.withContext("copy " + file.path + " to " + temp);
    }
    return replacePrevious(sftp, temp, previous, leftovers);
  }

  Status replacePrevious(SftpClient& sftp,
                         const std::string& temp,
                         const std::string& previous,
                         std::vector<std::string>& leftovers) {
    Status renamed = sftp.posixRename(temp, previous);
    if (!renamed.ok()) {
      return renamed;
    }
    // rename(2) does nothing at all when both names are already links to one file (a
    // `.previous` left by a deploy that failed after linking it): the temporary name then
    // still exists and goes here.
    Status removed = sftp.remove(temp);
    if (!removed.ok() && removed.code() != StatusCode::kNotFound) {
      return removed;
    }
    std::erase(leftovers, temp);
    return {};
  }

  void removeLeftovers(SftpClient& sftp, std::vector<std::string>& leftovers) {
    for (const std::string& path : leftovers) {
      Status removed = sftp.remove(path);
      if (!removed.ok()) {
        services_->log(LogLevel::kWarn, "could not remove temporary file: " + removed.message());
      }
    }
    leftovers.clear();
  }

  // Names looked up on the host during one connection: each is asked once.
  struct Lookups {
    std::map<std::string, std::uint32_t> users;
    std::map<std::string, std::uint32_t> groups;
  };

  Result<NumericOwnership> resolve(SshConnection& connection,
                                   const HostTarget& host,
                                   const Ownership& ownership,
                                   Lookups& lookups,
                                   Clock::time_point deadline) {
    NumericOwnership numeric;
    if (!ownership.owner.empty()) {
      Result<std::uint32_t> uid =
          lookUp(connection, host, ownership.owner, "user", lookups.users, deadline);
      if (!uid.ok()) {
        return uid.status();
      }
      numeric.uid = *uid;
      numeric.description = "owner " + ownership.owner;
    }
    if (!ownership.group.empty()) {
      Result<std::uint32_t> gid =
          lookUp(connection, host, ownership.group, "group", lookups.groups, deadline);
      if (!gid.ok()) {
        return gid.status();
      }
      numeric.gid = *gid;
      numeric.description +=
          (numeric.description.empty() ? "" : ", ") + std::string("group ") + ownership.group +
          (ownership.group == std::to_string(*gid) ? std::string()
                                                   : " (" + std::to_string(*gid) + ")");
    }
    return numeric;
  }

  // The id of a user or group name as the host knows it, asked with `id -u NAME` or
  // `getent group NAME` (SFTP version 3 carries numeric ids only). The name was checked
  // to hold no shell syntax when the settings were read.
  Result<std::uint32_t> lookUp(SshConnection& connection,
                               const HostTarget& host,
                               const std::string& name,
                               const std::string& kind,
                               std::map<std::string, std::uint32_t>& cache,
                               Clock::time_point deadline) {
    if (std::optional<std::uint32_t> id = certfleet::deploy::numericId(name)) {
      return *id;
    }
    if (auto found = cache.find(name); found != cache.end()) {
      return found->second;
    }
    std::string command = kind == "user" ? "id -u '" + name + "'" : "getent group '" + name + "'";
    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    Result<certfleet::ssh::CommandResult> result = connection.run(
        command, std::max(std::chrono::milliseconds(1), std::min(kLookupTimeout, remaining)));
    if (!result.ok()) {
      return result.status().withContext("look up " + kind + " " + name);
    }
    if (result->exit_status != 0) {
      return certfleet::invalidArgument("no " + kind + " named " + name + " on host " + host.name +
                                        " (" + command + " exited " +
                                        std::to_string(result->exit_status) + ")");
    }
    // `getent group` prints "name:password:gid:members".
    std::string text = firstLine(result->stdout_tail);
    if (kind == "group") {
      std::size_t second = text.find(':', text.find(':') + 1);
      std::size_t third = second == std::string::npos ? second : text.find(':', second + 1);
      text = third == std::string::npos ? "" : text.substr(second + 1, third - second - 1);
    }
    std::optional<std::uint32_t> id = certfleet::deploy::numericId(text);
    if (!id) {
      return certfleet::internalError("look up " + kind + " " + name + ": " + command +
                                      " printed no id");
    }
    cache.emplace(name, *id);
    return *id;
  }

  Result<bool> compareFiles(const HostTarget& host,
                            const DeploySettings& settings,
                            const CertificateBundle& bundle) {
    Clock::time_point deadline = std::min(Clock::now() + settings.timeout, services_->deadline());
    auto connection = SshConnection::open(host, settings.ssh);
    if (!connection.ok()) {
      return connection.status();
    }
    auto sftp = SftpClient::open(**connection, deadline);
    if (!sftp.ok()) {
      return sftp.status();
    }

    // The chain first: when it differs, the key need not cross the wire at all.
    Result<std::string> chain =
        (*sftp)->readFile(settings.chain_path, certfleet::deploy::kMaxCompareBytes);
    if (!chain.ok()) {
      return differsOrError(chain.status());
    }
    if (*chain != bundle.fullchain_pem) {
      return false;
    }
    Result<std::string> key =
        (*sftp)->readFile(settings.key_path, certfleet::deploy::kMaxCompareBytes);
    if (!key.ok()) {
      return differsOrError(key.status());
    }
    certfleet::Secret remote_key(std::move(*key));
    return certfleet::deploy::constantTimeEquals(remote_key.reveal(), bundle.key_pem.reveal());
  }

  // A missing file, or one too long to be ours, is a host that does not hold the pair;
  // anything else means we cannot tell.
  static Result<bool> differsOrError(const Status& status) {
    if (status.code() == StatusCode::kNotFound ||
        status.code() == StatusCode::kFailedPrecondition) {
      return false;
    }
    return status;
  }

  certfleet::Services* services_ = nullptr;
  std::string context_ = "deploy.sftp";
};

}  // namespace

CERTFLEET_PLUGIN("sftp", certfleet::Stage::kDeploy, "0.2.0", SftpDeploy)

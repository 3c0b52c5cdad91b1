// deploy.rsync: places a host's private key and full chain with rsync over OpenSSH's ssh,
// for fleets that already allow rsync and not SFTP. Same settings, host-key policy and
// guarantees as deploy.sftp: each file replaced in one atomic step (rsync's temporary file
// and rename, never --inplace), the key never readable beyond its mode or by another group
// than its configured one, the previous pair kept beside it.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/evp.h>

#include "certfleet/plugin.hpp"
#include "certfleet/status.hpp"

#include "common/deploy_settings.hpp"
#include "common/subprocess.hpp"
#include "rsync/openssh.hpp"
#include "rsync/staging_area.hpp"

namespace {

using certfleet::CertificateBundle;
using certfleet::HostTarget;
using certfleet::LogLevel;
using certfleet::Result;
using certfleet::Settings;
using certfleet::Status;
using certfleet::deploy::DeploySettings;
using certfleet::deploy::formatMode;
using certfleet::deploy::Ownership;
using certfleet::rsync::lastLines;
using certfleet::rsync::OpenSsh;
using certfleet::rsync::shellQuote;
using Clock = std::chrono::steady_clock;

constexpr const char* kDefaultRsync = "/usr/bin/rsync";
constexpr const char* kDefaultSsh = "/usr/bin/ssh";

// ssh and rsync get this environment and nothing else: no agent socket, no RSYNC_RSH or
// RSYNC_PASSWORD of the orchestrator's user, and messages in the C locale so that ssh's
// host key warnings can be recognised.
const std::vector<std::string> kEnvironment{"PATH=/usr/bin:/bin", "LC_ALL=C"};

// rsync's exit codes that have a meaning of their own (rsync(1), EXIT VALUES).
constexpr int kRsyncPartialTransfer = 23;
constexpr int kRsyncTimeout = 30;
constexpr int kSshFailure = 255;

struct RsyncSettings {
  DeploySettings deploy;
  std::string rsync_path = kDefaultRsync;
  std::string ssh_path = kDefaultSsh;
};

Status checkExecutable(const Settings& settings, const std::string& key, const std::string& path) {
  if (path.empty() || path.front() != '/') {
    return settings.error(key, "'" + key + "' must be an absolute path, got '" + path + "'");
  }
  if (::access(path.c_str(), X_OK) != 0) {
    return settings.error(key, "cannot run " + key + " " + path);
  }
  return {};
}

Result<RsyncSettings> parseRsyncSettings(const Settings& settings, bool per_host) {
  RsyncSettings parsed;
  Result<DeploySettings> deploy = certfleet::deploy::parseDeploySettings(settings, per_host);
  if (!deploy.ok()) {
    return deploy.status();
  }
  parsed.deploy = *deploy;
  parsed.rsync_path = settings.getOr("rsync_path", kDefaultRsync);
  parsed.ssh_path = settings.getOr("ssh_path", kDefaultSsh);
  if (Status usable = checkExecutable(settings, "rsync_path", parsed.rsync_path); !usable.ok()) {
    return usable;
  }
  if (Status usable = checkExecutable(settings, "ssh_path", parsed.ssh_path); !usable.ok()) {
    return usable;
  }
  if (Status usable = OpenSsh::checkUsable(parsed.ssh_path, parsed.deploy.ssh); !usable.ok()) {
    return settings.error("ssh_path", usable.message());
  }
  return parsed;
}

std::string folderOf(const std::string& path) {
  std::size_t slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string baseName(const std::string& path) {
  return path.substr(path.rfind('/') + 1);
}

std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
  }
  return lines;
}

std::string sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr) != 1) {
    return "";
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < size; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0x0f];
  }
  return hex;
}

// What the host told us before the transfer.
struct HostFacts {
  std::uint32_t uid = 0;
  std::set<std::uint32_t> groups;
  std::map<std::string, std::string> folders;  // folder as configured -> as rsync must see it
  std::map<std::string, std::optional<std::uint32_t>> users;  // name -> uid, if any
  std::map<std::string, std::optional<std::uint32_t>> groups_by_name;
};

// One file to place, and the rsync run it goes in.
struct PlacedFile {
  std::string_view what;  // "key" or "chain"
  std::string path;       // as configured
  std::uint32_t mode = 0;
  Ownership ownership;
  std::string_view contents;
};

class RsyncDeploy final : public certfleet::DeployPlugin {
 public:
  Status configure(const Settings& settings, certfleet::Services& services) override {
    if (Status known = settings.onlyKnown(
            {"key_path", "chain_path", "key_mode", "chain_mode", "key_owner", "key_group",
             "chain_owner", "chain_group", "keep_previous", "timeout", "known_hosts",
             "identity_file", "connect_timeout", "rsync_path", "ssh_path"});
        !known.ok()) {
      return known;
    }
    services_ = &services;
    if (!settings.prefix().empty()) {
      context_ = settings.prefix();
    }
    return parseRsyncSettings(settings, /*per_host=*/false).status();
  }

  Status checkHost(const HostTarget& host, const Settings& settings) override {
    if (Status known = settings.onlyKnown(
            {"key_path", "chain_path", "key_mode", "chain_mode", "key_owner", "key_group",
             "chain_owner", "chain_group", "keep_previous", "timeout", "known_hosts",
             "identity_file", "connect_timeout", "rsync_path", "ssh_path"});
        !known.ok()) {
      return known;
    }
    if (Status usable = OpenSsh::checkHost(host); !usable.ok()) {
      return usable.withContext(context_);
    }
    return parseRsyncSettings(settings, /*per_host=*/true).status();
  }

  Status deploy(const HostTarget& host,
                const Settings& settings,
                const CertificateBundle& bundle) override {
    Result<RsyncSettings> parsed = parseRsyncSettings(settings, /*per_host=*/true);
    if (!parsed.ok()) {
      return parsed.status();
    }
    if (Status usable = OpenSsh::checkHost(host); !usable.ok()) {
      return usable.withContext(context_);
    }
    if (bundle.key_pem.empty() || bundle.fullchain_pem.empty()) {
      return certfleet::invalidArgument(context_ + ": nothing to deploy: empty key or chain");
    }
    return deployFiles(host, *parsed, bundle).withContext(context_);
  }

  // Compares SHA-256 digests computed on the host (`sha256sum`) with the bundle's: the
  // key never travels back and no copy of it is staged for the comparison, which
  // `rsync --dry-run --checksum` would need.
  Result<bool> isInPlace(const HostTarget& host,
                         const Settings& settings,
                         const CertificateBundle& bundle) override {
    Result<RsyncSettings> parsed = parseRsyncSettings(settings, /*per_host=*/true);
    if (!parsed.ok()) {
      return parsed.status();
    }
    if (Status usable = OpenSsh::checkHost(host); !usable.ok()) {
      return usable.withContext(context_);
    }
    Result<bool> same = compareDigests(host, *parsed, bundle);
    if (!same.ok()) {
      return same.status().withContext(context_);
    }
    return same;
  }

 private:
  Status deployFiles(const HostTarget& host,
                     const RsyncSettings& settings,
                     const CertificateBundle& bundle) {
    Clock::time_point deadline =
        std::min(Clock::now() + settings.deploy.timeout, services_->deadline());
    OpenSsh ssh(settings.ssh_path, settings.deploy.ssh, host);

    std::vector<PlacedFile> files{
        {"key", settings.deploy.key_path, settings.deploy.key_mode, settings.deploy.key_ownership,
         bundle.key_pem.reveal()},
        {"chain", settings.deploy.chain_path, settings.deploy.chain_mode,
         settings.deploy.chain_ownership, bundle.fullchain_pem},
    };

    // Everything that can be refused is refused before the key is written anywhere.
    // TODO: this check and rsync each open an SSH connection; sharing one through a
    // ControlMaster socket would save a handshake (a few hundred ms) per host.
    Result<HostFacts> facts = learnHost(ssh, host, files, settings.deploy.keep_previous, deadline);
    if (!facts.ok()) {
      return facts.status();
    }
    for (const PlacedFile& file : files) {
      if (Status allowed = checkOwnership(host, file, *facts); !allowed.ok()) {
        return allowed;
      }
    }

    // One rsync run per distinct ownership, because --chown applies to a whole run. Usually
    // that is one run, and --delay-updates renames both files at its very end; otherwise
    // the key goes first, as in deploy.sftp.
    std::vector<std::vector<const PlacedFile*>> runs;
    for (const PlacedFile& file : files) {
      auto same = std::find_if(runs.begin(), runs.end(), [&](const auto& run) {
        return run.front()->ownership == file.ownership;
      });
      if (same == runs.end()) {
        runs.push_back({&file});
      } else {
        same->push_back(&file);
      }
    }
    for (std::size_t i = 0; i < runs.size(); ++i) {
      Status sent = transfer(ssh, settings, runs[i], *facts, deadline);
      if (!sent.ok()) {
        if (i > 0) {
          return Status(sent.code(), sent.message() +
                                         "; the new key is in place but not its chain, so the "
                                         "previous pair must be deployed again");
        }
        return sent;
      }
    }

    services_->log(LogLevel::kInfo, "placed key " + settings.deploy.key_path + " (" +
                                        formatMode(settings.deploy.key_mode) + ") and chain " +
                                        settings.deploy.chain_path + " (" +
                                        formatMode(settings.deploy.chain_mode) + ") on " +
                                        ssh.endpoint() + " with rsync");
    return {};
  }

  // Stages the files of one run, sends them, and removes the staged copies at once.
  Status transfer(const OpenSsh& ssh,
                  const RsyncSettings& settings,
                  const std::vector<const PlacedFile*>& run,
                  const HostFacts& facts,
                  Clock::time_point deadline) {
    auto area = certfleet::rsync::StagingArea::create(services_->stateDirectory());
    if (!area.ok()) {
      return area.status();
    }
    std::vector<std::string> sources;
    for (const PlacedFile* file : run) {
      // The folder as the host resolved it: rsync refuses to follow a symbolic link in the
      // folder part of a destination path.
      std::string remote_path = facts.folders.at(folderOf(file->path));
      remote_path += (remote_path == "/" ? "" : "/") + baseName(file->path);
      Result<std::string> source = (*area)->add(remote_path, file->contents, file->mode);
      if (!source.ok()) {
        return source.status();
      }
      sources.push_back(*source);
    }

    std::vector<std::string> argv = rsyncArgv(ssh, settings, *run.front(), deadline);
    argv.push_back("--");
    argv.insert(argv.end(), sources.begin(), sources.end());
    argv.push_back(ssh.rsyncHost() + ":/");
    Result<certfleet::process::ProcessResult> result =
        certfleet::process::run(argv, kEnvironment, remaining(deadline));

    // The staged key goes the moment rsync is done with it, before anything is reported.
    Status removed = (*area)->remove();
    if (!result.ok()) {
      return result.status().withContext("rsync");
    }
    if (result->exit_status != 0) {
      return rsyncFailure(ssh, *result);
    }
    return removed;
  }

  std::vector<std::string> rsyncArgv(const OpenSsh& ssh,
                                     const RsyncSettings& settings,
                                     const PlacedFile& first,
                                     Clock::time_point deadline) {
    auto io_seconds = std::max<std::int64_t>(
        1, std::chrono::duration_cast<std::chrono::seconds>(remaining(deadline)).count());
    std::vector<std::string> argv{
        settings.rsync_path,
        "--rsh=" + ssh.rshString(),
        // Source paths "<area>/./etc/nginx/tls/key.pem" land at /etc/nginx/tls/key.pem;
        // no implied folder is sent, so the host's folders keep their modes and owners.
        "--relative",
        "--no-implied-dirs",
        // The staged files carry the exact modes; --perms applies them whatever the
        // host's umask.
        "--perms",
        // Always send, as deploy.sftp always writes: a deploy is never skipped because
        // size and time happen to match. isInPlace is the way to leave a host alone.
        "--ignore-times",
        // rsync writes each file to a temporary name beside it and renames it into place
        // (its default; --inplace is never used). --delay-updates holds both renames until
        // the end of the run, so the pair changes within moments.
        "--delay-updates",
        "--timeout=" + std::to_string(io_seconds),
    };
    if (settings.deploy.keep_previous) {
      // rsync links the current file to `<name>.previous` (a rename where links fail), so
      // the copy keeps the file's mode and owner: the previous key stays 0600.
      argv.push_back("--backup");
      argv.push_back("--suffix=" + std::string(certfleet::deploy::kPreviousSuffix));
    }
    if (!first.ownership.empty()) {
      std::string chown = first.ownership.owner;
      if (!first.ownership.group.empty()) {
        chown += ":" + first.ownership.group;
      }
      argv.push_back("--chown=" + chown);
    }
    return argv;
  }

  Status rsyncFailure(const OpenSsh& ssh, const certfleet::process::ProcessResult& result) {
    if (Status refused = ssh.classify(result.stderr_tail); !refused.ok()) {
      return refused;
    }
    std::string said =
        "rsync exited " + std::to_string(result.exit_status) + ": " + lastLines(result.stderr_tail);
    if (result.exit_status < 0) {
      said = "rsync was killed by signal " + std::to_string(result.signal);
    }
    const std::string& text = result.stderr_tail;
    if (text.find("Permission denied (13)") != std::string::npos) {
      return certfleet::permissionDenied(said);
    }
    if (text.find("No such file or directory (2)") != std::string::npos) {
      return certfleet::notFound(said);
    }
    if (text.find("command not found") != std::string::npos ||
        text.find("rsync: not found") != std::string::npos) {
      return certfleet::failedPrecondition(said + "; is rsync installed on " + ssh.endpoint() +
                                           "?");
    }
    switch (result.exit_status) {
      case kRsyncTimeout:
        return certfleet::deadlineExceeded(said);
      case kRsyncPartialTransfer:
        return certfleet::failedPrecondition(said);
      case kSshFailure:
        return certfleet::unavailable("ssh " + ssh.endpoint() + ": " + said);
      default:
        return certfleet::unavailable(said);
    }
  }

  // One remote command that tells, before anything is written: who we are on the host,
  // whether each folder is there and writable (and where it really is), whether each
  // target is a file, and the ids of the owner and group names the settings use.
  Result<HostFacts> learnHost(const OpenSsh& ssh,
                              const HostTarget& host,
                              const std::vector<PlacedFile>& files,
                              bool keep_previous,
                              Clock::time_point deadline) {
    std::vector<std::string> folders;
    std::vector<std::string> users;
    std::vector<std::string> groups;
    for (const PlacedFile& file : files) {
      std::string folder = folderOf(file.path);
      if (std::find(folders.begin(), folders.end(), folder) == folders.end()) {
        folders.push_back(folder);
      }
      const Ownership& owner = file.ownership;
      if (!owner.owner.empty() && !certfleet::deploy::numericId(owner.owner) &&
          std::find(users.begin(), users.end(), owner.owner) == users.end()) {
        users.push_back(owner.owner);
      }
      if (!owner.group.empty() && !certfleet::deploy::numericId(owner.group) &&
          std::find(groups.begin(), groups.end(), owner.group) == groups.end()) {
        groups.push_back(owner.group);
      }
    }

    // One line per question, in this order. Names were checked to hold no shell syntax;
    // paths are quoted.
    std::string script = "id -u; id -G";
    for (const std::string& folder : folders) {
      script += "; d=" + shellQuote(folder) +
                "; if [ ! -d \"$d\" ]; then echo missing; elif [ ! -w \"$d\" ]; then echo "
                "readonly; else (cd \"$d\" && pwd -P) || echo missing; fi";
    }
    // rsync skips a file it cannot put in place and still renames the other one, so a
    // target that is not a file (a folder, say) is refused here, before anything moves.
    std::vector<std::string> targets;
    for (const PlacedFile& file : files) {
      targets.push_back(file.path);
      if (keep_previous) {
        targets.push_back(file.path + std::string(certfleet::deploy::kPreviousSuffix));
      }
    }
    for (const std::string& target : targets) {
      script += "; f=" + shellQuote(target) +
                "; if [ -e \"$f\" ] && [ ! -f \"$f\" ]; then echo other; else echo ok; fi";
    }
    for (const std::string& user : users) {
      script += "; id -u " + shellQuote(user) + " 2>/dev/null || echo -";
    }
    for (const std::string& group : groups) {
      script += "; getent group " + shellQuote(group) + " || echo -";
    }

    Result<certfleet::process::ProcessResult> result =
        certfleet::process::run(ssh.commandArgv(script), kEnvironment, remaining(deadline));
    if (!result.ok()) {
      return result.status().withContext("ssh " + ssh.endpoint());
    }
    if (result->exit_status != 0) {
      if (Status refused = ssh.classify(result->stderr_tail); !refused.ok()) {
        return refused;
      }
      return certfleet::unavailable("ssh " + ssh.endpoint() + ": checking the host exited " +
                                    std::to_string(result->exit_status) + ": " +
                                    lastLines(result->stderr_tail));
    }

    std::vector<std::string> lines = splitLines(result->stdout_head);
    std::size_t expected = 2 + folders.size() + targets.size() + users.size() + groups.size();
    if (lines.size() != expected) {
      return certfleet::internalError("ssh " + ssh.endpoint() + ": checking the host printed " +
                                      std::to_string(lines.size()) + " lines, expected " +
                                      std::to_string(expected) +
                                      " (does the login shell print something of its own?)");
    }
    HostFacts facts;
    std::optional<std::uint32_t> uid = certfleet::deploy::numericId(lines[0]);
    if (!uid) {
      return certfleet::internalError("ssh " + ssh.endpoint() + ": `id -u` printed no id");
    }
    facts.uid = *uid;
    std::istringstream group_ids(lines[1]);
    std::string id;
    while (group_ids >> id) {
      if (std::optional<std::uint32_t> gid = certfleet::deploy::numericId(id)) {
        facts.groups.insert(*gid);
      }
    }
    std::size_t line = 2;
    for (const std::string& folder : folders) {
      const std::string& state = lines[line++];
      if (state == "missing") {
        return certfleet::notFound("no folder " + folder + " on " + ssh.endpoint() +
                                   ": no such file or directory");
      }
      if (state == "readonly") {
        return certfleet::permissionDenied("folder " + folder + " on " + ssh.endpoint() +
                                           ": permission denied: " + host.user +
                                           " cannot create files in it");
      }
      facts.folders[folder] = state;
    }
    for (const std::string& target : targets) {
      if (lines[line++] != "ok") {
        return certfleet::failedPrecondition(target + " on " + ssh.endpoint() +
                                             " is not a regular file; refusing to replace it");
      }
    }
    for (const std::string& user : users) {
      facts.users[user] = certfleet::deploy::numericId(lines[line++]);
    }
    for (const std::string& group : groups) {
      // "name:password:gid:members", or "-".
      std::string entry = lines[line++];
      std::size_t second = entry.find(':', entry.find(':') + 1);
      std::size_t third = second == std::string::npos ? second : entry.find(':', second + 1);
      facts.groups_by_name[group] =
          third == std::string::npos
              ? std::nullopt
              : certfleet::deploy::numericId(entry.substr(second + 1, third - second - 1));
    }
    return facts;
  }

  // rsync run by a user other than root skips an owner or group it cannot set without a
  // word, so the same rules the kernel applies are checked here, before the transfer.
  Status checkOwnership(const HostTarget& host, const PlacedFile& file, const HostFacts& facts) {
    const Ownership& ownership = file.ownership;
    std::string what = "give " + std::string(file.what) + " " + file.path;
    if (!ownership.owner.empty()) {
      std::optional<std::uint32_t> uid = certfleet::deploy::numericId(ownership.owner);
      if (!uid) {
        uid = facts.users.at(ownership.owner);
      }
      if (!uid) {
        return certfleet::invalidArgument(std::string(file.what) + ": no user named " +
                                          ownership.owner + " on host " + host.name);
      }
      if (facts.uid != 0 && *uid != facts.uid) {
        return certfleet::permissionDenied(what + " to owner " + ownership.owner +
                                           ": permission denied: only root may change "
                                           "a file's owner, and " +
                                           host.user + " is not root");
      }
    }
    if (!ownership.group.empty()) {
      std::optional<std::uint32_t> gid = certfleet::deploy::numericId(ownership.group);
      if (!gid) {
        gid = facts.groups_by_name.at(ownership.group);
      }
      if (!gid) {
        return certfleet::invalidArgument(std::string(file.what) + ": no group named " +
                                          ownership.group + " on host " + host.name);
      }
      if (facts.uid != 0 && facts.groups.count(*gid) == 0) {
        return certfleet::permissionDenied(
            what + " to group " + ownership.group + ": permission denied: " + host.user +
            " may give a file only to a group it is a member of, and is not a member of " +
            ownership.group + "; fix key_group/chain_group or the deploy user's groups");
      }
    }
    return {};
  }

  Result<bool> compareDigests(const HostTarget& host,
                              const RsyncSettings& settings,
                              const CertificateBundle& bundle) {
    Clock::time_point deadline =
        std::min(Clock::now() + settings.deploy.timeout, services_->deadline());
    OpenSsh ssh(settings.ssh_path, settings.deploy.ssh, host);

    // "missing" for an absent file; any other failure (unreadable, no sha256sum) ends the
    // command with an error, which means "cannot tell".
    std::string script;
    for (const std::string& path : {settings.deploy.key_path, settings.deploy.chain_path}) {
      script += (script.empty() ? "" : "; ") + std::string("f=") + shellQuote(path) +
                "; if [ -e \"$f\" ]; then sha256sum < \"$f\" || exit 3; else echo missing; fi";
    }
    Result<certfleet::process::ProcessResult> result =
        certfleet::process::run(ssh.commandArgv(script), kEnvironment, remaining(deadline));
    if (!result.ok()) {
      return result.status().withContext("ssh " + ssh.endpoint());
    }
    if (result->exit_status != 0) {
      if (Status refused = ssh.classify(result->stderr_tail); !refused.ok()) {
        return refused;
      }
      return certfleet::unavailable("ssh " + ssh.endpoint() + ": comparing digests exited " +
                                    std::to_string(result->exit_status) + ": " +
                                    lastLines(result->stderr_tail));
    }
    std::vector<std::string> lines = splitLines(result->stdout_head);
    if (lines.size() != 2) {
      return certfleet::internalError("ssh " + ssh.endpoint() + ": comparing digests printed " +
                                      std::to_string(lines.size()) + " lines, expected 2");
    }
    if (lines[0] == "missing" || lines[1] == "missing") {
      return false;
    }
    std::string key_digest = sha256Hex(bundle.key_pem.reveal());
    std::string chain_digest = sha256Hex(bundle.fullchain_pem);
    if (key_digest.empty() || chain_digest.empty()) {
      return certfleet::internalError("cannot compute a SHA-256 digest");
    }
    bool key_same =
        certfleet::deploy::constantTimeEquals(lines[0].substr(0, key_digest.size()), key_digest);
    bool chain_same = lines[1].substr(0, chain_digest.size()) == chain_digest;
    return key_same && chain_same;
  }

  static std::chrono::milliseconds remaining(Clock::time_point deadline) {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
  }

  certfleet::Services* services_ = nullptr;
  std::string context_ = "deploy.rsync";
};

}  // namespace

CERTFLEET_PLUGIN("rsync", certfleet::Stage::kDeploy, "0.1.0", RsyncDeploy)

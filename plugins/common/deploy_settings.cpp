#include "common/deploy_settings.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>

namespace certfleet::deploy {
namespace {

// POSIX portable user names (plus the upper case most systems accept). Names are pasted
// into `id -u NAME` and `getent group NAME` on the host and passed to rsync's --chown, so
// anything a shell or rsync could read as syntax is refused outright.
constexpr std::size_t kMaxNameLength = 32;

bool isNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

Status checkOwnerSetting(const Settings& settings, const std::string& key) {
  if (!settings.has(key)) {
    return {};
  }
  const std::string text = settings.getOr(key, "");
  if (text.empty()) {
    return settings.error(key, "'" + key + "' must not be empty");
  }
  if (std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (!numericId(text)) {
      return settings.error(key, "'" + key + "' " + text + " is not a valid numeric id");
    }
    return {};
  }
  bool valid = text.size() <= kMaxNameLength && text.front() != '-' && text.front() != '.' &&
               std::all_of(text.begin(), text.end(), isNameChar);
  if (!valid) {
    return settings.error(key, "'" + key + "' must be a user or group name (letters, digits, " +
                                   "'.', '_', '-', not starting with '-') or a numeric id, got '" +
                                   text + "'");
  }
  return {};
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
  if (path.find('\n') != std::string::npos || path.find('\0') != std::string::npos) {
    return settings.error(key, "'" + key + "' must not contain a newline or NUL");
  }
  return {};
}

}  // namespace

std::string formatMode(std::uint32_t mode) {
  char text[16];
  std::snprintf(text, sizeof(text), "%04o", mode);
  return text;
}

std::optional<std::uint32_t> numericId(const std::string& text) {
  if (text.empty() || text.size() > 10 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  std::uint64_t value = std::stoull(text);
  // (uid_t)-1 means "leave unchanged" to chown(2): it cannot name an owner.
  if (value >= std::numeric_limits<std::uint32_t>::max()) {
    return std::nullopt;
  }
  return static_cast<std::uint32_t>(value);
}

bool constantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  // volatile keeps the compiler from turning the loop into an early-exit memcmp.
  volatile unsigned char difference = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    difference = difference | static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return difference == 0;
}

Result<DeploySettings> parseDeploySettings(const Settings& settings, bool per_host) {
  DeploySettings parsed;

  Result<ssh::SshOptions> ssh = ssh::parseSshOptions(settings, per_host);
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

  for (const char* key : {"key_owner", "key_group", "chain_owner", "chain_group"}) {
    if (Status valid = checkOwnerSetting(settings, key); !valid.ok()) {
      return valid;
    }
  }
  parsed.key_ownership = {settings.getOr("key_owner", ""), settings.getOr("key_group", "")};
  parsed.chain_ownership = {settings.getOr("chain_owner", ""), settings.getOr("chain_group", "")};

  Result<bool> keep_previous = settings.getBool("keep_previous", true);
  if (!keep_previous.ok()) {
    return keep_previous.status();
  }
  parsed.keep_previous = *keep_previous;
  // The previous copy of one file must not land on the other.
  if (parsed.keep_previous && !parsed.key_path.empty() && !parsed.chain_path.empty() &&
      (parsed.key_path + std::string(kPreviousSuffix) == parsed.chain_path ||
       parsed.chain_path + std::string(kPreviousSuffix) == parsed.key_path)) {
    return settings.error("chain_path", "with keep_previous, neither path may be the other's '" +
                                            std::string(kPreviousSuffix) + "' copy");
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

}  // namespace certfleet::deploy
